import XCTest
import SystemIO
import QueueFormat
import ControlFiles
import RemoteDelivery
import RateControl
import LocalDelivery
import Inject
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Hostile and careless input (issue #16), each case as the probe found it:
/// control files with CRLF line ends, line breaks in envelope addresses and in
/// `sendmail -f`/`-F`, quoted local parts, large messages. Each gives a clear
/// error or the right delivery, and nothing is lost or bounced wrongly.
/// The SMTP client's cases (a trickling, flooding or dropping server, addresses
/// with CR LF given to the client) are in RemoteDeliveryTests/HostileServerTests.swift;
/// the probe's other passing cases stay where they were first written:
/// truncated envelopes and a full disk for qmail-queue in
/// QueueStoreTests/BadInputTests.swift, a full Maildir disk in
/// LocalDeliveryTests.testFullMaildirDiskIsADeferralAndTheMessageWaits.
final class HostileInputTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    // MARK: 1. Control files with CRLF line ends

    /// Every control file the engine, qmail-remote and qmail-inject read: one
    /// file at a time written with CRLF line ends (in a folder where the others
    /// have LF), the settings read are the same as with LF.
    func testEveryControlFileReadsTheSameWithCRLFLineEnds() throws {
        let files: [(String, String)] = [
            ("me", "mail.example\n"), ("locals", "mail.example\nlocal.example\n"), ("percenthack", "pct.example\n"),
            ("virtualdomains", "virt.example:joe\n.sub.example:alias-sub\n"), ("envnoathost", "noat.example\n"),
            ("concurrencylocal", "7\n"), ("concurrencyremote", "9\n"), ("concurrencyremotedomain", "3\n"),
            ("holdlocal", "1\n"), ("holdremote", "1\n"), ("queuelifetime", "3600\n"), ("bouncelifetime", "1800\n"),
            ("bouncefrom", "bouncer\n"), ("bouncehost", "bh.example\n"), ("doublebouncehost", "dbh.example\n"),
            ("doublebounceto", "dbto\n"), ("bouncemaxbytes", "1234\n"), ("bouncesubject", "Returned mail\n"),
            ("doublebouncesubject", "Double trouble\n"), ("todointerval", "99\n"), ("bounceformat", "dsn\n"),
            ("delaywarning", "600\n"),
            ("helohost", "helo.example\n"), ("timeoutconnect", "5\n"), ("timeoutremote", "7\n"),
            ("smtproutes", "remote.example:relay.example:2525\n:smarthost.example\n"), ("tlsdestinations", "secure.example\n"),
            ("tlsca", "/etc/ssl/ca.pem\n"), ("notls", "1\n"), ("moreipme", "192.0.2.1\n"), ("notipme", "192.0.2.2\n"),
            ("defaulthost", "dh.example\n"), ("defaultdomain", "dd.example\n"), ("idhost", "id.example\n"),
        ]
        func crlf(_ s: String) -> String { s.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n") }
        let base = h.dir + "/ctl"
        func writeAll(_ dir: String, crlfFile: String?) {
            TestEnv.remove(dir)
            mkdir(dir, 0o755)
            for (name, text) in files { TestEnv.write(dir + "/" + name, name == crlfFile ? crlf(text) : text) }
        }
        func load(_ dir: String) throws -> (EngineControls, SMTPSettings, InjectSettings) {
            let c = ControlDirectory(path: dir)
            return (try EngineControls.load(from: c), try SMTPSettings.load(c), try InjectSettings.fromEnvironment(control: c, env: { _ in nil }))
        }
        writeAll(base, crlfFile: nil)
        let (e0, s0, i0) = try load(base)
        XCTAssertEqual(e0.me, "mail.example")
        XCTAssertEqual(s0.heloHost, "helo.example")
        for (name, _) in files {
            writeAll(base, crlfFile: name)
            XCTAssertTrue(TestEnv.read(base + "/" + name).contains(13), name)
            let (e, s, i) = try load(base)
            XCTAssertEqual(e, e0, "\(name) with CRLF")
            XCTAssertEqual(s.heloHost, s0.heloHost, name)
            XCTAssertEqual(s.timeoutConnect, s0.timeoutConnect, name)
            XCTAssertEqual(s.timeoutRemote, s0.timeoutRemote, name)
            XCTAssertEqual(s.routes, s0.routes, name)
            XCTAssertEqual(s.tlsRequired, s0.tlsRequired, name)
            XCTAssertEqual(s.caFile, s0.caFile, name)
            XCTAssertEqual(s.startTLS, s0.startTLS, name)
            XCTAssertEqual(s.localAddresses, s0.localAddresses, name)
            XCTAssertEqual([i.defaultHost, i.defaultDomain, i.idHost], [i0.defaultHost, i0.defaultDomain, i0.idHost], name)
        }
        // users/assign and the rate files, read by their own parsers through the same line reader.
        let assign = "=alice:alice:65534:65534:/home/alice:::\n+list-:alice:65534:65534:/home/alice:-::\n.\n"
        XCTAssertEqual(try AssignTable(parsing: Array(crlf(assign).utf8)).lookup("alice"),
                       try AssignTable(parsing: Array(assign.utf8)).lookup("alice"))
        XCTAssertEqual(try AssignTable(parsing: Array(crlf(assign).utf8)).lookup("list-x"),
                       try AssignTable(parsing: Array(assign.utf8)).lookup("list-x"))
        for (file, text) in [("ratecontrol", "slow.example:10/60\n"), (".options", "slow.example:mode=average,burst=3\n")] {
            let lfDir = h.dir + "/rate-lf-\(file)", crlfDir = h.dir + "/rate-crlf-\(file)"
            for (d, t) in [(lfDir, text), (crlfDir, crlf(text))] {
                mkdir(d, 0o755)
                TestEnv.write(d + "/" + file, t)
                if file == ".options" { TestEnv.write(d + "/ratecontrol", "slow.example:5/60\n") }
            }
            let want = try RateDirectory(path: lfDir, useRegex: false).policy(for: "slow.example")
            XCTAssertNotNil(want, file)
            XCTAssertEqual(try RateDirectory(path: crlfDir, useRegex: false).policy(for: "slow.example"), want, file)
        }
    }

    /// CRLF in `me` and `helohost`: qmail-inject's header and envelope carry no
    /// CR, and the SMTP client says `EHLO name` with nothing after it, so the
    /// message is delivered, not bounced.
    func testCRLFInMeAndHelohostNeitherBreaksTheHeaderNorTheConversation() throws {
        h.writeControl("me", "example.test\r\n")
        h.writeControl("helohost", "client.example\r\n")
        let server = try h.startScriptedSMTP([])
        h.writeControl("smtproutes", "remote.example:127.0.0.1:\(server.port)\r\n")
        try h.inject("To: r@remote.example\nSubject: crlf controls\n\nbody\n")
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertTrue(out.stdoutText.contains(": success: "), out.stdoutText)
        let log = String(decoding: TestEnv.read(server.dir + "/session.log"), as: UTF8.self)
        let commands = log.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertTrue(commands.contains("EHLO client.example"), log)
        XCTAssertFalse(commands.contains(""), "a blank command line was sent: \(log)")
        let env = String(decoding: TestEnv.read(server.dir + "/msg-1.env"), as: UTF8.self)
        XCTAssertFalse(env.utf8.contains(13), env)
        XCTAssertTrue(env.split(separator: "\n")[0].hasSuffix("@example.test"), env)
        let body = String(decoding: TestEnv.read(server.dir + "/msg-1.eml"), as: UTF8.self)
        let header = body.components(separatedBy: "\r\n\r\n")[0]
        XCTAssertTrue(header.contains("\r\nMessage-ID: <") || header.contains("\r\nMessage-Id: <"), body)
        XCTAssertTrue(header.contains("\r\nDate: "), body)
        XCTAssertFalse(header.contains("\r\r"), body)
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// `locals` in CRLF: mail for the local domain is delivered here, not sent to the relay.
    func testCRLFInLocalsStillDeliversLocally() throws {
        h.writeControl("locals", "example.test\r\n")
        let server = try h.startScriptedSMTP([])
        h.writeControl("smtproutes", ":127.0.0.1:\(server.port)\n")
        try h.inject("To: alice@example.test\nSubject: local\n\nbody\n")
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertTrue(out.stdoutText.contains("to local alice@example.test"), out.stdoutText)
        XCTAssertEqual(h.maildir("alice").count, 1)
        XCTAssertEqual(String(decoding: TestEnv.read(server.dir + "/session.log"), as: UTF8.self), "")
    }

    // MARK: 2. CR and LF inside envelope addresses

    func qmailQueue(_ envelope: String) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("qmail-queue"), input: Array("Subject: x\n\nbody\n".utf8), fd1Input: Array(envelope.utf8),
                        environment: h.environment)
    }

    /// qmail-queue refuses an envelope address with CR or LF (exit 79) and leaves nothing.
    func testQmailQueueRefusesLineBreaksInEnvelopeAddresses() throws {
        for envelope in ["Fs@example.test\0Tx@remote.example>\r\nDATA\r\n\0\0", "Fs@example.test\nRSET\0Tr@remote.example\0\0",
                         "Fs@example.test\0Tok@remote.example\0Tbad\r@remote.example\0\0"] {
            let out = try qmailQueue(envelope)
            XCTAssertEqual(out.exitCode, 79, envelope.debugDescription)
        }
        XCTAssertEqual(h.queueFiles(), [])
        XCTAssertEqual(TestEnv.files(under: h.queue + "/pid"), [])
        // The client layer reports it with the seed's text for 79.
        XCTAssertEqual(QueueClientText.text(forExitCode: 79), "Zqq envelope format error (#4.3.0)")
    }

    /// A queue written by another program may still hold such an address: the
    /// engine's SMTP client fails that recipient permanently and sends nothing of it.
    func testEngineNeverWritesALineBreakIntoTheConversation() throws {
        let server = try h.startScriptedSMTP([])
        h.writeControl("smtproutes", ":127.0.0.1:\(server.port)\n")
        // Written into the queue the way classic qmail-queue would (it does not check).
        try h.inject("Subject: first\n\nbody\n", ["-f", "s@example.test", "good@remote.example"])
        let todo = try XCTUnwrap(TestEnv.files(under: h.queue + "/todo").first)
        let path = h.queue + "/todo/" + todo
        var bytes = TestEnv.read(path)
        let good = Array("Tgood@remote.example\0".utf8)
        let i = try XCTUnwrap(bytes.firstRange(of: good))
        bytes.replaceSubrange(i, with: Array("Tx@remote.example>\r\nDATA\r\n\0".utf8) + good)
        try Sys.writeFile(path, bytes, mode: 0o644)
        let out = try h.qmtaSend(["./Maildir/"])
        let log = String(decoding: TestEnv.read(server.dir + "/session.log"), as: UTF8.self)
        XCTAssertEqual(log.components(separatedBy: "\nDATA").count - 1, 1, log)
        XCTAssertFalse(log.contains("x@remote.example"), log)
        XCTAssertTrue(out.stdoutText.contains(": failure: Sorry,_the_recipient_address_holds_a_control_character"), out.stdoutText)
        XCTAssertEqual(String(decoding: TestEnv.read(server.dir + "/msg-1.env"), as: UTF8.self), "s@example.test\ngood@remote.example\nplain\n")
    }

    // MARK: 3. Line breaks in qmail-inject's and sendmail's arguments

    func run(_ program: String, _ args: [String], _ message: String = "Subject: s\n\nbody\n") throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program(program), args, input: Array(message.utf8), environment: h.environment)
    }

    func testLineBreaksInSenderAndRecipientArgumentsAreRefused() throws {
        let cases: [(String, [String], String)] = [
            ("qmail-inject", ["-f", "a@example.test\r\nX-Injected: 1", "r@remote.example"], "envelope sender"),
            ("qmail-inject", ["-fa@example.test\nX-Injected: 1", "r@remote.example"], "envelope sender"),
            ("qmail-inject", ["r@remote.example>\r\nDATA"], "recipient"),
            ("sendmail", ["-f", "a@example.test\nBcc: evil@remote.example", "r@remote.example"], "envelope sender"),
            ("sendmail", ["-r", "a@example.test\r", "r@remote.example"], "envelope sender"),
        ]
        for (program, args, what) in cases {
            let out = try run(program, args)
            XCTAssertEqual(out.exitCode, 100, "\(program) \(args)")
            XCTAssertTrue(out.stderrText.contains("\(program): fatal: ") && out.stderrText.contains(what), out.stderrText)
        }
        let viaEnv = try TestEnv.run(TestEnv.program("qmail-inject"), ["r@remote.example"], input: Array("Subject: s\n\nbody\n".utf8),
                                     environment: h.environment.filter { !$0.hasPrefix("QMAILUSER=") } + ["QMAILUSER=a\nBcc: x"])
        XCTAssertEqual(viaEnv.exitCode, 100, viaEnv.stderrText)
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// A full name with a line break is folded into one line: no header appears.
    func testLineBreakInTheFullNameIsFoldedIntoOneHeaderLine() throws {
        for (program, args) in [("sendmail", ["-F", "Joe\nBcc: evil@remote.example", "r@remote.example"]),
                                ("qmail-inject", ["-FJoe\r\nBcc: evil@remote.example", "r@remote.example"])] {
            let out = try run(program, args, "Subject: s\n\nbody\n")
            XCTAssertEqual(out.exitCode, 0, out.stderrText)
        }
        let messages = TestEnv.files(under: h.queue + "/mess").map { String(decoding: TestEnv.read(h.queue + "/mess/" + $0), as: UTF8.self) }
        XCTAssertEqual(messages.count, 2)
        for m in messages {
            let header = m.components(separatedBy: "\n\n")[0]
            XCTAssertFalse(header.contains("\nBcc:"), header)
            XCTAssertFalse(header.utf8.contains(13), header)
            // One From: line; the folded name is quoted, as it holds ":" and "@".
            XCTAssertTrue(header.contains("\nFrom: \"Joe Bcc: evil@remote.example\" <"), header)
        }
        // And the envelope has only the named recipient.
        for t in TestEnv.files(under: h.queue + "/todo") {
            let env = try Envelope.parseQueueFile(TestEnv.read(h.queue + "/todo/" + t))
            XCTAssertEqual(env.recipients.map { String(decoding: $0, as: UTF8.self) }, ["r@remote.example"])
        }
    }

    // MARK: 4. Quoted local parts

    /// `"john  smith"@d.example` is the envelope address `john  smith@d.example`
    /// (quotes gone, blanks kept) and goes on the wire quoted once.
    func testQuotedLocalPartsAreUnquotedInTheEnvelopeAndQuotedOnceOnTheWire() throws {
        XCTAssertEqual(AddressList.parse("\"john  smith\"@d.example, \"q\\\"x\"@c.example"), ["john  smith@d.example", "q\"x@c.example"])
        XCTAssertEqual(AddressList.parse("Joe <\"a b\"@d.example>"), ["a b@d.example"])
        XCTAssertEqual(AddressList.parse("\"Joe Smith\""), [])
        let server = try h.startScriptedSMTP([])
        h.writeControl("smtproutes", ":127.0.0.1:\(server.port)\n")
        try h.inject("To: \"john  smith\"@d.example, \"q\\\"x\"@c.example\nSubject: quoted\n\nbody\n", ["-f", "s@example.test"])
        let todo = try XCTUnwrap(TestEnv.files(under: h.queue + "/todo").first)
        let env = try Envelope.parseQueueFile(TestEnv.read(h.queue + "/todo/" + todo))
        XCTAssertEqual(env.recipients.map { String(decoding: $0, as: UTF8.self) }, ["john  smith@d.example", "q\"x@c.example"])
        let out = try h.qmtaSend(["./Maildir/"])
        XCTAssertEqual(out.stdoutText.components(separatedBy: ": success: ").count - 1, 2, out.stdoutText)
        let log = String(decoding: TestEnv.read(server.dir + "/session.log"), as: UTF8.self)
        XCTAssertTrue(log.contains("RCPT TO:<\"john  smith\"@d.example>"), log)
        XCTAssertTrue(log.contains("RCPT TO:<\"q\\\"x\"@c.example>"), log)
    }

    // MARK: 5. Large messages are streamed, not held in memory

    /// The engine's peak resident memory (VmHWM) in kB.
    func peakKB(_ pid: pid_t) -> Int {
        let status = String(decoding: TestEnv.read("/proc/\(pid)/status"), as: UTF8.self)
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    func bigMessage(_ megabytes: Int) -> [UInt8] {
        var m = Array("Subject: big\n\n".utf8)
        let line = Array("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n".utf8)
        m.reserveCapacity(megabytes << 20 + 100)
        while m.count < megabytes << 20 { m += line }
        return m
    }

    /// Three local deliveries of a 40 MB message at once, then one remote: the
    /// engine's peak resident memory stays under 64 MB (reading the message
    /// whole took 3 x 40 MB for the local ones, and 80 MB for the remote one).
    func testLargeMessagesAreStreamedByLocalAndRemoteDeliveries() throws {
        let server = try h.startScriptedSMTP(["--extensions", "PIPELINING,8BITMIME,SIZE 100000000"], lifetime: 120)
        h.writeControl("smtproutes", ":127.0.0.1:\(server.port)\n")
        h.writeControl("timeoutremote", "60\n")
        let message = bigMessage(40)
        let local = try TestEnv.run(TestEnv.program("qmail-inject"), ["-f", "s@example.test", "alice@example.test", "bob@example.test", "joe@example.test"],
                                    input: message, environment: h.environment)
        XCTAssertEqual(local.exitCode, 0, local.stderrText)
        let d = try h.startSend()
        defer { _ = d.stop() }
        h.waitFor("three local deliveries", seconds: 120) { ["alice", "bob", "joe"].allSatisfy { h.maildir($0).count == 1 } }
        for user in ["alice", "bob", "joe"] {
            let st = try XCTUnwrap(try Sys.stat(h.home(user) + "/Maildir/new/" + h.maildir(user)[0]))
            XCTAssertGreaterThan(Int(st.st_size), message.count, user)
        }
        let afterLocal = peakKB(d.pid)
        XCTAssertLessThan(afterLocal, 64 * 1024, "peak resident memory after the local deliveries: \(afterLocal) kB")
        let remote = try TestEnv.run(TestEnv.program("qmail-inject"), ["-f", "s@example.test", "r@remote.example"],
                                     input: message, environment: h.environment)
        XCTAssertEqual(remote.exitCode, 0, remote.stderrText)
        h.waitFor("the remote delivery", seconds: 120) { TestEnv.files(under: server.dir).contains("msg-1.eml") && h.queueFiles().isEmpty }
        let afterRemote = peakKB(d.pid)
        XCTAssertLessThan(afterRemote, 64 * 1024, "peak resident memory after the remote delivery: \(afterRemote) kB")
        print("engine peak resident memory: \(afterLocal) kB after 3 local deliveries of \(message.count) bytes, \(afterRemote) kB after a remote one")
    }

    // MARK: The probe's passing cases, kept

    /// 100,000 recipients in one envelope are queued, each as a record.
    func testOneHundredThousandRecipientsAreQueued() throws {
        var envelope = "Fs@example.test\0"
        for i in 0..<100_000 { envelope += "Tr\(i)@remote.example\0" }
        envelope += "\0"
        let out = try qmailQueue(envelope)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let todo = try XCTUnwrap(TestEnv.files(under: h.queue + "/todo").first)
        let env = try Envelope.parseQueueFile(TestEnv.read(h.queue + "/todo/" + todo))
        XCTAssertEqual(env.recipients.count, 100_000)
        XCTAssertEqual(env.recipients.last.map { String(decoding: $0, as: UTF8.self) }, "r99999@remote.example")
    }
}
