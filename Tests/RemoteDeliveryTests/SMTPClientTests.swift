import XCTest
import Workers
import RemoteDelivery
@testable import Engine
import LMDB
import Scheduler
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A helper process (a Python server) that prints its port first and stops by itself.
final class ScriptedServer {
    let pid: pid_t
    let port: Int
    let dir: String

    init(_ script: String, _ args: [String], dir: String) throws {
        self.dir = dir
        let out = try Spawn.pipe()
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let path = TestEnv.packageRoot + "/Tests/RemoteDeliveryTests/Support/" + script
        pid = try Spawn.start("/usr/bin/env", arguments: ["env", "python3", path] + args,
                              fds: [.init(null, at: 0), .init(out.write, at: 1)], keepStandard: true)
        Sys.close(out.write)
        var line: [UInt8] = []
        var b: UInt8 = 0
        while read(out.read, &b, 1) == 1 && b != 10 { line.append(b) }
        Sys.close(out.read)
        port = Int(String(decoding: line, as: UTF8.self)) ?? 0
        if port == 0 { throw SystemError("server did not start", errno: EIO) }
    }

    static func smtp(_ dir: String, _ args: [String] = []) throws -> ScriptedServer {
        try ScriptedServer("smtpd.py", ["--dir", dir, "--lifetime", "60"] + args, dir: dir)
    }

    func stop() { kill(pid, SIGKILL); _ = try? Spawn.wait(pid) }

    /// Messages the server accepted: (envelope lines, body).
    var received: [(env: [String], body: String)] {
        let names = ((try? Sys.listDirectory(dir)) ?? []).filter { $0.hasSuffix(".eml") }.sorted()
        return names.map { n in
            let base = dir + "/" + String(n.dropLast(4))
            let env = String(decoding: TestEnv.read(base + ".env"), as: UTF8.self).split(separator: "\n").map(String.init)
            return (env, String(decoding: TestEnv.read(base + ".eml"), as: UTF8.self))
        }
    }

    var sessionLog: String { String(decoding: TestEnv.read(dir + "/session.log"), as: UTF8.self) }
}

final class SMTPClientTests: XCTestCase {
    var dir = ""
    var servers: [ScriptedServer] = []
    override func setUp() { dir = TestEnv.temporaryDirectory("smtp") }
    override func tearDown() { servers.forEach { $0.stop() }; TestEnv.remove(dir) }

    func server(_ args: [String] = []) throws -> ScriptedServer {
        let d = dir + "/server\(servers.count)"
        mkdir(d, 0o755)
        let s = try ScriptedServer.smtp(d, args)
        servers.append(s)
        return s
    }

    func client(port: Int, timeout: Int = 10, tlsRequired: [String] = [], caFile: String? = nil) throws -> SMTPClient {
        var s = SMTPSettings()
        s.heloHost = "client.example"
        s.timeoutConnect = 5
        s.timeoutRemote = timeout
        s.routes = try SMTPRoutes(lines: [(1, ":127.0.0.1:\(port)")], file: "smtproutes")
        s.tlsRequired = tlsRequired
        s.caFile = caFile
        return SMTPClient(settings: s, resolver: DNSResolver(servers: []))
    }

    let message = Array("Subject: test\n\n.a line with a dot\nbare LF line\n".utf8)

    func deliver(_ c: SMTPClient, _ rcpts: [String] = ["u@dest.example"]) -> (RemoteOutcome, [DeliveryReport]) {
        let o = c.deliver(domain: "dest.example", sender: Array("s@src.example".utf8), recipients: rcpts.map { Array($0.utf8) }, message: message)
        let folded = rcpts.indices.map { ExternalRemoteWorker.fold(output: o.output(forRecipient: $0), status: .exited(0)) }
        return (o, folded)
    }

    func text(_ r: DeliveryReport) -> String { String(decoding: r.text, as: UTF8.self) }

    func testSuccessWithDotStuffingCRLFAndIndimailTexts() throws {
        let s = try server()
        let (_, reports) = deliver(try client(port: s.port))
        XCTAssertEqual(reports[0].kind, .success)
        XCTAssertEqual(text(reports[0]), "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 accepted message - Protocol SMTP.\nRemote host said: 250 ok\n")
        XCTAssertEqual(s.received.count, 1)
        XCTAssertEqual(s.received[0].body, "Subject: test\r\n\r\n.a line with a dot\r\nbare LF line\r\n")
        XCTAssertEqual(s.received[0].env, ["s@src.example", "u@dest.example", "plain"])
        XCTAssertTrue(s.sessionLog.contains("EHLO client.example"), s.sessionLog)
        XCTAssertTrue(s.sessionLog.contains("MAIL FROM:<s@src.example> SIZE=\(message.count)"), s.sessionLog)
    }

    func testFailuresAtEachStage() throws {
        let cases: [([String], DeliveryReport.Kind, String)] = [
            (["--greeting", "554 go away"], .failure, "Connected to 127.0.0.1 but greeting failed.\nRemote host said: 554 go away\n"),
            (["--greeting", "421 busy"], .deferral, "Connected to 127.0.0.1 but greeting failed.\nRemote host said: 421 busy\n"),
            (["--helo", "550"], .failure, "Connected to 127.0.0.1 but my name was rejected.\nRemote host said: 550 no such user here\n"),
            (["--mail", "553"], .failure, "Connected to 127.0.0.1 but sender was rejected.\nRemote host said: 553 bad sender\n"),
            (["--mail", "451"], .deferral, "Connected to 127.0.0.1 but sender was rejected.\nRemote host said: 451 local error\n"),
            (["--rcpt-default", "550"], .failure, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 does not like recipient.\nRemote host said: 550 no such user here\nGiving up on 127.0.0.1.\n"),
            (["--rcpt-default", "450"], .deferral, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 does not like recipient.\nRemote host said: 450 mailbox busy\nGiving up on 127.0.0.1.\n"),
            (["--data", "554"], .failure, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 failed on DATA command.\nRemote host said: 554 transaction failed\n"),
            (["--data", "451"], .deferral, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 failed on DATA command.\nRemote host said: 451 local error\n"),
            (["--final", "552"], .failure, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 failed after I sent the message.\nRemote host said: 552 too big\n"),
            (["--final", "451"], .deferral, "From: <s@src.example> RCPT: <u@dest.example> 127.0.0.1 failed after I sent the message.\nRemote host said: 451 local error\n"),
            // The whole (small) message was written before the drop was seen: as qmail-remote, "Possible duplicate!".
            (["--drop-in-data"], .deferral, "Connected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n"),
        ]
        // With PIPELINING (MAIL, RCPT, DATA in one write) and without (one command at a time).
        for extra in [[], ["--extensions", "SIZE 10000000"]] {
            for (args, kind, expected) in cases {
                let s = try server(args + extra)
                let (_, reports) = deliver(try client(port: s.port))
                XCTAssertEqual(reports[0].kind, kind, "\(args + extra)")
                XCTAssertEqual(text(reports[0]), expected, "\(args + extra)")
                XCTAssertEqual(s.received.count, 0, "\(args + extra): nothing may be accepted")
            }
        }
    }

    func testHangingServerTimesOut() throws {
        for stage in ["greeting", "mail", "final"] {
            let s = try server(["--hang-at", stage])
            let start = time(nil)
            let (_, reports) = deliver(try client(port: s.port, timeout: 2))
            XCTAssertEqual(reports[0].kind, .deferral, stage)
            // After the whole message went out, the report warns of a possible duplicate (qmail's flagcritical).
            let duplicate = stage == "final" ? "Possible duplicate! " : ""
            XCTAssertEqual(text(reports[0]), "Connected to 127.0.0.1 but connection died. \(duplicate)(#4.4.2)\n", stage)
            XCTAssertLessThan(time(nil) - start, 10, stage)
        }
    }

    func testSomeRecipientsAcceptedOthersRejected() throws {
        let s = try server(["--rcpt", "bad@dest.example=550", "--rcpt", "later@dest.example=451"])
        let (o, reports) = deliver(try client(port: s.port), ["good@dest.example", "bad@dest.example", "later@dest.example"])
        XCTAssertEqual(o.recipientReports.map { $0.first! }, [UInt8(ascii: "r"), UInt8(ascii: "h"), UInt8(ascii: "s")])
        XCTAssertEqual(reports.map(\.kind), [.success, .failure, .deferral])
        XCTAssertEqual(s.received.count, 1)
        XCTAssertEqual(s.received[0].env, ["s@src.example", "good@dest.example", "plain"])
        XCTAssertTrue(s.sessionLog.components(separatedBy: "MAIL FROM").count == 2, "one transaction for all recipients")
    }

    func makeCertificate() throws -> (cert: String, key: String) {
        let cert = dir + "/cert.pem", key = dir + "/key.pem"
        let out = try TestEnv.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                                                      "-days", "1", "-keyout", key, "-out", cert])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return (cert, key)
    }

    func testStartTLSWithASelfSignedCertificate() throws {
        let (cert, key) = try makeCertificate()
        // Opportunistic: encrypted, not verified.
        let s = try server(["--tls", cert, key])
        let (_, reports) = deliver(try client(port: s.port))
        XCTAssertEqual(reports[0].kind, .success, text(reports[0]))
        XCTAssertEqual(s.received.first?.env.last, "tls")
        XCTAssertTrue(s.sessionLog.contains("STARTTLS"))
        // Required and verified: the self-signed certificate fails → deferral.
        let s2 = try server(["--tls", cert, key])
        let (_, r2) = deliver(try client(port: s2.port, tlsRequired: ["dest.example"]))
        XCTAssertEqual(r2[0].kind, .deferral)
        XCTAssertTrue(text(r2[0]).hasPrefix("TLS negotiation with 127.0.0.1 failed: certificate verification failed"), text(r2[0]))
        XCTAssertEqual(s2.received.count, 0)
        // Required, with the certificate as CA (name localhost is not dest.example): still refused.
        // Required but not offered: deferral.
        let s3 = try server()
        let (_, r3) = deliver(try client(port: s3.port, tlsRequired: [".example"]))
        XCTAssertEqual(r3[0].kind, .deferral)
        XCTAssertEqual(text(r3[0]), "127.0.0.1 does not offer STARTTLS, which dest.example requires. (#4.7.5)\n")
    }

    /// Verification uses the CA file the settings name now: a CA file that changed
    /// (another tlsca, as after HUP) is loaded, not the first one cached for the process.
    func testVerifiedTLSFollowsTheCAFile() throws {
        func cert(_ name: String) throws -> (cert: String, key: String) {
            let cert = dir + "/\(name)-cert.pem", key = dir + "/\(name)-key.pem"
            let out = try TestEnv.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=dest.example",
                                                          "-addext", "subjectAltName=DNS:dest.example,IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert])
            XCTAssertEqual(out.exitCode, 0, out.stderrText)
            return (cert, key)
        }
        let good = try cert("good"), other = try cert("other")
        let s = try server(["--tls", good.cert, good.key])
        let (_, r1) = deliver(try client(port: s.port, tlsRequired: ["dest.example"], caFile: other.cert))
        XCTAssertEqual(r1[0].kind, .deferral, text(r1[0]))
        let (_, r2) = deliver(try client(port: s.port, tlsRequired: ["dest.example"], caFile: good.cert))
        XCTAssertEqual(r2[0].kind, .success, text(r2[0]))
        XCTAssertEqual(s.received.first?.env.last, "tls")
    }

    func testConnectionIsReusedAcrossMessages() throws {
        let s = try server()
        let c = try client(port: s.port)
        for _ in 0..<5 { XCTAssertEqual(deliver(c).1[0].kind, .success) }
        XCTAssertEqual(s.received.count, 5)
        let log = s.sessionLog
        XCTAssertEqual(log.components(separatedBy: "EHLO").count - 1, 1, "one connection: \(log)")
        XCTAssertEqual(log.components(separatedBy: "RSET").count - 1, 0, "a finished transaction needs no RSET: \(log)")
        XCTAssertEqual(c.pool.idleCount, 1)
        c.pool.closeAll()
    }

    func testPipelinedTransactionAndResetAfterAnAbortedOne() throws {
        let s = try server(["--rcpt", "bad@dest.example=550"])
        let c = try client(port: s.port)
        // MAIL, RCPT and DATA go in one write; the refused recipient leaves the
        // transaction open on the server side (DATA refused), so the next one starts with RSET.
        let (_, r1) = deliver(c, ["bad@dest.example"])
        XCTAssertEqual(r1[0].kind, .failure)
        XCTAssertEqual(text(r1[0]), "From: <s@src.example> RCPT: <bad@dest.example> 127.0.0.1 does not like recipient.\nRemote host said: 550 no such user here\nGiving up on 127.0.0.1.\n")
        XCTAssertEqual(deliver(c).1[0].kind, .success)
        XCTAssertEqual(s.received.count, 1)
        let log = s.sessionLog
        XCTAssertEqual(log.components(separatedBy: "EHLO").count - 1, 1, log)
        XCTAssertEqual(log.components(separatedBy: "RSET").count - 1, 1, log)
        XCTAssertTrue(log.contains("MAIL FROM:<s@src.example> SIZE=") && log.contains("DATA"), log)
        c.pool.closeAll()
    }

    func testNoServerListening() throws {
        let c = try client(port: 1)   // nothing listens on port 1
        let (_, r) = deliver(c)
        XCTAssertEqual(r[0].kind, .deferral)
        XCTAssertEqual(text(r[0]), "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n")
    }

    /// A peer that is no SMTP server (an SSH banner) is a temporary failure at
    /// once, not a line-by-line wait for a reply code.
    func testNonSMTPGreetingIsATemporaryFailure() throws {
        let s = try server(["--greeting", "SSH-2.0-OpenSSH_9.2"])
        let (_, r) = deliver(try client(port: s.port))
        XCTAssertEqual(r[0].kind, .deferral)
        XCTAssertEqual(text(r[0]), "Connected to 127.0.0.1 but greeting failed.\nRemote host said: SSH-2.0-OpenSSH_9.2\n")
    }

    /// Closing idle connections sends QUIT and does not wait for the answer: a
    /// silent peer must not hold the caller for `timeoutremote`.
    func testQuitIsNotWaitedFor() throws {
        let s = try server(["--hang-at", "quit"])
        let c = try client(port: s.port, timeout: 20)
        XCTAssertEqual(deliver(c).1[0].kind, .success)
        XCTAssertEqual(c.pool.idleCount, 1)
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        c.pool.closeAll()
        clock_gettime(CLOCK_MONOTONIC, &t1)
        XCTAssertLessThan(t1.tv_sec - t0.tv_sec, 5, "closeAll waited for the reply to QUIT")
        XCTAssertEqual(c.pool.idleCount, 0)
    }

    /// qmail-remote refuses a message whose last line has no newline.
    func testPartialFinalLineIsRefused() throws {
        let s = try server()
        let c = try client(port: s.port)
        let o = c.deliver(domain: "dest.example", sender: Array("s@src.example".utf8), recipients: [Array("u@dest.example".utf8)],
                          message: Array("Subject: x\n\nno newline at the end".utf8))
        let r = ExternalRemoteWorker.fold(output: o.output(forRecipient: 0), status: .exited(0))
        XCTAssertEqual(r.kind, .failure)
        XCTAssertEqual(text(r), "SMTP cannot transfer messages with partial final lines. (#5.6.2)\n")
        XCTAssertEqual(s.received.count, 0)
    }

    /// A message file that cannot be read is a deferral, never an empty message sent.
    func testUnreadableMessageIsADeferral() throws {
        let s = try server()
        let worker = SMTPWorker(client: try client(port: s.port))
        let d = WorkItem(number: 1, messageID: 1, recipient: Array("u@dest.example".utf8),
                         sender: Array("s@src.example".utf8), qqeh: [], envHeaders: [])
        let r = worker.deliver([d], messagePath: dir)   // a directory: open works, read fails
        XCTAssertEqual(r.first?.1, DeliveryReport(.deferral, "Unable to read message. (#4.3.0)\n"))
        XCTAssertEqual(s.received.count, 0)
    }

    func testSMTPRoutesFields() throws {
        let r = try SMTPRoutes(lines: [(1, "a.example:relay.example:2525:3600:120"), (2, "b.example:relay2.example:"),
                                       (3, "c.example:[::1]:2526"), (4, ".d.example:"), (5, ":[10.0.0.1]")], file: "smtproutes")
        XCTAssertEqual(r.route(for: "a.example"), .init(relay: "relay.example", port: 2525))
        XCTAssertEqual(r.route(for: "b.example"), .init(relay: "relay2.example", port: 25))
        XCTAssertEqual(r.route(for: "c.example"), .init(relay: "[::1]", port: 2526))
        XCTAssertEqual(r.route(for: "x.d.example"), .init(relay: nil, port: 25))
        XCTAssertEqual(r.route(for: "other.example"), .init(relay: "[10.0.0.1]", port: 25))
        XCTAssertThrowsError(try SMTPRoutes(lines: [(7, "e.example:relay:abc")], file: "smtproutes"))
    }

    /// Addresses go out as bytes with the local part quoted where qmail-remote quotes it.
    func testAddressesAreQuotedAndSentAsBytes() throws {
        let s = try server()
        let c = try client(port: s.port)
        let o = c.deliver(domain: "dest.example", sender: Array("s@src.example".utf8),
                          recipients: [Array("a b@dest.example".utf8), Array("j".utf8) + [0xF6] + Array("rg@dest.example".utf8), Array("plain.name@dest.example".utf8)],
                          message: message)
        XCTAssertEqual(ExternalRemoteWorker.fold(output: o.output(forRecipient: 2), status: .exited(0)).kind, .success)
        XCTAssertTrue(s.sessionLog.contains("RCPT TO:<\"a b\"@dest.example>"), s.sessionLog)
        XCTAssertTrue(s.sessionLog.contains("RCPT TO:<\"j\u{F6}rg\"@dest.example>"), s.sessionLog)   // the server logs Latin-1
        XCTAssertTrue(s.sessionLog.contains("RCPT TO:<plain.name@dest.example>"), s.sessionLog)
    }

    /// qmail-remote's host memory in indimail's lock/tcpto: records written in its
    /// format, two timeouts more than 120 s apart make a host skipped for an hour,
    /// a success clears it, and a new reader sees what an earlier one wrote.
    func testTcptoFileRecordsTimeoutsAndSkips() throws {
        let path = dir + "/tcpto"
        TestEnv.write(path, String(repeating: "\0", count: 2048))
        let m = HostMemory(store: TcptoFile(path: path))
        m.timedOut("127.0.0.9", now: 1000)
        var bytes = TestEnv.read(path)
        XCTAssertEqual(bytes.count, 2048)
        XCTAssertEqual(Array(bytes[0..<20]), [2, 0, 0, 0, 1, 0, 0, 0, 0xE8, 0x03, 0, 0, 0, 0, 0, 0, 127, 0, 0, 9])
        m.timedOut("127.0.0.9", now: 1100)   // within 120 s: not counted again
        XCTAssertFalse(HostMemory(store: TcptoFile(path: path)).shouldSkip("127.0.0.9", now: 1150))
        m.timedOut("127.0.0.9", now: 1300)
        m.timedOut("::1", now: 1300)
        let fresh = HostMemory(store: TcptoFile(path: path))
        XCTAssertTrue(fresh.shouldSkip("127.0.0.9", now: 1400))
        XCTAssertFalse(fresh.shouldSkip("127.0.0.9", now: 1300 + 3601), "the back-off ends")
        bytes = TestEnv.read(path)
        XCTAssertEqual(bytes[32], 10, "the IPv6 record's family")
        XCTAssertEqual(Array(bytes[48..<64]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        fresh.succeeded("127.0.0.9")
        XCTAssertEqual(TestEnv.read(path)[4], 0, "a success clears the count")
        XCTAssertFalse(HostMemory(store: TcptoFile(path: path)).shouldSkip("127.0.0.9", now: 1400))
        // No file: no memory, and nothing is created.
        let none = HostMemory(store: TcptoFile(path: dir + "/missing"))
        none.timedOut("127.0.0.9", now: 1000)
        XCTAssertFalse(Sys.exists(dir + "/missing"))
    }

    /// The engine keeps its host memory in the queue's LMDB: a restarted engine still
    /// skips a host that timed out twice, and a success forgets it there too.
    func testEngineHostMemoryPersistsInLMDB() throws {
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        let env = try LMDBEnvironment(path: dir + "/engine.lmdb", options: o)
        let m = HostMemory(store: try LMDBHostMemoryStore(env: env))
        m.timedOut("192.0.2.7", now: 1000)
        m.timedOut("192.0.2.7", now: 1200)
        XCTAssertTrue(HostMemory(store: try LMDBHostMemoryStore(env: env)).shouldSkip("192.0.2.7", now: 1300))
        m.succeeded("192.0.2.7")
        XCTAssertFalse(HostMemory(store: try LMDBHostMemoryStore(env: env)).shouldSkip("192.0.2.7", now: 1300))
    }

    /// The engine's client skips a host with two recent connect timeouts even when it
    /// is the only one: the message is deferred at once, nothing is tried.
    func testClientSkipsAHostThatTimedOutTwice() throws {
        let s = try server()
        let c = try client(port: s.port)
        let now = Int64(time(nil))
        c.hosts.timedOut("127.0.0.1", now: now - 200)
        c.hosts.timedOut("127.0.0.1", now: now)
        let (o, _) = deliver(c)
        XCTAssertEqual(String(decoding: o.messageReport, as: UTF8.self), "ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n")
        XCTAssertEqual(s.received.count, 0)
        c.hosts.succeeded("127.0.0.1")
        XCTAssertTrue(String(decoding: deliver(c).0.messageReport, as: UTF8.self).hasPrefix("K"))
    }

    /// The qmail-remote program skips a host its lock/tcpto marks, without connecting,
    /// and delivers again once the mark is gone.
    func testQmailRemoteSkipsAHostMarkedInTcpto() throws {
        let s = try server()
        let home = dir + "/qmail"
        for d in ["", "/control", "/queue", "/queue/lock"] { mkdir(home + d, 0o755) }
        TestEnv.write(home + "/control/smtproutes", ":127.0.0.1:\(s.port)\n")
        TestEnv.write(home + "/control/me", "client.example\n")
        let tcpto = home + "/queue/lock/tcpto"
        TestEnv.write(tcpto, String(repeating: "\0", count: 2048))
        let now = Int64(time(nil))
        TcptoFile(path: tcpto).save("127.0.0.1", failures: 2, last: now)
        let env = TestEnv.environment(["QMAILHOME": home, "CONTROLDIR": home + "/control", "QUEUEDIR": nil])
        let args = ["dest.example", "s@src.example", "", "10", "u@dest.example"]
        let skipped = try TestEnv.run(TestEnv.program("qmail-remote"), args, input: Array("Subject: x\n\nhi\n".utf8), environment: env)
        XCTAssertEqual(skipped.stdoutText, "ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0")
        XCTAssertEqual(s.received.count, 0, "nothing was tried")
        TcptoFile(path: tcpto).remove("127.0.0.1")
        let sent = try TestEnv.run(TestEnv.program("qmail-remote"), args, input: Array("Subject: x\n\nhi\n".utf8), environment: env)
        XCTAssertTrue(sent.stdoutText.hasPrefix("r") && sent.stdoutText.contains("\0K127.0.0.1 accepted message"), sent.stdoutText)
        XCTAssertEqual(s.received.count, 1)
    }

    func testDataBytes() {
        XCTAssertEqual(SMTPClient.dataBytes(Array("a\n.b\r\n..c".utf8)), Array("a\r\n..b\r\n...c\r\n.\r\n".utf8))
    }
}

/// MX order, fallback to A, no such domain, against a loopback DNS stub.
final class DNSTests: XCTestCase {
    var dir = ""
    var servers: [ScriptedServer] = []
    override func setUp() { dir = TestEnv.temporaryDirectory("dns") }
    override func tearDown() { servers.forEach { $0.stop() }; TestEnv.remove(dir) }

    func dns(_ records: [String]) throws -> DNSResolver {
        let s = try ScriptedServer("dnsd.py", ["--lifetime", "60"] + records, dir: dir)
        servers.append(s)
        return DNSResolver(servers: [.init(address: [127, 0, 0, 1], port: s.port)])
    }

    func testQueries() throws {
        let r = try dns(["mx.example/MX/20/b.mx.example", "mx.example/MX/10/a.mx.example", "a.mx.example/A/127.0.0.2",
                         "gone.example/NXDOMAIN", "v6.example/AAAA/::1", "big.example/TRUNCATE", "big.example/MX/5/m.big.example"])
        XCTAssertEqual(r.query("mx.example", .mx), .records([.mx(preference: 20, exchange: "b.mx.example"), .mx(preference: 10, exchange: "a.mx.example")]))
        // A truncated UDP answer is asked again over TCP.
        XCTAssertEqual(r.query("big.example", .mx), .records([.mx(preference: 5, exchange: "m.big.example")]))
        XCTAssertEqual(r.query("a.mx.example", .a), .records([.a([127, 0, 0, 2])]))
        XCTAssertEqual(r.query("gone.example", .mx), .nxdomain)
        XCTAssertEqual(r.addresses(of: "v6.example"), .records([.aaaa([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])]))
        // A server that does not answer is a temporary failure.
        var dead = DNSResolver(servers: [.init(address: [127, 0, 0, 1], port: 9)])
        dead.timeoutMS = 300
        dead.attempts = 1
        if case .temporaryFailure = dead.query("x.example", .mx) {} else { XCTFail("expected a temporary failure") }
    }

    /// A scripted SMTP server on loopback and a client that finds it through the
    /// stub resolver's MX records (an empty smtproutes relay: MX lookup, the server's port).
    func mxClient(_ records: [String], localAddresses: [[UInt8]] = []) throws -> (ScriptedServer, SMTPClient) {
        let smtpDir = dir + "/smtp\(servers.count)"
        mkdir(smtpDir, 0o755)
        let s = try ScriptedServer.smtp(smtpDir)
        servers.append(s)
        let r = try dns(records)
        var settings = SMTPSettings()
        settings.timeoutConnect = 3
        settings.timeoutRemote = 10
        settings.routes = try SMTPRoutes(lines: [(1, "::\(s.port)")], file: "smtproutes")
        settings.localAddresses = localAddresses
        return (s, SMTPClient(settings: settings, resolver: r))
    }

    func testMXOrderFallbackToAAndNoSuchDomain() throws {
        // Preference 10 points at 127.0.0.2, where nothing listens; 20 at 127.0.0.1.
        let (s, c) = try mxClient(["dest.example/MX/20/good.mx.example", "dest.example/MX/10/dead.mx.example",
                                   "dead.mx.example/A/127.0.0.2", "good.mx.example/A/127.0.0.1",
                                   "nomx.example/A/127.0.0.1", "gone.example/NXDOMAIN", "broken.example/SERVFAIL"])
        let m = Array("Subject: x\n\nx\n".utf8)
        let o1 = c.deliver(domain: "dest.example", sender: [], recipients: [Array("u@dest.example".utf8)], message: m)
        XCTAssertEqual(String(decoding: o1.messageReport, as: UTF8.self), "K127.0.0.1 accepted message - Protocol SMTP.\nRemote host said: 250 ok\n")
        let o2 = c.deliver(domain: "nomx.example", sender: [], recipients: [Array("u@nomx.example".utf8)], message: m)
        XCTAssertEqual(o2.messageReport.first, UInt8(ascii: "K"))
        let o3 = c.deliver(domain: "gone.example", sender: [], recipients: [Array("u@gone.example".utf8)], message: m)
        XCTAssertEqual(String(decoding: o3.messageReport, as: UTF8.self), "DSorry, I couldn't find any host named gone.example. (#5.1.2)\n")
        let o4 = c.deliver(domain: "broken.example", sender: [], recipients: [Array("u@broken.example".utf8)], message: m)
        XCTAssertEqual(String(decoding: o4.messageReport, as: UTF8.self), "ZSorry, I couldn't find any host by that name. (#4.1.2)\n")
        XCTAssertEqual(s.received.count, 2)
        c.pool.closeAll()
    }

    /// qmail-remote's prefme and perm_nomx: an MX no better than this host is never
    /// used (a backup MX would loop mail to itself), a domain whose best MX or address
    /// is this host fails, and a null MX or MX hosts without addresses fail for good.
    func testThisHostAsMXAndNullMX() throws {
        let (s, c) = try mxClient(["backup.example/MX/20/me.mx.example", "backup.example/MX/10/dead.mx.example",
                                   "dead.mx.example/A/127.0.0.2", "me.mx.example/A/127.0.0.1",
                                   "self.example/MX/10/me.mx.example", "selfa.example/A/127.0.0.1",
                                   "nullmx.example/MX/0/.", "noaddr.example/MX/10/gone.mx.example", "gone.mx.example/NXDOMAIN"],
                                  localAddresses: [[127, 0, 0, 1]])
        let m = Array("Subject: x\n\nx\n".utf8)
        func report(_ d: String) -> String {
            String(decoding: c.deliver(domain: d, sender: [], recipients: [Array("u@\(d)".utf8)], message: m).messageReport, as: UTF8.self)
        }
        // We are MX 20: only the better MX 10 is tried, and it is down.
        XCTAssertEqual(report("backup.example").first, "Z")
        let ambiguous = "DSorry. Although I'm listed as a best-preference MX or A for that host,\nit isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n"
        XCTAssertEqual(report("self.example"), ambiguous)
        XCTAssertEqual(report("selfa.example"), ambiguous)
        XCTAssertEqual(report("nullmx.example"), "DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n")
        XCTAssertEqual(report("noaddr.example"), "DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n")
        XCTAssertEqual(s.received.count, 0, "nothing was delivered to this host itself")
        XCTAssertTrue(SMTPSettings.interfaceAddresses().contains([127, 0, 0, 1]), "the loopback interface is one of ours")
    }
}
