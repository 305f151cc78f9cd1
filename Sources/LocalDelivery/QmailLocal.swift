#if canImport(Glibc)
import Glibc
#endif
import CShims
import Synchronization
import SystemIO
import QueueClient

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
    /// `maxdeliveredto`-style loop limit; nil = only our own line counts.
    public var environment: [String]?

    public init(user: LocalUser, local: String, domain: String, sender: String, qqeh: String = "",
                defaultDelivery: String, messageFD: Int32, switchIdentity: Bool, environment: [String]? = nil) {
        self.user = user
        self.local = local
        self.domain = domain
        self.sender = sender
        self.qqeh = qqeh
        self.defaultDelivery = defaultDelivery
        self.messageFD = messageFD
        self.switchIdentity = switchIdentity
        self.environment = environment
    }

    var recipient: String { local + "@" + domain }
}

/// qmail-local's outcome: exit 0 (success), 100 (permanent), 111 (temporary)
/// with the text it prints.
public struct LocalOutcome: Equatable, Sendable {
    public var exitCode: Int32
    public var text: String
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

    static let maildirCounter = Atomic<UInt64>(0)

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
        if st.st_mode & 0o1000 != 0 { return .temp("Home directory is sticky: user is editing his .qmail file. (#4.2.1)") }

        // The message, and loop detection on our Delivered-To line.
        if lseek(req.messageFD, 0, SEEK_SET) == -1 { return .temp("Unable to rewind message. (#4.3.0)") }
        guard let message = try? Sys.readAll(req.messageFD) else { return .temp("Unable to read message. (#4.3.0)") }
        let dtline = "Delivered-To: " + req.recipient + "\n"
        if hasDeliveredTo(message, dtline) {
            return .perm("This message is looping: it already has my Delivered-To line. (#5.4.6)")
        }

        // Find the instructions.
        let found = findDotQmail(req)
        var lines: [String]
        var defaultPart: String? = nil
        switch found {
        case .none:
            if !req.user.ext.isEmpty { return .perm("Sorry, no mailbox here by that name. (#5.1.1)") }
            lines = splitLines(req.defaultDelivery)
        case let .file(path, def):
            defaultPart = def
            guard let fst = try? Sys.stat(path) else { return .temp("Unable to read \(path). (#4.3.0)") }
            if fst.st_mode & 0o022 != 0 { return .temp("Uh-oh: .qmail file is writable. (#4.7.0)") }
            guard let bytes = try? Sys.readFile(path) else { return .temp("Unable to read \(path). (#4.3.0)") }
            lines = splitLines(String(decoding: bytes, as: UTF8.self))
            if bytes.isEmpty { lines = splitLines(req.defaultDelivery) }
        case .failure(let text):
            return .temp(text)
        }

        let rpline = "Return-Path: <" + req.sender + ">\n"
        var counts = (file: 0, forward: 0, program: 0)
        var qps: [String] = []
        var forwards: [String] = []
        // Programs' output is part of the report, as it shares qmail-local's descriptor 1.
        var programOutput = ""
        for line in lines {
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("|") {
                let r = runProgram(String(line.dropFirst()), req, message: message, dtline: dtline, rpline: rpline, defaultPart: defaultPart)
                if r.exitCode != 0 && r.exitCode != 99 { return LocalOutcome(r.exitCode, programOutput + r.text) }
                programOutput += r.text
                counts.program += 1
                if r.exitCode == 99 { break }
            } else if line.hasPrefix("/") || line.hasPrefix(".") {
                let path = line.hasPrefix("/") ? line : home + "/" + line.dropFirst(line.hasPrefix("./") ? 2 : 0)
                let r = line.hasSuffix("/") ? deliverMaildir(path, message: message, dtline: dtline, rpline: rpline)
                                            : deliverMbox(path, message: message, dtline: dtline, rpline: rpline, sender: req.sender)
                if r.exitCode != 0 { return r }
                counts.file += 1
            } else {
                let addr = line.hasPrefix("&") ? String(line.dropFirst()) : line
                forwards.append(addr.trimmingSpaces())
            }
        }
        if !forwards.isEmpty {
            let r = forward(forwards, req: req, message: message, dtline: dtline)
            switch r {
            case .success(let qp):
                counts.forward += forwards.count
                qps.append("qp \(qp)")
            case .failure(let outcome):
                return outcome
            }
        }
        var text = programOutput + "did \(counts.file)+\(counts.forward)+\(counts.program)\n"
        for q in qps { text += q + "\n" }
        return LocalOutcome(0, text)
    }

    static func splitLines(_ s: String) -> [String] {
        s.split(separator: "\n", omittingEmptySubsequences: true).map { String($0).trimmingTrailingSpaces() }
    }

    static func hasDeliveredTo(_ message: [UInt8], _ dtline: String) -> Bool {
        let target = Array(dtline.lowercased().utf8.dropLast())
        var i = 0
        while i < message.count {
            var e = i
            while e < message.count && message[e] != 10 { e += 1 }
            if e == i { return false } // end of header
            if e - i == target.count && message[i..<e].map({ ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 }) == target { return true }
            i = e + 1
        }
        return false
    }

    enum Found { case none, file(String, defaultPart: String?), failure(String) }

    /// qmail-local's search: `.qmail<dash><ext>`, then `.qmail<dash><prefix>-default`
    /// for each shorter prefix ending at a `-`, then `.qmail-default`.
    /// Dots in the extension become `:` and it is lower-cased.
    static func findDotQmail(_ req: LocalDeliveryRequest) -> Found {
        let home = req.user.home
        let ext = req.user.ext.lowercased().map { $0 == "." ? ":" : $0 }
        let dash = req.user.dash
        func exists(_ name: String) -> Bool? {
            let p = home + "/" + name
            if (try? Sys.stat(p)) != nil { return true }
            if qs_errno() == EACCES { return nil }
            return false
        }
        let exact = ".qmail" + dash + String(ext)
        switch exists(exact) {
        case .some(true): return .file(home + "/" + exact, defaultPart: nil)
        case .none: return .failure("Unable to read \(exact). (#4.3.0)")
        default: break
        }
        if dash.isEmpty { return .none }
        var i = ext.count
        while i >= 0 {
            if i == 0 || ext[i - 1] == "-" {
                let name = ".qmail" + dash + String(ext[0..<i]) + "default"
                if exists(name) == true { return .file(home + "/" + name, defaultPart: String(req.user.ext.dropFirst(i))) }
            }
            i -= 1
        }
        return .none
    }

    static func uniqueName() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        let n = maildirCounter.wrappingAdd(1, ordering: .relaxed).newValue
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let h = String(cString: host).replacingOccurrences("/", "\\057").replacingOccurrences(":", "\\072")
        return "\(tv.tv_sec).M\(tv.tv_usec)P\(getpid())Q\(n).\(h)"
    }

    /// Maildir: unique file in tmp/, written and fsynced, linked into new/.
    static func deliverMaildir(_ dir: String, message: [UInt8], dtline: String, rpline: String) -> LocalOutcome {
        guard let st = try? Sys.stat(dir), (st.st_mode & S_IFMT) == S_IFDIR else {
            return .temp("Unable to chdir to maildir. (#4.2.1)")
        }
        for _ in 0..<3 {
            let name = uniqueName()
            let tmp = dir + "tmp/" + name
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd == -1 {
                if qs_errno() == EEXIST { usleep(2000); continue }
                return .temp("Unable to open tmp/\(name): \(SystemError("open").reason). (#4.2.1)")
            }
            do {
                try Sys.write(fd, Array((rpline + dtline).utf8))
                try Sys.write(fd, message)
                try Sys.fsync(fd)
                close(fd)
            } catch {
                close(fd); unlink(tmp)
                let se = error.systemError
                return .temp(se.isNoSpace ? "Unable to write tmp/\(name): disk full. (#4.3.0)" : "Unable to write tmp/\(name): \(se.reason). (#4.3.0)")
            }
            if link(tmp, dir + "new/" + name) == -1 {
                let reason = SystemError("link").reason
                unlink(tmp)
                return .temp("Unable to link tmp/\(name) to new/\(name): \(reason). (#4.3.0)")
            }
            unlink(tmp)
            return LocalOutcome(0, "")
        }
        return .temp("Unable to create a unique file name in \(dir)tmp/. (#4.3.0)")
    }

    /// mbox: exclusive lock, `From ` line, Return-Path, Delivered-To, the message
    /// with `>From ` quoting, a blank line; fsync; cut back on failure.
    static func deliverMbox(_ path: String, message: [UInt8], dtline: String, rpline: String, sender: String) -> LocalOutcome {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if fd == -1 { return .temp("Unable to open \(path): \(SystemError("open").reason). (#4.2.1)") }
        defer { close(fd) }
        var waited = 0
        while qs_flock_exclusive_nb(fd) == -1 {
            if waited >= 30_000 { return .temp("Timeout while locking \(path). (#4.2.1)") }
            usleep(10_000)
            waited += 10
        }
        defer { _ = qs_flock(fd, LOCK_UN) }
        guard let st = try? Sys.fstat(fd) else { return .temp("Unable to stat \(path). (#4.3.0)") }
        let start = st.st_size
        var now = time(nil)
        var buf = [CChar](repeating: 0, count: 64)
        ctime_r(&now, &buf)
        let date = String(cString: buf)   // ends with \n
        var out = Array(("From " + (sender.isEmpty ? "MAILER-DAEMON" : sender) + " " + date).utf8)
        out += Array((rpline + dtline).utf8)
        var i = 0
        while i < message.count {
            var e = i
            while e < message.count && message[e] != 10 { e += 1 }
            var j = i
            while j < e && message[j] == UInt8(ascii: ">") { j += 1 }
            if e - j >= 5 && message[j..<(j + 5)].elementsEqual("From ".utf8) { out.append(UInt8(ascii: ">")) }
            out += message[i..<min(e + 1, message.count)]
            i = e + 1
        }
        if message.last != 10 { out.append(10) }
        out.append(10)
        do {
            try Sys.write(fd, out, path: path)
            try Sys.fsync(fd, path: path)
        } catch {
            _ = ftruncate(fd, start)
            return .temp("Unable to write \(path): \(error.systemError.reason). (#4.3.0)")
        }
        return LocalOutcome(0, "")
    }

    static func programEnvironment(_ req: LocalDeliveryRequest, dtline: String, rpline: String, defaultPart: String?) -> [String] {
        var env: [String: String] = [:]
        for entry in req.environment ?? currentEnvironment() {
            if let eq = entry.firstIndex(of: "=") { env[String(entry[..<eq])] = String(entry[entry.index(after: eq)...]) }
        }
        let u = req.user
        env["SENDER"] = req.sender
        env["NEWSENDER"] = req.sender
        env["RECIPIENT"] = req.recipient
        env["USER"] = u.user
        env["HOME"] = u.home
        env["LOCAL"] = req.local
        env["HOST"] = req.domain
        env["EXT"] = u.ext
        env["DTLINE"] = dtline
        env["RPLINE"] = rpline
        env["UFLINE"] = "From " + (req.sender.isEmpty ? "MAILER-DAEMON" : req.sender) + " " + ufDate() + "\n"
        env["QQEH"] = req.qqeh
        let ext = Array(u.ext)
        var dashes: [Int] = []
        for (i, c) in ext.enumerated() where c == "-" { dashes.append(i) }
        for n in 2...4 {
            env["EXT\(n)"] = dashes.count >= n - 1 ? String(ext[(dashes[n - 2] + 1)...]) : ""
        }
        let host = Array(req.domain)
        var dots: [Int] = []
        for (i, c) in host.enumerated() where c == "." { dots.append(i) }
        for n in 2...4 {
            let k = dots.count - (n - 1)
            env["HOST\(n)"] = k >= 0 && k < dots.count ? String(host[..<dots[k]]) : ""
        }
        if let d = defaultPart { env["DEFAULT"] = d } else { env["DEFAULT"] = nil }
        return env.map { "\($0.key)=\($0.value)" }
    }

    static func ufDate() -> String {
        var now = time(nil)
        var buf = [CChar](repeating: 0, count: 64)
        ctime_r(&now, &buf)
        return String(String(cString: buf).dropLast())
    }

    /// `|command`: `/bin/sh -c command` as the user, in the home folder, with
    /// the message on standard input. Output (capped) is the report text.
    static func runProgram(_ command: String, _ req: LocalDeliveryRequest, message: [UInt8], dtline: String, rpline: String, defaultPart: String?) -> LocalOutcome {
        let input = req.messageFD
        if lseek(input, 0, SEEK_SET) == -1 { return .temp("Unable to rewind message. (#4.3.0)") }
        guard let out = try? Spawn.pipe() else { return .temp("Unable to create pipe. (#4.3.0)") }
        let env = programEnvironment(req, dtline: dtline, rpline: rpline, defaultPart: defaultPart)
        let creds: Spawn.Credentials? = req.switchIdentity ? .init(uid: req.user.uid, gid: req.user.gid) : nil
        let pid: pid_t
        do {
            pid = try Spawn.start("/bin/sh", arguments: ["sh", "-c", command], environment: env,
                                  fds: [.init(input, at: 0), .init(out.write, at: 1), .init(out.write, at: 2)],
                                  keepStandard: false, directory: req.user.home, credentials: creds)
        } catch {
            Sys.close(out.read); Sys.close(out.write)
            return .temp("Unable to run /bin/sh: \(error.systemError.reason). (#4.3.0)")
        }
        Sys.close(out.write)
        var text = (try? Sys.readAll(out.read, limit: 3000)) ?? []
        // Drain the rest so the program is not blocked on a full pipe.
        var sink = [UInt8](repeating: 0, count: 4096)
        while read(out.read, &sink, sink.count) > 0 {}
        Sys.close(out.read)
        if let nul = text.firstIndex(of: 0) { text = Array(text[..<nul]) }
        let status = (try? Spawn.wait(pid)) ?? .signaled(0)
        let output = String(decoding: text, as: UTF8.self)
        switch status {
        case .signaled:
            return LocalOutcome(111, output + "Program crashed. (#4.3.0)\n")
        case .exited(let code):
            if code == 0 || code == 99 { return LocalOutcome(code, output) }
            if code == 126 || code == 127 { return LocalOutcome(111, output.isEmpty ? "Unable to run program. (#4.3.0)\n" : output) }
            if permanentProgramCodes.contains(code) { return LocalOutcome(100, output.isEmpty ? "Program refused the message. (#5.2.0)\n" : output) }
            return LocalOutcome(111, output.isEmpty ? "Program exited \(code). (#4.3.0)\n" : output)
        }
    }

    enum ForwardResult { case success(Int32), failure(LocalOutcome) }

    /// Forwards through the queue-client layer with our Delivered-To line on top.
    static func forward(_ addresses: [String], req: LocalDeliveryRequest, message: [UInt8], dtline: String) -> ForwardResult {
        var env = req.environment ?? currentEnvironment()
        env.removeAll { $0.hasPrefix("QQEH=") }
        if !req.qqeh.isEmpty { env.append("QQEH=" + req.qqeh) }
        let session: QueueSession
        do { session = try QueueSession(program: QueueSession.chooseProgram(), environment: env) } catch {
            let text = (error as? QueueSession.StartFailure)?.description ?? "Zqq unable to exec qq (#4.3.0)"
            return .failure(LocalOutcome(111, "Unable to forward message: \(text.dropFirst()). (#4.3.0)\n"))
        }
        session.put(Array(dtline.utf8))
        session.put(message)
        session.from(req.sender)
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
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
    func trimmingTrailingSpaces() -> String {
        var s = Substring(self)
        while s.last == " " || s.last == "\t" || s.last == "\r" { s = s.dropLast() }
        return String(s)
    }
    func replacingOccurrences(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}
