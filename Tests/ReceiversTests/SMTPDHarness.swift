import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A control folder, a real queue and qmail-smtpd, run the two ways sites run
/// it: one connection on a socket pair (as tcpserver gives it descriptors 0 and
/// 1), or the daemon on 127.0.0.1. Clients here speak raw SMTP lines; the
/// Python smtplib and swaks clients are run as programs.
final class SMTPDHarness {
    let dir: String
    var control: String { dir + "/control" }
    var queue: String { dir + "/queue" }
    var extraEnv: [String: String?] = [:]
    var daemonPIDs: [pid_t] = []

    init() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("smtpd")
        chmod(dir, 0o755)
        let fix = try! TestEnv.run(TestEnv.program("queue-fix"), [queue])
        precondition(fix.exitCode == 0, fix.stderrText)
        mkdir(control, 0o755)
        writeControl("me", "domain\n")
        writeControl("rcpthosts", "domain\n")
    }

    func writeControl(_ name: String, _ text: String) { TestEnv.write(control + "/" + name, text) }

    var environment: [String] {
        var e: [String: String?] = ["QMAILHOME": dir, "QUEUEDIR": queue, "CONTROLDIR": control, "QMAILQUEUE": nil, "NULLQUEUE": nil,
                                   "TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "domain",
                                   "TCPREMOTEHOST": nil, "TCPREMOTEINFO": nil, "RELAYCLIENT": nil, "DATABYTES": nil,
                                   "PENALTY": "0", "HIDE_HOST": nil, "ALLOW_BARELF": nil, "CERTDIR": nil, "SERVERCERT": nil]
        for (k, v) in extraEnv { e[k] = v }
        return TestEnv.environment(e)
    }

    /// A raw SMTP client over a connected descriptor.
    final class Client {
        let fd: Int32
        var buffer: [UInt8] = []
        let pid: pid_t?

        init(fd: Int32, pid: pid_t? = nil) {
            self.fd = fd
            self.pid = pid
            var tv = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }

        func send(_ text: String) { sendBytes(Array(text.utf8)) }

        func sendBytes(_ bytes: [UInt8]) {
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                off += n
            }
        }

        /// One reply line (without CRLF), or nil at the end of the connection.
        func line() -> String? {
            while true {
                if let nl = buffer.firstIndex(of: 10) {
                    var l = Array(buffer[..<nl])
                    buffer.removeFirst(nl + 1)
                    if l.last == 13 { l.removeLast() }
                    return String(decoding: l, as: UTF8.self)
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return nil }
                buffer += chunk[0..<n]
            }
        }

        /// A whole (multi-line) reply.
        func reply() -> [String] {
            var out: [String] = []
            while let l = line() {
                out.append(l)
                if l.count < 4 || l[l.index(l.startIndex, offsetBy: 3)] != "-" { break }
            }
            return out
        }

        /// Sends a command, returns the last line of its reply.
        @discardableResult
        func command(_ text: String) -> String {
            send(text + "\r\n")
            return reply().last ?? "<closed>"
        }

        /// True when the server closed the connection.
        func closedByServer() -> Bool { line() == nil }

        func close() {
            Glibc.close(fd)
            if let pid { _ = try? Spawn.wait(pid) }
        }
    }

    /// qmail-smtpd on a socket pair, as tcpserver starts it; the greeting is read.
    func classic(_ args: [String] = [], env: [String: String?] = [:]) throws -> (Client, [String]) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { throw SystemError("socketpair") }
        var e = environment
        for (k, v) in env { e.removeAll { $0.hasPrefix(k + "=") }; if let v { e.append(k + "=" + v) } }
        let pid = try Spawn.start(TestEnv.program("qmail-smtpd"), arguments: ["qmail-smtpd"] + args, environment: e,
                                  fds: [.init(fds[1], at: 0), .init(fds[1], at: 1)], keepStandard: true)
        Glibc.close(fds[1])
        let c = Client(fd: fds[0], pid: pid)
        return (c, c.reply())
    }

    /// The daemon on 127.0.0.1 (a port of its choosing); returns the port.
    func startDaemon(_ args: [String] = [], env: [String: String?] = [:], program: String = "qmail-smtpd") throws -> Int {
        var e = environment
        for (k, v) in env { e.removeAll { $0.hasPrefix(k + "=") }; if let v { e.append(k + "=" + v) } }
        // A log of its own for each start: the port is read from it.
        let logPath = dir + "/daemon-\(daemonStarts).log"
        daemonStarts += 1
        let log = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { Glibc.close(log) }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { Glibc.close(null) }
        // The daemon serves as nobody: the queue must be that user's to write.
        _ = try TestEnv.run("/bin/chown", ["-R", "65534:65534", queue])
        let pid = try Spawn.start(TestEnv.program(program),
                                  arguments: [program, "--daemon", "--listen", "127.0.0.1:0", "--user", "nobody"] + args,
                                  environment: e, fds: [.init(null, at: 0), .init(log, at: 1), .init(log, at: 2)], keepStandard: false)
        daemonPIDs.append(pid)
        var port = 0
        for _ in 0..<200 {
            let text = String(decoding: TestEnv.read(logPath), as: UTF8.self)
            if let line = text.split(separator: "\n").last(where: { $0.contains("listening on 127.0.0.1:") }),
               let r = line.range(of: "127.0.0.1:") {
                port = Int(line[r.upperBound...].prefix { $0.isNumber }) ?? 0
                if port > 0 { break }
            }
            usleep(20_000)
        }
        if port == 0 { throw SystemError("daemon did not start: \(String(decoding: TestEnv.read(logPath), as: UTF8.self))", errno: EIO) }
        return port
    }

    var daemonStarts = 0
    /// Every daemon log so far, in order.
    var daemonLog: String {
        (0..<daemonStarts).map { String(decoding: TestEnv.read(dir + "/daemon-\($0).log"), as: UTF8.self) }.joined()
    }

    func connect(_ port: Int) throws -> (Client, [String]) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port).bigEndian)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if r != 0 { Glibc.close(fd); throw SystemError("connect") }
        let c = Client(fd: fd)
        return (c, c.reply())
    }

    /// The messages queued so far: (envelope sender, recipients, message bytes).
    func queued() throws -> [(sender: String, recipients: [String], message: String)] {
        var out: [(String, [String], String)] = []
        for name in TestEnv.files(under: queue + "/todo").sorted() {
            let id = UInt64(name.split(separator: "/").last!)!
            let env = try Envelope.parseQueueFile(TestEnv.read(queue + "/todo/" + name))
            let mess = TestEnv.read(queue + "/mess/\(id % 23)/\(id)")
            out.append((String(decoding: env.sender, as: UTF8.self), env.recipients.map { String(decoding: $0, as: UTF8.self) },
                        String(decoding: mess, as: UTF8.self)))
        }
        return out
    }

    func cleanup() {
        for p in daemonPIDs { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        TestEnv.remove(dir)
    }
}

