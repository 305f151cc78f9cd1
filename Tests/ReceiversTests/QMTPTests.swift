import XCTest
import Receivers
import QueueFormat
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

func qmtpPackage(_ message: String, _ sender: String, _ recipients: [String]) -> String {
    ns(message) + ns(sender) + ns(recipients.map(ns).joined())
}

/// qmail-qmtpd as tcpserver runs it and as a daemon: several packages on one
/// connection, one answer per recipient, rcpthosts, RELAYCLIENT, databytes,
/// both encodings, protocol violations.
final class QMTPTests: XCTestCase {
    var h: SMTPDHarness!
    override func setUp() {
        h = SMTPDHarness()
        h.writeControl("rcpthosts", "example.com\n")
    }
    override func tearDown() { h.cleanup() }

    /// The spec's example (an accepted, a relayed and a NUL recipient), then a
    /// second package on the same connection, sent before the first answer is read.
    func testSeveralPackagesOnOneConnection() throws {
        let c = try h.netClassic("qmail-qmtpd")
        c.send("18:\nSubject: t\n\nbody\n,13:a@example.org,50:13:u@example.com,11:v@other.org,14:w\0@example.com,,"
               + qmtpPackage("\r\nSubject: crlf\r\n\r\nline\r\nbare\rcr\r\n", "b@example.org", ["x@example.com", "y@example.com"]))
        let first = c.netstring()
        XCTAssertTrue(first?.hasPrefix("Kok ") == true, first ?? "nil")
        XCTAssertEqual(c.netstring(), "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
        XCTAssertEqual(c.netstring(), "Dsorry, I can't handle that recipient (#5.1.3)")
        let second = c.netstring(), third = c.netstring()
        XCTAssertTrue(second?.hasPrefix("Kok ") == true, second ?? "nil")
        XCTAssertEqual(second, third)   // one result per accepted recipient of the same message
        shutdown(c.fd, Int32(SHUT_WR))
        XCTAssertNil(c.netstring())
        XCTAssertEqual(c.exitCode(), 0)
        let q = try h.queued().sorted { $0.sender < $1.sender }
        XCTAssertEqual(q.count, 2)
        XCTAssertEqual(q[0].sender, "a@example.org")
        XCTAssertEqual(q[0].recipients, ["u@example.com"])
        XCTAssertTrue(q[0].message.contains("Received: indimail-mta qmtpd "), q[0].message)
        XCTAssertTrue(q[0].message.contains(" (192.0.2.7)\n  by domain with QMTP; "), q[0].message)
        XCTAssertTrue(q[0].message.hasSuffix("\nSubject: t\n\nbody\n"), q[0].message)
        XCTAssertEqual(q[1].recipients, ["x@example.com", "y@example.com"])
        // Encoding #1: CR LF became LF, a lone CR stayed.
        XCTAssertTrue(q[1].message.hasSuffix("\nSubject: crlf\n\nline\nbare\rcr\n"), q[1].message)
    }

    func testRelayRefusedAndRelayclient() throws {
        let c = try h.netClassic("qmail-qmtpd")
        c.send(qmtpPackage("\nx\n", "a@example.org", ["v@other.org", "w@sub.other.org"]))
        XCTAssertEqual(c.netstring(), "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
        XCTAssertEqual(c.netstring(), "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
        XCTAssertEqual(c.exitCode(), 0)
        XCTAssertEqual(try h.queued().count, 0)
        // RELAYCLIENT: any domain, its value appended.
        let r = try h.netClassic("qmail-qmtpd", env: ["RELAYCLIENT": "@relay"])
        r.send(qmtpPackage("\nx\n", "a@example.org", ["v@other.org"]))
        XCTAssertTrue(r.netstring()?.hasPrefix("Kok") == true)
        _ = r.exitCode()
        XCTAssertEqual(try h.queued().first?.recipients, ["v@other.org@relay"])
        // morercpthosts.cdb, built by qmail-newmrh.
        h.writeControl("morercpthosts", "more.example\n")
        let mrh = try TestEnv.run(TestEnv.program("qmail-newmrh"), [], environment: h.environment)
        XCTAssertEqual(mrh.exitCode, 0, mrh.stderrText)
        let m = try h.netClassic("qmail-qmtpd")
        m.send(qmtpPackage("\nx\n", "a@example.org", ["z@more.example"]))
        XCTAssertTrue(m.netstring()?.hasPrefix("Kok") == true)
        _ = m.exitCode()
        XCTAssertEqual(try h.queued().count, 2)
    }

    func testDatabytes() throws {
        let c = try h.netClassic("qmail-qmtpd", env: ["DATABYTES": "5"])
        c.send(qmtpPackage("\nSubject: too long\n", "a@example.org", ["u@example.com"])
               + qmtpPackage("\r\nab\r\ncd\r\n", "a@example.org", ["u@example.com"])    // 6 bytes once converted
               + qmtpPackage("\nabcd", "a@example.org", ["u@example.com"]))
        XCTAssertEqual(c.netstring(), "Dsorry, that message size exceeds my databytes limit (#5.3.4)")
        XCTAssertEqual(c.netstring(), "Dsorry, that message size exceeds my databytes limit (#5.3.4)")
        XCTAssertTrue(c.netstring()?.hasPrefix("Kok") == true)
        XCTAssertEqual(c.exitCode(), 0)
        XCTAssertEqual(try h.queued().count, 1)
    }

    /// Protocol violations end the connection (exit 100, a 2 GB prefix 111);
    /// the packages answered before stay queued, the broken one is not.
    func testMalformedPackages() throws {
        let good = qmtpPackage("\nok\n", "a@example.org", ["u@example.com"])
        let cases: [(String, String, Int32)] = [
            ("first byte neither LF nor CR", "3:Xab,0:,0:,", 100),
            ("zero length", "0:,0:,0:,", 100),
            ("missing comma after the message", "3:\nabX0:,17:13:u@example.com,,", 100),
            ("recipient longer than its list", "3:\nab,0:,5:13:u@example.com,,", 100),
            ("letters in the length", "1a:\n", 100),
            ("2 GB length prefix", "2147483648:", 111),
        ]
        for (what, input, code) in cases {
            let c = try h.netClassic("qmail-qmtpd")
            c.send(good + input)
            XCTAssertTrue(c.netstring()?.hasPrefix("Kok") == true, what)
            XCTAssertNil(c.netstring(), what)
            XCTAssertEqual(c.exitCode(), code, what)
        }
        XCTAssertEqual(try h.queued().count, cases.count)
    }

    func testAStallingClientIsDropped() throws {
        h.writeControl("timeoutqmtpd", "1\n")
        let c = try h.netClassic("qmail-qmtpd")
        let start = time(nil)
        c.send("100:\nSubject: t\n")
        XCTAssertNil(c.netstring())
        XCTAssertEqual(c.exitCode(), 111)
        XCTAssertLessThanOrEqual(time(nil) - start, 4)
        XCTAssertEqual(try h.queued().count, 0)
    }

    /// The daemon: in-process writes, many packages on one connection, --relay.
    func testDaemon() throws {
        let port = try h.startDaemon(["--relay", "10.0.0.0/8"], program: "qmail-qmtpd")
        XCTAssertTrue(h.daemonLog.contains("in-process"), h.daemonLog)
        let c = try h.connectRaw(port)
        var all = ""
        for i in 0..<20 { all += qmtpPackage("\nSubject: \(i)\n\nbody\n", "s\(i)@example.org", ["u@example.com", "v@other.org"]) }
        c.send(all)
        for i in 0..<20 {
            XCTAssertTrue(c.netstring()?.hasPrefix("Kok") == true, "\(i)")
            XCTAssertEqual(c.netstring(), "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
        }
        c.close()
        let q = try h.queued()
        XCTAssertEqual(q.count, 20)
        XCTAssertTrue(q.allSatisfy { $0.recipients == ["u@example.com"] })
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by 127.0.0.1 with QMTP; "), q[0].message)
    }

    /// QMTP out: qmail-remote (the same client the engine runs in process) sends to
    /// the destinations qmtproutes names, here our qmail-qmtpd daemon.
    func testQmailRemoteSpeaksQMTPToQmtproutes() throws {
        let port = try h.startDaemon(program: "qmail-qmtpd")
        h.writeControl("qmtproutes", "example.com:127.0.0.1:\(port)\n")
        func remote(_ host: String, _ rcpts: [String]) throws -> [String] {
            let out = try TestEnv.run(TestEnv.program("qmail-remote"), [host, "s@x.example", "", "0"] + rcpts,
                                      input: Array("Subject: qmtp out\n\nbody\n".utf8), environment: h.environment)
            XCTAssertEqual(out.exitCode, 0, out.stderrText)
            return out.stdoutText.split(separator: "\0", omittingEmptySubsequences: false).dropLast().map(String.init)
        }
        let r = try remote("example.com", ["u@example.com", "v@other.org", "w@example.com"])
        XCTAssertEqual(r.count, 4, "\(r)")
        XCTAssertTrue(r[0].hasPrefix("rRemote host said: ok ") && r[0].hasSuffix("\n"), r[0])
        XCTAssertEqual(r[1], "hRemote host said: sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\n")
        XCTAssertEqual(r[2], r[0])
        XCTAssertEqual(r[3], "K127.0.0.1 accepted message - Protocol QMTP\n")
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].sender, "s@x.example")
        XCTAssertEqual(q[0].recipients, ["u@example.com", "w@example.com"])
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by 127.0.0.1 with QMTP; "), q[0].message)
        XCTAssertTrue(q[0].message.hasSuffix("\nSubject: qmtp out\n\nbody\n"), q[0].message)
        // Every recipient refused: the message report gives up.
        let refused = try remote("example.com", ["v@other.org"])
        XCTAssertEqual(refused.last, "DGiving up on 127.0.0.1 - Protocol QMTP\n")
        // A server that does not speak QMTP (qmail-smtpd greets first).
        h.writeControl("rcpthosts", "example.com\nother.example\n")   // read by this qmail-smtpd, not by the running qmail-qmtpd
        let smtp = try h.startDaemon(program: "qmail-smtpd")
        h.writeControl("qmtproutes", "example.com:127.0.0.1:\(smtp)\n")
        XCTAssertEqual(try remote("example.com", ["u@example.com"]).last, "Zrecipient did not talk proper QMTP (#4.3.0)\n")
        // Nothing listening.
        h.writeControl("qmtproutes", "example.com:127.0.0.1:\(try freePort())\n")
        XCTAssertEqual(try remote("example.com", ["u@example.com"]).last, "ZSorry, I wasn't able to establish a QMTP connection. (#4.4.1)\n")
        // Not named in qmtproutes: SMTP as before (to qmail-smtpd through smtproutes).
        h.writeControl("smtproutes", "other.example:127.0.0.1:\(smtp)\n")
        let viaSMTP = try remote("other.example", ["z@other.example"])
        XCTAssertTrue(viaSMTP.last?.contains("Protocol SMTP") == true, "\(viaSMTP)")
        XCTAssertEqual(try h.queued().count, 2)
    }

    /// The engine's remote channel (in-process SMTP client) delivers over QMTP too:
    /// qmail-send on one queue, qmtproutes to qmail-qmtpd writing another.
    func testQmailSendDeliversOverQMTP() throws {
        let port = try h.startDaemon(program: "qmail-qmtpd")
        let sender = SMTPDHarness()
        defer { sender.cleanup() }
        sender.writeControl("qmtproutes", "example.com:127.0.0.1:\(port)\n")
        let inject = try TestEnv.run(TestEnv.program("qmail-inject"), ["-fs@domain", "u@example.com", "v@example.com"],
                                     input: Array("Subject: engine qmtp\n\nhello\n".utf8), environment: sender.environment)
        XCTAssertEqual(inject.exitCode, 0, inject.stderrText)
        let log = sender.dir + "/send.log"
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        let pid = try Spawn.start(TestEnv.program("qmail-send"), arguments: ["qmail-send", "./Maildir/"], environment: sender.environment,
                                  fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        close(fd); close(null)
        sender.daemonPIDs.append(pid)
        let deadline = time(nil) + 30
        while time(nil) < deadline && !String(decoding: TestEnv.read(log), as: UTF8.self).contains("Protocol_QMTP") { usleep(50_000) }
        let text = String(decoding: TestEnv.read(log), as: UTF8.self)
        XCTAssertTrue(text.contains("success: Remote_host_said:_ok_"), text)
        XCTAssertTrue(text.contains("127.0.0.1_accepted_message_-_Protocol_QMTP"), text)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(Set(q[0].recipients), ["u@example.com", "v@example.com"])
        XCTAssertTrue(q[0].message.contains("Subject: engine qmtp"), q[0].message)
    }
}
