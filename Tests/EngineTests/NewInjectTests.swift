import XCTest
import SystemIO
import TestSupport
import Inject
#if canImport(Glibc)
import Glibc
#endif

/// new-inject (issue #19, toolbox.md §2.1): the built program run as a user runs
/// it — options, environment, control files, its -n output, the queue-client
/// layer's failures — and a message it injects delivered by the engine.
final class NewInjectTests: XCTestCase {
    var dir = ""
    var control: String { dir + "/control" }

    override func setUp() {
        dir = TestEnv.temporaryDirectory("newinject")
        mkdir(control, 0o755)
        TestEnv.write(control + "/me", "example.test\n")
    }
    override func tearDown() { TestEnv.remove(dir) }

    /// Everything new-inject reads from the environment, cleared, then `env` applied.
    func environment(_ env: [String: String?] = [:]) -> [String] {
        var e: [String: String?] = ["CONTROLDIR": control, "HOME": dir, "USER": "joe", "LOGNAME": nil, "QUEUE_BASE": nil]
        for v in ["QMAILINJECT", "QMAILNAME", "MAILNAME", "NAME", "QMAILUSER", "MAILUSER", "QMAILHOST", "MAILHOST",
                  "QMAILSUSER", "QMAILSHOST", "QMAILREWRITEFILE", "QMAILMFTFILE", "QMAILIDHOST", "QMAILDEFAULTHOST",
                  "QMAILDEFAULTDOMAIN", "QMAILPLUSDOMAIN", "QMAILQUEUE", "NULLQUEUE", "ERROR_FD"] { e[v] = .some(nil) }
        for (k, v) in env { e[k] = v }
        return TestEnv.environment(e)
    }

    func newInject(_ args: [String], _ input: String, _ env: [String: String?] = [:]) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("new-inject"), args, input: Array(input.utf8), environment: environment(env), directory: dir)
    }

    /// -n's output, after checking the exit code.
    func printed(_ args: [String], _ input: String, _ env: [String: String?] = [:],
                 file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let out = try newInject(["-n"] + args, input, env)
        XCTAssertEqual(out.exitCode, 0, out.stderrText, file: file, line: line)
        XCTAssertEqual(out.stderrText, "", file: file, line: line)
        return out.stdoutText
    }

    /// A queue program that keeps what it is given: the message in `msg`, the envelope in `env`.
    func capturingQueue() -> String {
        let p = dir + "/capture-queue"
        TestEnv.write(p, "#!/bin/sh\ncat > \(dir)/msg\ncat <&1 > \(dir)/env\nexit 0\n", mode: 0o755)
        return p
    }

    func failingQueue(_ code: Int32, text: String = "") -> String {
        let p = dir + "/qq\(code)\(text.isEmpty ? "" : "t")"
        TestEnv.write(p, "#!/bin/sh\ncat >/dev/null; cat <&1 >/dev/null 2>&1" + (text.isEmpty ? "" : "; printf '%s' '\(text)' >&2") + "; exit \(code)\n", mode: 0o755)
        return p
    }

    // MARK: rewriting rules

    func testRewritingRulesTable() {
        let rules = RewriteRules(lines: [
            "=localhost:mail.example.test",       // equals, nothing else
            "*.OLD.example:.new.example",          // a suffix, any case
            "?:.lan",                              // a bare host gets .lan ...
            "-internal.lan:gateway.example.test",  // ... and a whole host ending so replaced
            "# a comment line is no rule", "x:y", "*no-colon",
        ])
        let table: [(String, String)] = [
            ("u@localhost", "u@mail.example.test"),
            ("u@LocalHost", "u@mail.example.test"),
            ("u@notlocalhost", "u@notlocalhost.lan"),      // `=` wants the whole host; `?` then applies
            ("u@a.b.old.EXAMPLE", "u@a.b.new.example"),
            ("u@box", "u@box.lan"),
            ("u@[10.0.0.1]", "u@[10.0.0.1]"),              // `?` leaves literals alone
            ("u@a/b", "u@a/b"),
            ("u@db.internal", "u@db.internal"),           // has a dot: no .lan, so no `-`
            ("u@internal", "u@gateway.example.test"),      // chained: internal -> internal.lan -> gateway
            ("u", "u@.lan"),                               // no @: an empty host (`?` with nothing before it)
            ("", ""), ("@", ""),
            ("@host", "@host.lan"),
            ("a@b@c", "a@b@c.lan"),                        // the host is all after the first @
        ]
        for (input, want) in table {
            XCTAssertEqual(String(decoding: rules.address(Array(input.utf8)), as: UTF8.self), want, input)
        }
        // The built-in rules from defaulthost, plusdomain and defaultdomain.
        let builtIn = RewriteRules.builtIn(defaultHost: Array("dh.test".utf8), plusDomain: Array("pd.test".utf8), defaultDomain: Array("dd.test".utf8))
        let builtTable: [(String, String)] = [
            ("joe", "joe@dh.test"), ("joe@", "joe@dh.test"), ("joe@box", "joe@box.dd.test"), ("joe@box.", "joe@box.dd.test"),
            ("joe@box+", "joe@box.pd.test"), ("joe@a.b+", "joe@a.b.pd.test"), ("joe@a.b", "joe@a.b"), ("joe@a.b.", "joe@a.b"),
            ("joe@[1.2.3.4]", "joe@[1.2.3.4]"),
        ]
        for (input, want) in builtTable {
            XCTAssertEqual(String(decoding: builtIn.address(Array(input.utf8)), as: UTF8.self), want, input)
        }
        XCTAssertEqual(String(decoding: builtIn.host(Array("box".utf8)), as: UTF8.self), "box.dd.test")
    }

    /// What is written quoted reads back to the same addresses (the fuzz target's
    /// property; its first find was a backslash-escaped CR the reader dropped, its
    /// second a bracketed host with blanks, which must not be written as a literal).
    func testQuotedListsReadBack() {
        let addresses: [String] = ["john smith@example.test", "a,b@c", "q\"x@c", "a@b@c", "@host", "x@[1.2.3.4]", "x@[]]",
                                   "x@.lan\r\u{7f}", "l\u{0}n@h", "t\tab@h", "dots..@h", "ü@h", "a@\"b c\"",
                                   "x@[1.2 3.4]", "y@[a\tb]"]
        let items = addresses.map { MailboxItem.mailbox(address: Array($0.utf8), text: Array("Name, \"q\"".utf8)) }
            + [.groupStart(name: Array("g".utf8)), .mailbox(address: Array("m@g".utf8), text: nil), .groupEnd]
        let rendered = MailboxList.render(items)
        XCTAssertEqual(MailboxList.addresses(MailboxList.parse(rendered)).map { String(decoding: $0, as: UTF8.self) },
                       addresses + ["m@g"], String(decoding: rendered, as: UTF8.self))
        XCTAssertEqual(MailboxList.parse(Array("(only) ,, <>, \"N\" <>".utf8)),
                       [.groupStart(name: Array("only".utf8)), .groupEnd, .mailbox(address: [], text: nil), .mailbox(address: [], text: Array("N".utf8))])
    }

    func testRewriteFileAndControlRewriteAndBuiltInDefaults() throws {
        let message = "To: a@box, b@Host.Old\nDate: 1 Jan 2026 00:00:00 -0000\nMessage-ID: <m@x>\n\nx\n"
        // Built in from control/me alone (CRLF line ends are stripped by the control reader).
        TestEnv.write(control + "/me", "example.test\r\n")
        var out = try printed([], message)
        XCTAssertTrue(out.contains("\nTo: a@box.example.test, b@Host.Old\n"), out)
        XCTAssertTrue(out.hasPrefix("Envelope-Sender: joe@example.test\n"), out)
        // defaulthost, defaultdomain, plusdomain from the control files, then from the environment.
        TestEnv.write(control + "/defaultdomain", "dd.test\n")
        TestEnv.write(control + "/defaulthost", "dh.test\n")
        TestEnv.write(control + "/plusdomain", "pd.test\n")
        out = try printed([], "To: a@box, c@x+, d\nDate: 1 Jan 2026 00:00:00 -0000\nMessage-ID: <m@x>\n\nx\n")
        XCTAssertTrue(out.contains("\nTo: a@box.dd.test, c@x.pd.test, d@dh.test\n"), out)
        out = try printed([], "To: a@box, c@x+, d\nDate: 1 Jan 2026 00:00:00 -0000\nMessage-ID: <m@x>\n\nx\n",
                          ["QMAILDEFAULTDOMAIN": "e-dd.test", "QMAILDEFAULTHOST": "e-dh.test", "QMAILPLUSDOMAIN": "e-pd.test"])
        XCTAssertTrue(out.contains("\nTo: a@box.e-dd.test, c@x.e-pd.test, d@e-dh.test\n"), out)
        // control/rewrite replaces the built-in rules; $QMAILREWRITEFILE replaces control/rewrite.
        TestEnv.write(control + "/rewrite", "*.old:.new\r\n")
        out = try printed([], message)
        XCTAssertTrue(out.contains("\nTo: a@box, b@Host.new\n"), out)
        XCTAssertTrue(out.hasPrefix("Envelope-Sender: joe\n"), "no rule completes an empty host: \(out)")
        TestEnv.write(dir + "/rules", "=box:box.rules.test\n")
        out = try printed([], message, ["QMAILREWRITEFILE": dir + "/rules"])
        XCTAssertTrue(out.contains("\nTo: a@box.rules.test, b@Host.Old\n"), out)
        out = try printed([], message, ["QMAILREWRITEFILE": "rules"])   // relative to the working directory
        XCTAssertTrue(out.contains("\nTo: a@box.rules.test, b@Host.Old\n"), out)
        // A file named but missing: the next source.
        out = try printed([], message, ["QMAILREWRITEFILE": dir + "/none"])
        XCTAssertTrue(out.contains("\nTo: a@box, b@Host.new\n"), out)
        // Unreadable: a clear error, exit 111.
        let bad = try newInject(["-n"], message, ["QMAILREWRITEFILE": dir])
        XCTAssertEqual(bad.exitCode, 111)
        XCTAssertEqual(bad.stderrText, "new-inject: fatal: unable to read $QMAILREWRITEFILE: Is a directory\n")
        unlink(control + "/rewrite")
        mkdir(control + "/rewrite", 0o755)
        let bad2 = try newInject(["-n"], message)
        XCTAssertEqual(bad2.exitCode, 111)
        XCTAssertEqual(bad2.stderrText, "new-inject: fatal: unable to read \(control)/rewrite: Is a directory\n")
    }

    // MARK: the header, printed with -n

    func testGoldenQuotedLocalPartsCommentsSeveralToBccAndTraceFields() throws {
        let input = """
        Subject: golden
        To: "john smith"@example.test (John),
          bob
        Received: from x by y; 1 Jan 2026 00:00:00 -0000
        Bcc: secret@hidden.test
        To: Alice Example <alice@mail>
        Content-Length: 12
        Date: Tue, 3 Feb 2026 04:05:06 +0100
        Message-ID: <fixed@example.test>
        Delivered-To: someone@example.test
        X-Other: kept

        body line

        """
        let want = """
        Envelope-Sender: joe@example.test
        Envelope-Recipients:
          "john smith"@example.test,
          bob@example.test,
          alice@mail.example.test,
          secret@hidden.test,
        Received: from x by y; 1 Jan 2026 00:00:00 -0000
        Delivered-To: someone@example.test
        Date: 3 Feb 2026 04:05:06 +0100
        Message-ID: <fixed@example.test>
        From: joe@example.test
        To: "John" <"john smith"@example.test>, bob@example.test,
          "Alice Example" <alice@mail.example.test>
        Subject: golden
        X-Other: kept

        body line

        """
        XCTAssertEqual(try printed([], input), want)
    }

    func testGoldenGroupsReturnPathCommentOnlyAndZones() throws {
        let input = """
        From: Joe <joe@Work+>
        Return-Path: <bounces@lists.example.test>
        To: friends: a@x.example.test, b@y.;, undisclosed-recipients:;
        Cc: (nobody)
        Reply-To: "Help, Desk" <help@example.test>
        Apparently-To: hidden@example.test
        Date: 7 Dec 2026 10:00 EST
        Message-ID: <m@x>

        x
        """
        let want = """
        Envelope-Sender: bounces@lists.example.test
        Envelope-Recipients:
          a@x.example.test,
          b@y.example.test,
          hidden@example.test,
        Date: 7 Dec 2026 10:00:00 -0500
        Message-ID: <m@x>
        From: "Joe" <joe@Work.example.test>
        Reply-To: "Help, Desk" <help@example.test>
        To: "friends": a@x.example.test, b@y.example.test;,
          "undisclosed-recipients": ;
        Cc: "nobody": ;

        x

        """
        XCTAssertEqual(try printed([], input), want)
    }

    func testGoldenNoHeaderAtAllAndLongLists() throws {
        // Nothing but a body: Date now (UTC, -0000), a Message-ID, From, and the Cc line.
        let out = try printed(["-a", "rcpt"], "\nonly a body")
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(Array(lines[0...2]), ["Envelope-Sender: joe@example.test", "Envelope-Recipients:", "  rcpt@example.test,"])
        XCTAssertTrue(lines[3].hasPrefix("Date: ") && lines[3].hasSuffix(" -0000"), lines[3])
        XCTAssertTrue(lines[4].hasPrefix("Message-ID: <") && lines[4].hasSuffix(".qmail@example.test>"), lines[4])
        XCTAssertEqual(Array(lines[5...]), ["From: joe@example.test", "Cc: recipient list not shown: ;", "", "only a body", ""])
        // The Message-ID comes from the date written: <YYYYMMDDhhmmss.pid.qmail@idhost>.
        let stamp = try printed(["-a", "r"], "Date: Sun, 31 Dec 1995 23:59:58 -0800\n\nx\n", ["QMAILIDHOST": "mailer"])
        XCTAssertTrue(stamp.contains("\nDate: 31 Dec 1995 23:59:58 -0800\nMessage-ID: <19951231235958."), stamp)
        XCTAssertTrue(stamp.contains(".qmail@mailer.example.test>\n"), "idhost rewritten: \(stamp)")
        // An unparsable Date is replaced; of several, the last parsable one counts.
        let dates = try printed(["-a", "r"], "Date: yesterday\nDate: 2 Jan 99 01:02:03 GMT\nDate: nonsense\n\nx\n")
        XCTAssertTrue(dates.contains("\nDate: 2 Jan 1999 01:02:03 +0000\nMessage-ID: <19990102010203."), dates)
        // Long lists fold at 78 columns; a header without a body gets no blank line.
        let many = (1...8).map { "member\($0)@lists.example.test" }.joined(separator: ", ")
        let folded = try printed(["-a", "r"], "To: \(many)\nMessage-ID: <m@x>\nDate: 1 Jan 2026 00:00:00 -0000")
        XCTAssertTrue(folded.hasSuffix("""
        To: member1@lists.example.test, member2@lists.example.test,
          member3@lists.example.test, member4@lists.example.test,
          member5@lists.example.test, member6@lists.example.test,
          member7@lists.example.test, member8@lists.example.test

        """), folded)
    }

    // MARK: options and $QMAILINJECT

    let sample = """
    From: Original <orig@example.test>
    Return-Path: <rp@example.test>
    To: to@example.test
    Cc: cc@example.test
    Bcc: bcc@example.test
    Date: 3 Feb 2026 04:05:06 +0100
    Message-ID: <orig@example.test>

    x

    """

    func envelope(_ out: String) -> (sender: String, recipients: [String]) {
        let lines = out.split(separator: "\n").map(String.init)
        var rcpts: [String] = []
        for l in lines.dropFirst(2) { guard l.hasPrefix("  ") else { break }; rcpts.append(String(l.dropFirst(2).dropLast())) }
        return (String(lines[0].dropFirst("Envelope-Sender: ".count)), rcpts)
    }

    func testRecipientStrategies() throws {
        XCTAssertEqual(envelope(try printed([], sample)).recipients, ["to@example.test", "cc@example.test", "bcc@example.test"], "-A, no arguments: the header")
        XCTAssertEqual(envelope(try printed(["arg"], sample)).recipients, ["arg@example.test"], "-A with arguments: the arguments")
        XCTAssertEqual(envelope(try printed(["-a", "arg"], sample)).recipients, ["arg@example.test"])
        XCTAssertEqual(envelope(try printed(["-a"], sample)).recipients, [])
        XCTAssertEqual(envelope(try printed(["-h", "arg"], sample)).recipients, ["to@example.test", "cc@example.test", "bcc@example.test"])
        XCTAssertEqual(envelope(try printed(["-H", "arg"], sample)).recipients, ["arg@example.test", "to@example.test", "cc@example.test", "bcc@example.test"])
        XCTAssertEqual(envelope(try printed(["-A", "arg"], sample)).recipients, ["arg@example.test"])
        // Envelope-Recipients replaces To/Cc/Bcc, and is not written out.
        let er = try printed([], "Envelope-Recipients: x@box, y@example.test\n" + sample)
        XCTAssertEqual(envelope(er).recipients, ["x@box.example.test", "y@example.test"])
        XCTAssertFalse(er.contains("Envelope-Recipients: "), er)
    }

    func testSenderOptionsAndVERP() throws {
        XCTAssertEqual(envelope(try printed([], sample)).sender, "rp@example.test", "Return-Path")
        XCTAssertEqual(envelope(try printed(["-S"], sample)).sender, "joe@example.test", "-S ignores Return-Path")
        XCTAssertEqual(envelope(try printed(["-f", "bounce@lists"], sample)).sender, "bounce@lists.example.test")
        XCTAssertEqual(envelope(try printed(["-fbounce@lists"], sample)).sender, "bounce@lists.example.test")
        XCTAssertEqual(envelope(try printed(["-f", ""], sample)).sender, "<>", "the empty sender, printed as <>")
        XCTAssertEqual(envelope(try printed([], "Envelope-Sender: es@example.test\n" + sample)).sender, "es@example.test", "Envelope-Sender first")
        XCTAssertEqual(envelope(try printed([], "Return-Path: <>\nTo: a@b.c\n\nx\n")).sender, "<>")
        XCTAssertEqual(envelope(try printed(["-S"], sample, ["QMAILSUSER": "list", "QMAILSHOST": "lists"])).sender, "list@lists.example.test")
        // Printed quoted, as any address is (the local part holds an @).
        XCTAssertEqual(envelope(try printed(["-S", "-R"], sample, ["QMAILSUSER": "list"])).sender, "\"list-@example.test-\"@[]")
        let verp = envelope(try printed(["-S", "-M"], sample, ["QMAILSUSER": "list"])).sender
        let parts = verp.split(separator: "@")[0].split(separator: "-")
        XCTAssertEqual(parts.count, 2, verp)
        let tag = parts[1].split(separator: ".")
        XCTAssertEqual(tag.count, 2, verp)
        XCTAssertNotNil(UInt32(tag[0]), verp)
        XCTAssertNotNil(Int32(tag[1]), verp)
        XCTAssertTrue(verp.hasSuffix("@example.test"), verp)
        // $QMAILHOST, $QMAILUSER: the added From: and the default sender.
        let f = try printed(["-F", "-S"], sample, ["QMAILUSER": "me", "QMAILHOST": "host", "QMAILNAME": "Joe Q. Public"])
        XCTAssertTrue(f.contains("\nFrom: \"Joe Q. Public\" <me@host.example.test>\n"), f)
        XCTAssertEqual(envelope(f).sender, "me@host.example.test")
    }

    func testFromMessageIDAndPrintOptions() throws {
        let plain = try printed([], sample)
        XCTAssertTrue(plain.contains("\nMessage-ID: <orig@example.test>\nFrom: \"Original\" <orig@example.test>\n"), plain)
        let killed = try printed(["-F", "-I"], sample, ["NAME": "N"])
        XCTAssertTrue(killed.contains("\nMessage-ID: <20260203040506.") && killed.contains(".qmail@example.test>\nFrom: \"N\" <joe@example.test>\n"), killed)
        XCTAssertFalse(killed.contains("orig@example.test>"), killed)
        // -N after -n queues (here into NULLQUEUE's qmail-nullqueue): nothing printed.
        let queued = try newInject(["-n", "-N"], sample, ["NULLQUEUE": ""])
        XCTAssertEqual(queued.exitCode, 0, queued.stderrText)
        XCTAssertEqual(queued.stdoutText, "")
        // The letters of $QMAILINJECT, either case: F I M R S.
        let letters = try printed([], sample, ["QMAILINJECT": "fIs"])
        XCTAssertTrue(letters.hasPrefix("Envelope-Sender: joe@example.test\n"), letters)
        XCTAssertTrue(letters.contains("\nFrom: joe@example.test\n") && !letters.contains("<orig@example.test>"), letters)
        let verp = try printed([], sample, ["QMAILINJECT": "SrX"])
        XCTAssertTrue(verp.hasPrefix("Envelope-Sender: \"joe-@example.test-\"@[]\n"), verp)
        let verpm = try printed([], sample, ["QMAILINJECT": "sm"])
        XCTAssertTrue(verpm.hasPrefix("Envelope-Sender: joe-"), verpm)
        XCTAssertFalse(verpm.hasPrefix("Envelope-Sender: joe-@"), verpm)
    }

    func testMailFollowupToForMailingLists() throws {
        TestEnv.write(dir + "/mft", "# lists\nList@Example.test\n")
        let out = try printed([], "To: list@example.test\nCc: Bob <bob@x.test>\nMessage-ID: <m@x>\n\nx\n", ["QMAILMFTFILE": dir + "/mft"])
        XCTAssertTrue(out.contains("\nMail-Followup-To: list@example.test, \"Bob\" <bob@x.test>\nTo: list@example.test\nCc: \"Bob\" <bob@x.test>\n"), out)
        let other = try printed([], "To: other@example.test\nMessage-ID: <m@x>\n\nx\n", ["QMAILMFTFILE": dir + "/mft"])
        XCTAssertFalse(other.contains("Mail-Followup-To"), other)
        let kept = try printed([], "To: list@example.test\nMail-Followup-To: me@box\nMessage-ID: <m@x>\n\nx\n", ["QMAILMFTFILE": dir + "/mft"])
        XCTAssertTrue(kept.contains("\nMail-Followup-To: me@box.example.test\nTo: list@example.test\n"), kept)
    }

    func testUsageAndHelp() throws {
        let bad = try newInject(["-x"], "x\n")
        XCTAssertEqual(bad.exitCode, 100)
        XCTAssertEqual(bad.stderrText, "new-inject: usage: new-inject [ -nNaAhHFIMRS ] [ -f sender ] [ recip ... ]\n")
        let noValue = try newInject(["-f"], "x\n")
        XCTAssertEqual(noValue.exitCode, 100)
        let help = try newInject(["--help"], "")
        XCTAssertEqual(help.exitCode, 0)
        XCTAssertTrue(help.stdoutText.hasPrefix("usage: new-inject [-nNaAhHFIMRS] [-f sender] [recipient ...]\n"), help.stdoutText)
    }

    // MARK: queueing

    func testQueueingThroughTheClientLayer() throws {
        let q = capturingQueue()
        let out = try newInject(["-f", "s@box", "r1", "r2@example.test"], "Subject: q\nMessage-ID: <m@x>\n\nbody without newline", ["QMAILQUEUE": q])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText + out.stderrText, "", "no qp notice")
        XCTAssertEqual(String(decoding: TestEnv.read(dir + "/env"), as: UTF8.self), "Fs@box.example.test\0Tr1@example.test\0Tr2@example.test\0\0")
        let msg = String(decoding: TestEnv.read(dir + "/msg"), as: UTF8.self)
        XCTAssertTrue(msg.hasPrefix("Date: ") && msg.hasSuffix("\nMessage-ID: <m@x>\nFrom: joe@example.test\nCc: recipient list not shown: ;\nSubject: q\n\nbody without newline\n"), msg)
        // -R: the VERP sender as qmail-send needs it, unquoted in the envelope.
        let verp = try newInject(["-R", "r"], "Subject: v\n\nx\n", ["QMAILQUEUE": q])
        XCTAssertEqual(verp.exitCode, 0, verp.stderrText)
        XCTAssertEqual(String(decoding: TestEnv.read(dir + "/env"), as: UTF8.self), "Fjoe-@example.test-@[]\0Tr@example.test\0\0")
        // A large body streams through unchanged.
        let big = String(repeating: "0123456789abcdef\n", count: 200_000)
        let out2 = try newInject(["r"], "Subject: big\n\n" + big, ["QMAILQUEUE": q])
        XCTAssertEqual(out2.exitCode, 0, out2.stderrText)
        XCTAssertTrue(String(decoding: TestEnv.read(dir + "/msg"), as: UTF8.self).hasSuffix("\nSubject: big\n\n" + big))
        // No recipient at all: refused before anything is queued.
        let none = try newInject([], "Subject: nobody\n\nx\n", ["QMAILQUEUE": q])
        XCTAssertEqual(none.exitCode, 100)
        XCTAssertEqual(none.stderrText, "new-inject: fatal: no recipients\n")
    }

    func testQueueFailuresGiveTheSeedsTextsAndExitCodes() throws {
        let cases: [(String, Int32, String)] = [
            (failingQueue(53), 111, "new-inject: fatal: qq write error or disk full (#4.3.0)\n"),
            (failingQueue(71), 111, "new-inject: fatal: qq mail server temporarily rejected message (#4.3.0)\n"),
            (failingQueue(88, text: "Dsorry, refused by policy (#5.7.1)"), 100, "new-inject: fatal: sorry, refused by policy (#5.7.1)\n"),
        ]
        for (q, code, text) in cases {
            let out = try newInject(["r@example.test"], "Subject: qq\n\nx\n", ["QMAILQUEUE": q])
            XCTAssertEqual(out.exitCode, code, q)
            XCTAssertEqual(out.stderrText, text, q)
        }
        let missing = try newInject(["r@example.test"], "Subject: qq\n\nx\n", ["QMAILQUEUE": dir + "/no-such-program"])
        XCTAssertEqual(missing.exitCode, 111)
        XCTAssertTrue(missing.stderrText.hasPrefix("new-inject: fatal: "), missing.stderrText)
    }

    /// Injected by new-inject, delivered by the engine to a Maildir.
    func testEngineDeliversWhatNewInjectQueued() throws {
        let h = EngineHarness()
        defer { h.cleanup() }
        h.extraEnv["QMAILQUEUE"] = ToolboxTests.installQueueProgram(h)
        h.extraEnv["QMAILUSER"] = "joe"
        h.extraEnv["QMAILNAME"] = "Joe Sender"
        let out = try TestEnv.run(TestEnv.program("new-inject"), [],
                                  input: Array("To: Alice <alice>\nCc: bob@example.test.\nSubject: by new-inject\n\nhello alice\n".utf8),
                                  environment: h.environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let log = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(log.exitCode, 0, log.stderrText)
        let alice = h.maildirMessages("alice")
        XCTAssertEqual(alice.count, 1, log.stdoutText)
        XCTAssertEqual(h.maildirMessages("bob").count, 1, log.stdoutText)
        let m = alice.first ?? ""
        XCTAssertTrue(m.hasPrefix("Return-Path: <joe@example.test>\nDelivered-To: alice@example.test\n"), m)
        XCTAssertTrue(m.contains("\nFrom: \"Joe Sender\" <joe@example.test>\nTo: \"Alice\" <alice@example.test>\nCc: bob@example.test\nSubject: by new-inject\n\nhello alice\n"), m)
        XCTAssertTrue(m.contains(".qmail@example.test>\n"), m)
    }
}
