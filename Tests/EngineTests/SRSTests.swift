import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// SRS (issue #19) end to end: forward and condredirect rewrite the sender of
/// forwarded mail, srsfilter sends bounces to SRS addresses back. The vectors
/// are libsrs2's (toolbox.md §3.6: secret `secret`, alias `srs.example.net`);
/// addresses that depend on today's date are checked against HMAC-SHA1 computed
/// by the openssl command, independently of our code.
final class SRSTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() {
        h = EngineHarness()
        h.extraEnv["QMAILQUEUE"] = ToolboxTests.installQueueProgram(h)
        h.writeControl("srs_domain", "srs.example.net\n")
        h.writeControl("srs_secrets", "secret\n")
        h.writeControl("rcpthosts", "example.test\n")
    }
    override func tearDown() { h.cleanup() }

    func pass() throws -> String {
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out.stdoutText
    }

    static let b32 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    var today: Int { Int(time(nil)) / 86400 }
    var timestamp: String { String([SRSTests.b32[(today >> 5) & 31], SRSTests.b32[today & 31]]) }

    /// The first four characters of base64(HMAC-SHA1("secret", text)), by openssl.
    func referenceHash(_ text: String) throws -> String {
        let out = try TestEnv.run("/bin/sh", ["-c", "printf '%s' \"$1\" | openssl dgst -sha1 -hmac secret -binary | base64", "sh", text])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return String(out.stdoutText.prefix(4))
    }

    func testForwardRewritesTheSenderAndCondredirectToo() throws {
        h.writeHomeFile("alice", ".qmail", "|\(TestEnv.program("forward")) bob@example.test\n")
        h.writeHomeFile("alice", ".qmail-cond", "|\(TestEnv.program("condredirect")) bob@example.test true\n")
        // libsrs2's SRS1 vector: no timestamp in it, the same every day.
        try h.inject("Subject: one\n\nx\n", ["-f", "SRS0=96cm=IL=example.com=user@fwd1.example.org", "alice@example.test"])
        try h.inject("Subject: two\n\nx\n", ["-f", "user@example.com", "alice@example.test"])
        try h.inject("Subject: three\n\nx\n", ["-f", "joe@example.test", "alice@example.test"])
        try h.inject("Subject: four\n\nx\n", ["-f", "user@example.com", "alice-cond@example.test"])
        let log = try pass() + pass()
        let bob = h.maildirMessages("bob")
        XCTAssertEqual(bob.count, 4, log)
        func message(_ subject: String) -> String { bob.first { $0.contains("\nSubject: \(subject)\n") } ?? "" }
        let srs1 = "SRS1=XN4U=fwd1.example.org==96cm=IL=example.com=user@srs.example.net"
        XCTAssertTrue(message("one").hasPrefix("Return-Path: <\(srs1)>\n"), message("one"))
        XCTAssertTrue(message("one").contains("\nX-Forwarded-For: \(srs1)\n"), message("one"))
        let hash = try referenceHash(timestamp.lowercased() + "example.comuser")
        let srs0 = "SRS0=\(hash)=\(timestamp)=example.com=user@srs.example.net"
        XCTAssertTrue(message("two").hasPrefix("Return-Path: <\(srs0)>\n"), message("two") + "\nexpected " + srs0)
        XCTAssertTrue(message("three").hasPrefix("Return-Path: <joe@example.test>\n"), "a local sender is kept: " + message("three"))
        XCTAssertTrue(message("four").hasPrefix("Return-Path: <\(srs0)>\n"), message("four"))
    }

    /// A queue program that records the message and envelope in alice's home.
    func recorder(_ name: String) -> String {
        let p = h.dir + "/rec-" + name
        let d = h.home("alice") + "/" + name
        TestEnv.write(p, "#!/bin/sh\nexec 3<&1; cat > \(d).msg; tr '\\000' '\\n' <&3 > \(d).env; exit 0\n", mode: 0o755)
        return p
    }

    func recorded(_ name: String) -> (message: String, envelope: String) {
        (String(decoding: TestEnv.read(h.home("alice") + "/" + name + ".msg"), as: UTF8.self),
         String(decoding: TestEnv.read(h.home("alice") + "/" + name + ".env"), as: UTF8.self))
    }

    func testSrsfilterDecodesOursAndLibsrs2sAndRefusesForgedOrExpired() throws {
        // IL is 2024-01-01 (day 267 of 1024): accept it with a max age that reaches it today.
        let age = ((today % 1024) - 267 + 1024) % 1024
        h.writeControl("srs_maxage_reach", "\(age + 1)\n")
        let sf = TestEnv.program("srsfilter")
        h.writeHomeFile("alice", ".qmail-srs-default", "|SRS_MAXAGE=srs_maxage_reach QMAILQUEUE=\(recorder("a")) \(sf)\n")
        h.writeHomeFile("alice", ".qmail-srsold-default", "|QMAILQUEUE=\(recorder("b")) \(sf)\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-srsone-default", "|QMAILQUEUE=\(recorder("c")) \(sf)\n")
        h.writeHomeFile("alice", ".qmail-srsours-default", "|QMAILQUEUE=\(recorder("d")) \(sf)\n")
        let ours = "SRS0=\(try referenceHash(timestamp.lowercased() + "example.comuser"))=\(timestamp)=example.com=user"
        // A bounce to the vector address, with To: fields to rewrite.
        try h.inject("To: alice-srs-SRS0=96cm=IL=example.com=user@example.test,\n  someone@else.example\nTo: x@y\nSubject: bounce\n\nbody\n",
                     ["-f", "", "alice-srs-SRS0=96cm=IL=example.com=user@example.test"])
        var log = try pass()
        XCTAssertTrue(log.contains("success: srsfilter:_qp_"), log)
        let a = recorded("a")
        XCTAssertEqual(a.envelope, "F\nTuser@example.com\n\n", log)
        XCTAssertTrue(a.message.contains("\nTo: user@example.com\nSubject: bounce\n"), a.message)
        XCTAssertFalse(a.message.contains("someone@else") || a.message.contains("To: x@y"), a.message)
        // Default max age (21 days): the 2024 address is out of date; a forged hash is refused.
        try h.inject("Subject: old\n\nx\n", ["-f", "", "alice-srsold-SRS0=96cm=IL=example.com=user@example.test",
                                               "alice-srs-SRS0=XXXX=IL=example.com=user@example.test",
                                               "alice-srs-SRS0=96cm=I!=example.com=user@example.test",
                                               "alice-srs-plain@example.test"])
        log = try pass()
        if age > 21 { XCTAssertTrue(log.contains("failure: srsfilter:_fatal:_SRS:_Time_stamp_out_of_date./"), log) }
        XCTAssertTrue(log.contains("failure: srsfilter:_fatal:_SRS:_Hash_invalid_in_SRS_address./"), log)
        XCTAssertTrue(log.contains("failure: srsfilter:_fatal:_SRS:_Bad_base32_character_in_timestamp./"), log)
        XCTAssertTrue(log.contains("failure: srsfilter:_fatal:_SRS:_Not_an_SRS_address./"), log)
        // SRS1 (any case of the tag and hash) goes back to the first forwarder's SRS0 address.
        try h.inject("Subject: one\n\nx\n", ["-f", "", "alice-srsone-srs1=xn4u=fwd1.example.org==96cm=IL=example.com=user@example.test"])
        // An address made today by our forward goes back to its sender.
        try h.inject("Subject: ours\n\nx\n", ["-f", "", "alice-srsours-\(ours)@example.test"])
        _ = try pass()
        XCTAssertEqual(recorded("c").envelope, "F\nTSRS0=96cm=IL=example.com=user@fwd1.example.org\n\n")
        XCTAssertTrue(recorded("c").message.contains("\nTo: SRS0=96cm=IL=example.com=user@fwd1.example.org\n\nx\n"), recorded("c").message)
        XCTAssertEqual(recorded("d").envelope, "F\nTuser@example.com\n\n")
        // Not a bounce: ignored, delivery goes on.
        try h.inject("Subject: not a bounce\n\nx\n", ["-f", "s@x.example", "alice-srsold-anything@example.test"])
        log = try pass()
        XCTAssertTrue(log.contains("success: srsfilter:_ignore:_SENDER_must_be_empty/did_1+0+1/"), log)
    }

    /// Controls the delivering user cannot read: forward waits (111); SRS not
    /// configured: srsfilter refuses, forward sends unchanged.
    func testUnreadableOrMissingControls() throws {
        h.writeHomeFile("alice", ".qmail", "|\(TestEnv.program("forward")) bob@example.test\n")
        h.writeHomeFile("alice", ".qmail-srs-default", "|\(TestEnv.program("srsfilter"))\n")
        chmod(h.control + "/srs_secrets", 0o600)      // root's; the programs run as the user
        try h.inject("Subject: a\n\nx\n", ["-f", "user@example.com", "alice@example.test"])
        var log = try pass()
        XCTAssertTrue(log.contains("deferral: forward:_fatal:_unable_to_read_controls/"), log)
        chmod(h.control + "/srs_secrets", 0o644)
        unlink(h.control + "/srs_domain")
        try h.inject("Subject: b\n\nx\n", ["-f", "user@example.com", "alice@example.test"])
        try h.inject("Subject: c\n\nx\n", ["-f", "", "alice-srs-SRS0=96cm=IL=example.com=user@example.test"])
        log = try pass()
        XCTAssertTrue(log.contains("failure: srsfilter:_fatal:_unable_to_rewrite_envelope/"), log)
        _ = try pass()
        XCTAssertTrue(h.maildirMessages("bob").contains { $0.hasPrefix("Return-Path: <user@example.com>\n") && $0.contains("Subject: b\n") },
                      h.maildirMessages("bob").joined())
    }
}
