import XCTest
import Receipts

/// maildirserial's bounce text and its client protocol (engine.md §7.2).
final class MaildirBounceTests: XCTestCase {
    let settings = MaildirBounce.Settings(bounceFrom: "MAILER-DAEMON", bounceHost: "mx.example.test",
                                          doubleBounceRecipient: "postmaster@mx.example.test")
    let date = "7 Aug 2025 03:19:18 -0000"

    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testHeadNeedsReturnPathThenDeliveredTo() throws {
        let file = bytes("Return-Path: <s@example.org>\nDelivered-To: pre-bob@example.test\nSubject: x\n\nbody\n")
        let head = try XCTUnwrap(MaildirBounce.parseHead(file))
        XCTAssertEqual(head.sender, bytes("s@example.org"))
        XCTAssertEqual(head.deliveredTo, bytes("pre-bob@example.test"))
        XCTAssertEqual(Array(file[head.restOffset...]), bytes("Subject: x\n\nbody\n"))
        XCTAssertEqual(MaildirBounce.parseHead(bytes("Return-Path: <>\nDelivered-To: x\n"))?.sender, [])

        XCTAssertNil(MaildirBounce.parseHead(bytes("Subject: x\n\nbody\n")))
        XCTAssertNil(MaildirBounce.parseHead(bytes("Return-Path: s@example.org\nDelivered-To: x\n")))
        XCTAssertNil(MaildirBounce.parseHead(bytes("Return-Path: <s@example.org>\nSubject: x\n")))
        XCTAssertNil(MaildirBounce.parseHead(bytes("Return-Path: <s@example.org>\nDelivered-To: x")), "second line must end")
        XCTAssertNil(MaildirBounce.parseHead(bytes("Return-Path: <s\0@example.org>\nDelivered-To: x\n")))
        XCTAssertNil(MaildirBounce.parseHead(bytes("Return-Path: <\n")))
    }

    func testPlanSendsToSenderDoubleBouncesToPostmasterAndDropsTriples() {
        func head(_ s: String) -> MaildirBounce.FileHead { .init(sender: bytes(s), deliveredTo: bytes("r"), restOffset: 0) }
        XCTAssertEqual(MaildirBounce.plan(head("s@example.org"), settings: settings), .send(envelopeSender: [], recipient: bytes("s@example.org")))
        XCTAssertEqual(MaildirBounce.plan(head(""), settings: settings), .send(envelopeSender: bytes("#@[]"), recipient: bytes("postmaster@mx.example.test")))
        XCTAssertEqual(MaildirBounce.plan(head("#@[]"), settings: settings), .discardTripleBounce)
    }

    func testBoundaryIsTaiLabelQpAndBounceHost() {
        XCTAssertEqual(MaildirBounce.taiLabel(unixTime: 1723000000), 4611686020150387914)
        XCTAssertEqual(MaildirBounce.boundary(taiLabel: 4611686020150387914, qp: 4242, bounceHost: "mx.example.test"),
                       "4611686020150387914.qp_4242.KUI@mx.example.test")
    }

    func testBounceBytes() throws {
        let file = bytes("Return-Path: <s@example.org>\nDelivered-To: pre-bob@example.test\nSubject: x\n\nbody\n")
        let head = try XCTUnwrap(MaildirBounce.parseHead(file))
        let out = MaildirBounce.compose(head: head, file: file, why: bytes("Sorry, no mailbox here by that name."), timedOut: false,
                                        prefix: bytes("pre-"), settings: settings, date: date,
                                        taiLabel: 4611686020150387914, qp: 4242)
        let b = "4611686020150387914.qp_4242.KUI@mx.example.test"
        let expected = """
        Date: 7 Aug 2025 03:19:18 -0000
        From: MAILER-DAEMON@mx.example.test
        To: s@example.org
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="\(b)"
        Subject: failure notice

        --\(b)

        Hi. This is the maildirbounce program at mx.example.test.
        I'm afraid I wasn't able to deliver your message to the following address.
        This is a permanent error; I've given up. Sorry it didn't work out.

        <bob@example.test>:
        Sorry, no mailbox here by that name.

        --- Enclosed is a copy of the message.

        --\(b)
        Content-Type: message/rfc822

        Return-Path: <s@example.org>
        Subject: x

        body

        --\(b)--

        """
        XCTAssertEqual(String(decoding: out, as: UTF8.self), expected)
    }

    func testDoubleBounceBytesWithTimeoutAndQuotedAddresses() throws {
        let file = bytes("Return-Path: <>\nDelivered-To: other@example.test\nbody\n")
        let head = try XCTUnwrap(MaildirBounce.parseHead(file))
        var s = settings
        s.bounceFrom = "mailer daemon"
        s.doubleBounceRecipient = "post master@mx.example.test"
        let out = MaildirBounce.compose(head: head, file: file, why: bytes("remote said no"), timedOut: true,
                                        prefix: bytes("pre-"), settings: s, date: date, taiLabel: 1, qp: 2)
        let b = "1.qp_2.KUI@mx.example.test"
        let expected = """
        Date: 7 Aug 2025 03:19:18 -0000
        From: "mailer daemon"@mx.example.test
        To: "post master"@mx.example.test
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="\(b)"
        Subject: failure notice

        --\(b)

        Hi. This is the maildirbounce program at mx.example.test.
        I tried to deliver a bounce message to this address, but the bounce bounced!

        <other@example.test>:
        remote said no
        This message is too old. Giving up.

        --- Enclosed is the original bounce.

        --\(b)
        Content-Type: message/rfc822

        Return-Path: <>
        body

        --\(b)--

        """
        XCTAssertEqual(String(decoding: out, as: UTF8.self), expected)
    }

    func testClientResultsAreParsedAsTheyArriveAndAPartialOneIsDropped() {
        var p = ClientResultParser()
        XCTAssertEqual(p.feed(bytes("new/a\0Kdelivered\nnew/b")), [ClientResult("new/a", "K", "delivered")])
        XCTAssertEqual(p.feed(bytes("\0D")), [])
        XCTAssertEqual(p.feed(bytes("no such user\ncur/c:2,\0Z\nnew/d\0Zhalf")),
                       [ClientResult("new/b", "D", "no such user"), ClientResult("cur/c:2,", "Z", "")])
        XCTAssertEqual(ClientResultParser.parse(bytes("x\0Kok\ny")), [ClientResult("x", "K", "ok")])
        XCTAssertEqual(ClientResultParser.parse(bytes("x\0")), [])
    }

    func testDeliveredToPrefixCheckReadsTheSecondLine() {
        XCTAssertTrue(MaildirScan.deliveredToHasPrefix(bytes("Return-Path: <>\nDelivered-To: pre-bob@x\n"), prefix: bytes("pre-")))
        XCTAssertFalse(MaildirScan.deliveredToHasPrefix(bytes("Return-Path: <>\nDelivered-To: bob@x\n"), prefix: bytes("pre-")))
        XCTAssertFalse(MaildirScan.deliveredToHasPrefix(bytes("Delivered-To: pre-bob@x\nReturn-Path: <>\n"), prefix: bytes("pre-")))
        XCTAssertFalse(MaildirScan.deliveredToHasPrefix(bytes("Return-Path: <>\nDelivered-To: pre-bob@x"), prefix: bytes("pre-")))
    }
}
