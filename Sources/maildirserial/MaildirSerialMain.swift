#if canImport(Glibc)
import Glibc
#endif
import Receipts
import QueueClient
import QueueFormat
import ControlFiles
import SystemIO

/// maildirserial (indimail-mta `maildirserial.c`, from djb's serialmail): hands
/// the messages of a maildir, oldest first, to a client program that delivers
/// them one by one and reports `filename\0` + K/Z/D + text + `\n` for each;
/// removes delivered messages and optionally bounces refused ones.
///
/// indimail-mta forks a scanner process per round that starts the client and
/// feeds it names; here one process does both, with poll() between feeding
/// names and reading results. What is observable (client arguments, input,
/// working directory, log lines, exit codes) is the same.
enum MaildirSerialMain {
    static let usageLine = "maildirserial: usage: maildirserial [ -b ] [ -t lifetime ] dir prefix client [ arg ... ]"

    static let help = """
    usage: maildirserial [-b] [-t lifetime] dir prefix client [arg ...]

    Feeds the messages in the maildir dir (new/ and cur/, oldest first, only those
    older than the current second) to client, run with its arguments in dir: each
    file name followed by a NUL on the client's standard input. The client answers
    on its standard output, per message: the file name, a NUL, a status letter
    (K delivered, Z temporary failure, D permanent failure), a text and a newline.
    K: the file is removed. Z and D: the file is left for a later run. Rounds are
    repeated until no file is left to try. tmp/ files unused for 36 hours are removed.
    With a non-empty prefix only messages whose second line is
    "Delivered-To: <prefix>..." are handed over.

    options:
      -b            bounce messages that fail permanently (D) to their
                    Return-Path, then remove them (qmail-local's
                    Return-Path:/Delivered-To: head lines are required)
      -t lifetime   a message older than lifetime seconds (by mtime) whose
                    result is not K is treated as a permanent failure

    control files ($CONTROLDIR): me, bouncefrom (MAILER-DAEMON), bouncehost (me),
      doublebouncehost (me), doublebounceto (postmaster), defaultqueue
    environment: CONTROLDIR, HOME ($HOME/.defaultqueue), QUEUE_BASE, QMAILQUEUE,
      NULLQUEUE, ERROR_FD (bounces are queued through the queue-client layer)
    log (standard error): "maildirserial: info: <file> succeeded: <text>",
      "... failed: ", "... failed temporarily: ", "... bounced: ",
      "maildirserial: info: returned <file>: qp <pid>"
    exit codes: 0 every message handled; 100 usage, or the client exited 100;
      111 some message was left behind, a temporary error, or no progress after
      three rounds without a result

    """

    struct Options {
        var bounce = false
        var lifetime: Int64? = nil
        var dir = ""
        var prefix: [UInt8] = []
        var client: [String] = []
    }

    static func usage() -> Never {
        printError(usageLine)
        exit(100)
    }

    static func fatal(_ text: String, _ code: Int32 = 111) -> Never {
        printError("maildirserial: fatal: " + text)
        exit(code)
    }

    static func warn(_ text: String) { printError("maildirserial: warn: " + text) }

    /// `scan_ulong`: the leading digits, 0 when there are none.
    static func leadingNumber(_ s: String) -> Int64 {
        var v: Int64 = 0
        for c in s.utf8 {
            guard c >= 48 && c <= 57 else { break }
            v = v &* 10 &+ Int64(c - 48)
        }
        return v
    }

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var i = 0
        options: while i < args.count {
            let a = args[i]
            if a == "--" { i += 1; break }
            if !a.hasPrefix("-") || a == "-" { break }
            var chars = Array(a.dropFirst())
            while !chars.isEmpty {
                let c = chars.removeFirst()
                switch c {
                case "b": o.bounce = true
                case "t":
                    var value = String(chars)
                    chars = []
                    if value.isEmpty {
                        i += 1
                        guard i < args.count else { usage() }
                        value = args[i]
                    }
                    o.lifetime = leadingNumber(value)
                default: usage()
                }
            }
            i += 1
            continue options
        }
        guard i + 2 < args.count else { usage() }
        o.dir = args[i]
        o.prefix = Array(args[i + 1].utf8)
        o.client = Array(args[(i + 2)...])
        return o
    }

    static func run() -> Never {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--help" {
            printOut(help)
            exit(0)
        }
        signal(SIGPIPE, SIG_IGN)
        let options = parse(args)
        let control = ControlDirectory.fromEnvironment()
        do {
            for w in try DefaultQueue.setEnvironment(rootAllowed: true, control: control) { warn(w) }
        } catch {
            fatal("\(error)")
        }
        let settings: MaildirBounce.Settings
        do { settings = try readControls(control) } catch { fatal("\(error)") }
        do { try Sys.chdir(options.dir) } catch {
            fatal("unable to chdir to \(options.dir): \(error.systemError.reason)")
        }
        let serial = MaildirSerial(options: options, settings: settings, client: resolve(options.client[0]))
        exit(serial.run())
    }

    static func readControls(_ control: ControlDirectory) throws -> MaildirBounce.Settings {
        func line(_ name: String) throws -> String? {
            guard let l = try control.readLine(name), !l.isEmpty else { return nil }
            return l
        }
        let me = try line("me") ?? "me"
        let bounceFrom = try line("bouncefrom") ?? "MAILER-DAEMON"
        let bounceHost = try line("bouncehost") ?? me
        let doubleBounceHost = try line("doublebouncehost") ?? me
        let doubleBounceTo = try line("doublebounceto") ?? "postmaster"
        return MaildirBounce.Settings(bounceFrom: bounceFrom, bounceHost: bounceHost,
                                      doubleBounceRecipient: doubleBounceTo + "@" + doubleBounceHost)
    }

    /// `execvp`'s search: a name without `/` is looked up in `$PATH`.
    static func resolve(_ name: String) -> String {
        if name.contains("/") { return name }
        let path = Sys.environment("PATH") ?? "/bin:/usr/bin"
        for dir in path.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + name
            if Sys.isExecutable(candidate) { return candidate }
        }
        return name
    }
}

/// One maildirserial run over the current directory (the maildir).
final class MaildirSerial {
    let options: MaildirSerialMain.Options
    let settings: MaildirBounce.Settings
    let clientPath: String
    /// Files given up on for this run (not offered again).
    var dead = Set<String>()
    /// Rounds left without a result before giving up.
    var progress = 3

    init(options: MaildirSerialMain.Options, settings: MaildirBounce.Settings, client: String) {
        self.options = options
        self.settings = settings
        self.clientPath = client
    }

    /// How a round ended (indimail-mta's scanner exit codes).
    enum RoundEnd {
        /// No usable file (scanner exit 0).
        case noFiles
        /// The client exited 100.
        case clientRefused
        /// A fatal problem, already reported (scanner exit 111).
        case trouble
        /// The client finished; look again (scanner exit 30).
        case again
    }

    func run() -> Int32 {
        while true {
            progress -= 1
            switch round() {
            case .noFiles: return dead.isEmpty ? 0 : 111
            case .clientRefused: return 100
            case .trouble: return 111
            case .again: break
            }
            if progress <= 0 {
                printError("maildirserial: fatal: making no progress, giving up")
                return 111
            }
        }
    }

    func usable(_ name: String) -> Bool {
        if dead.contains(name) { return false }
        if options.prefix.isEmpty { return true }
        do {
            let head = try MaildirScan.readHead(name)
            return MaildirScan.deliveredToHasPrefix(head, prefix: options.prefix)
        } catch {
            let e = error.systemError
            MaildirSerialMain.warn("unable to \(e.operation == "open" ? "open" : "read") \(name): \(e.reason)")
            return false
        }
    }

    func round() -> RoundEnd {
        let now = Int64(time(nil))
        MaildirScan.cleanTmp(maildir: ".", now: now)
        let entries: [MaildirScan.Entry]
        do { entries = try MaildirScan.messages(maildir: ".", now: now) } catch {
            printError("maildirserial: fatal: \(error)")
            return .trouble
        }
        let names = entries.map { $0.name }.filter { usable($0) }
        if names.isEmpty { return .noFiles }

        let toClient: (read: Int32, write: Int32)
        let fromClient: (read: Int32, write: Int32)
        do {
            toClient = try Spawn.pipe()
            fromClient = try Spawn.pipe()
        } catch {
            printError("maildirserial: fatal: unable to create pipe: \(error.systemError.reason)")
            return .trouble
        }
        let pid: pid_t
        do {
            pid = try Spawn.start(clientPath, arguments: options.client, environment: nil,
                                  fds: [.init(toClient.read, at: 0), .init(fromClient.write, at: 1)],
                                  keepStandard: true, directory: nil)
        } catch {
            // indimail-mta's child reports this and exits 111: a round without results.
            Sys.close(toClient.read); Sys.close(toClient.write)
            Sys.close(fromClient.read); Sys.close(fromClient.write)
            printError("maildirserial: fatal: unable to run \(options.client[0]): \(error.systemError.reason)")
            return .again
        }
        Sys.close(toClient.read)
        Sys.close(fromClient.write)

        var payload: [UInt8] = []
        for n in names { payload += Array(n.utf8); payload.append(0) }
        exchange(payload: payload, writeFD: toClient.write, readFD: fromClient.read)

        let status: ExitStatus
        do { status = try Spawn.wait(pid) } catch {
            printError("maildirserial: fatal: unable to get client status: \(error.systemError.reason)")
            return .trouble
        }
        switch status {
        case .signaled:
            printError("maildirserial: fatal: client crashed")
            return .trouble
        case .exited(100):
            return .clientRefused
        case .exited:
            return .again
        }
    }

    /// Writes the names (errors ignored, as indimail-mta does) while reading and
    /// acting on results, until the client's output ends.
    func exchange(payload: [UInt8], writeFD initialWriteFD: Int32, readFD: Int32) {
        var writeFD = initialWriteFD
        _ = fcntl(writeFD, F_SETFL, O_NONBLOCK)
        var written = 0
        var parser = ClientResultParser()
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            var fds = [pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)]
            if writeFD >= 0 { fds.append(pollfd(fd: writeFD, events: Int16(POLLOUT), revents: 0)) }
            if poll(&fds, nfds_t(fds.count), -1) == -1 {
                if errno == EINTR { continue }
                MaildirSerialMain.fatal("unable to read from client: \(SystemError("poll").reason)")
            }
            if writeFD >= 0 && fds[1].revents != 0 {
                let n = payload.withUnsafeBytes { raw in
                    Glibc.write(writeFD, raw.baseAddress! + written, raw.count - written)
                }
                if n > 0 {
                    written += n
                } else if n == -1 && (errno == EAGAIN || errno == EINTR) {
                    // try again
                } else {
                    written = payload.count
                }
                if written >= payload.count {
                    Sys.close(writeFD)
                    writeFD = -1
                }
            }
            if fds[0].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { raw in Glibc.read(readFD, raw.baseAddress!, raw.count) }
                if n == -1 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    MaildirSerialMain.fatal("unable to read from client: \(SystemError("read").reason)")
                }
                if n == 0 { break }
                for result in parser.feed(buffer[0..<n]) { handle(result) }
            }
        }
        if writeFD >= 0 { Sys.close(writeFD) }
        Sys.close(readFD)
    }

    func info(_ name: String, _ what: String, _ text: [UInt8]) {
        var line = Array("maildirserial: info: \(name)\(what)".utf8)
        line += text
        line.append(10)
        try? Sys.write(2, line)
    }

    func handle(_ result: ClientResult) {
        progress = 3
        let name = result.filenameString
        var status = result.status
        if status == UInt8(ascii: "K") {
            info(name, " succeeded: ", result.text)
            do { try Sys.unlink(name) } catch {
                MaildirSerialMain.warn("message will be delivered twice! unable to unlink \(name): \(error.systemError.reason)")
                dead.insert(name)
            }
            return
        }
        var timedOut = false
        if let lifetime = options.lifetime, status != UInt8(ascii: "D") {
            do {
                if let st = try Sys.stat(name) {
                    if Int64(time(nil)) > Int64(st.st_mtim.tv_sec) + lifetime {
                        status = UInt8(ascii: "D")
                        timedOut = true
                    }
                } else {
                    throw SystemError("stat", path: name, errno: ENOENT)
                }
            } catch {
                MaildirSerialMain.warn("assuming message is still alive; unable to stat \(name): \(error.systemError.reason)")
            }
        }
        if options.bounce && status == UInt8(ascii: "D") {
            info(name, " bounced: ", result.text)
            bounce(name, why: result.text, timedOut: timedOut)
            return
        }
        info(name, status == UInt8(ascii: "D") ? " failed: " : " failed temporarily: ", result.text)
        dead.insert(name)
    }

    func bounce(_ name: String, why: [UInt8], timedOut: Bool) {
        let file: [UInt8]
        do {
            let fd = try Sys.open(name, O_RDONLY)
            defer { Sys.close(fd) }
            do { file = try Sys.readAll(fd, path: name) } catch {
                MaildirSerialMain.warn("unable to bounce \(name): \(error.systemError.reason)")
                dead.insert(name)
                return
            }
        } catch {
            MaildirSerialMain.warn("unable to read \(name): \(error.systemError.reason)")
            dead.insert(name)
            return
        }
        guard let head = MaildirBounce.parseHead(file) else {
            MaildirSerialMain.warn("unable to bounce \(name): bad file format")
            dead.insert(name)
            return
        }
        switch MaildirBounce.plan(head, settings: settings) {
        case .discardTripleBounce:
            printError("maildirserial: info: discarding \(name): triple bounce")
        case let .send(envelopeSender, recipient):
            let session: QueueSession
            do { session = try QueueSession() } catch {
                if [ENOENT, EACCES, ENOEXEC, ENOTDIR].contains(error.cause.errno) {
                    // The queue program could not be executed: qq's "unable to exec qq".
                    MaildirSerialMain.warn("unable to bounce \(name): qq failed: \(String(decoding: error.text.dropFirst(), as: UTF8.self))")
                    dead.insert(name)
                    return
                }
                MaildirSerialMain.fatal("unable to run qq: \(error.cause.reason)")
            }
            let now = Int64(time(nil))
            let bytes = MaildirBounce.compose(head: head, file: file, why: why, timedOut: timedOut, prefix: options.prefix,
                                              settings: settings, date: Date822.classicUTC(time_t(now)),
                                              taiLabel: MaildirBounce.taiLabel(unixTime: now), qp: session.qp)
            session.put(bytes)
            session.from(envelopeSender)
            session.to(recipient)
            let result = session.close()
            if !result.isQueued {
                MaildirSerialMain.warn("unable to bounce \(name): qq failed: \(result.message)")
                dead.insert(name)
                return
            }
            printError("maildirserial: info: returned \(name): qp \(session.qp)")
        }
        do { try Sys.unlink(name) } catch {
            MaildirSerialMain.warn("message has been bounced but not removed! unable to unlink \(name): \(error.systemError.reason)")
            dead.insert(name)
        }
    }
}
