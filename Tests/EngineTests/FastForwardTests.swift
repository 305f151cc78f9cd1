import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// fastforward, setforward and printforward (issue #19): aliases in a cdb,
/// delivered by the engine through the alias user's .qmail-default.
final class FastForwardTests: XCTestCase {
    var h: EngineHarness!
    var db: String { h.dir + "/aliases.cdb" }

    override func setUp() {
        h = EngineHarness(alias: true)
        h.extraEnv["QMAILQUEUE"] = ToolboxTests.installQueueProgram(h)
    }
    override func tearDown() { h.cleanup() }

    func setforward(_ text: String, _ cdb: String? = nil) throws -> TestEnv.Output {
        let target = cdb ?? db
        return try TestEnv.run(TestEnv.program("setforward"), [target, target + ".tmp"], input: Array(text.utf8))
    }

    func pass() throws -> String {
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out.stdoutText
    }

    static let aliases = """
    # the site's aliases
    staff@example.test: alice@example.test, bob@example.test;
    team@example.test: staff@example.test, joe@example.test;
    loop1@example.test: loop2@example.test;
    loop2@example.test: loop1@example.test, joe@example.test;
    owned@example.test: bob@example.test;
    owned@example.test: ?owner-x@example.test;
    prog@example.test: |echo\\ "$SENDER">prog.txt, !cat\\ >preline.txt;

    """

    func testAliasesExpandRecursivelyLoopsEndAndOwnersBecomeTheSender() throws {
        XCTAssertEqual(try setforward(FastForwardTests.aliases).exitCode, 0)
        h.writeHomeFile("alias", ".qmail-default", "|\(TestEnv.program("fastforward")) -d \(db)\n")
        try h.inject("Subject: ff\n\nhello\n", ["-f", "s@x.example", "team@example.test", "loop1@example.test", "owned@example.test",
                                                "prog@example.test", "nobody-here@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("success: fastforward:_qp_"), log)
        XCTAssertTrue(log.contains("failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/"), log)
        let prog = String(decoding: TestEnv.read(h.home("alias") + "/prog.txt"), as: UTF8.self)
        XCTAssertEqual(prog, "s@x.example\n")
        let pre = String(decoding: TestEnv.read(h.home("alias") + "/preline.txt"), as: UTF8.self)
        XCTAssertTrue(pre.hasPrefix("From s@x.example"), pre)
        XCTAssertTrue(pre.contains("\nDelivered-To: prog@example.test\n"), pre)
        _ = try pass()
        let alice = h.maildirMessages("alice"), bob = h.maildirMessages("bob"), joe = h.maildirMessages("joe")
        XCTAssertEqual(alice.count, 1)
        XCTAssertEqual(bob.count, 2)       // through team (staff) and through owned
        XCTAssertEqual(joe.count, 2)       // through team and through the loop, once
        XCTAssertTrue(alice[0].contains("\nDelivered-To: team@example.test\nReceived: "), alice[0])
        XCTAssertTrue(alice[0].hasPrefix("Return-Path: <s@x.example>\n"), alice[0])
        XCTAssertTrue(bob.contains { $0.hasPrefix("Return-Path: <owner-x@example.test>\n") && $0.contains("Delivered-To: owned@example.test\n") },
                      bob.joined())
        XCTAssertTrue(joe.contains { $0.contains("Delivered-To: loop1@example.test\n") })
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testPassThroughAndQueueFailures() throws {
        XCTAssertEqual(try setforward(FastForwardTests.aliases).exitCode, 0)
        let qq = h.dir + "/qq88"
        TestEnv.write(qq, "#!/bin/sh\ncat >/dev/null; printf 'Dnot here (#5.7.1)' >&2; exit 88\n", mode: 0o755)
        let qz = h.dir + "/qq53"
        TestEnv.write(qz, "#!/bin/sh\ncat >/dev/null; exit 53\n", mode: 0o755)
        h.writeHomeFile("alias", ".qmail-default", "|\(TestEnv.program("fastforward")) -dp \(db)\n./Maildir/\n")
        h.writeHomeFile("alias", ".qmail-staff", "|QMAILQUEUE=\(qq) \(TestEnv.program("fastforward")) -d \(db)\n")
        h.writeHomeFile("alias", ".qmail-team", "|QMAILQUEUE=\(qz) \(TestEnv.program("fastforward")) -d \(db)\n")
        try h.inject("Subject: p\n\nx\n", ["-f", "joe@example.test", "unknown@example.test", "owned@example.test",
                                            "staff@example.test", "team@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("failure: fastforward:_fatal:_not_here_(#5.7.1)/"), log)
        XCTAssertTrue(log.contains("deferral: fastforward:_fatal:_qq_write_error_or_disk_full_(#4.3.0)/"), log)
        // -p: the unknown address falls through to the Maildir line; the known one stops (99).
        let aliasBox = h.maildirMessages("alias")
        XCTAssertEqual(aliasBox.count, 1, log)
        XCTAssertTrue(aliasBox.first?.contains("Delivered-To: unknown@example.test\n") ?? false)
        XCTAssertTrue(h.queueFiles().contains { $0.hasPrefix("local/") }, "the deferred recipient waits")
    }

    /// A 100,000-address list: one record, every address queued once in one message.
    func testHundredThousandAddressList() throws {
        var text = "big@example.test: "
        for i in 0..<100_000 { text += "u\(i)@big.example, " }
        text += "u7@big.example;\n"
        XCTAssertEqual(try setforward(text).exitCode, 0)
        let count = h.home("alias") + "/count"
        let qq = h.dir + "/qqcount"
        TestEnv.write(qq, "#!/bin/sh\nexec 3<&1; cat >/dev/null; tr '\\000' '\\n' <&3 | grep -c '^T' > \(count); exit 0\n", mode: 0o755)
        h.writeHomeFile("alias", ".qmail-big", "|QMAILQUEUE=\(qq) \(TestEnv.program("fastforward")) -d \(db)\n")
        try h.inject("Subject: big\n\nx\n", ["-f", "s@x.example", "big@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("success: fastforward:_qp_"), log)
        XCTAssertEqual(String(decoding: TestEnv.read(count), as: UTF8.self), "100000\n")
    }

    func testSetforwardErrorsPrintforwardRoundTripAndDebiansCdb() throws {
        for (bad, text) in [("a@b: c@d", "final instruction must end with semicolon"),
                            ("a@b: c@d: e;", "double colons are not permitted"),
                            ("a@b, c: d;", "commas are not permitted before colons"),
                            ("a@b: c\0d;", "NUL bytes are not permitted"),
                            ("a@b: " + String(repeating: "x", count: 801) + ";", "addresses over 800 bytes are not permitted")] {
            let out = try setforward(bad)
            XCTAssertEqual(out.exitCode, 100, bad)
            XCTAssertEqual(out.stderrText, "setforward: fatal: \(text)\n", bad)
            XCTAssertFalse(Sys.exists(db), "nothing written on bad input")
        }
        XCTAssertEqual(try setforward("Staff@Example.test: a@b, |prog x, ?own@b, \\,odd\\:;\n").exitCode, 0)
        // Debian's cdb reads what setforward wrote.
        let dump = try TestEnv.run("/usr/bin/cdb", ["-d", db])
        XCTAssertEqual(dump.stdoutText, "+19,5:?staff@example.test->own@b\n+19,19::staff@example.test->&a@b\0|progx\0&,odd:\0\n\n")
        // printforward's text feeds setforward to the same database.
        let printed = try TestEnv.run("/bin/sh", ["-c", "\(TestEnv.program("printforward")) < \(db)"])
        XCTAssertEqual(printed.exitCode, 0, printed.stderrText)
        XCTAssertEqual(printed.stdoutText, "staff@example.test: ?own@b;\nstaff@example.test:\n, &a@b\n, |progx\n, &\\,odd\\:\n;\n")
        XCTAssertEqual(try setforward(printed.stdoutText, h.dir + "/again.cdb").exitCode, 0)
        XCTAssertEqual(TestEnv.read(h.dir + "/again.cdb"), TestEnv.read(db))
        // A database made by Debian's cdb is read by fastforward.
        let made = try TestEnv.run("/usr/bin/cdb", ["-c", h.dir + "/deb.cdb"], input: Array("+15,10::x@example.test->&y@b.test\0\n\n".utf8))
        XCTAssertEqual(made.exitCode, 0, made.stderrText)
        let ff = try TestEnv.run(TestEnv.program("fastforward"), ["-n", h.dir + "/deb.cdb"], input: Array("\nx\n".utf8),
                                 environment: TestEnv.environment(["RECIPIENT": "X@example.test", "SENDER": "s@t"]))
        XCTAssertEqual(ff.exitCode, 0, ff.stderrText)
        XCTAssertEqual(ff.stderrText, "from s@t\nto y@b.test\n")
        // A database cut short: a clear error, exit 111 (the message waits).
        let whole = TestEnv.read(db)
        try Sys.writeFile(h.dir + "/cut.cdb", Array(whole.prefix(whole.count - 20)))
        let cut = try TestEnv.run(TestEnv.program("fastforward"), [h.dir + "/cut.cdb"], input: Array("\nx\n".utf8),
                                  environment: TestEnv.environment(["RECIPIENT": "staff@example.test", "SENDER": "s@t", "DTLINE": "x\n"]))
        XCTAssertEqual(cut.exitCode, 111)
        XCTAssertTrue(cut.stderrText.hasPrefix("fastforward: fatal: unable to read \(h.dir)/cut.cdb: "), cut.stderrText)
        let pcut = try TestEnv.run("/bin/sh", ["-c", "\(TestEnv.program("printforward")) < \(h.dir)/cut.cdb"])
        XCTAssertEqual(pcut.exitCode, 100)
        XCTAssertEqual(pcut.stderrText, "printmaillist: fatal: bad database format\n")
    }

    /// printforward reads a database from a pipe as from a file (`cat aliases.cdb | printforward`):
    /// tinycdb needs a file, so the pipe is first copied into a temporary one.
    func testPrintforwardReadsAPipe() throws {
        XCTAssertEqual(try setforward("staff@example.test: a@b, |prog x, ?own@b;\nlist@: ./members.bin;\n").exitCode, 0)
        let fromFile = try TestEnv.run("/bin/sh", ["-c", "\(TestEnv.program("printforward")) < \(db)"])
        XCTAssertEqual(fromFile.exitCode, 0, fromFile.stderrText)
        let fromPipe = try TestEnv.run(TestEnv.program("printforward"), input: TestEnv.read(db))
        XCTAssertEqual(fromPipe.exitCode, 0, fromPipe.stderrText)
        XCTAssertEqual(fromPipe.stdoutText, fromFile.stdoutText)
        XCTAssertEqual(fromPipe.stdoutText, "staff@example.test: ?own@b;\nstaff@example.test:\n, &a@b\n, |progx\n;\nlist@:\n, ./members.bin\n;\n")
        let shellPipe = try TestEnv.run("/bin/sh", ["-c", "cat \(db) | \(TestEnv.program("printforward"))"])
        XCTAssertEqual(shellPipe.stdoutText, fromFile.stdoutText, shellPipe.stderrText)
        // What is not a database, or is one cut short, is refused from a pipe as from a file.
        for bad in [Array("not a cdb at all\n".utf8), Array(TestEnv.read(db).prefix(1000))] {
            let out = try TestEnv.run(TestEnv.program("printforward"), input: bad)
            XCTAssertEqual(out.exitCode, 100)
            XCTAssertEqual(out.stderrText, "printmaillist: fatal: bad database format\n")
        }
        // No room for the copy: a clear error, exit 111.
        let noTmp = try TestEnv.run(TestEnv.program("printforward"), input: TestEnv.read(db),
                                    environment: TestEnv.environment(["TMPDIR": h.dir + "/no-such-dir"]))
        XCTAssertEqual(noTmp.exitCode, 111)
        XCTAssertTrue(noTmp.stderrText.hasPrefix("printforward: fatal: unable to create a temporary file in \(h.dir)/no-such-dir: "), noTmp.stderrText)
    }

    /// newaliases: sendmail's aliases file into the database fastforward reads.
    func testNewaliasesAliasesDeliveredByFastforward() throws {
        let aliases = h.dir + "/aliases"
        TestEnv.write(aliases, "# site aliases\nstaff: alice, bob@example.test,\n  joe@example.test\nowner-staff: joe\n\nprog@example.test: \"|cat > nprog.txt\"\nlist: :include:members\n")
        var out = try TestEnv.run(TestEnv.program("newaliases"), [aliases], environment: h.environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertFalse(Sys.exists(aliases + ".tmp"))
        let printed = try TestEnv.run("/bin/sh", ["-c", "\(TestEnv.program("printforward")) < \(aliases).cdb"])
        XCTAssertEqual(printed.stdoutText, "staff@:\n, &alice@example.test\n, &bob@example.test\n, &joe@example.test\n;\nowner-staff@:\n, &joe@example.test\n;\n"
                       + "staff@: ?owner-staff@example.test;\nprog@example.test:\n, !cat\\ >\\ nprog.txt\n;\nlist@:\n, ./members.bin\n;\n")
        try Sys.writeFile(h.home("alias") + "/members.bin", Array("&joe@example.test\0".utf8), mode: 0o644)
        h.writeHomeFile("alias", ".qmail-default", "|\(TestEnv.program("fastforward")) -d \(aliases).cdb\n")
        try h.inject("Subject: na\n\nx\n", ["-f", "s@x.example", "staff@example.test", "prog@example.test", "list@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("success: fastforward:_qp_"), log)
        XCTAssertEqual(h.maildir("alice").count, 1, log)
        XCTAssertEqual(h.maildir("bob").count, 1)
        XCTAssertEqual(h.maildir("joe").count, 2)
        XCTAssertTrue(h.maildirMessages("alice")[0].hasPrefix("Return-Path: <owner-staff@example.test>\n"), h.maildirMessages("alice")[0])
        XCTAssertTrue(String(decoding: TestEnv.read(h.home("alias") + "/nprog.txt"), as: UTF8.self).hasPrefix("From s@x.example"))
        for (bad, text, code) in [("x: /var/mail/x\n", "file delivery /var/mail/x not supported", 111),
                                  ("x: :include:\n", "empty :include: filenames not permitted", 111),
                                  ("x y: z\n", "unable to parse this line: x y: z", 111),
                                  ("no colon here\n", "unable to parse this line: no colon here", 111),
                                  ("x: " + String(repeating: "a", count: 801) + "@b\n", "addresses over 800 bytes are not permitted", 100)] {
            TestEnv.write(aliases, bad)
            out = try TestEnv.run(TestEnv.program("newaliases"), [aliases], environment: h.environment)
            XCTAssertEqual(out.exitCode, Int32(code), bad)
            XCTAssertEqual(out.stderrText, "newaliases: fatal: \(text)\n", bad)
        }
    }
}
