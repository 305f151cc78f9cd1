import XCTest
import Receivers
import QueueFormat
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What QMTP and QMQP tests share: the programs on a socket pair (as tcpserver
/// starts them) and netstring answers read off a connection.
extension SMTPDHarness {
    /// qmail-qmtpd or qmail-qmqpd on a socket pair; the client end.
    func netClassic(_ program: String, env: [String: String?] = [:]) throws -> Client {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { throw SystemError("socketpair") }
        var e = environment
        for (k, v) in env { e.removeAll { $0.hasPrefix(k + "=") }; if let v { e.append(k + "=" + v) } }
        let pid = try Spawn.start(TestEnv.program(program), arguments: [program], environment: e,
                                  fds: [.init(fds[1], at: 0), .init(fds[1], at: 1)], keepStandard: true)
        Glibc.close(fds[1])
        return Client(fd: fds[0], pid: pid)
    }

    func connectRaw(_ port: Int) throws -> Client {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(port).bigEndian)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if r != 0 { Glibc.close(fd); throw SystemError("connect") }
        return Client(fd: fd)
    }

    /// Runs qmail-qmqpc with a message and envelope; its exit code and standard error.
    func qmqpc(_ message: String, sender: String = "a@example.org", recipients: [String] = ["u@example.com"],
               args: [String] = [], env: [String: String?] = [:]) throws -> (Int32?, String) {
        var e = environment
        for (k, v) in env { e.removeAll { $0.hasPrefix(k + "=") }; if let v { e.append(k + "=" + v) } }
        var envelope = Array(("F" + sender).utf8) + [0]
        for r in recipients { envelope += Array(("T" + r).utf8) + [0] }
        envelope.append(0)
        let out = try TestEnv.run(TestEnv.program("qmail-qmqpc"), args, input: Array(message.utf8), fd1Input: envelope, environment: e)
        return (out.exitCode, out.stderrText)
    }
}

extension SMTPDHarness.Client {
    /// The next netstring the server sends, as text; nil when the connection ends first.
    func netstring() -> String? {
        while true {
            switch Netstring.parse(buffer[...], limit: 10_000) {
            case .complete(let content, let next):
                let s = String(decoding: buffer[content], as: UTF8.self)
                buffer.removeFirst(next)
                return s
            case .failed: return nil
            case .needMore:
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return nil }
                buffer += chunk[0..<n]
            }
        }
    }

    /// Waits for the server's exit (classic mode); its exit code.
    func exitCode() -> Int32? {
        Glibc.close(fd)
        guard let pid, let st = try? Spawn.wait(pid) else { return nil }
        if case let .exited(c) = st { return c }
        return nil
    }
}

func ns(_ s: String) -> String { "\(s.utf8.count):\(s)," }
func qmqpPackage(_ message: String, _ sender: String, _ recipients: [String]) -> String {
    ns(ns(message) + ns(sender) + recipients.map(ns).joined())
}

/// The netstring parser, qmail-qmqpd (as tcpserver runs it, under real
/// tcpserver, and as a daemon) and qmail-qmqpc against it.
final class QMQPTests: XCTestCase {
    var h: SMTPDHarness!
    override func setUp() { h = SMTPDHarness() }
    override func tearDown() { h.cleanup() }

    /// Each new program answers --help and has its manual page.
    func testHelpAndManualPages() throws {
        for p in ["qmail-qmtpd", "qmail-qmqpd", "qmail-qmqpc"] {
            let out = try TestEnv.run(TestEnv.program(p), ["--help"], environment: h.environment)
            XCTAssertEqual(out.exitCode, 0, p)
            XCTAssertTrue(out.stdoutText.hasPrefix("usage: \(p)"), out.stdoutText)
            XCTAssertTrue(Sys.exists(TestEnv.packageRoot + "/docs/man/\(p).8.md"), p)
        }
    }

    func testNetstringParser() {
        XCTAssertEqual(Netstring.encode(Array("hello world!".utf8)), Array("12:hello world!,".utf8))
        XCTAssertEqual(Netstring.encode([UInt8]()), Array("0:,".utf8))
        let b = Array("12:hello world!,0:,".utf8)
        XCTAssertEqual(Netstring.parse(b[...], limit: 100), .complete(content: 3..<15, next: 16))
        XCTAssertEqual(Netstring.parse(b[16...], limit: 100), .complete(content: 18..<18, next: 19))
        XCTAssertEqual(Netstring.parse(Array("12:hello".utf8)[...], limit: 100), .needMore)
        XCTAssertEqual(Netstring.parse(Array("3:abcX".utf8)[...], limit: 100), .failed(.missingComma))
        XCTAssertEqual(Netstring.parse(Array("1x:a,".utf8)[...], limit: 100), .failed(.badLength))
        XCTAssertEqual(Netstring.parse(Array(":a,".utf8)[...], limit: 100), .failed(.badLength))
        XCTAssertEqual(Netstring.parse(Array("12:hello world!,".utf8)[...], limit: 11), .failed(.tooLong))
        // A 2 GB prefix is refused at its ninth digit (214748364 > 200,000,000), long before its colon, and nothing is allocated.
        var l = Netstring.Length(limit: 200_000_000)
        var steps: [Netstring.Length.Step] = []
        for c in "2147483648:".utf8 { let s = l.feed(c); steps.append(s); if s != .needMore { break } }
        XCTAssertEqual(steps.last, .failed(.tooLong))
        XCTAssertEqual(steps.count, 9)
        // The limit itself passes; limits near Int.max do not overflow.
        XCTAssertEqual(Netstring.parse(Array("5:abcde,".utf8)[...], limit: 5), .complete(content: 2..<7, next: 8))
        var big = Netstring.Length(limit: Int.max)
        var last = Netstring.Length.Step.needMore
        for c in "99999999999999999999999:".utf8 { last = big.feed(c); if last != .needMore { break } }
        XCTAssertEqual(last, .failed(.tooLong))
        XCTAssertEqual(try Netstring.list(Array("1:a,0:,2:bc,".utf8)[...], limit: 10).get().count, 3)
        XCTAssertEqual(Netstring.list(Array("1:a,2:b".utf8)[...], limit: 10), .failure(.missingComma))
    }

    func testQueuesTheMessageVerbatimWithItsReceivedLine() throws {
        let c = try h.netClassic("qmail-qmqpd")
        c.send(qmqpPackage("Subject: t\n\nbody\r\n.\n", "a@example.org", ["u@example.com", "v@other.example"]))
        let answer = c.netstring()
        XCTAssertTrue(answer?.hasPrefix("Kok ") == true && answer?.contains(" qp ") == true, "\(answer ?? "nil")")
        XCTAssertNil(c.netstring())   // one message per connection: closed
        XCTAssertEqual(c.exitCode(), 0)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].sender, "a@example.org")
        XCTAssertEqual(q[0].recipients, ["u@example.com", "v@other.example"])   // no rcpthosts for QMQP
        XCTAssertTrue(q[0].message.contains("Received: indimail-mta qmqpd "), q[0].message)
        XCTAssertTrue(q[0].message.contains(" (192.0.2.7)\n  by domain with QMQP; "), q[0].message)
        XCTAssertTrue(q[0].message.hasSuffix("\nSubject: t\n\nbody\r\n.\n"), q[0].message)
    }

    func testTheSpecExampleAndBadAddresses() throws {
        let c = try h.netClassic("qmail-qmqpd")
        c.send("55:17:Subject: t\n\nbody\n,13:a@example.org,13:u@example.com,,")
        XCTAssertTrue(c.netstring()?.hasPrefix("Kok ") == true)
        _ = c.exitCode()
        let long = String(repeating: "x", count: 990) + "@e.example"   // 1000 bytes
        let c2 = try h.netClassic("qmail-qmqpd")
        c2.send(qmqpPackage("x\n", long, ["u@example.com"]))
        XCTAssertEqual(c2.netstring(), "Dsorry, I can't accept addresses like that (#5.1.3)")
        _ = c2.exitCode()
        let c3 = try h.netClassic("qmail-qmqpd")
        c3.send(qmqpPackage("x\n", "a@example.org", ["u\0@example.com"]))
        XCTAssertEqual(c3.netstring(), "Dsorry, I can't accept addresses like that (#5.1.3)")
        _ = c3.exitCode()
        XCTAssertEqual(try h.queued().count, 1)
    }

    /// Wrong lengths, a missing comma, a 2 GB prefix, garbage: the connection is
    /// dropped without an answer (the client counts that as a temporary failure)
    /// and nothing is queued.
    func testMalformedNetstringsAreDroppedAndQueueNothing() throws {
        let cases: [(String, String, Int32)] = [
            ("message shorter than its length", "40:20:Subject: t\n\nbody\n,13:a@example.org,,", 100),
            ("inner length past the outer", "10:17:Subject: t\n\nbody\n,13:a@example.org,,", 100),
            ("missing comma after the message", "55:17:Subject: t\n\nbody\nX13:a@example.org,13:u@example.com,,", 100),
            ("missing final comma", "55:17:Subject: t\n\nbody\n,13:a@example.org,13:u@example.com,X", 100),
            ("letters in the length", "5x:17:Subject", 100),
            ("2 GB length prefix", "2147483648:", 111),
            ("a thousand digits", String(repeating: "9", count: 1000) + ":", 111),
        ]
        for (what, input, code) in cases {
            let c = try h.netClassic("qmail-qmqpd")
            let start = time(nil)
            c.send(input)
            shutdown(c.fd, Int32(SHUT_WR))
            XCTAssertNil(c.netstring(), what)
            XCTAssertEqual(c.exitCode(), code, what)
            XCTAssertLessThanOrEqual(time(nil) - start, 3, what)
        }
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testDatabytesRefusesALargerMessage() throws {
        let c = try h.netClassic("qmail-qmqpd", env: ["DATABYTES": "10"])
        c.send(qmqpPackage("Subject: too long\n\nbody\n", "a@example.org", ["u@example.com"]))
        XCTAssertEqual(c.netstring(), "Dsorry, that message size exceeds my databytes limit (#5.3.4)")
        XCTAssertEqual(c.exitCode(), 0)
        let c2 = try h.netClassic("qmail-qmqpd", env: ["DATABYTES": "10"])
        c2.send(qmqpPackage("short\n", "a@example.org", ["u@example.com"]))
        XCTAssertTrue(c2.netstring()?.hasPrefix("Kok") == true)
        _ = c2.exitCode()
        XCTAssertEqual(try h.queued().count, 1)
    }

    /// A client that sends half a package and stops is dropped after the read
    /// timeout (control/timeoutqmqpd), and its half message is not queued.
    func testAStallingClientIsDroppedAfterTheTimeout() throws {
        h.writeControl("timeoutqmqpd", "1\n")
        let c = try h.netClassic("qmail-qmqpd")
        let start = time(nil)
        c.send("55:17:Subject: t\n")
        XCTAssertNil(c.netstring())
        XCTAssertEqual(c.exitCode(), 111)
        XCTAssertLessThanOrEqual(time(nil) - start, 4)
        XCTAssertEqual(try h.queued().count, 0)
    }

    /// The daemon: serves as the named user, writes in-process, answers trusted
    /// clients only; qmail-qmqpc skips a server that is down and uses the next.
    func testDaemonAndQmqpcWithAServerDown() throws {
        let port = try h.startDaemon(["--allow", "127.0.0.0/8"], program: "qmail-qmqpd")
        XCTAssertTrue(h.daemonLog.contains("in-process"), h.daemonLog)
        let status = String(decoding: TestEnv.read("/proc/\(h.daemonPIDs[0])/status"), as: UTF8.self)
        XCTAssertTrue(status.contains("Uid:\t65534\t65534\t65534\t65534"), status)
        h.writeControl("qmqpservers", "# the first is down\n127.0.0.2\nnot an address\n127.0.0.1\n")
        let (code, err) = try h.qmqpc("Subject: via qmqpc\n\nhello\n", recipients: ["u@example.com", "v@other.example"],
                                      env: ["PORT_QMQP": "\(port)"])
        XCTAssertEqual(code, 0, err)
        XCTAssertTrue(err.contains("127.0.0.2"), err)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].recipients, ["u@example.com", "v@other.example"])
        XCTAssertTrue(q[0].message.hasSuffix("\nSubject: via qmqpc\n\nhello\n"), q[0].message)
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by 127.0.0.1 with QMQP; "), q[0].message)
        // The sticky bit spreads clients (first try: server now % count), then every server in order.
        chmod(h.control + "/qmqpservers", 0o1644)
        XCTAssertEqual(try h.qmqpc("sticky\n", env: ["PORT_QMQP": "\(port)"]).0, 0)
        XCTAssertEqual(try h.qmqpc("sticky\n", env: ["PORT_QMQP": "\(port)"]).0, 0)
        chmod(h.control + "/qmqpservers", 0o644)
        // Servers given as arguments replace the file.
        let (code2, _) = try h.qmqpc("x\n", args: ["127.0.0.1"], env: ["PORT_QMQP": "\(port)"])
        XCTAssertEqual(code2, 0)
        // Several messages at once through the one daemon.
        var threads: [TestSupport.Thread] = []
        let codes = UnsafeMutablePointer<Int32>.allocate(capacity: 8)
        defer { codes.deallocate() }
        for i in 0..<8 {
            threads.append(TestSupport.Thread { [h] in codes[i] = (try? h!.qmqpc("n: \(i)\n", env: ["PORT_QMQP": "\(port)"]).0 ?? -1) ?? -1 })
        }
        for t in threads { t.join() }
        XCTAssertEqual((0..<8).map { codes[$0] }, Array(repeating: 0, count: 8))
        XCTAssertEqual(try h.queued().count, 12)
    }

    func testDaemonRefusesAnUntrustedClient() throws {
        let port = try h.startDaemon(["--allow", "10.0.0.0/8"], program: "qmail-qmqpd")
        h.writeControl("qmqpservers", "127.0.0.1\n")
        let (code, _) = try h.qmqpc("x\n", env: ["PORT_QMQP": "\(port)"])
        XCTAssertEqual(code, 74)   // no answer: communication failed, temporary
        XCTAssertEqual(try h.queued().count, 0)
        XCTAssertTrue(h.daemonLog.contains("refused 127.0.0.1"), h.daemonLog)
        // Without --allow the daemon does not start.
        let out = try TestEnv.run(TestEnv.program("qmail-qmqpd"), ["--daemon", "--listen", "127.0.0.1:0"], environment: h.environment)
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertTrue(out.stderrText.contains("--allow"), out.stderrText)
    }

    /// qmail-qmqpc's exit codes, each from a real situation: a server that
    /// refuses (databytes), one that fails temporarily, one that closes without
    /// answering, nothing listening, no configuration, a bad envelope.
    func testQmqpcExitCodes() throws {
        // Nothing listening anywhere: connection rejected.
        let free = try freePort()
        h.writeControl("qmqpservers", "127.0.0.1\n")
        XCTAssertEqual(try h.qmqpc("x\n", env: ["PORT_QMQP": "\(free)"]).0, 73)
        // D: the server refuses permanently (its databytes).
        let port = try h.startDaemon(["--allow", "127.0.0.0/8"], env: ["DATABYTES": "3"], program: "qmail-qmqpd")
        XCTAssertEqual(try h.qmqpc("four\n", env: ["PORT_QMQP": "\(port)"]).0, 31)
        // Z and silence: a small server of the test's own answers once each way.
        for (reply, expected) in [("5:Zbusy,", Int32(71)), ("", Int32(74))] {
            let (lfd, p) = try listenOnce()
            let server = TestSupport.Thread {
                let fd = accept(lfd, nil, nil)
                var tv = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                // Read the whole package (it ends with ",,"), then answer.
                var got: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 4096)
                while !(got.count >= 2 && got.suffix(2) == [44, 44]) {
                    let n = read(fd, &buf, buf.count)
                    if n <= 0 { break }
                    got += buf[0..<n]
                }
                _ = reply.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                close(fd)
            }
            XCTAssertEqual(try h.qmqpc("x\n", env: ["PORT_QMQP": "\(p)"]).0, expected, reply)
            server.join()
            close(lfd)
        }
        // A bad envelope; no qmqpservers at all.
        let out = try TestEnv.run(TestEnv.program("qmail-qmqpc"), [], input: Array("x\n".utf8), fd1Input: Array("Xnot\0\0".utf8),
                                  environment: h.environment)
        XCTAssertEqual(out.exitCode, 79)
        unlink(h.control + "/qmqpservers")
        XCTAssertEqual(try h.qmqpc("x\n", args: ["127.0.0.1"], env: ["PORT_QMQP": "\(port)"]).0, 55)
        h.writeControl("qmqpservers", "no address here\n")
        XCTAssertEqual(try h.qmqpc("x\n", env: ["PORT_QMQP": "\(port)"]).0, 55)
    }

    /// With QMAILQUEUE naming qmail-qmqpc, qmail-inject is a null client: the
    /// message lands in the server's queue; with the server down, qmail-inject
    /// fails with the queue-client layer's text for qmail-qmqpc's exit code.
    func testQmailInjectAsANullClient() throws {
        let port = try h.startDaemon(["--allow", "127.0.0.0/8"], program: "qmail-qmqpd")
        h.writeControl("qmqpservers", "127.0.0.1\n")
        h.writeControl("defaulthost", "client.example\n")
        var e = h.environment
        e.removeAll { $0.hasPrefix("QMAILQUEUE=") || $0.hasPrefix("PORT_QMQP=") }
        e += ["QMAILQUEUE=" + TestEnv.program("qmail-qmqpc"), "PORT_QMQP=\(port)"]
        let ok = try TestEnv.run(TestEnv.program("qmail-inject"), ["-fme@client.example", "u@example.com"],
                                 input: Array("Subject: null client\n\nhello\n".utf8), environment: e)
        XCTAssertEqual(ok.exitCode, 0, ok.stderrText)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].sender, "me@client.example")
        XCTAssertEqual(q[0].recipients, ["u@example.com"])
        XCTAssertTrue(q[0].message.contains("Subject: null client"), q[0].message)
        let free = try freePort()
        e.removeAll { $0.hasPrefix("PORT_QMQP=") }
        e.append("PORT_QMQP=\(free)")
        let down = try TestEnv.run(TestEnv.program("qmail-inject"), ["u@example.com"], input: Array("Subject: x\n\ny\n".utf8), environment: e)
        XCTAssertEqual(down.exitCode, 111)
        XCTAssertTrue(down.stderrText.contains("qq connection to mail server rejected (#4.4.1)"), down.stderrText)
    }

    /// Real tcpserver running qmail-qmqpd per connection, as the classic central server does.
    func testUnderTcpserver() throws {
        guard Sys.isExecutable("/usr/bin/tcpserver") else { XCTFail("tcpserver is not installed (scripts/ensure-deps installs ucspi-tcp)"); return }
        var port = 0
        let null = open("/dev/null", O_RDWR)
        defer { close(null) }
        for _ in 0..<20 {
            let p = Int.random(in: 20000...40000)
            let pid = try Spawn.start("/usr/bin/tcpserver", arguments: ["tcpserver", "-R", "-H", "-l", "queue.example", "-c", "10", "127.0.0.1", "\(p)",
                                                                         TestEnv.program("qmail-qmqpd")],
                                      environment: h.environment, fds: [.init(null, at: 0), .init(null, at: 1), .init(null, at: 2)], keepStandard: false)
            usleep(300_000)
            var st: Int32 = 0
            if waitpid(pid, &st, WNOHANG) == 0 { port = p; h.daemonPIDs.append(pid); break }
        }
        XCTAssertNotEqual(port, 0)
        h.writeControl("qmqpservers", "127.0.0.1\n")
        let (code, err) = try h.qmqpc("Subject: t\n\nvia tcpserver\n", env: ["PORT_QMQP": "\(port)"])
        XCTAssertEqual(code, 0, err)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by queue.example with QMQP; "), q[0].message)
    }
}

/// A port nothing listens on (bound, then closed).
func freePort() throws -> Int {
    let (fd, p) = try listenOnce()
    close(fd)
    return p
}

/// A listening socket on 127.0.0.1 and its port.
func listenOnce() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = 0
    sa.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let r = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) } }
    guard r == 0, listen(fd, 4) == 0 else { throw SystemError("bind") }
    _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return (fd, Int(UInt16(bigEndian: sa.sin_port)))
}
