import XCTest
import Receipts
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The built rrt against a real queue, run the way qmail-remote runs its hooks:
/// qmail-remote's own operands (host sender qqeh size recipient) and the
/// message on a seekable descriptor 0.
final class RRTProgramTests: XCTestCase {
    var h: ReceiptsHarness!
    override func setUp() { h = ReceiptsHarness() }
    override func tearDown() { h.cleanup() }

    let message = """
    Received: from mx.example.org by relay\n\
    From: Alice <alice@example.org>\n\
    Message-ID: <123@example.org>\n\
    Subject: Hello there\n\
    Return-Receipt-To: Receipts <receipts@example.org>\n\
    \n\
    Body line\n
    """

    /// What qmail-remote passes after its argv[0].
    let remoteOperands = ["remote.test", "alice@example.org", "", "1234", "bob@remote.test"]
    let success: [String: String?] = ["ONSUCCESS_REMOTE": "/usr/bin/rrt", "SMTPTEXT": "K250 2.0.0 ok queued", "SMTPCODE": "250"]

    /// The `Date:` value and the boundary of a report.
    func dateAndBoundary(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> (String, String)? {
        guard let d = text.split(separator: "\n").first(where: { $0.hasPrefix("Date: ") }),
              let b = text.split(separator: "\"").dropFirst().first else {
            XCTFail("no Date: or boundary in \(text)", file: file, line: line)
            return nil
        }
        return (String(d.dropFirst(6)), String(b))
    }

    /// The report rrt should have produced, with the date and boundary it chose.
    func expectedReport(_ kind: ReturnReceipt.Kind, actual: String, whole: Bool = false, env: [String: String?],
                        bounceFrom: String = "MAILER-DAEMON", bounceHost: String = "mx.example.test") throws -> String {
        guard let found = dateAndBoundary(actual) else { return "" }
        let (date, boundary) = found
        XCTAssertTrue(boundary.hasPrefix("_----------=_"), boundary)
        XCTAssertNotNil(UInt64(boundary.dropFirst(13)), boundary)
        let headers = try ReturnReceipt.extractHeaders(Array(message.utf8))
        let delivery = ReturnReceipt.Delivery.from(environment: { env[$0] ?? nil },
                                                   returnPath: Array(remoteOperands[1].utf8), recipient: Array(remoteOperands[4].utf8))
        let bytes = ReturnReceipt.compose(kind: kind, headers: headers, delivery: delivery, original: Array(message.utf8),
                                          encloseWholeMessage: whole,
                                          settings: .init(bounceFrom: bounceFrom, bounceHost: bounceHost),
                                          date: date, unixTime: 0, pid: 0)
        return String(decoding: bytes, as: UTF8.self).replacingAll("_----------=_00", with: boundary)
    }

    func testFiveOperandsQueueAReceiptToTheReturnReceiptToAddress() throws {
        let out = try h.rrt(remoteOperands, message: message, env: success)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, "")
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].envelope.sender, [])
        XCTAssertEqual(q[0].envelope.recipients, [Array("receipts@example.org".utf8)])
        XCTAssertEqual(q[0].text, try expectedReport(.success, actual: q[0].text, env: success))
        XCTAssertTrue(q[0].text.contains("\nSMTP Text: 250 2.0.0 ok queued\n"), q[0].text)
        XCTAssertFalse(q[0].text.contains("Body line"), "only the header is enclosed without -b")
    }

    /// Regression: indimail-mta's rrt demanded six operands and read the sender and
    /// recipient one place too far, so with the five qmail-remote passes it exited 7
    /// and qmail-rspawn turned every delivery into "DUnable to run qmail-remote.".
    func testWorksWithExactlyTheFiveOperandsQmailRemotePasses() throws {
        let out = try h.rrt(["-n", "host.remote.test", "sender@example.org", "X-QQEH: 1\n", "4096", "rcpt@remote.test"],
                            message: message, env: success)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertTrue(out.stdoutText.contains("a delivery attempt at "), out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("from sender@example.org\n\n"), out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("\nrcpt@remote.test\n\n"), out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("\nFinal-Recipient: rfc822; rcpt@remote.test\n"), out.stdoutText)
    }

    func testDashNPrintsTheReportAndQueuesNothing() throws {
        TestEnv.write(h.control + "/bouncefrom", "receipt-daemon\n")
        TestEnv.write(h.control + "/bouncehost", "receipts.example.test\n")
        let env: [String: String?] = ["ONTEMPORARY_REMOTE": "/usr/bin/rrt", "QMTPTEXT": "Zbusy, try later", "QMTPCODE": "451"]
        let out = try h.rrt(["-n"] + remoteOperands, message: message, env: env)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, try expectedReport(.temporary, actual: out.stdoutText, env: env,
                                                          bounceFrom: "receipt-daemon", bounceHost: "receipts.example.test"))
        XCTAssertTrue(out.stdoutText.hasPrefix("From: <receipt-daemon@receipts.example.test>\n"), out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("\nAction: failed\nStatus: 451\nDiagnostic code: smtp; busy, try later\n"), out.stdoutText)
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testDashBEnclosesTheWholeMessage() throws {
        let env: [String: String?] = ["ONFAILURE_REMOTE": "/usr/bin/rrt", "SMTPTEXT": "D550 no such user", "SMTPCODE": "550"]
        let out = try h.rrt(["-b", "-n"] + remoteOperands, message: message, env: env)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, try expectedReport(.failure, actual: out.stdoutText, whole: true, env: env))
        XCTAssertTrue(out.stdoutText.contains("Content-Type: message/rfc822\n\n" + message + "--_"), out.stdoutText)
        XCTAssertTrue(out.stdoutText.hasPrefix("From: <MAILER-DAEMON@mx.example.test>\n"), out.stdoutText)
    }

    func testWithoutReturnReceiptToThereIsNothingToDo() throws {
        let plain = "From: alice@example.org\nMessage-ID: <1@x>\nSubject: no receipt\n\nReturn-Receipt-To: body@example.org\n"
        let out = try h.rrt(remoteOperands, message: plain, env: success)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText + out.stderrText, "")
        XCTAssertEqual(try h.queued().count, 0)
        // Message-ID is required as well.
        let noID = try h.rrt(remoteOperands, message: "Return-Receipt-To: r@example.org\n\nx\n", env: success)
        XCTAssertEqual(noID.exitCode, 0)
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testWithoutAHookVariableThereIsNothingToDo() throws {
        let out = try h.rrt(remoteOperands, message: message)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testPermanentFailureOfTheReceiptAddressItselfIsLeftToTheBounce() throws {
        let ops = ["remote.test", "receipts@example.org", "", "1234", "bob@remote.test"]
        let out = try h.rrt(ops, message: message, env: ["ONFAILURE_REMOTE": "/usr/bin/rrt"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(try h.queued().count, 0)
        // A success for the same sender is reported.
        XCTAssertEqual(try h.rrt(ops, message: message, env: ["ONSUCCESS_REMOTE": "/usr/bin/rrt"]).exitCode, 0)
        XCTAssertEqual(try h.queued().count, 1)
    }

    func testUsageErrorsExit7() throws {
        let few = try h.rrt(Array(remoteOperands.dropLast()), message: message, env: success)
        XCTAssertEqual(few.exitCode, 7)
        XCTAssertTrue(few.stderrText.hasPrefix("usage: rrt"), few.stderrText)
        XCTAssertEqual(try h.rrt(["-x"] + remoteOperands, message: message, env: success).exitCode, 7)
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testUnseekableInputExits6() throws {
        let out = try TestEnv.run(TestEnv.program("rrt"), remoteOperands, input: Array(message.utf8), environment: h.environment(success))
        XCTAssertEqual(out.exitCode, 6, out.stderrText)
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testUnparsableReceiptAddressExits8() throws {
        let out = try h.rrt(remoteOperands, message: "Message-ID: <1@x>\nReturn-Receipt-To: <" + String(repeating: "r", count: 1000) + ">\n\nx\n", env: success)
        XCTAssertEqual(out.exitCode, 8, out.stderrText)
    }

    func testQueueProgramFailuresExit100And111() throws {
        let perm = h.dir + "/qq-perm"
        TestEnv.write(perm, "#!/bin/sh\nexit 31\n", mode: 0o755)
        let p = try h.rrt(remoteOperands, message: message, env: success.merging(["QMAILQUEUE": perm]) { $1 })
        XCTAssertEqual(p.exitCode, 100, p.stderrText)
        XCTAssertEqual(p.stderrText, "rrt: fatal: permanent qmail-queue error\n")
        let temp = h.dir + "/qq-temp"
        TestEnv.write(temp, "#!/bin/sh\nexit 53\n", mode: 0o755)
        let t = try h.rrt(remoteOperands, message: message, env: success.merging(["QMAILQUEUE": temp]) { $1 })
        XCTAssertEqual(t.exitCode, 111, t.stderrText)
        XCTAssertEqual(t.stderrText, "rrt: fatal: temporary qmail-queue error\n")
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testHelp() throws {
        let out = try TestEnv.run(TestEnv.program("rrt"), ["--help"])
        XCTAssertEqual(out.exitCode, 0)
        XCTAssertTrue(out.stdoutText.hasPrefix("usage: rrt [-n] [-b] host sender qqeh size recip"), out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("exit codes:"))
        XCTAssertTrue(out.stdoutText.contains("ONSUCCESS_REMOTE"))
    }
}
