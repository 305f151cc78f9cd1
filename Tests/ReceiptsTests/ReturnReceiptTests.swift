import XCTest
import Receipts

/// rrt's report text and header scanning, byte for byte (engine.md §7.1).
final class ReturnReceiptTests: XCTestCase {
    let original = """
    Received: from mx.example.org by relay\n\
    From: Alice <alice@example.org>\n\
    Message-ID: <123@example.org>\n\
    Subject: Hello there\n\
    Return-Receipt-To: <receipts@example.org>\n\
    \n\
    Body line\n
    """

    let settings = ReturnReceipt.Settings(bounceFrom: "MAILER-DAEMON", bounceHost: "mx.example.test")
    let date = "Wed, 7 Aug 2025 08:49:18 +0530"

    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testAddressParsingFollowsAddrparse() {
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: Alice <alice@example.org>")), bytes("alice@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: alice@example.org (Alice)")), bytes("alice@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From:    alice@example.org")), bytes("alice@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("Return-Receipt-To: <@r1,@r2:alice@example.org>")), bytes("alice@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: \"a b\"@example.org")), bytes("a b@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: <a\\>b@example.org>")), bytes("a>b@example.org"))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: <>")), [])
        XCTAssertNil(ReceiptAddress.parse(bytes("alice@example.org")), "no '<' and no ':' means no address")
        XCTAssertNil(ReceiptAddress.parse(bytes("From:")))
        XCTAssertNil(ReceiptAddress.parse(bytes("From: <" + String(repeating: "x", count: 901) + ">")))
        XCTAssertEqual(ReceiptAddress.parse(bytes("From: <" + String(repeating: "x", count: 900) + ">"))?.count, 900)
    }

    func testHeaderLineTestIsMess822Ok() {
        XCTAssertTrue(HeaderLines.isHeaderLine(bytes("Subject: x\n")))
        XCTAssertTrue(HeaderLines.isHeaderLine(bytes(" continued\n")))
        XCTAssertTrue(HeaderLines.isHeaderLine(bytes("\tcontinued\n")))
        XCTAssertTrue(HeaderLines.isHeaderLine(bytes("Name  : blanks before the colon\n")))
        XCTAssertFalse(HeaderLines.isHeaderLine(bytes("\n")))
        XCTAssertFalse(HeaderLines.isHeaderLine(bytes("Bad Name: x\n")))
        XCTAssertFalse(HeaderLines.isHeaderLine(bytes(": no name\n")))
        XCTAssertFalse(HeaderLines.isHeaderLine(bytes("just text\n")))
        XCTAssertEqual(HeaderLines.header(of: bytes("A: 1\n b\nC: 2\n\nbody: x\n")), bytes("A: 1\n b\nC: 2\n"))
    }

    func testHeaderExtractionTakesFirstFieldsWithTheirCaseRules() throws {
        let h = try ReturnReceipt.extractHeaders(bytes(original))
        XCTAssertEqual(h.from, bytes("alice@example.org"))
        XCTAssertEqual(h.messageID, bytes("<123@example.org>\n"))
        XCTAssertEqual(h.subject, bytes("Hello there\n"))
        XCTAssertEqual(h.returnReceiptTo, bytes("receipts@example.org"))
        XCTAssertTrue(h.wantsReceipt)

        // From: and Subject: are case-sensitive; Message-ID: and Return-Receipt-To: are not.
        let other = try ReturnReceipt.extractHeaders(bytes("FROM: x@y\nSUBJECT: s\nmessage-id: <m>\nreturn-receipt-to: r@x\n\n"))
        XCTAssertNil(other.from)
        XCTAssertNil(other.subject)
        XCTAssertEqual(other.messageID, bytes("<m>\n"))
        XCTAssertEqual(other.returnReceiptTo, bytes("r@x"))

        // Fields in the body do not count.
        let body = try ReturnReceipt.extractHeaders(bytes("Subject: s\n\nReturn-Receipt-To: r@x\nMessage-ID: <m>\n"))
        XCTAssertFalse(body.wantsReceipt)
        // Message-ID is required too.
        XCTAssertFalse(try ReturnReceipt.extractHeaders(bytes("Return-Receipt-To: r@x\n\n")).wantsReceipt)
    }

    func testUnparsableReceiptAddressIsAParseError() throws {
        XCTAssertThrowsError(try ReturnReceipt.extractHeaders(bytes("Return-Receipt-To: <" + String(repeating: "r", count: 901) + ">\nMessage-ID: <m>\n\n")))
        // An empty address parses (as in indimail-mta) but asks for no receipt.
        XCTAssertFalse(try ReturnReceipt.extractHeaders(bytes("Return-Receipt-To: \nMessage-ID: <m>\n\n")).wantsReceipt)
        XCTAssertThrowsError(try ReturnReceipt.extractHeaders(bytes("From: <" + String(repeating: "a", count: 950) + ">\n\n")))
    }

    func testTypeComesFromTheFirstHookVariableSet() {
        XCTAssertEqual(ReturnReceipt.Kind.fromEnvironment { $0 == "ONFAILURE_REMOTE" || $0 == "ONSUCCESS_REMOTE" ? "x" : nil }, .success)
        XCTAssertEqual(ReturnReceipt.Kind.fromEnvironment { $0 == "ONFAILURE_REMOTE" || $0 == "ONTEMPORARY_REMOTE" ? "" : nil }, .failure)
        XCTAssertEqual(ReturnReceipt.Kind.fromEnvironment { $0 == "ONTEMPORARY_REMOTE" ? "" : nil }, .temporary)
        XCTAssertNil(ReturnReceipt.Kind.fromEnvironment { _ in nil })
    }

    func testPermanentFailureToTheReceiptAddressItselfIsNotReported() {
        let rr = bytes("alice@example.org")
        XCTAssertFalse(ReturnReceipt.shouldReport(kind: .failure, returnPath: rr, receiptTo: rr))
        XCTAssertFalse(ReturnReceipt.shouldReport(kind: .failure, returnPath: bytes("<alice@example.org>"), receiptTo: rr))
        XCTAssertTrue(ReturnReceipt.shouldReport(kind: .success, returnPath: rr, receiptTo: rr))
        XCTAssertTrue(ReturnReceipt.shouldReport(kind: .failure, returnPath: bytes("other@example.org"), receiptTo: rr))
    }

    func testSuccessReportBytesWithHeaderOnly() throws {
        let h = try ReturnReceipt.extractHeaders(bytes(original))
        let delivery = ReturnReceipt.Delivery(returnPath: bytes("alice@example.org"), recipient: bytes("bob@remote.test"),
                                              smtpText: bytes("K250 2.0.0 ok queued"), smtpCode: bytes("250"))
        let out = ReturnReceipt.compose(kind: .success, headers: h, delivery: delivery, original: bytes(original),
                                        encloseWholeMessage: false, settings: settings, date: date,
                                        unixTime: 1723012345, pid: 4321)
        let expected = """
        From: <MAILER-DAEMON@mx.example.test>
        Date: Wed, 7 Aug 2025 08:49:18 +0530
        Subject: Successful Mail Delivery Report: Hello there
        To: receipts@example.org
        MIME-Version: 1.0
        Content-Type: multipart/report;  report-type=delivery-status;
         boundary="_----------=_17230123454321"

        --_----------=_17230123454321
        Content-Type: message/delivery-status

        This is the indimail rrt generator at host mx.example.test.

        This message was received for a delivery attempt at Wed, 7 Aug 2025 08:49:18 +0530
        from alice@example.org

        Your message was successfully delivered to the destination(s)
        listed below. If the message was delivered to mailbox you will
        receive no further notifications. Otherwise you may still receive
        notifications of mail delivery errors from other systems.

        bob@remote.test

        SMTP Text: 250 2.0.0 ok queued

        There is no guarantee that the message has been read or understood.

        --_----------=_17230123454321
        Content-Type: message/delivery-status

        Reporting-MTA: mx.example.test
        Arrival-Date: Wed, 7 Aug 2025 08:49:18 +0530
        Original-Recipient: rfc822; bob@remote.test
        Final-Recipient: rfc822; bob@remote.test
        Action: relayed
        Status: 250
        Diagnostic code: smtp; 250 2.0.0 ok queued
        --_----------=_17230123454321
        Content-Transfer-Encoding: 8bit
        Content-Disposition: attachment
        Content-Type: text/rfc822-headers

        Received: from mx.example.org by relay
        From: Alice <alice@example.org>
        Message-ID: <123@example.org>
        Subject: Hello there
        Return-Receipt-To: <receipts@example.org>
        --_----------=_17230123454321--


        """
        XCTAssertEqual(String(decoding: out, as: UTF8.self), expected)
    }

    func testFailureReportWithoutReplyEnclosingTheWholeMessage() throws {
        let h = try ReturnReceipt.extractHeaders(bytes(original))
        let delivery = ReturnReceipt.Delivery(returnPath: bytes("alice@example.org"), recipient: bytes("bob@remote.test"))
        let out = ReturnReceipt.compose(kind: .failure, headers: h, delivery: delivery, original: bytes(original),
                                        encloseWholeMessage: true, settings: settings, date: date,
                                        unixTime: 1723012345, pid: 7)
        let expected = """
        From: <MAILER-DAEMON@mx.example.test>
        Date: Wed, 7 Aug 2025 08:49:18 +0530
        Subject: Permanent Failure: Mail Delivery Report: Hello there
        To: receipts@example.org
        MIME-Version: 1.0
        Content-Type: multipart/report;  report-type=delivery-status;
         boundary="_----------=_17230123457"

        --_----------=_17230123457
        Content-Type: message/delivery-status

        This is the indimail rrt generator at host mx.example.test.

        This message was received for a delivery attempt at Wed, 7 Aug 2025 08:49:18 +0530
        from alice@example.org

        bob@remote.test




        --_----------=_17230123457
        Content-Type: message/delivery-status

        Reporting-MTA: mx.example.test
        Arrival-Date: Wed, 7 Aug 2025 08:49:18 +0530
        Original-Recipient: rfc822; bob@remote.test
        Final-Recipient: rfc822; bob@remote.test
        Action: failed

        --_----------=_17230123457
        Content-Transfer-Encoding: 8bit
        Content-Disposition: attachment
        Content-Type: message/rfc822


        """ + original + "--_----------=_17230123457--\n\n"
        XCTAssertEqual(String(decoding: out, as: UTF8.self), expected)
    }

    func testTemporaryReportUsesQmtpVariablesAndFixesAMissingSubject() throws {
        let message = "Message-ID: <m@x>\nReturn-Receipt-To: r@example.org\n\nbody\n"
        let h = try ReturnReceipt.extractHeaders(bytes(message))
        let delivery = ReturnReceipt.Delivery(returnPath: bytes("s@example.org"), recipient: bytes("bob@remote.test"),
                                              qmtpText: bytes("Zbusy"), qmtpCode: bytes("451"))
        let out = String(decoding: ReturnReceipt.compose(kind: .temporary, headers: h, delivery: delivery, original: bytes(message),
                                                         encloseWholeMessage: false, settings: settings, date: date,
                                                         unixTime: 1, pid: 2), as: UTF8.self)
        XCTAssertTrue(out.contains("\nSubject: Temporary Failure: Mail Delivery Report: \nTo: r@example.org\n"), out)
        XCTAssertTrue(out.contains("\nYour message has not been delivered to the destination(s)\nlisted below. You may receive further notifications until the\nmessage gets delivered\n\nbob@remote.test\n\nQMTP Text: busy\n\nThere is no guarantee that the message will be deliverd.\n\n--_----------=_12\n"), out)
        XCTAssertTrue(out.contains("\nAction: failed\nStatus: 451\nDiagnostic code: smtp; busy\n--_----------=_12\n"), out)
        XCTAssertTrue(out.hasSuffix("text/rfc822-headers\n\nMessage-ID: <m@x>\nReturn-Receipt-To: r@example.org\n--_----------=_12--\n\n"), out)
    }
}
