import XCTest
import Inject
import QueueFormat
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class HeaderAndAddressTests: XCTestCase {
    func testAddressListForms() {
        XCTAssertEqual(AddressList.parse("bob@example.net, Carol <carol@example.com>"), ["bob@example.net", "carol@example.com"])
        XCTAssertEqual(AddressList.parse("\"Smith, Joe\" <joe@x.org> (work), dave"), ["joe@x.org", "dave"])
        XCTAssertEqual(AddressList.parse("friends: a@b, c@d; e@f"), ["a@b", "c@d", "e@f"])
        XCTAssertEqual(AddressList.parse("undisclosed-recipients:;"), [])
        XCTAssertEqual(AddressList.parse("<@relay.example:user@final.example>"), ["user@final.example"])
        XCTAssertEqual(AddressList.parse("x@y (a comment, with comma)"), ["x@y"])
    }

    func testHeaderParsingKeepsContinuationsAndBody() {
        let msg = Array("To: a@b,\n c@d\nSubject: hi\n\nbody\nTo: not@header\n".utf8)
        let h = HeaderBlock(parsing: msg)
        XCTAssertEqual(h.fields.map(\.name), ["To", "Subject"])
        XCTAssertEqual(h.first("to")?.value, " a@b,  c@d")
        XCTAssertEqual(h.body, Array("body\nTo: not@header\n".utf8))
    }
}

final class InjectorTests: XCTestCase {
    var settings: InjectSettings {
        var s = InjectSettings()
        s.user = "alice"
        s.defaultHost = "example.org"
        s.defaultDomain = "example.org"
        s.idHost = "id.example.org"
        return s
    }

    func testAddsMissingHeadersRemovesBccAndTakesRecipientsFromHeader() throws {
        let msg = Array("To: bob@example.net\nCc: carol\nBcc: secret@hidden.example\nSubject: s\n\nhello\n".utf8)
        let p = try Injector.prepare(msg, settings: settings, now: 1754536758, pid: 77)
        XCTAssertEqual(p.recipients, ["bob@example.net", "carol@example.org", "secret@hidden.example"])
        XCTAssertEqual(p.sender, "alice@example.org")
        let text = String(decoding: p.bytes, as: UTF8.self)
        XCTAssertFalse(text.contains("Bcc"), text)
        XCTAssertTrue(text.contains("From: alice@example.org\n"), text)
        XCTAssertTrue(text.contains("Message-ID: <20250807031918.77.qmail@id.example.org>\n"), text)
        XCTAssertTrue(text.contains("\nDate: "), text)
        XCTAssertTrue(text.hasSuffix("\n\nhello\n"), text)
    }

    func testArgumentsAndOptions() throws {
        var s = settings
        s.recipients = ["zed@example.com"]
        s.sender = "bounces@example.org"
        s.fullName = "Alice Q. Example"
        let msg = Array("To: bob@example.net\nFrom: keep@example.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <x@y>\n\nb\n".utf8)
        let p = try Injector.prepare(msg, settings: s, now: 0, pid: 1)
        XCTAssertEqual(p.recipients, ["zed@example.com"])
        XCTAssertEqual(p.sender, "bounces@example.org")
        XCTAssertEqual(p.bytes, msg, "a complete message passes through unchanged")
        s.recipientsFromHeader = true
        XCTAssertEqual(try Injector.prepare(msg, settings: s, now: 0, pid: 1).recipients, ["bob@example.net", "zed@example.com"])
        let noFrom = try Injector.prepare(Array("Subject: q\n\nb".utf8), settings: s, now: 0, pid: 1)
        XCTAssertTrue(String(decoding: noFrom.bytes, as: UTF8.self).contains("From: \"Alice Q. Example\" <alice@example.org>\n"))
        XCTAssertEqual(noFrom.bytes.last, 10, "a final newline is added")
    }

    /// qmail's hfield_valid: blanks may stand before the colon, so `Bcc :` is a Bcc
    /// field: its recipients count and the line is removed, not left for the body.
    func testBlanksBeforeTheColonStillMakeAField() throws {
        let msg = Array("To: bob@example.net\nBcc : secret@hidden.example\nSubject: s\n\nhello\n".utf8)
        let p = try Injector.prepare(msg, settings: settings, now: 1754536758, pid: 77)
        XCTAssertEqual(p.recipients, ["bob@example.net", "secret@hidden.example"])
        let text = String(decoding: p.bytes, as: UTF8.self)
        XCTAssertFalse(text.contains("secret"), text)
        XCTAssertTrue(text.contains("\nSubject: s\n"), text)
        // A blank inside the name is no field: that line starts the body.
        XCTAssertEqual(HeaderBlock(parsing: Array("To: a@b\nBad name: x\n".utf8)).fields.count, 1)
    }

    func testNoRecipientsIsAnError() {
        XCTAssertThrowsError(try Injector.prepare(Array("Subject: nobody\n\nx\n".utf8), settings: settings, now: 0, pid: 1)) {
            XCTAssertEqual($0 as? InjectError, .noRecipients)
        }
    }

    /// While a message is still arriving, where its header ends is only decided by
    /// a whole line: a blank one, or one that is neither a field nor a continuation.
    func testHeaderSplitWaitsForTheDecidingLine() {
        func split(_ t: String, final: Bool = false) -> HeaderBlock? { HeaderBlock.split(Array(t.utf8), final: final) }
        XCTAssertNil(split("To: a@b\nSubj"), "a line without its newline may still become a field")
        XCTAssertNil(split("To: a@b\n"), "the next line may be another field")
        XCTAssertNil(split("To: a@b\n cont"), "a continuation may go on")
        XCTAssertNil(split("From someone Thu Nov 26"), "an mbox From_ line not yet whole")
        let blank = split("To: a@b\n\nbody so f")
        XCTAssertEqual(blank?.fields.count, 1)
        XCTAssertEqual(blank.map { String(decoding: $0.body, as: UTF8.self) }, "body so f")
        let noField = split("To: a@b\nnot a field\nmore")
        XCTAssertEqual(noField?.fields.count, 1)
        XCTAssertEqual(noField.map { String(decoding: $0.body, as: UTF8.self) }, "not a field\nmore")
        XCTAssertEqual(split("To: a@b\nSubj", final: true)?.fields.count, 1, "at the end of input the split is final")
        // A partial line whose bytes already rule out a field decides at once.
        let early = split("To: a@b\nnot a fie")
        XCTAssertEqual(early.map { String(decoding: $0.body, as: UTF8.self) }, "not a fie")
        XCTAssertNil(split("To: a@b\n\r"), "a lone CR may still become the blank line")
        XCTAssertNil(split("To: a@b\n\tcont"), "a continuation may still go on")
    }

    func testResentHeadersSelectResentRecipients() throws {
        let msg = Array("To: orig@example.com\nResent-To: new@example.com\nResent-Bcc: hidden@example.com\n\nx\n".utf8)
        let p = try Injector.prepare(msg, settings: settings, now: 0, pid: 1)
        XCTAssertEqual(p.recipients, ["new@example.com", "hidden@example.com"])
        XCTAssertFalse(String(decoding: p.bytes, as: UTF8.self).contains("hidden@"))
    }
}

/// The built qmail-inject and sendmail, end to end into a real queue.
final class InjectProgramTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = TestEnv.temporaryDirectory("inject")
        XCTAssertEqual(try! TestEnv.run(TestEnv.program("queue-fix"), [dir + "/queue"]).exitCode, 0)
        mkdir(dir + "/control", 0o755)
        TestEnv.write(dir + "/control/me", "mx.example.org\n")
        TestEnv.write(dir + "/control/defaultdomain", "example.org\n")
    }
    override func tearDown() { TestEnv.remove(dir) }

    func env(_ extra: [String: String?] = [:]) -> [String] {
        var e: [String: String?] = ["QUEUEDIR": dir + "/queue", "CONTROLDIR": dir + "/control", "QMAILQUEUE": nil,
                                   "NULLQUEUE": nil, "USER": "tester", "QMAILUSER": nil, "MAILUSER": nil, "QMAILHOST": nil,
                                   "MAILHOST": nil, "QMAILNAME": nil, "MAILNAME": nil, "NAME": nil, "QMAILSUSER": nil, "QMAILSHOST": nil]
        for (k, v) in extra { e[k] = v }
        return TestEnv.environment(e)
    }

    func queued() throws -> [(Envelope, [UInt8])] {
        try TestEnv.files(under: dir + "/queue/todo").map { name in
            let id = UInt64(name)!
            return (try Envelope.parseQueueFile(TestEnv.read(dir + "/queue/todo/" + name)),
                    TestEnv.read(dir + "/queue/mess/\(id % 23)/\(id)"))
        }
    }

    func testQmailInjectQueuesThroughTheSiblingQmailQueue() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-inject"), input: Array("To: bob, carol@example.net\nSubject: hi\n\nhello\n".utf8), environment: env())
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(String(decoding: q[0].0.sender, as: UTF8.self), "tester@mx.example.org")
        XCTAssertEqual(q[0].0.recipients.map { String(decoding: $0, as: UTF8.self) }, ["bob@mx.example.org", "carol@example.net"])
        let mess = String(decoding: q[0].1, as: UTF8.self)
        XCTAssertTrue(mess.contains("\nFrom: tester@mx.example.org\n"), mess)
        XCTAssertTrue(mess.contains("Message-ID: <"), mess)
    }

    func testSendmailDashTAndDashF() throws {
        let out = try TestEnv.run(TestEnv.program("sendmail"), ["-t", "-i", "-f", "list-bounces@example.org", "extra@example.com"],
                                  input: Array("To: dave@example.net\nBcc: eve@example.net\n\nx\n".utf8), environment: env())
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(String(decoding: q[0].0.sender, as: UTF8.self), "list-bounces@example.org")
        XCTAssertEqual(q[0].0.recipients.map { String(decoding: $0, as: UTF8.self) }, ["dave@example.net", "eve@example.net", "extra@example.com"])
        XCTAssertFalse(String(decoding: q[0].1, as: UTF8.self).contains("Bcc"))
    }

    /// sendmail's getopt rules and do_sender: combined flags, option values attached or
    /// separate, ignored options accepted, -f making the added From:.
    func testSendmailOptionsAsIndimailsSendmailReadsThem() throws {
        let out = try TestEnv.run(TestEnv.program("sendmail"), ["-ti", "-o", "i", "-B8BITMIME", "-U", "-fnoreply@shop.example", "--", "-x@example.net"],
                                  input: Array("To: dave@example.net\nSubject: s\n\nx\n".utf8), environment: env())
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(String(decoding: q[0].0.sender, as: UTF8.self), "noreply@shop.example")
        XCTAssertEqual(q[0].0.recipients.map { String(decoding: $0, as: UTF8.self) }, ["dave@example.net", "-x@example.net"])
        XCTAssertTrue(String(decoding: q[0].1, as: UTF8.self).contains("\nFrom: noreply@shop.example\n"))
        let smtp = try TestEnv.run(TestEnv.program("sendmail"), ["-bs"], input: [], environment: env())
        XCTAssertEqual(smtp.exitCode, 100)
    }

    /// QMAILHOST names the host of From: and of the default sender, not of the recipients.
    func testMailHostIsForTheSenderOnly() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-inject"), input: Array("To: bob\n\nx\n".utf8), environment: env(["QMAILHOST": "users.example"]))
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(String(decoding: q[0].0.sender, as: UTF8.self), "tester@users.example")
        XCTAssertEqual(q[0].0.recipients.map { String(decoding: $0, as: UTF8.self) }, ["bob@mx.example.org"])
        XCTAssertTrue(String(decoding: q[0].1, as: UTF8.self).contains("\nFrom: tester@users.example\n"))
    }

    func testFailuresPrintTheClientTextAndExit100Or111() throws {
        let perm = dir + "/perm.sh"
        TestEnv.write(perm, "#!/bin/sh\ncat >/dev/null; cat <&1 >/dev/null; exit 31\n", mode: 0o755)
        let p = try TestEnv.run(TestEnv.program("qmail-inject"), ["x@y.example"], input: Array("\nhi\n".utf8), environment: env(["QMAILQUEUE": perm]))
        XCTAssertEqual(p.exitCode, 100)
        XCTAssertEqual(p.stderrText, "qmail-inject: fatal: qq mail server permanently rejected message (#5.3.0)\n")
        let temp = dir + "/temp.sh"
        TestEnv.write(temp, "#!/bin/sh\ncat >/dev/null; cat <&1 >/dev/null; echo 'Zfilter: try later (#4.3.0)' >&2; exit 88\n", mode: 0o755)
        let t = try TestEnv.run(TestEnv.program("sendmail"), ["x@y.example"], input: Array("\nhi\n".utf8), environment: env(["QMAILQUEUE": temp]))
        XCTAssertEqual(t.exitCode, 111)
        XCTAssertEqual(t.stderrText, "sendmail: fatal: filter: try later (#4.3.0)\n")
        let none = try TestEnv.run(TestEnv.program("qmail-inject"), input: Array("Subject: none\n\nx\n".utf8), environment: env())
        XCTAssertEqual(none.exitCode, 100)
        XCTAssertEqual(none.stderrText, "qmail-inject: fatal: no recipients\n")
        XCTAssertEqual(try queued().count, 0)
    }

    /// qmail-inject holds only the header: a message far larger than the memory it
    /// may use streams through to qmail-queue, and the missing final newline is added.
    func testLargeMessageStreamsThroughInBoundedMemory() throws {
        let header = Array("To: bob@example.net\nSubject: big\n\n".utf8)
        var body = [UInt8](repeating: UInt8(ascii: "x"), count: 24 << 20)
        for i in stride(from: 999, to: body.count, by: 1000) { body[i] = 10 }
        body[body.count - 1] = UInt8(ascii: "y")   // no final newline
        // 20 MB of address space for each program: less than the message.
        let out = try TestEnv.run("/bin/sh", ["-c", "ulimit -v 20480 && exec \"$0\" \"$@\"", TestEnv.program("qmail-inject")],
                                  input: header + body, environment: env())
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        let mess = q[0].1
        XCTAssertEqual(mess.last, 10, "a final newline is added")
        XCTAssertEqual(Array(mess.suffix(body.count + 1).dropLast()), body, "the body arrives byte for byte")
        XCTAssertEqual(q[0].0.recipients.map { String(decoding: $0, as: UTF8.self) }, ["bob@example.net"])
        XCTAssertTrue(String(decoding: mess.prefix(4096), as: UTF8.self).contains("\nMessage-ID: <"))
    }

    /// A failure found in the header (here: no recipients) still reads the input to
    /// its end: the program writing the message does not die of SIGPIPE.
    func testEarlyFailureStillReadsTheInput() throws {
        let script = "{ printf 'Subject: none\\n\\n'; head -c 3000000 /dev/zero; } | \"$0\"; echo \"${PIPESTATUS[0]} ${PIPESTATUS[1]}\""
        let out = try TestEnv.run("/bin/bash", ["-c", script, TestEnv.program("qmail-inject")], environment: env())
        XCTAssertEqual(out.stdoutText, "0 100\n", out.stderrText)
    }

    /// An 8-bit recipient in the header (Latin-1, not UTF-8) reaches the envelope
    /// byte for byte; a UTF-8 one as well.
    func testEightBitHeaderRecipientsAreKeptByteForByte() throws {
        let latin1: [UInt8] = Array("To: m".utf8) + [0xFC] + Array("ller@example.org, j".utf8) + [0xC3, 0xBC] + Array("rgen@example.org\n\nx\n".utf8)
        let out = try TestEnv.run(TestEnv.program("qmail-inject"), input: latin1, environment: env())
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(q[0].0.recipients, [Array("m".utf8) + [0xFC] + Array("ller@example.org".utf8),
                                           Array("j".utf8) + [0xC3, 0xBC] + Array("rgen@example.org".utf8)])
        XCTAssertEqual(LosslessText.encode(LosslessText.decode([0x61, 0xFF, 0xE2, 0x82, 0xAC, 0xE2, 0x82])), [0x61, 0xFF, 0xE2, 0x82, 0xAC, 0xE2, 0x82])
    }

    func testNullQueueDiscards() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-inject"), ["x@y.example"], input: Array("\nhi\n".utf8), environment: env(["NULLQUEUE": ""]))
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(try queued().count, 0)
    }

    func testHelpForEveryProgram() throws {
        for p in ["qmail-queue", "qmail-nullqueue", "queue-fix", "qmail-inject", "sendmail"] {
            let out = try TestEnv.run(TestEnv.program(p), ["--help"])
            XCTAssertEqual(out.exitCode, 0, p)
            XCTAssertTrue(out.stdoutText.hasPrefix("usage: \(p)"), p + ": " + out.stdoutText)
        }
    }
}
