#if canImport(Glibc)
import Glibc
#endif
import CShims
import Synchronization
import SystemIO
import QueueClient
import QueueFormat

/// One local delivery with qmail-local's semantics (qmail-local(8),
/// dot-qmail(5), qmail-command(8)): find the `.qmail` file for the extension,
/// then deliver to each line: Maildir (`./Maildir/`), mbox (`./Mailbox`),
/// program (`|command`), or forward (`&address` or a bare address).
public struct LocalDeliveryRequest: Sendable {
    public var user: LocalUser
    /// The local part as addressed (e.g. `joe-info`), and the domain.
    public var local: String
    public var domain: String
    public var sender: String
    /// indimail's QQEH text (with its trailing newline), written after the
    /// Delivered-To line and given to programs and forwards as `$QQEH`.
    public var qqeh: String
    /// The default delivery instructions (qmail-start's argument), as .qmail lines.
    public var defaultDelivery: String
    /// The message (the queue's `mess` file), opened before the identity
    /// switch, as qmail-lspawn hands qmail-local descriptor 0. Must be seekable.
    public var messageFD: Int32
    /// Deliver with the user's identity: per-thread fsuid for files, a child
    /// that switches uid for programs and forwards. False when the engine
    /// already runs as that user.
    public var switchIdentity: Bool
    /// The environment programs and forwards start from; nil = this process's.
    public var environment: [String]?
    /// qmail-local `-n`: deliver nothing, print what would be done.
    public var printOnly: Bool
    /// What qmail-lspawn exports for each delivery (`MESSID`, one variable per
    /// envheaders line): set for programs and forwards, over `environment`.
    public var spawnEnvironment: [String] = []

    public init(user: LocalUser, local: String, domain: String, sender: String, qqeh: String = "",
                defaultDelivery: String, messageFD: Int32, switchIdentity: Bool, environment: [String]? = nil,
                printOnly: Bool = false) {
        self.user = user
        self.local = local
        self.domain = domain
        self.sender = sender
        self.qqeh = qqeh
        self.defaultDelivery = defaultDelivery
        self.messageFD = messageFD
        self.switchIdentity = switchIdentity
        self.environment = environment
        self.printOnly = printOnly
    }

    var recipient: String { local + "@" + domain }
}

/// qmail-local's outcome: exit 0 (success), 100 (permanent), 111 (temporary)
/// with the text it prints.
public struct LocalOutcome: Equatable, Sendable {
    public var exitCode: Int32
    public var text: String
    /// What qmail-local writes on descriptor 2 besides the report (the `-n`
    /// sticky-home warning); the engine never produces any.
    public var warnings: String = ""
    public init(_ code: Int32, _ text: String) { exitCode = code; self.text = text }

    static func temp(_ t: String) -> LocalOutcome { LocalOutcome(111, t + "\n") }
    static func perm(_ t: String) -> LocalOutcome { LocalOutcome(100, t + "\n") }

    /// The spawner letter: K for 0, Z for 111 (and 71, 74, 75), D otherwise.
    public var letter: Character {
        switch exitCode {
        case 0: return "K"
        case 111, 71, 74, 75: return "Z"
        default: return "D"
        }
    }
}

public enum QmailLocal {
    /// Programs' exit codes qmail treats as permanent failures.
    static let permanentProgramCodes: Set<Int32> = [64, 65, 70, 76, 77, 78, 100, 112]

    /// qmail-local's `overquota` text: EDQUOT on a mailbox is permanent.
    static let overQuota = "Recipient's mailbox is full, message returned to sender. (#5.2.2)"

    static let maildirCounter = Atomic<UInt64>(0)

    /// qmail-lspawn's per-delivery variables: `MESSID=<split>/<id>` and, for each
    /// `Name: value` line of the envheaders, NAME (upper case, `-` made `_`) = the
    /// value after the colon and any spaces.
    public static func spawnEnvironment(messid: String, envHeaders: [UInt8]) -> [String] {
        var out = ["MESSID=" + messid]
        for line in envHeaders.split(separator: 10) {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex else { continue }
            let name = line[..<colon].map { b -> UInt8 in
                if b == UInt8(ascii: "-") { return UInt8(ascii: "_") }
                return (b >= 97 && b <= 122) ? b - 32 : b
            }
            let value = line[line.index(after: colon)...].drop { $0 == 32 || $0 == 9 }
            out.append(String(decoding: name, as: UTF8.self) + "=" + String(decoding: value, as: UTF8.self))
        }
        return out
    }

    public static func deliver(_ req: LocalDeliveryRequest) -> LocalOutcome {
        if req.user.uid == 0 { return .temp("Not allowed to perform deliveries as root. (#4.3.0)") }
        if req.switchIdentity {
            if qs_thread_identity(req.user.uid, req.user.gid) != 0 {
                _ = qs_thread_identity(geteuid(), getegid())
                return .temp("Unable to set proper uid, gid for \(req.user.user). (#4.3.0)")
            }
        }
        defer { if req.switchIdentity { _ = qs_thread_identity(geteuid(), getegid()) } }
        return run(req)
    }

    /// What every line of one delivery shares: the header lines qmail-local
    /// builds once, the message, and the sender forwards and programs get.
    struct Delivery {
        var req: LocalDeliveryRequest
        /// Read in chunks where it is written: memory does not grow with its size.
        var message: MessageFile
        var dtline: [UInt8]
        var rpline: [UInt8]
        var ufline: [UInt8]
        var newSender: String
        var defaultPart: String?
    }

    static func run(_ req: LocalDeliveryRequest) -> LocalOutcome {
        let home = req.user.home
        // qmail-local's chdir(home): it fails with the reason as error_str gives it.
        let (homeStat, err) = Sys.statWithErrno(home)
        guard let st = homeStat else {
            return .temp("Unable to switch to \(home): \(QmailErrorText.text(err)). (#4.3.0)")
        }
        if (st.st_mode & S_IFMT) != S_IFDIR {
            return .temp("Unable to switch to \(home): \(QmailErrorText.text(ENOTDIR)). (#4.3.0)")
        }
        // Search permission for the identity this thread delivers as: with AT_EACCESS the
        // kernel (faccessat2, Linux 5.8+) checks the thread's file-system uid.
        if faccessat(AT_FDCWD, home, X_OK, AT_EACCESS) == -1 {
            return .temp("Unable to switch to \(home): \(QmailErrorText.text(qs_errno())). (#4.3.0)")
        }
        if st.st_mode & 0o002 != 0 { return .temp("Uh-oh: home directory is writable. (#4.7.0)") }
        var warnings = ""
        if st.st_mode & 0o1000 != 0 {
            if !req.printOnly { return .temp("Home directory is sticky: user is editing his .qmail file. (#4.2.1)") }
            warnings = "Warning: home directory is sticky.\n"
        }
        var outcome = run(req, home: home)
        outcome.warnings = warnings
        return outcome
    }

    static func run(_ req: LocalDeliveryRequest, home: String) -> LocalOutcome {
        let dtline = deliveredToLine(req.recipient)
        // The message, and loop detection on our Delivered-To line (not with -n).
        var message = MessageFile(bytes: [])
        if !req.printOnly {
            guard let m = try? MessageFile(fd: req.messageFD), let looping = try? hasDeliveredTo(m, dtline) else {
                return .temp("Unable to read message. (#4.3.0)")
            }
            message = m
            if looping {
                return .perm("This message is looping: it already has my Delivered-To line. (#5.4.6)")
            }
        }
        let rpline = returnPathLine(req.sender)
        let ufline = fromLine(req.sender, time: time(nil))

        // Find the instructions.
        let safeext = safeExtension(req.user.ext)
        var found: DotQmail?
        switch searchDotQmail(home: home, dash: req.user.dash, safeext: safeext, ext: Array(req.user.ext.utf8)) {
        case .found(let f): found = f
        case .none: found = nil
        case .failure(let o): return o
        }
        defer { if let f = found { close(f.fd) } }
        if found == nil && !req.user.dash.isEmpty { return .perm("Sorry, no mailbox here by that name. (#5.1.1)") }

        // The sender of forwards and $NEWSENDER: the list owner when there is one.
        var newSender = req.sender
        if req.sender != "" && req.sender != "#@[]" {
            let prefix = ".qmail" + req.user.dash + String(decoding: safeext, as: UTF8.self)
            switch ownerFileExists(home: home, name: prefix + "-owner") {
            case .failure(let o): return o
            case .found:
                switch ownerFileExists(home: home, name: prefix + "-owner-default") {
                case .failure(let o): return o
                case .found: newSender = req.local + "-owner-@" + req.domain + "-@[]"
                case .none: newSender = req.local + "-owner@" + req.domain
                }
            case .none: break
            }
        }

        var cmds: [UInt8] = []
        var forwardOnly = false
        if let f = found {
            guard let bytes = try? Sys.readAll(f.fd) else {
                return .temp("Unable to read \(f.name): \(QmailErrorText.text(qs_errno())). (#4.3.0)")
            }
            cmds = bytes
            forwardOnly = f.userExecutable
        }
        if cmds.isEmpty {
            cmds = Array(req.defaultDelivery.utf8)
            forwardOnly = false
        }
        if cmds.last != 10 { cmds.append(10) }

        let d = Delivery(req: req, message: message, dtline: dtline, rpline: rpline, ufline: ufline,
                         newSender: newSender, defaultPart: found?.defaultPart)
        return carryOut(&cmds, forwardOnly: forwardOnly, d)
    }

    /// qmail-local's loop over the lines, on the bytes as it does it: a line
    /// ends at a newline; trailing spaces and tabs are cut; a NUL byte ends
    /// the text of a line.
    static func carryOut(_ cmds: inout [UInt8], forwardOnly: Bool, _ d: Delivery) -> LocalOutcome {
        let doit = !d.req.printOnly
        var forwardOnly = forwardOnly
        var counts = (file: 0, forward: 0, program: 0)
        var recipients: [[UInt8]] = []
        // Programs' output and -n's lines: they share qmail-local's descriptor 1,
        // so they come before whatever ends the delivery.
        var out: [UInt8] = []
        var flag99 = false
        func fail(_ o: LocalOutcome) -> LocalOutcome { LocalOutcome(o.exitCode, String(decoding: out, as: UTF8.self) + o.text) }
        func say(_ type: String, _ from: Int, _ to: Int) { out += Array(type.utf8) + cmds[from..<to] + [10] }
        func cString(_ from: Int) -> [UInt8] {
            var e = from
            while e < cmds.count && cmds[e] != 0 { e += 1 }
            return Array(cmds[from..<e])
        }
        func program(_ from: Int, _ to: Int) -> LocalOutcome? {
            counts.program += 1
            if forwardOnly { return .temp("Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)") }
            if !doit { say("program ", from, to); return nil }
            let r = runProgram(cString(from), d)
            out += Array(r.text.utf8)
            switch r.exitCode {
            case 0: return nil
            case 99: flag99 = true; return nil
            default: return LocalOutcome(r.exitCode, "")
            }
        }

        var i = 0
        var j = 0
        lines: while j < cmds.count {
            defer { j += 1 }
            guard cmds[j] == 10 else { continue }
            cmds[j] = 0
            var k = j
            while k > i && (cmds[k - 1] == 32 || cmds[k - 1] == 9) { k -= 1; cmds[k] = 0 }
            switch cmds[i] {
            case 0:
                if i == 0 { return fail(.temp("Uh-oh: first line of .qmail file is blank. (#4.2.1)")) }
            case UInt8(ascii: "#"), UInt8(ascii: ":"):
                break
            case UInt8(ascii: "."), UInt8(ascii: "/"):
                counts.file += 1
                if forwardOnly { return fail(.temp("Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)")) }
                let isMaildir = cmds[k - 1] == UInt8(ascii: "/")
                if !doit {
                    say(isMaildir ? "maildir " : "mbox ", i, k)
                } else {
                    let fn = String(decoding: cString(i), as: UTF8.self)
                    let r = isMaildir ? deliverMaildir(fn, d) : deliverMbox(fn, d)
                    if r.exitCode != 0 { return fail(r) }
                }
            case UInt8(ascii: "|"):
                if let r = program(i + 1, k) { return fail(r) }
            case UInt8(ascii: "?"):
                // indimail's branch: "?label command" runs the command; when it
                // exits 99, or there is no command, delivery goes on after ":label".
                i += 1
                var l = i
                while l < k {
                    if cmds[l] == 32 || cmds[l] == 9 {
                        cmds[l] = 0
                        l += 1
                        while l < k {
                            if cmds[l] != 32 && cmds[l] != 9 {
                                if let r = program(l, k) { return fail(r) }
                                break
                            }
                            l += 1
                        }
                        break
                    }
                    l += 1
                }
                if l == k || flag99 {
                    flag99 = false
                    cmds[j] = 10
                    while j + 1 < cmds.count {
                        if cmds[j] == 10 && cmds[j + 1] == UInt8(ascii: ":") {
                            j += 2
                            l = j
                            while j < cmds.count && cmds[j] != 0 && cmds[j] != 9 && cmds[j] != 10 && cmds[j] != 32 { j += 1 }
                            if labelMatches(cmds, label: i, target: l, count: j - l) {
                                while j < cmds.count && cmds[j] != 10 { j += 1 }
                                break
                            }
                            j -= 1
                        }
                        j += 1
                    }
                }
            case UInt8(ascii: "+"):
                if cString(i + 1) == Array("list".utf8) { forwardOnly = true }
            default:
                if cmds[i] == UInt8(ascii: "&") { i += 1 }
                counts.forward += 1
                if doit { recipients.append(cString(i)) } else { say("forward ", i, k) }
            }
            i = j + 1
            if flag99 { break lines }
        }
        var qp: Int32? = nil
        if !recipients.isEmpty && doit {
            switch forward(recipients, d) {
            case .success(let p): qp = p
            case .failure(let o): return fail(o)
            }
        }
        out += Array("did \(counts.file)+\(counts.forward)+\(counts.program)\n".utf8)
        if let qp { out += Array("qp \(qp)\n".utf8) }
        return LocalOutcome(0, String(decoding: out, as: UTF8.self))
    }

    /// qmail's `str_diffn(label, target, count) == 0`: the first `count` bytes
    /// of the branch's label equal the target's, a NUL in the label ending it.
    static func labelMatches(_ cmds: [UInt8], label: Int, target: Int, count: Int) -> Bool {
        for n in 0..<max(count, 0) {
            let x = label + n < cmds.count ? cmds[label + n] : 0
            if x != cmds[target + n] { return false }
            if x == 0 { return true }
        }
        return true
    }

    // MARK: The lines qmail-local writes

    /// `Delivered-To: <local>@<host>` with any newline made `_`, and a newline.
    static func deliveredToLine(_ recipient: String) -> [UInt8] {
        Array("Delivered-To: ".utf8) + recipient.utf8.map { $0 == 10 ? UInt8(ascii: "_") : $0 } + [10]
    }

    /// `Return-Path: <quote2(sender)>` with any newline made `_`, and a newline.
    static func returnPathLine(_ sender: String) -> [UInt8] {
        let line = Array("Return-Path: <".utf8) + AddressQuoting.quote2(Array(sender.utf8))
        return line.map { $0 == 10 ? UInt8(ascii: "_") : $0 } + Array(">\n".utf8)
    }

    /// The mbox `From ` line (`$UFLINE`): the sender with spaces, tabs and
    /// newlines made `-` (MAILER-DAEMON when empty), and qmail's myctime.
    static func fromLine(_ sender: String, time t: time_t) -> [UInt8] {
        let who: [UInt8] = sender.isEmpty ? Array("MAILER-DAEMON".utf8)
            : sender.utf8.map { $0 == 32 || $0 == 9 || $0 == 10 ? UInt8(ascii: "-") : $0 }
        return Array("From ".utf8) + who + [32] + Array(Date822.myctime(t).utf8)
    }


    /// The extension as qmail-local looks files up by: ASCII lower case, `.` made `:`.
    static func safeExtension(_ ext: String) -> [UInt8] {
        ext.utf8.map { c in
            if c == UInt8(ascii: ".") { return UInt8(ascii: ":") }
            return c >= 65 && c <= 90 ? c + 32 : c
        }
    }

    /// bouncexf(): a header line equal, byte for byte, to our Delivered-To
    /// line. The header ends at an empty line or at a last line without a newline.
    static func hasDeliveredTo(_ message: [UInt8], _ dtline: [UInt8]) -> Bool {
        (try? hasDeliveredTo(MessageFile(bytes: message), dtline)) ?? false
    }

    /// The same over the message file, read in chunks until the header ends.
    static func hasDeliveredTo(_ message: MessageFile, _ dtline: [UInt8]) throws(SystemError) -> Bool {
        var buffer: [UInt8] = []
        var offset = 0
        var pos = 0            // bytes of the current line so far
        var matching = true    // the line so far is the start of dtline
        while offset < message.count {
            try message.read(at: offset, count: MessageFile.chunkSize, into: &buffer)
            for b in buffer {
                if b == 10 {
                    if pos == 0 { return false }   // the empty line: end of the header
                    if matching && pos + 1 == dtline.count { return true }
                    pos = 0
                    matching = true
                } else {
                    if matching && (pos >= dtline.count || dtline[pos] != b) { matching = false }
                    pos += 1
                }
            }
            offset += buffer.count
        }
        return false
    }

    // MARK: Finding the .qmail file

    struct DotQmail {
        var name: String
        var fd: Int32
        var userExecutable: Bool
        var defaultPart: String?
    }

    enum Search<T> { case found(T), none, failure(LocalOutcome) }

    /// qmail's error_temp(): the errors that may go away by themselves.
    static func isTemporary(_ e: Int32) -> Bool {
        [EINTR, ENOMEM, ETXTBSY, EIO, ETIMEDOUT, EWOULDBLOCK, EAGAIN, EDEADLK, EBUSY, ENFILE, EMFILE, EFBIG, ENOSPC,
         ENETDOWN, ENETUNREACH, ENETRESET, ECONNABORTED, ECONNRESET, ENOBUFS, ETOOMANYREFS, ECONNREFUSED,
         EHOSTDOWN, EHOSTUNREACH, EUSERS, EDQUOT, ESTALE, ENOLCK].contains(e)
    }

    static func unableToOpen(_ name: String, _ e: Int32) -> LocalOutcome {
        .temp("Unable to open \(name): \(QmailErrorText.text(e)). (#4.3.0)")
    }

    /// qmeexists(): open the candidate; a temporary error, EPERM or EACCES is a
    /// deferral, any other error means there is none; only a regular file counts.
    static func openDotQmail(home: String, name: String) -> Search<(fd: Int32, userExecutable: Bool)> {
        let fd = open(home + "/" + name, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd == -1 {
            let e = qs_errno()
            if isTemporary(e) || e == EPERM || e == EACCES { return .failure(unableToOpen(name, e)) }
            return .none
        }
        guard let st = try? Sys.fstat(fd) else {
            let e = qs_errno()
            close(fd)
            return .failure(unableToOpen(name, e))
        }
        if (st.st_mode & S_IFMT) == S_IFREG {
            if st.st_mode & 0o002 != 0 { close(fd); return .failure(.temp("Uh-oh: .qmail file is writable. (#4.7.0)")) }
            return .found((fd, st.st_mode & 0o100 != 0))
        }
        close(fd)
        return .none
    }

    /// qmesearch(): `.qmail<dash><safeext>`, then `.qmail<dash><prefix>default`
    /// for each prefix of the extension that ends at a `-`, longest first, down
    /// to the empty one. `$DEFAULT` is the rest of the extension as given.
    static func searchDotQmail(home: String, dash: String, safeext: [UInt8], ext: [UInt8]) -> Search<DotQmail> {
        let exact = ".qmail" + dash + String(decoding: safeext, as: UTF8.self)
        switch openDotQmail(home: home, name: exact) {
        case .failure(let o): return .failure(o)
        case .found(let f):
            var def: String? = nil
            if safeext.count >= 7 && safeext.suffix(7).elementsEqual("default".utf8) && safeext.count - 7 <= ext.count {
                def = String(decoding: ext[(safeext.count - 7)...], as: UTF8.self)
            }
            return .found(DotQmail(name: exact, fd: f.fd, userExecutable: f.userExecutable, defaultPart: def))
        case .none: break
        }
        var i = safeext.count
        while i >= 0 {
            if i == 0 || safeext[i - 1] == UInt8(ascii: "-") {
                let name = ".qmail" + dash + String(decoding: safeext[..<i], as: UTF8.self) + "default"
                switch openDotQmail(home: home, name: name) {
                case .failure(let o): return .failure(o)
                case .found(let f):
                    let def = i <= ext.count ? String(decoding: ext[i...], as: UTF8.self) : nil
                    return .found(DotQmail(name: name, fd: f.fd, userExecutable: f.userExecutable, defaultPart: def))
                case .none: break
                }
            }
            i -= 1
        }
        return .none
    }

    /// qmeox(): does `.qmail<dash><safeext>-owner…` exist (stat)? A temporary error is a deferral.
    static func ownerFileExists(home: String, name: String) -> Search<Void> {
        let (st, e) = Sys.statWithErrno(home + "/" + name)
        if st != nil { return .found(()) }
        if isTemporary(e) { return .failure(unableToOpen(name, e)) }
        return .none
    }

    // MARK: Deliveries

    static func uniqueName() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        let n = maildirCounter.wrappingAdd(1, ordering: .relaxed).newValue
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let h = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).replacingOccurrences("/", "\\057").replacingOccurrences(":", "\\072")
        return "\(tv.tv_sec).M\(tv.tv_usec)P\(getpid())Q\(n).\(h)"
    }

    /// A line's path: absolute, or relative to the home directory.
    static func path(_ fn: String, _ d: Delivery) -> String {
        fn.hasPrefix("/") ? fn : d.req.user.home + "/" + fn.dropFirst(fn.hasPrefix("./") ? 2 : 0)
    }

    /// Maildir: unique file in tmp/ with Return-Path, Delivered-To, the QQEH
    /// text and the message, fsynced, linked into new/. EDQUOT anywhere is
    /// qmail's permanent "mailbox is full".
    static func deliverMaildir(_ fn: String, _ d: Delivery) -> LocalOutcome {
        let dir = path(fn, d)
        guard let st = try? Sys.stat(dir), (st.st_mode & S_IFMT) == S_IFDIR else {
            return .temp("Unable to chdir to maildir. (#4.2.1)")
        }
        for _ in 0..<3 {
            let name = uniqueName()
            let tmp = dir + "tmp/" + name
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd == -1 {
                let e = qs_errno()
                if e == EEXIST { usleep(2000); continue }
                if e == EDQUOT { return .perm(overQuota) }
                return .temp("Unable to open tmp/\(name): \(SystemError("open", errno: e).reason). (#4.2.1)")
            }
            do {
                try Sys.write(fd, d.rpline + d.dtline + Array(d.req.qqeh.utf8))
                do throws(MessageFileFailure<SystemError>) {
                    try d.message.forEachChunk { (chunk: ArraySlice<UInt8>) throws(SystemError) in
                        let failure = chunk.withUnsafeBytes { raw -> SystemError? in
                            do throws(SystemError) { try Sys.write(fd, raw); return nil } catch { return error }
                        }
                        if let failure { throw failure }
                    }
                } catch {
                    switch error {
                    case .read: close(fd); unlink(tmp); return .temp("Unable to read message. (#4.3.0)")
                    case .body(let e): throw e
                    }
                }
                try Sys.fsync(fd)
                close(fd)
            } catch {
                close(fd); unlink(tmp)
                let se = error.systemError
                if se.errno == EDQUOT { return .perm(overQuota) }
                return .temp(se.isNoSpace ? "Unable to write tmp/\(name): disk full. (#4.3.0)" : "Unable to write tmp/\(name): \(se.reason). (#4.3.0)")
            }
            if link(tmp, dir + "new/" + name) == -1 {
                let se = SystemError("link")
                unlink(tmp)
                if se.errno == EDQUOT { return .perm(overQuota) }
                return .temp("Unable to link tmp/\(name) to new/\(name): \(se.reason). (#4.3.0)")
            }
            unlink(tmp)
            return LocalOutcome(0, "")
        }
        return .temp("Unable to create a unique file name in \(dir)tmp/. (#4.3.0)")
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// mbox: exclusive lock (waited for at most 30 s; delivered without it when
    /// locking fails otherwise), then the From_ line, Return-Path, Delivered-To,
    /// the QQEH text, the message with `>From ` quoting, a blank line; fsync;
    /// a locked file is cut back on failure.
    static func deliverMbox(_ fn: String, _ d: Delivery) -> LocalOutcome {
        let fd = open(path(fn, d), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if fd == -1 { return .temp("Unable to open \(fn): \(QmailErrorText.text(qs_errno())). (#4.2.1)") }
        defer { close(fd) }
        let deadline = monotonicSeconds() + 30
        var locked = true
        while qs_flock_exclusive_nb(fd) == -1 {
            let e = qs_errno()
            if e != EWOULDBLOCK && e != EINTR { locked = false; break }
            if monotonicSeconds() >= deadline { return .temp("File has been locked for 30 seconds straight. (#4.3.0)") }
            usleep(10_000)
        }
        defer { if locked { _ = qs_flock(fd, LOCK_UN) } }
        guard let st = try? Sys.fstat(fd) else { return .temp("Unable to stat \(fn). (#4.3.0)") }
        let start = st.st_size
        var out = d.ufline + d.rpline + d.dtline + Array(d.req.qqeh.utf8)
        var quoter = FromQuoter()
        var unreadable = false
        do throws(SystemError) {
            // The message a chunk at a time, `>From ` quoting carried across chunks.
            do throws(MessageFileFailure<SystemError>) {
                try d.message.forEachChunk { (chunk: ArraySlice<UInt8>) throws(SystemError) in
                    quoter.add(chunk, into: &out)
                    try Sys.write(fd, out)
                    out.removeAll(keepingCapacity: true)
                }
            } catch {
                switch error {
                case .read(let e): unreadable = true; throw e
                case .body(let e): throw e
                }
            }
            quoter.finish(into: &out)
            if !quoter.endedWithNewline { out.append(10) }
            out.append(10)
            try Sys.write(fd, out)
            try Sys.fsync(fd)
        } catch {
            if locked { _ = ftruncate(fd, start) }
            if unreadable { return .temp("Unable to read message. (#4.3.0)") }
            let e = error.errno
            if e == EDQUOT { return .perm(overQuota) }
            return .temp("Unable to write \(fn): \(QmailErrorText.text(e)). (#4.3.0)")
        }
        return LocalOutcome(0, "")
    }

    /// qmail's HOST2, HOST3, HOST4: the host cut at its last `.`, then that cut
    /// at its last `.`, and so on; a cut without a `.` stays as it is.
    static func hostParts(_ host: String) -> [String] {
        let h = Array(host.utf8)
        var i = h.count
        var parts: [String] = []
        for _ in 0..<3 {
            if let dot = h[..<i].lastIndex(of: UInt8(ascii: ".")) { i = dot }
            parts.append(String(decoding: h[..<i], as: UTF8.self))
        }
        return parts
    }

    static func programEnvironment(_ d: Delivery) -> [String] {
        let req = d.req
        var env: [String: String] = [:]
        for entry in (req.environment ?? currentEnvironment()) + req.spawnEnvironment {
            if let eq = entry.firstIndex(of: "=") { env[String(entry[..<eq])] = String(entry[entry.index(after: eq)...]) }
        }
        let u = req.user
        env["SENDER"] = req.sender
        env["NEWSENDER"] = d.newSender
        env["RECIPIENT"] = req.recipient
        env["USER"] = u.user
        env["HOME"] = u.home
        env["LOCAL"] = req.local
        env["HOST"] = req.domain
        env["EXT"] = u.ext
        env["DTLINE"] = String(decoding: d.dtline, as: UTF8.self)
        env["RPLINE"] = String(decoding: d.rpline, as: UTF8.self)
        env["UFLINE"] = String(decoding: d.ufline, as: UTF8.self)
        env["QQEH"] = req.qqeh
        let ext = Array(u.ext)
        var dashes: [Int] = []
        for (i, c) in ext.enumerated() where c == "-" { dashes.append(i) }
        for n in 2...4 {
            env["EXT\(n)"] = dashes.count >= n - 1 ? String(ext[(dashes[n - 2] + 1)...]) : ""
        }
        for (n, part) in zip(2...4, hostParts(req.domain)) { env["HOST\(n)"] = part }
        if let def = d.defaultPart { env["DEFAULT"] = def } else { env["DEFAULT"] = nil }
        return env.map { "\($0.key)=\($0.value)" }
    }

    /// `|command`: `/bin/sh -c command` as the user, in the home folder, with
    /// the message on standard input and the umask of the process (077: the
    /// engine, qmail-lspawn and qmail-local set it at start, as qmail-local does).
    /// Output (capped) is the report text.
    static func runProgram(_ command: [UInt8], _ d: Delivery) -> LocalOutcome {
        let req = d.req
        let input = req.messageFD
        if lseek(input, 0, SEEK_SET) == -1 { return .temp("Unable to rewind message. (#4.3.0)") }
        guard let out = try? Spawn.pipe() else { return .temp("Unable to create pipe. (#4.3.0)") }
        let env = programEnvironment(d)
        let creds: Spawn.Credentials? = req.switchIdentity ? .init(uid: req.user.uid, gid: req.user.gid) : nil
        let script = String(decoding: command, as: UTF8.self)
        let pid: pid_t
        do {
            pid = try Spawn.start("/bin/sh", arguments: ["sh", "-c", script], environment: env,
                                  fds: [.init(input, at: 0), .init(out.write, at: 1), .init(out.write, at: 2)],
                                  keepStandard: false, directory: req.user.home, credentials: creds)
        } catch {
            Sys.close(out.read); Sys.close(out.write)
            return .temp("Unable to run /bin/sh: \(error.systemError.reason). (#4.3.0)")
        }
        Sys.close(out.write)
        var text = (try? Sys.readAll(out.read, limit: 3000)) ?? []
        // Drain the rest so the program is not blocked on a full pipe.
        Sys.discardToEnd(out.read)
        Sys.close(out.read)
        if let nul = text.firstIndex(of: 0) { text = Array(text[..<nul]) }
        let status = (try? Spawn.wait(pid)) ?? .signaled(0)
        let output = String(decoding: text, as: UTF8.self)
        switch status {
        case .signaled:
            return LocalOutcome(111, output + "Aack, child crashed. (#4.3.0)\n")
        case .exited(let code):
            if code == 0 || code == 99 { return LocalOutcome(code, output) }
            if code == 126 || code == 127 { return LocalOutcome(111, output.isEmpty ? "Unable to run program. (#4.3.0)\n" : output) }
            if permanentProgramCodes.contains(code) { return LocalOutcome(100, output.isEmpty ? "Program refused the message. (#5.2.0)\n" : output) }
            return LocalOutcome(111, output.isEmpty ? "Program exited \(code). (#4.3.0)\n" : output)
        }
    }

    enum ForwardResult { case success(Int32), failure(LocalOutcome) }

    /// Forwards through the queue-client layer: our Delivered-To line and the
    /// QQEH text on top, from the list owner when there is one (NEWSENDER).
    static func forward(_ addresses: [[UInt8]], _ d: Delivery) -> ForwardResult {
        let req = d.req
        var env = req.environment ?? currentEnvironment()
        for v in req.spawnEnvironment {
            let name = v.prefix { $0 != "=" } + "="
            env.removeAll { $0.hasPrefix(name) }
            env.append(v)
        }
        env.removeAll { $0.hasPrefix("QQEH=") }
        if !req.qqeh.isEmpty { env.append("QQEH=" + req.qqeh) }
        let session: QueueSession
        do { session = try QueueSession(program: QueueSession.chooseProgram(), environment: env) } catch {
            let text = error.description
            return .failure(LocalOutcome(111, "Unable to forward message: \(text.dropFirst()). (#4.3.0)\n"))
        }
        session.put(d.dtline + Array(req.qqeh.utf8))
        do throws(MessageFileFailure<Never>) {
            try d.message.forEachChunk { (chunk: ArraySlice<UInt8>) throws(Never) in session.put(chunk) }
        } catch {
            session.fail()
            _ = session.close()
            return .failure(LocalOutcome(111, "Unable to read message. (#4.3.0)\n"))
        }
        session.from(d.newSender)
        for a in addresses { session.to(a) }
        let r = session.close()
        if r.isQueued { return .success(session.qp) }
        return .failure(LocalOutcome(r.isPermanent ? 100 : 111, "Unable to forward message: \(r.message).\n"))
    }
}

func currentEnvironment() -> [String] {
    var out: [String] = []
    var p = environ
    while let e = p.pointee { out.append(String(cString: e)); p += 1 }
    return out
}

extension String {
    func replacingOccurrences(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}

/// mbox's `>From ` quoting over a message given in pieces: a line that starts
/// with `From `, after any number of `>`, gets one more `>` in front. The `>`
/// and the part of `From ` seen so far at a line's start are held back until
/// the line shows whether it matches; the state carries across pieces.
struct FromQuoter {
    static let from = Array("From ".utf8)
    var scanning = true     // still inside the `>*From ` start of the line
    var held = 0            // `>` bytes held back
    var matched = 0         // bytes of "From " matched after them
    var endedWithNewline = false   // an empty message gets its newline too

    mutating func flushHeld(into out: inout [UInt8]) {
        if held > 0 { out.append(contentsOf: repeatElement(UInt8(ascii: ">"), count: held)) }
        out.append(contentsOf: FromQuoter.from[0..<matched])
        held = 0
        matched = 0
    }

    mutating func add(_ bytes: ArraySlice<UInt8>, into out: inout [UInt8]) {
        for b in bytes {
            if scanning {
                if matched == 0 && b == UInt8(ascii: ">") { held += 1; continue }
                if b == FromQuoter.from[matched] {
                    matched += 1
                    if matched == FromQuoter.from.count {
                        out.append(UInt8(ascii: ">"))
                        flushHeld(into: &out)
                        scanning = false
                    }
                    continue
                }
                flushHeld(into: &out)
                scanning = false
            }
            out.append(b)
            if b == 10 { scanning = true }
        }
        if let last = bytes.last { endedWithNewline = last == 10 }
    }

    /// The held-back start of a last line that ended inside it.
    mutating func finish(into out: inout [UInt8]) {
        if held > 0 || matched > 0 { endedWithNewline = false }
        flushHeld(into: &out)
    }
}
