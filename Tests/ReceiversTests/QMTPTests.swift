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
}
