import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The .qmail toolbox (issue #19) end to end: every program runs from a user's
/// .qmail file, delivered by the engine (qmta-send), and what it queues is
/// delivered by the next pass. The user's programs run as uid 65534 and reach
/// the queue through a qmail-queue installed as it is for real: setuid qmailq in
/// `<prefix>/bin`, the queue at `<prefix>/queue`.
final class ToolboxTests: XCTestCase {
    var h: EngineHarness!
    var scripts = 0
    override func setUp() {
        h = EngineHarness()
        h.extraEnv["QMAILQUEUE"] = ToolboxTests.installQueueProgram(h)
        mkdir(h.dir + "/bin", 0o755)
    }
    override func tearDown() { h.cleanup() }

    /// qmail-queue as installed: `<prefix>/bin/qmail-queue`, mode 4711, owner
    /// qmailq, with `<prefix>/queue` the harness queue. Without a qmailq user
    /// (queue-fix then leaves the queue to root), the queue is given to the
    /// delivery user instead and the program runs unprivileged.
    static func installQueueProgram(_ h: EngineHarness) -> String {
        let prefix = h.dir + "/prefix"
        mkdir(prefix, 0o755)
        mkdir(prefix + "/bin", 0o755)
        let qq = prefix + "/bin/qmail-queue"
        let bytes = TestEnv.read(TestEnv.program("qmail-queue"))
        try! Sys.writeFile(qq, bytes, mode: 0o755)
        symlink(h.queue, prefix + "/queue")
        if let q = UserDatabase.user(named: "qmailq") {
            chown(qq, q.uid, q.gid)
            chmod(qq, 0o4711)
        } else {
            _ = try? TestEnv.run("/bin/chown", ["-R", "\(h.uid):\(h.gid)", h.queue])
        }
        return qq
    }

    func tool(_ name: String) -> String { TestEnv.program(name) }

    /// A script in the harness's bin folder (readable and runnable by the users).
    func script(_ name: String, _ body: String) -> String {
        let p = h.dir + "/bin/" + name
        TestEnv.write(p, "#!/bin/sh\n" + body + "\n", mode: 0o755)
        return p
    }

    /// A queue program that reads the message and envelope, then fails.
    func failingQueue(_ code: Int32, text: String = "") -> String {
        scripts += 1
        return script("qq\(code)-\(scripts)", "cat >/dev/null; cat <&1 >/dev/null 2>&1" + (text.isEmpty ? "" : "; printf '%s' '\(text)' >&2") + "; exit \(code)")
    }

    @discardableResult
    func pass() throws -> String {
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out.stdoutText
    }

    func deliver(_ message: String, _ args: [String]) throws -> String {
        try h.inject(message, args)
        return try pass()
    }

    func messages(_ user: String) -> [String] { h.maildirMessages(user) }

    // MARK: forward

    func testForwardQueuesWithForwardingHeadersAndDeliveryContinues() throws {
        h.writeHomeFile("alice", ".qmail", "|\(tool("forward")) bob@example.test joe@example.test\n./Maildir/\n")
        let log = try deliver("Subject: fwd\n\nhello\n", ["-f", "s@x.example", "alice@example.test"])
        XCTAssertTrue(log.contains("success: forward:_qp_"), log)
        XCTAssertTrue(log.contains("did_1+0+1/"), log)
        XCTAssertEqual(messages("alice").count, 1, "exit 0: the next line runs")
        let log2 = try pass()
        for user in ["bob", "joe"] {
            let m = messages(user)
            XCTAssertEqual(m.count, 1, log2)
            XCTAssertTrue(m.first?.hasPrefix("Return-Path: <s@x.example>\nDelivered-To: \(user)@example.test\n") ?? false, m.first ?? "")
            XCTAssertTrue(m.first?.contains("\nDelivered-To: alice@example.test\nX-Forwarded-To: bob@example.test\nX-Forwarded-To: joe@example.test\nX-Forwarded-For: s@x.example\nReceived: ") ?? false, m.first ?? "")
            XCTAssertTrue(m.first?.hasSuffix("\n\nhello\n") ?? false, m.first ?? "")
        }
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testForwardWithoutItsVariablesOrHelp() throws {
        var out = try TestEnv.run(tool("forward"), ["a@b"], input: [], environment: TestEnv.environment(["NEWSENDER": nil, "DTLINE": "x"]))
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertEqual(out.stderrText, "forward: fatal: NEWSENDER not set\n")
        out = try TestEnv.run(tool("forward"), ["a@b"], input: [], environment: TestEnv.environment(["NEWSENDER": "", "DTLINE": nil]))
        XCTAssertEqual(out.stderrText, "forward: fatal: DTLINE not set\n")
        for name in ["forward", "condredirect", "bouncesaying", "except", "preline", "filterto", "fastforward", "setforward",
                     "printforward", "rrforward", "srsfilter", "qmail-newu", "qreceipt", "replier", "dot-forward", "newaliases", "qnotify"] {
            let o = try TestEnv.run(tool(name), ["--help"])
            XCTAssertEqual(o.exitCode, 0, name)
            XCTAssertTrue(o.stdoutText.hasPrefix("usage: \(name)"), o.stdoutText)
        }
    }

    /// The queue program fails with 53, 71 or 88-with-text: the seed's text is the
    /// delivery report; Z texts defer (the message stays queued), D texts bounce.
    func testForwardQueueFailuresDeferOrBounceWithTheSeedsTexts() throws {
        let q53 = failingQueue(53), q71 = failingQueue(71)
        let q88 = failingQueue(88, text: "Dsorry, refused by policy (#5.7.1)")
        let q88z = failingQueue(88, text: "Zcome back later (#4.3.0)")
        h.writeHomeFile("alice", ".qmail-a", "|QMAILQUEUE=\(q53) \(tool("forward")) bob@example.test\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-b", "|QMAILQUEUE=\(q71) \(tool("forward")) bob@example.test\n")
        h.writeHomeFile("alice", ".qmail-c", "|QMAILQUEUE=\(q88) \(tool("forward")) bob@example.test\n")
        h.writeHomeFile("alice", ".qmail-d", "|QMAILQUEUE=\(q88z) \(tool("forward")) bob@example.test\n")
        // The bounce goes out when the message has no recipient left: the permanent case gets its own.
        try h.inject("Subject: qq\n\nx\n", ["-f", "joe@example.test", "alice-a@example.test", "alice-b@example.test", "alice-d@example.test"])
        try h.inject("Subject: qq\n\nx\n", ["-f", "joe@example.test", "alice-c@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("deferral: forward:_fatal:_qq_write_error_or_disk_full_(#4.3.0)/"), log)
        XCTAssertTrue(log.contains("deferral: forward:_fatal:_qq_mail_server_temporarily_rejected_message_(#4.3.0)/"), log)
        XCTAssertTrue(log.contains("failure: forward:_fatal:_sorry,_refused_by_policy_(#5.7.1)/"), log)
        XCTAssertTrue(log.contains("deferral: forward:_fatal:_come_back_later_(#4.3.0)/"), log)
        XCTAssertEqual(messages("alice").count, 0, "a failing line stops the delivery")
        XCTAssertEqual(messages("bob").count, 0)
        // Nothing lost: the deferred recipients wait in the queue; the bounce reaches the sender.
        XCTAssertFalse(h.queueFiles().filter { $0.hasPrefix("local/") }.isEmpty, h.queueFiles().joined(separator: " "))
        try pass()
        let bounce = messages("joe").joined()
        XCTAssertTrue(bounce.contains("<alice-c@example.test>:"), bounce)
        XCTAssertTrue(bounce.contains("forward: fatal: sorry, refused by policy (#5.7.1)"), bounce)
        XCTAssertFalse(bounce.contains("alice-a@"), bounce)
    }

    // MARK: condredirect

    func testCondredirectForwardsWhenTheProgramSucceedsAndStops() throws {
        h.writeHomeFile("bob", ".qmail", "|\(tool("condredirect")) joe@example.test grep redirect-me\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-rev", "|\(tool("condredirect")) -r joe@example.test grep keep-me\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-bad", "|\(tool("condredirect")) joe@example.test grep -q x\n")
        h.writeHomeFile("bob", ".qmail-tmp", "|\(tool("condredirect")) joe@example.test \(script("exit111", "exit 111"))\n")
        h.writeHomeFile("bob", ".qmail-perm", "|\(tool("condredirect")) joe@example.test \(script("exit100", "exit 100"))\n")
        h.writeHomeFile("bob", ".qmail-none", "|\(tool("condredirect")) joe@example.test /nonexistent/program\n./Maildir/\n")
        var log = try deliver("Subject: one\n\nredirect-me please\n", ["-f", "s@x.example", "bob@example.test"])
        XCTAssertTrue(log.contains("success: redirect-me_please/condredirect:_qp_"), log)
        XCTAssertEqual(messages("bob").count, 0, "exit 99: the Maildir line does not run")
        log = try deliver("Subject: two\n\nordinary\n", ["-f", "s@x.example", "bob@example.test"])
        XCTAssertEqual(messages("bob").count, 1, log)
        log = try deliver("Subject: three\n\nkeep-me\n", ["-f", "s@x.example", "bob-rev@example.test"])
        XCTAssertEqual(messages("bob").count, 2, "-r: program success continues")
        log = try deliver("Subject: four\n\nanything\n", ["-f", "s@x.example", "bob-rev@example.test"])
        XCTAssertEqual(messages("bob").count, 2, "-r: program failure forwards")
        log = try deliver("Subject: five\n\nx\n", ["-f", "s@x.example", "bob-bad@example.test", "bob-tmp@example.test",
                                                  "bob-perm@example.test", "bob-none@example.test"])
        XCTAssertTrue(log.contains("failure: condredirect:_Invalid_option_-q/usage:_condredirect_[_-r_]_newaddress_program_[_arg_..._]/"), log)
        XCTAssertTrue(log.contains("deferral: condredirect:_fatal:_temporary_child_error/"), log)
        XCTAssertTrue(log.contains("failure: condredirect:_fatal:_permanent_child_error/"), log)
        XCTAssertEqual(messages("bob").count, 3, "a program that is not there: delivery continues")
        try pass()
        let joe = messages("joe")
        XCTAssertEqual(joe.count, 2)
        let one = try XCTUnwrap(joe.first { $0.contains("Subject: one") })
        XCTAssertTrue(one.hasPrefix("Return-Path: <s@x.example>\nDelivered-To: joe@example.test\nReceived: "), one)
        XCTAssertTrue(one.contains("\nDelivered-To: bob@example.test\nReceived: "), one)
        XCTAssertTrue(joe.contains { $0.contains("Subject: four") && $0.contains("Delivered-To: bob-rev@example.test\n") }, joe.joined())
    }

    func testCondredirectQueueFailure() throws {
        let q88 = failingQueue(88, text: "Dno thanks (#5.7.1)")
        h.writeHomeFile("bob", ".qmail", "|QMAILQUEUE=\(q88) \(tool("condredirect")) joe@example.test true\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-z", "|QMAILQUEUE=\(failingQueue(71)) \(tool("condredirect")) joe@example.test true\n./Maildir/\n")
        let log = try deliver("Subject: c\n\nx\n", ["-f", "", "bob@example.test", "bob-z@example.test"])
        XCTAssertTrue(log.contains("failure: condredirect:_fatal:_no_thanks_(#5.7.1)/"), log)
        XCTAssertTrue(log.contains("deferral: condredirect:_fatal:_qq_mail_server_temporarily_rejected_message_(#4.3.0)/"), log)
        XCTAssertEqual(messages("bob").count, 0)
        XCTAssertFalse(h.queueFiles().isEmpty)
    }

    // MARK: bouncesaying, except

    func testBouncesayingAndExcept() throws {
        h.writeHomeFile("bob", ".qmail-closed", "|\(tool("bouncesaying")) 'This address is no longer in use. (#5.1.1)'\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-spam", "|\(tool("bouncesaying")) 'No spam, thanks.' grep -q SPAM\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-busy", "|\(tool("bouncesaying")) 'x' sh -c 'exit 111'\n")
        h.writeHomeFile("bob", ".qmail-ex", "|\(tool("except")) grep -q secret\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-extmp", "|\(tool("except")) sh -c 'exit 111'\n")
        var log = try deliver("Subject: a\n\nSPAM secret\n", ["-f", "joe@example.test", "bob-closed@example.test", "bob-spam@example.test",
                                                                "bob-busy@example.test", "bob-ex@example.test", "bob-extmp@example.test"])
        XCTAssertTrue(log.contains("failure: This_address_is_no_longer_in_use._(#5.1.1)/"), log)
        XCTAssertTrue(log.contains("failure: No_spam,_thanks./"), log)
        XCTAssertTrue(log.contains("deferral: bouncesaying:_fatal:_temporary_child_error/"), log)
        XCTAssertTrue(log.contains("deferral: except:_fatal:_temporary_child_error/"), log)
        XCTAssertTrue(log.contains("failure: Program_refused_the_message._(#5.2.0)/"), log)   // except: 100, no text
        XCTAssertEqual(messages("bob").count, 0)
        log = try deliver("Subject: b\n\nham\n", ["-f", "joe@example.test", "bob-spam@example.test", "bob-ex@example.test"])
        XCTAssertEqual(messages("bob").count, 2, log)
        var out = try TestEnv.run(tool("bouncesaying"), [])
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertEqual(out.stderrText, "bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]\n")
        out = try TestEnv.run(tool("except"), [])
        XCTAssertEqual(out.stderrText, "except: usage: except program [ arg ... ]\n")
    }

    // MARK: preline

    func testPrelineGivesTheMailboxLines() throws {
        h.writeHomeFile("bob", ".qmail-pl", "|\(tool("preline")) sh -c 'cat > pl.txt'\n")
        h.writeHomeFile("bob", ".qmail-plf", "|\(tool("preline")) -fr -d sh -c 'cat > plf.txt'\n")
        h.writeHomeFile("bob", ".qmail-stop", "|\(tool("preline")) sh -c 'cat >/dev/null; exit 99'\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-perm", "|\(tool("preline")) sh -c 'echo nope; exit 100'\n")
        let log = try deliver("Subject: pl\n\nbody\n", ["-f", "s@x.example", "bob-pl@example.test", "bob-plf@example.test",
                                                      "bob-stop@example.test", "bob-perm@example.test"])
        let pl = String(decoding: TestEnv.read(h.home("bob") + "/pl.txt"), as: UTF8.self)
        XCTAssertTrue(pl.hasPrefix("From s@x.example"), pl)
        XCTAssertTrue(pl.contains("\nReturn-Path: <s@x.example>\nDelivered-To: bob-pl@example.test\nReceived: "), pl)
        XCTAssertTrue(pl.hasSuffix("\n\nbody\n") && pl.contains("\nSubject: pl\n"), pl)
        let plf = String(decoding: TestEnv.read(h.home("bob") + "/plf.txt"), as: UTF8.self)
        XCTAssertTrue(plf.hasPrefix("Received: "), plf)
        XCTAssertEqual(messages("bob").count, 0, "exit 99 passed through")
        XCTAssertTrue(log.contains("failure: nope/"), log)
        var out = try TestEnv.run(tool("preline"), ["cat"], input: Array("m\n".utf8),
                                  environment: TestEnv.environment(["UFLINE": "U\n", "RPLINE": "R\n", "DTLINE": "D\n", "QQEH": nil]))
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertEqual(out.stderrText, "preline: fatal: No QQEH environment variable\n")
        out = try TestEnv.run(tool("preline"), ["-e", "cat"], input: Array("m\n".utf8),
                              environment: TestEnv.environment(["UFLINE": "U\n", "RPLINE": "R\n", "DTLINE": "D\n"]))
        XCTAssertEqual(out.stdoutText, "U\nR\nD\nm\n")
        out = try TestEnv.run(tool("preline"), ["-x", "cat"])
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertEqual(out.stderrText, "preline: usage: preline cmd [ arg ... ]\n")
    }

    // MARK: filterto

    func testFiltertoQueuesTheProgramsOutput() throws {
        h.writeHomeFile("bob", ".qmail-ft", "|\(tool("filterto")) joe@example.test sed s/hello/HELLO/\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-no", "|\(tool("filterto")) joe@example.test sh -c 'cat; exit 1'\n./Maildir/\n")
        h.writeHomeFile("bob", ".qmail-tmp", "|\(tool("filterto")) joe@example.test sh -c 'cat; exit 111'\n")
        h.writeHomeFile("bob", ".qmail-qq", "|QMAILQUEUE=\(failingQueue(88, text: "Dfiltered out (#5.7.1)")) \(tool("filterto")) joe@example.test cat\n")
        let log = try deliver("Subject: ft\n\nhello world\n", ["-f", "s@x.example", "bob-ft@example.test", "bob-no@example.test",
                                                             "bob-tmp@example.test", "bob-qq@example.test"])
        XCTAssertTrue(log.contains("success: filterto:_qp_"), log)
        XCTAssertTrue(log.contains("deferral: filterto:_fatal:_temporary_child_error/"), log)
        XCTAssertTrue(log.contains("failure: filterto:_fatal:_filtered_out_(#5.7.1)/"), log)
        XCTAssertEqual(messages("bob").count, 1, "exit 99 stops; a failed filter continues")
        try pass()
        let joe = messages("joe")
        XCTAssertEqual(joe.count, 1, "only the successful filter's output is queued")
        XCTAssertTrue(joe.first?.contains("\nDelivered-To: bob-ft@example.test\nReceived: ") ?? false, joe.first ?? "")
        XCTAssertTrue(joe.first?.hasSuffix("\nHELLO world\n") ?? false, String(reflecting: joe.first))
    }

    // MARK: rrforward

    /// 30 messages delivered with local concurrency 10: each address gets 10, as the
    /// sequence file is locked around its read and write.
    func testRrforwardTakesTheAddressesInTurnUnderConcurrentDeliveries() throws {
        let rr = tool("rrforward")
        h.writeHomeFile("alice", ".qmail", "|\(rr) .qmailrr bob@example.test joe@example.test alice-box@example.test\n")
        h.writeHomeFile("alice", ".qmail-box", "./Maildir/\n")
        for i in 0..<30 { try h.inject("Subject: rr \(i)\n\nx\n", ["-f", "s@x.example", "alice@example.test"]) }
        let log = try pass()
        XCTAssertEqual(log.components(separatedBy: "success: rrforward:_qp_").count - 1, 30, log)
        try pass()
        XCTAssertEqual(h.maildir("bob").count, 10)
        XCTAssertEqual(h.maildir("joe").count, 10)
        XCTAssertEqual(h.maildir("alice").count, 10)
        XCTAssertTrue(h.maildirMessages("bob")[0].contains("\nDelivered-To: alice@example.test\nReceived: "))
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("alice") + "/.qmailrr"), as: UTF8.self), "2\n")
    }

    func testRrforwardGarbageOtherExtensionsAndErrors() throws {
        let rr = tool("rrforward")
        h.writeHomeFile("alice", ".qmailrr", "garbage 12\n")
        h.writeHomeFile("alice", ".qmail", "|\(rr) .qmailrr bob@example.test joe@example.test\n")
        h.writeHomeFile("alice", ".qmail-other", "|\(rr) .qmailrr-elsewhere bob@example.test joe@example.test\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-few", "|\(rr) .qmailrr-few bob@example.test\n")
        h.writeHomeFile("alice", ".qmail-name", "|\(rr) rr-file bob@example.test joe@example.test\n")
        h.writeHomeFile("alice", ".qmail-qq", "|QMAILQUEUE=\(failingQueue(88, text: "Dgo away (#5.7.1)")) \(rr) .qmailrr-qq bob@example.test joe@example.test\n")
        h.writeHomeFile("alice", ".qmailrr-qq", String(repeating: "9", count: 60))
        let log = try deliver("Subject: g\n\nx\n", ["-f", "s@x.example", "alice@example.test", "alice-other@example.test",
                                                     "alice-few@example.test", "alice-name@example.test", "alice-qq@example.test"])
        XCTAssertTrue(log.contains("success: rrforward:_qp_"), log)
        XCTAssertTrue(log.contains("_rr_0/"), "garbage starts again at the first address: \(log)")
        XCTAssertTrue(log.contains("deferral: rrforward:_fatal:_too_few_args_(.qmailrr[-ext]_rr1@domain_rr2@domain_...)/"), log)
        XCTAssertTrue(log.contains("deferral: rrforward:_fatal:_rr-file_doesn't_begin_with_.qmailrr/"), log)
        XCTAssertTrue(log.contains("failure: rrforward:_fatal:_go_away_(#5.7.1)/"), log)
        XCTAssertEqual(h.maildir("alice").count, 1, "another extension's file: nothing done, delivery continues")
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("alice") + "/.qmailrr").prefix(2), as: UTF8.self), "0\n")
        XCTAssertEqual(String(decoding: TestEnv.read(h.home("alice") + "/.qmailrr-qq").prefix(2), as: UTF8.self), "0\n")
    }

    // MARK: qreceipt

    func testQreceiptAnswersNoticeRequests() throws {
        let qr = tool("qreceipt")
        h.writeHomeFile("alice", ".qmail", "|\(qr) alice@example.test\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-bad", "|\(qr) alice-bad@example.test\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-qq", "|QMAILQUEUE=\(failingQueue(71)) \(qr) alice-qq@example.test\n")
        try h.inject("Notice-Requested-Upon-Delivery-To: Alice <alice@example.test>, \"other\"@x.example\nMessage-ID: <m1@x>\nSubject: asks\n\nx\n",
                     ["-f", "joe@example.test", "alice@example.test"])
        try h.inject("Subject: does not ask\n\nx\n", ["-f", "joe@example.test", "alice@example.test"])
        try h.inject("Notice-Requested-Upon-Delivery-To: \"alice@example.test\"\nSubject: bounce\n\nx\n", ["-f", "", "alice@example.test"])
        try h.inject("Notice-Requested-Upon-Delivery-To: <alice-bad@example.test\nSubject: bad\n\nx\n", ["-f", "joe@example.test", "alice-bad@example.test"])
        try h.inject("Notice-Requested-Upon-Delivery-To: alice-qq@example.test\nSubject: qq\n\nx\n", ["-f", "joe@example.test", "alice-qq@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("failure: qreceipt:_fatal:_unable_to_parse_this:_Notice-Requested-Upon-Delivery-To:_<alice-bad@example.test/"), log)
        XCTAssertTrue(log.contains("deferral: qreceipt:_fatal:_temporary_qmail-queue_error/"), log)
        XCTAssertEqual(h.maildir("alice").count, 3, log)
        try pass()
        let notices = messages("joe").filter { $0.contains("Subject: success notice") }
        XCTAssertEqual(notices.count, 1, messages("joe").joined())
        let n = notices.first ?? ""
        XCTAssertTrue(n.hasPrefix("Return-Path: <>\n"), n)
        XCTAssertTrue(n.contains("From: DELIVERY NOTICE SYSTEM <joe@example.test>\nTo: <joe@example.test>\nSubject: success notice\n"), n)
        XCTAssertTrue(n.hasSuffix("\n\nHi! This is the qreceipt program. Your message was delivered to the\nfollowing address: alice@example.test. Thanks for asking.\nYour Message-ID: <m1@x>\n"), n)
    }

    // MARK: replier

    func testReplierSendsTheProgramsOutputAsAReply() throws {
        let rdir = h.home("alice") + "/replier"
        mkdir(rdir, 0o755)
        for (f, t) in [("inlocal", "alice\n"), ("outhost", "example.test\n"), ("outlocal", "alice-\n"),
                       ("mailinglist", "contact alice-help@example.test\n"), ("headerremove", "# not these\nreceived\nX-Drop\n"),
                       ("headeradd", "Precedence: bulk\n\n")] {
            TestEnv.write(rdir + "/" + f, t)
        }
        let program = script("reply", "printf 'Subject: about %s (%s)\\nX-Drop: x\\n  more\\n' \"$REQUEST\" \"$REQUEST2\"; cat")
        h.writeHomeFile("alice", ".qmail-default", "|\(tool("replier")) replier \"$SENDER\" \(program)\n./Maildir/\n")
        try h.inject("Subject: q\n\nquestion\n", ["-f", "joe@example.test", "alice-help-me@example.test"])
        // Its own Delivered-To line in what the program prints: a loop.
        try h.inject("Delivered-To: replier alice-help@example.test\nSubject: loop\n\nx\n", ["-f", "joe@example.test", "alice-help@example.test"])
        try h.inject("Subject: bounce\n\nx\n", ["-f", "", "alice-help@example.test"])
        try h.inject("Mailing-List: other\nSubject: list\n\nx\n", ["-f", "joe@example.test", "alice-list@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("success: replier:_qp_"), log)
        XCTAssertTrue(log.contains("failure: replier:_fatal:_this_message_is_looping:_it_already_has_my_Delivered-To_line_(#5.4.6)/"), log)
        XCTAssertTrue(log.contains("failure: replier:_fatal:_I_don't_reply_to_bounce_messages_(#5.7.2)/"), log)
        XCTAssertTrue(log.contains("failure: replier:_fatal:_message_already_has_Mailing-List_(#5.7.2)/"), log)
        XCTAssertEqual(h.maildir("alice").count, 0, "99: the Maildir line does not run")
        try pass()
        let replies = messages("joe").filter { $0.contains("Delivered-To: replier alice-help-me@example.test") }
        XCTAssertEqual(replies.count, 1, messages("joe").joined())
        let r = replies.first ?? ""
        XCTAssertTrue(r.hasPrefix("Return-Path: <alice-return-@example.test>\nDelivered-To: joe@example.test\n"), r)
        XCTAssertTrue(r.contains("\nMailing-List: contact alice-help@example.test\nPrecedence: bulk\nDelivered-To: replier alice-help-me@example.test\nSubject: about help-me (me)\nSubject: q\n"), r)
        XCTAssertFalse(r.contains("X-Drop") || r.contains("  more"), r)
        XCTAssertTrue(r.hasSuffix("\n\nquestion\n"), r)
        // A file missing from the folder is a permanent error naming it.
        unlink(rdir + "/headeradd")
        let log2 = try { try h.inject("Subject: q\n\nx\n", ["-f", "joe@example.test", "alice-help@example.test"]); return try pass() }()
        XCTAssertTrue(log2.contains("failure: replier:_fatal:_replier/headeradd_does_not_exist/"), log2)
    }

    // MARK: dot-forward

    func testDotForwardFollowsDotForwardFiles() throws {
        let df = tool("dot-forward")
        h.writeHomeFile("joe", ".qmail", "|\(df) .forward\n./Maildir/\n")
        h.writeHomeFile("joe", ".forward", "# joe is away\nbob@example.test, \"|cat > prog.txt\"\nalice\n")
        h.writeHomeFile("alice", ".qmail", "|\(df) .forward-none .forward\n./Maildir/\n")
        h.writeHomeFile("alice", ".forward", "\\alice, Bob <bob@example.test>\n")
        h.writeHomeFile("bob", ".qmail-file", "|\(df) .forward-file\n")
        h.writeHomeFile("bob", ".forward-file", "/var/mail/bob\n")
        h.writeHomeFile("bob", ".qmail-parse", "|\(df) .forward-parse\n")
        h.writeHomeFile("bob", ".forward-parse", "<unclosed@example.test\n")
        h.writeHomeFile("bob", ".qmail-qq", "|QMAILQUEUE=\(failingQueue(88, text: "Dnot from here (#5.7.1)")) \(df) .forward-qq\n")
        h.writeHomeFile("bob", ".forward-qq", "joe@example.test\n")
        h.writeHomeFile("bob", ".qmail-empty", "|\(df) .forward-empty\n./Maildir/\n")
        h.writeHomeFile("bob", ".forward-empty", "# nothing\n\n")
        let log = try deliver("Subject: df\n\nx\n", ["-f", "s@x.example", "joe@example.test", "alice@example.test", "bob-file@example.test",
                                                      "bob-parse@example.test", "bob-qq@example.test", "bob-empty@example.test"])
        XCTAssertTrue(log.contains("dot-forward:_info:_qp_"), log)
        XCTAssertTrue(log.contains("deferral: dot-forward:_fatal:_file_delivery_/var/mail/bob_not_supported/"), log)
        XCTAssertTrue(log.contains("deferral: dot-forward:_fatal:_unable_to_parse_this_line:_<unclosed@example.test/"), log)
        XCTAssertTrue(log.contains("failure: dot-forward:_fatal:_unable_to_forward_message:_not_from_here_(#5.7.1)/"), log)
        XCTAssertEqual(h.maildir("joe").count, 0, "99: handled")
        // One pass delivers the forwarded copies too: alice's own copy and the one
        // through joe's .forward (\\alice: delivered here too, exit 0); bob's from his
        // empty .forward (the next line delivers), from joe, from alice twice.
        XCTAssertEqual(h.maildir("alice").count, 2, log)
        XCTAssertEqual(h.maildir("bob").count, 4, log)
        let prog = String(decoding: TestEnv.read(h.home("joe") + "/prog.txt"), as: UTF8.self)
        XCTAssertTrue(prog.hasPrefix("From s@x.example"), prog)
        XCTAssertTrue(prog.contains("\nReturn-Path: <s@x.example>\nDelivered-To: joe@example.test\nReceived: "), prog)
        XCTAssertTrue(h.maildirMessages("bob").contains { $0.contains("\nDelivered-To: joe@example.test\nReceived: ") })
        let n = try TestEnv.run(df, ["-n", h.home("joe") + "/.forward"], input: Array("\nx\n".utf8),
                                environment: TestEnv.environment(["USER": "joe", "HOST": "example.test", "CONTROLDIR": h.control]))
        XCTAssertEqual(n.exitCode, 99, n.stderrText)
        XCTAssertEqual(n.stderrText, "forward bob@example.test\npipe through cat > prog.txt\nforward alice@example.test\n")
    }

    // MARK: qnotify

    func testQnotifySendsTheMDNTheSenderAskedFor() throws {
        let qn = tool("qnotify")
        h.writeHomeFile("alice", ".qmail", "|\(qn)\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-h", "|\(qn) -h\n./Maildir/\n")
        h.writeHomeFile("alice", ".qmail-qq", "|QMAILQUEUE=\(failingQueue(71)) \(qn)\n")
        let ask = "Disposition-Notification-To: Joe <joe@EXAMPLE.test>\nSubject: hello\n\nthe body\n"
        try h.inject(ask, ["-f", "joe@example.test", "alice@example.test"])
        try h.inject(ask, ["-f", "joe@example.test", "alice-h@example.test"])
        try h.inject("Disposition-Notification-To: other@example.test\nSubject: not the sender\n\nx\n", ["-f", "joe@example.test", "alice@example.test"])
        try h.inject("Subject: no request\n\nx\n", ["-f", "joe@example.test", "alice@example.test"])
        try h.inject(ask, ["-f", "joe@example.test", "alice-qq@example.test"])
        let log = try pass()
        XCTAssertTrue(log.contains("deferral: qnotify:_fatal:_temporary_qmail-queue_error/"), log)
        XCTAssertEqual(h.maildir("alice").count, 4, log)
        try pass()
        let mdns = messages("joe").filter { $0.contains("Subject: Disposition Notification - hello\n") }
        XCTAssertEqual(mdns.count, 2, messages("joe").joined())
        guard let full = mdns.first(where: { $0.contains("message/rfc822") }), let head = mdns.first(where: { $0.contains("text/rfc822-headers") }) else {
            return XCTFail(mdns.joined())
        }
        XCTAssertTrue(full.hasPrefix("Return-Path: <>\n"), full)
        XCTAssertTrue(full.contains("From: <alice@example.test>\nDate: "), full)
        XCTAssertTrue(full.contains("To: joe@EXAMPLE.test\nMIME-Version: 1.0\n\nContent-Type: multipart/report;  report-type=disposition-notification;\n boundary=\"_----------=_"), full)
        XCTAssertTrue(full.contains("\nReporting-UA: joe@EXAMPLE.test; IndiMail MDA\nOriginal-Recipient: rfc822; alice@example.test\nFinal-Recipient: rfc822; alice@example.test\nDisposition: automatic-action/MDN-sent-automatically; displayed\n"), full)
        XCTAssertTrue(full.contains("\nsubject hello\nhas been delivered at "), full)
        XCTAssertTrue(full.contains("\n\nthe body\n--_----------=_"), full)
        XCTAssertFalse(head.contains("the body"), head)
        XCTAssertTrue(head.contains("\nSubject: hello\n") && head.contains(".qmail@example.test>\n--_----------=_"), head)
    }
    // MARK: the smaller gaps of #19

    /// qnotify streams the original: a message of tens of MB is attached whole,
    /// byte for byte, while qnotify's memory stays far below the message's size.
    func testQnotifyStreamsALargeMessage() throws {
        let input = h.dir + "/big-message", output = h.dir + "/mdn"
        let head = "Disposition-Notification-To: joe@example.test\nMessage-ID: <big@example.test>\nSubject: big\n\n"
        let line = Array("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n".utf8)
        var body: [UInt8] = []
        body.reserveCapacity(line.count * 640_000)
        for _ in 0..<640_000 { body += line }   // 46.7 MB
        try Sys.writeFile(input, Array(head.utf8) + body)
        body = []
        let env = TestEnv.environment(["SENDER": "joe@example.test", "RECIPIENT": "alice@example.test", "HOST": "example.test"])
        let out = try TestEnv.run("/bin/sh", ["-c", "exec /usr/bin/time -f 'maxrss %M' \(tool("qnotify")) -n < \(input) > \(output)"], environment: env)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let mdn = TestEnv.read(output)
        let original = TestEnv.read(input)
        let marker = Array("Content-Type: message/rfc822\n\n".utf8)
        guard let r = mdn.firstRange(of: marker) else { return XCTFail("no attachment") }
        let attached = mdn[r.upperBound...]
        XCTAssertTrue(attached.starts(with: original), "the original attached whole")
        let trailer = String(decoding: attached.dropFirst(original.count), as: UTF8.self)
        XCTAssertTrue(trailer.hasPrefix("--_----------=_") && trailer.hasSuffix("--\n\n"), trailer)
        XCTAssertEqual(attached.count - original.count, trailer.utf8.count)
        // Peak memory (GNU time's %M, KiB): well under the message's 46 MB.
        let rss = out.stderrText.split(separator: "\n").last { $0.hasPrefix("maxrss ") }.flatMap { Int($0.dropFirst(7)) }
        XCTAssertNotNil(rss, out.stderrText)
        XCTAssertLessThan(rss ?? .max, 16 * 1024, "qnotify held the message: \(rss ?? 0) KiB")
        // -h attaches the header only and does not read the body.
        let h2 = try TestEnv.run("/bin/sh", ["-c", "exec \(tool("qnotify")) -n -h < \(input)"], environment: env)
        XCTAssertEqual(h2.exitCode, 0, h2.stderrText)
        XCTAssertTrue(h2.stdoutText.contains("Content-Type: text/rfc822-headers\n\n" + head.dropLast() + "--_----------=_"), h2.stdoutText)
    }

    /// replier's alarm (24 hours in service; a second here through the test-only
    /// $SWIFTQMAIL_TEST_REPLIER_ALARM) ends it with 111 and the maildir timeout text.
    func testReplierTimesOutWithTheMaildirTimeoutText() throws {
        let rdir = h.dir + "/replier"
        mkdir(rdir, 0o755)
        for (f, t) in [("inlocal", "alice\n"), ("outhost", "example.test\n"), ("outlocal", "alice-\n"),
                       ("mailinglist", "contact\n"), ("headerremove", "\n"), ("headeradd", "\n")] {
            TestEnv.write(rdir + "/" + f, t)
        }
        // The program never finishes in time (its descriptor 2 let go, so only replier's is collected).
        let slow = script("slow", "exec 2>/dev/null; exec sleep 20")
        let env = TestEnv.environment(["SENDER": "joe@example.test", "LOCAL": "alice-help", "HOME": h.dir,
                                       "SWIFTQMAIL_TEST_REPLIER_ALARM": "1"])
        var started = timespec()
        clock_gettime(CLOCK_MONOTONIC, &started)
        let out = try TestEnv.run(tool("replier"), [rdir, "joe@example.test", slow], input: Array("Subject: q\n\nx\n".utf8), environment: env)
        var ended = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ended)
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertEqual(out.stderrText, "Timeout on maildir delivery. (#4.3.0)\n")
        XCTAssertLessThan(ended.tv_sec - started.tv_sec, 15, "the alarm, not the program, ended it")
        // Out of range or not a number: the 24 hours stay (the program's own exit then decides).
        let quick = script("quick", "echo 'Subject: re'; echo; echo hi")
        let env2 = TestEnv.environment(["SENDER": "joe@example.test", "LOCAL": "alice-help", "HOME": h.dir,
                                        "SWIFTQMAIL_TEST_REPLIER_ALARM": "0", "NULLQUEUE": ""])
        let ok = try TestEnv.run(tool("replier"), [rdir, "joe@example.test", quick], input: Array("Subject: q\n\nx\n".utf8), environment: env2)
        XCTAssertEqual(ok.exitCode, 99, ok.stderrText)
    }
}
