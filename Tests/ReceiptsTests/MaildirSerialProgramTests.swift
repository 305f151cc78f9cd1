import XCTest
import Receipts
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The built maildirserial with small /bin/sh clients and a real queue for its bounces.
final class MaildirSerialProgramTests: XCTestCase {
    var h: ReceiptsHarness!
    var maildir: String { h.dir + "/Maildir" }
    var log: String { h.dir + "/client.log" }
    let settings = MaildirBounce.Settings(bounceFrom: "MAILER-DAEMON", bounceHost: "mx.example.test",
                                          doubleBounceRecipient: "postmaster@mx.example.test")

    override func setUp() {
        h = ReceiptsHarness()
        for d in ["", "/new", "/cur", "/tmp"] { mkdir(maildir + d, 0o700) }
    }
    override func tearDown() { h.cleanup() }

    /// A message file in the maildir whose mtime (and atime) is `age` seconds ago.
    func put(_ rel: String, _ text: String, age: Int) {
        let p = maildir + "/" + rel
        TestEnv.write(p, text)
        let t = Int(time(nil)) - age
        ReceiptsHarness.setTimes(p, access: t, modification: t)
    }

    func exists(_ rel: String) -> Bool { Sys.exists(maildir + "/" + rel) }

    /// A client: logs its working directory and every name it is given, then runs `answer`
    /// (shell code with the name in $f) for each name.
    func client(_ answer: String) -> String {
        let path = h.dir + "/client.sh"
        TestEnv.write(path, """
        #!/bin/sh
        echo "cwd: $(pwd -P) args: $*" >> "$1"
        tr '\\000' '\\n' | while read -r f; do
          echo "$f" >> "$1"
          \(answer)
        done

        """, mode: 0o755)
        return path
    }

    func serial(_ args: [String]) throws -> TestEnv.Output {
        try TestEnv.run("/usr/bin/timeout", ["-k", "5", "60", TestEnv.program("maildirserial")] + args, environment: h.environment())
    }

    func message(_ sender: String, _ deliveredTo: String, _ rest: String) -> String {
        "Return-Path: <\(sender)>\nDelivered-To: \(deliveredTo)\n\(rest)"
    }

    var realMaildir: String {
        guard let p = realpath(maildir, nil) else { return maildir }
        defer { free(p) }
        return String(cString: p)
    }

    func testDeliveredRemovedDeferredKeptFailedBouncedAndOtherPrefixesLeftAlone() throws {
        put("new/1000.good", message("s1@example.org", "pre-bob@example.test", "\ngood\n"), age: 300)
        put("new/1001.later", message("s2@example.org", "pre-bob@example.test", "\nlater\n"), age: 200)
        let bad = message("s3@example.org", "pre-bob@example.test", "Subject: x\n\nbad\n")
        put("cur/1002.bad:2,", bad, age: 100)
        put("new/1003.other", message("s4@example.org", "joe@example.test", "\nother\n"), age: 400)
        put("tmp/stale", "x", age: 200000)
        put("tmp/fresh", "x", age: 10)
        let c = client("""
        case "$f" in
            *good*) printf '%s\\000Kdelivered fine\\n' "$f" ;;
            *later*) printf '%s\\000Ztry again later\\n' "$f" ;;
            *bad*) printf '%s\\000Dno such user\\n' "$f" ;;
          esac
        """)
        let out = try serial(["-b", maildir, "pre-", c, log])
        XCTAssertEqual(out.exitCode, 111, "a deferred message is left behind: " + out.stderrText)

        // The client ran once, in the maildir, with its arguments, and got the names oldest first.
        XCTAssertEqual(String(decoding: TestEnv.read(log), as: UTF8.self),
                       "cwd: \(realMaildir) args: \(log)\nnew/1000.good\nnew/1001.later\ncur/1002.bad:2,\n")
        let err = out.stderrText
        XCTAssertTrue(err.contains("maildirserial: info: new/1000.good succeeded: delivered fine\n"), err)
        XCTAssertTrue(err.contains("maildirserial: info: new/1001.later failed temporarily: try again later\n"), err)
        XCTAssertTrue(err.contains("maildirserial: info: cur/1002.bad:2, bounced: no such user\n"), err)
        XCTAssertFalse(exists("new/1000.good"))
        XCTAssertTrue(exists("new/1001.later"))
        XCTAssertFalse(exists("cur/1002.bad:2,"))
        XCTAssertTrue(exists("new/1003.other"))
        XCTAssertFalse(exists("tmp/stale"), "tmp/ files unused for 36 hours are removed")
        XCTAssertTrue(exists("tmp/fresh"))

        // The bounce went to the Return-Path through the queue.
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].envelope.sender, [])
        XCTAssertEqual(q[0].envelope.recipients, [Array("s3@example.org".utf8)])
        let qp = try XCTUnwrap(q[0].envelope.pid.flatMap { Int32(String(decoding: $0, as: UTF8.self)) })
        XCTAssertTrue(err.contains("maildirserial: info: returned cur/1002.bad:2,: qp \(qp)\n"), err)

        // Byte for byte, with the date and TAI label it chose.
        let text = q[0].text
        let date = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("Date: ") }).dropFirst(6)
        XCTAssertTrue(date.hasSuffix(" -0000"), String(date))
        let boundary = try XCTUnwrap(text.split(separator: "\"").dropFirst().first)
        XCTAssertTrue(boundary.hasSuffix(".qp_\(qp).KUI@mx.example.test"), String(boundary))
        let label = try XCTUnwrap(UInt64(boundary.prefix { $0 != "." }))
        let head = try XCTUnwrap(MaildirBounce.parseHead(Array(bad.utf8)))
        let expected = MaildirBounce.compose(head: head, file: Array(bad.utf8), why: Array("no such user".utf8), timedOut: false,
                                             prefix: Array("pre-".utf8), settings: settings, date: String(date),
                                             taiLabel: label, qp: qp)
        XCTAssertEqual(text, String(decoding: expected, as: UTF8.self))
        XCTAssertTrue(text.contains("\n<bob@example.test>:\nno such user\n\n--- Enclosed is a copy of the message.\n"), text)
    }

    func testWithoutDashBPermanentFailuresAreLoggedAndKept() throws {
        put("new/a", message("s@example.org", "bob@example.test", "\na\n"), age: 100)
        let c = client(#"printf '%s\000Dmailbox is full\n' "$f""#)
        let out = try serial([maildir, "", c, log])
        XCTAssertEqual(out.exitCode, 111, out.stderrText)
        XCTAssertTrue(out.stderrText.contains("maildirserial: info: new/a failed: mailbox is full\n"), out.stderrText)
        XCTAssertTrue(exists("new/a"))
        XCTAssertEqual(try h.queued().count, 0)
    }

    func testDashTBouncesOldMessagesThatKeepFailingTemporarily() throws {
        let old = message("old@example.org", "bob@example.test", "\nold\n")
        put("new/old", old, age: 10000)
        put("new/young", message("young@example.org", "bob@example.test", "\nyoung\n"), age: 100)
        let c = client(#"printf '%s\000Zconnection refused\n' "$f""#)
        let out = try serial(["-b", "-t", "3600", maildir, "", c, log])
        XCTAssertEqual(out.exitCode, 111, out.stderrText)
        XCTAssertTrue(out.stderrText.contains("maildirserial: info: new/old bounced: connection refused\n"), out.stderrText)
        XCTAssertTrue(out.stderrText.contains("maildirserial: info: new/young failed temporarily: connection refused\n"), out.stderrText)
        XCTAssertFalse(exists("new/old"))
        XCTAssertTrue(exists("new/young"))
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].envelope.recipients, [Array("old@example.org".utf8)])
        XCTAssertTrue(q[0].text.contains("\n<bob@example.test>:\nconnection refused\nThis message is too old. Giving up.\n\n--- Enclosed is a copy of the message.\n"), q[0].text)
        XCTAssertTrue(q[0].text.contains("\nReturn-Path: <old@example.org>\n\nold\n\n--"), q[0].text)
    }

    func testDoubleBounceGoesToPostmasterTripleIsDiscardedBadFormatIsKept() throws {
        put("new/double", message("", "bob@example.test", "\nbounce\n"), age: 300)
        put("new/triple", message("#@[]", "bob@example.test", "\ndouble\n"), age: 200)
        put("new/junk", "Subject: no head lines\n\nx\n", age: 100)
        let c = client(#"printf '%s\000Dgone\n' "$f""#)
        let out = try serial(["-b", maildir, "", c, log])
        XCTAssertEqual(out.exitCode, 111, out.stderrText)
        let err = out.stderrText
        XCTAssertTrue(err.contains("maildirserial: info: discarding new/triple: triple bounce\n"), err)
        XCTAssertTrue(err.contains("maildirserial: warn: unable to bounce new/junk: bad file format\n"), err)
        XCTAssertFalse(exists("new/double"))
        XCTAssertFalse(exists("new/triple"))
        XCTAssertTrue(exists("new/junk"))
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].envelope.sender, Array("#@[]".utf8))
        XCTAssertEqual(q[0].envelope.recipients, [Array("postmaster@mx.example.test".utf8)])
        XCTAssertTrue(q[0].text.contains("\nTo: postmaster@mx.example.test\n"), q[0].text)
        XCTAssertTrue(q[0].text.contains("I tried to deliver a bounce message to this address, but the bounce bounced!\n\n<bob@example.test>:\ngone\n\n--- Enclosed is the original bounce.\n"), q[0].text)
        XCTAssertTrue(q[0].text.contains("\nReturn-Path: <>\n\nbounce\n\n--"), q[0].text)
    }

    func testEverythingDeliveredExits0AndAnEmptyMaildirToo() throws {
        put("new/a", "x\n", age: 100)
        put("cur/b:2,S", "y\n", age: 50)
        let c = client(#"printf '%s\000Kok\n' "$f""#)
        let out = try serial([maildir, "", c, log])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertFalse(exists("new/a"))
        XCTAssertFalse(exists("cur/b:2,S"))
        let again = try serial([maildir, "", c, log])
        XCTAssertEqual(again.exitCode, 0, again.stderrText)
        XCTAssertEqual(again.stderrText, "")
    }

    func testClientMakingNoProgressGivesUpAfterThreeRounds() throws {
        put("new/a", "x\n", age: 100)
        let c = h.dir + "/silent.sh"
        TestEnv.write(c, "#!/bin/sh\ncat > /dev/null\necho run >> \"$1\"\n", mode: 0o755)
        let out = try serial([maildir, "", c, log])
        XCTAssertEqual(out.exitCode, 111, out.stderrText)
        XCTAssertEqual(out.stderrText, "maildirserial: fatal: making no progress, giving up\n")
        XCTAssertEqual(String(decoding: TestEnv.read(log), as: UTF8.self), "run\nrun\nrun\n")
        XCTAssertTrue(exists("new/a"))
    }

    func testClientExit100Exits100() throws {
        put("new/a", "x\n", age: 100)
        let c = h.dir + "/refuse.sh"
        TestEnv.write(c, "#!/bin/sh\necho 'client: bad configuration' >&2\nexit 100\n", mode: 0o755)
        let out = try serial([maildir, "", c])
        XCTAssertEqual(out.exitCode, 100, out.stderrText)
        XCTAssertTrue(exists("new/a"))
    }

    func testUsageAndHelp() throws {
        let out = try serial([maildir, ""])
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertEqual(out.stderrText, "maildirserial: usage: maildirserial [ -b ] [ -t lifetime ] dir prefix client [ arg ... ]\n")
        let help = try TestEnv.run(TestEnv.program("maildirserial"), ["--help"])
        XCTAssertEqual(help.exitCode, 0)
        XCTAssertTrue(help.stdoutText.hasPrefix("usage: maildirserial [-b] [-t lifetime] dir prefix client"), help.stdoutText)
        XCTAssertTrue(help.stdoutText.contains("exit codes:"))
    }
}
