import XCTest
import Engine
import Scheduler
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The built programs end to end: qmail-inject → qmail-queue → engine → Maildir.
final class EndToEndTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    func logLines(_ log: String) -> [String] {
        log.split(separator: "\n").map(String.init)
    }

    func testInotifyAloneWakesTheEngineAndTheLogIsInOrder() throws {
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        defer { _ = d.stop() }
        h.waitFor("start") { d.log.contains("status: local 0/10 remote 0/20") }
        // No trigger: the FIFO is gone, so qmail-queue cannot pull it.
        unlink(h.queue + "/lock/trigger")
        try h.inject("To: alice@example.test\nSubject: by inotify\n\nhello\n", ["-f", "sender@remote.example"])
        h.waitFor("delivery") { h.maildir("alice").count == 1 }
        h.waitFor("end msg") { d.log.contains("end msg ") }
        let lines = logLines(d.log)
        let id = try XCTUnwrap(lines.first { $0.hasPrefix("new msg ") }.map { String($0.dropFirst(8)) })
        let expected = [
            "new msg \(id)",
            "info msg \(id): bytes ",
            "starting delivery 1: msg \(id) to local alice@example.test",
            "status: local 1/10 remote 0/20",
            "delivery 1: success: did_1+0+0/",
            "status: local 0/10 remote 0/20",
            "end msg \(id)",
        ]
        let body = Array(lines.drop { !$0.hasPrefix("new msg") })
        XCTAssertEqual(body.count, expected.count, d.log)
        for (l, e) in zip(body, expected) { XCTAssertTrue(l.hasPrefix(e), "\(l) !~ \(e)") }
        XCTAssertTrue(body[1].hasSuffix(" from <sender@remote.example> qp \(body[1].split(separator: " ")[8]) uid 0"), body[1])
        let msg = h.maildirMessages("alice")[0]
        XCTAssertTrue(msg.hasPrefix("Return-Path: <sender@remote.example>\nDelivered-To: alice@example.test\nReceived: indimail-mta queue "), msg)
        XCTAssertEqual(h.queueFiles(), [])
        // Owned by the recipient, never by root.
        let st = try XCTUnwrap(try Sys.stat(h.home("alice") + "/Maildir/new/" + h.maildir("alice")[0]))
        XCTAssertEqual(st.st_uid, h.uid)
    }

    /// The engine says in lock/flow how many messages wait for their first
    /// delivery (the daemons' inflow control reads it): more than 0 while a slow
    /// local delivery holds the only slot, 0 once all are delivered.
    func testEnginePublishesHowManyMessagesWaitForTheirFirstDelivery() throws {
        func flow() -> (count: UInt64, time: UInt64)? {
            let b = TestEnv.read(h.queue + "/lock/flow")
            guard b.count == 16 else { return nil }
            let v = b.withUnsafeBytes { ($0.loadUnaligned(as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
            return (UInt64(littleEndian: v.0), UInt64(littleEndian: v.1))
        }
        h.writeControl("concurrencylocal", "1\n")
        h.writeHomeFile("bob", ".qmail", "|sleep 0.3\n./Maildir/\n")
        for i in 0..<5 { try h.inject("To: bob@example.test\nSubject: \(i)\n\nhello\n") }
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        defer { _ = d.stop() }
        var most: UInt64 = 0
        h.waitFor("five deliveries", seconds: 30) {
            if let f = flow() { most = max(most, f.count) }
            usleep(20_000)
            return h.maildir("bob").count == 5
        }
        XCTAssertGreaterThanOrEqual(most, 2, "the backlog was never published")
        h.waitFor("count back to 0") { flow()?.count == 0 }
        let f = try XCTUnwrap(flow())
        XCTAssertLessThanOrEqual(UInt64(time(nil)) - f.time, 60)
    }

    func testTriggerAloneWakesTheEngine() throws {
        h.extraEnv["TODO_NOTIFY"] = "trigger"
        let d = try h.startSend()
        defer { _ = d.stop() }
        try h.inject("To: bob@example.test\nSubject: by trigger\n\nhello\n")
        h.waitFor("delivery by trigger", seconds: 10) { h.maildir("bob").count == 1 }
    }

    func testTermFinishesDeliveriesInProgressAndExitsZero() throws {
        h.writeHomeFile("bob", ".qmail", "|sleep 1; echo slept\n")
        let d = try h.startSend()
        try h.inject("To: bob@example.test\n\nslow\n")
        h.waitFor("start of the slow delivery") { d.log.contains("starting delivery 1:") }
        XCTAssertEqual(d.stop(), .exited(0))
        XCTAssertTrue(d.log.contains("delivery 1: success: slept/did_0+0+1/"), d.log)
        XCTAssertTrue(d.log.hasSuffix("status: exiting\n"), d.log)
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// After TERM nothing new starts, even when a finished delivery frees the
    /// only slot while another message is due; that message waits for the next start.
    func testTermStartsNothingNewWhileItWaits() throws {
        h.writeControl("concurrencylocal", "1\n")
        h.writeHomeFile("bob", ".qmail", "|sleep 1; echo slept\n")
        let d = try h.startDaemon("qmail-send", ["./Maildir/"])
        h.waitFor("start") { d.log.contains("status: local 0/1") }
        try h.inject("To: bob@example.test\n\nfirst\n")
        try h.inject("To: bob@example.test\n\nsecond\n")
        h.waitFor("both preprocessed, one delivery running") {
            d.log.components(separatedBy: "info msg ").count == 3 && d.log.contains("starting delivery 1:")
        }
        XCTAssertEqual(d.stop(), .exited(0))
        XCTAssertTrue(d.log.contains("delivery 1: success: slept/did_0+0+1/"), d.log)
        XCTAssertFalse(d.log.contains("starting delivery 2:"), d.log)
        XCTAssertEqual(d.log.components(separatedBy: "end msg ").count, 2, d.log)
        XCTAssertTrue(d.log.hasSuffix("status: exiting\n"), d.log)
        // The second message is still queued, and the next start delivers it.
        XCTAssertFalse(h.queueFiles().isEmpty)
        let again = try h.startDaemon("qmail-send", ["./Maildir/"], logName: "send2.log")
        h.waitFor("the second delivery after restart") { again.log.contains("end msg ") }
        XCTAssertEqual(again.stop(), .exited(0))
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// A finished channel file that cannot be unlinked is tried again (ALRM makes
    /// it due at once); the message is not stuck until the next start.
    func testChannelFileThatCannotBeUnlinkedIsRetried() throws {
        h.writeHomeFile("bob", ".qmail", "|sleep 1; echo slept\n")
        let d = try h.startSend()
        defer { _ = d.stop() }
        try h.inject("To: bob@example.test\n\nx\n")
        h.waitFor("the delivery") { d.log.contains("starting delivery 1:") }
        let local = try XCTUnwrap(TestEnv.files(under: h.queue + "/local").first)   // "<split>/<id>"
        let folder = h.queue + "/local/" + local.split(separator: "/")[0]
        XCTAssertEqual(try TestEnv.run("/usr/bin/chattr", ["+i", folder]).exitCode, 0)   // no unlink in it, even for root
        h.waitFor("the unlink warning") { d.log.contains("warning: unable to unlink local/") }
        // The done mark skipped for a file about to go is written after all when it stays.
        XCTAssertEqual(TestEnv.read(h.queue + "/local/" + local).first, UInt8(ascii: "D"))
        XCTAssertEqual(try TestEnv.run("/usr/bin/chattr", ["-i", folder]).exitCode, 0)
        XCTAssertFalse(d.log.contains("end msg "), d.log)
        d.signal(SIGALRM)
        h.waitFor("end msg after ALRM") { d.log.contains("end msg ") }
        XCTAssertEqual(h.queueFiles(), [])
        XCTAssertFalse(d.log.contains("starting delivery 2:"), "delivered once: \(d.log)")
    }

    /// The schedule reaches LMDB while the engine idles: a loop turn's changes are
    /// committed within the commit interval, not at the next event (here the retry,
    /// 100 s away).
    func testScheduleIsWrittenWhileTheEngineIdles() throws {
        h.writeHomeFile("joe", ".qmail", "|exit 111\n")
        let d = try h.startSend()
        defer { _ = d.stop() }
        try h.inject("To: joe@example.test\n\nx\n")
        h.waitFor("the deferral") { d.log.contains("delivery 1: deferral: ") }
        let line = try XCTUnwrap(d.log.split(separator: "\n").first { $0.hasPrefix("new msg ") })
        let id = try XCTUnwrap(UInt64(line.dropFirst("new msg ".count)))
        let store = try ScheduleStore(path: h.queue + "/lock/engine.lmdb")
        let now = Int64(time(nil))
        h.waitFor("the retry time in the schedule", seconds: 5) {
            ((try? store.loadAll()) ?? []).contains { $0.0.id == id && $0.1 > now + 30 }
        }
    }

    func testASecondEngineOnTheSameQueueRefusesToStart() throws {
        let d = try h.startDaemon("qmail-send")
        defer { _ = d.stop() }
        h.waitFor("start") { d.log.contains("status:") }
        let second = try h.qmtaSend([], timeout: 10)
        XCTAssertEqual(second.exitCode, 111, "QUEUEDIR names the same queue")
        XCTAssertTrue(second.stderrText.contains("already running"), second.stderrText)
        let same = try TestEnv.run(TestEnv.program("qmail-send"), [], environment: h.environment)
        XCTAssertEqual(same.exitCode, 111)
        XCTAssertTrue(same.stderrText.contains("already running"), same.stderrText)
    }

    func testMalformedControlFileIsReportedByNameAndLine() throws {
        h.writeControl("concurrencylocal", "ten\n")
        let out = try h.qmtaSend(["-s", "23"], timeout: 10)
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertTrue(out.stderrText.contains("\(h.control)/concurrencylocal:1: expected a number, found \"ten\""), out.stderrText)
        h.writeControl("concurrencylocal", "5\n")
        h.writeControl("virtualdomains", "good.example:joe\nbroken line without colon\n")
        let out2 = try TestEnv.run(TestEnv.program("qmail-send"), [], environment: h.environment)
        XCTAssertTrue(out2.stderrText.contains("virtualdomains:2: expected domain:prepend"), out2.stderrText)
    }

    func testQmtaSendDeliversWhatIsDueAndSaysHowManyWait() throws {
        h.writeHomeFile("joe", ".qmail", "|exit 111\n")
        try h.inject("To: alice@example.test, joe@example.test\n\nx\n")
        let out = try TestEnv.run(TestEnv.program("qmta-send"), ["./Maildir/"], environment: TestEnv.environment(["QUEUEDIR": h.queue, "QMAILHOME": h.dir, "CONTROLDIR": h.control]))
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(h.maildir("alice").count, 1)
        XCTAssertTrue(out.stdoutText.contains("delivery 2: deferral: ") || out.stdoutText.contains("delivery 1: deferral: "), out.stdoutText)
        XCTAssertTrue(out.stdoutText.hasSuffix("1 job waits for a later retry. quitting...\n"), out.stdoutText)
        // The deferred recipient is still queued, the delivered one marked done.
        let local = h.queueFiles().filter { $0.hasPrefix("local/") }
        XCTAssertEqual(local.count, 1)
        let records = try RecipientRecord.parseChannelFile(TestEnv.read(h.queue + "/" + local[0]))
        XCTAssertEqual(records.map(\.done), [true, false])
    }
}

/// qmta-send with external spawners over qmail's byte protocol.
final class SpawnerTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    func testQmtaSendDashLUsesQmailLspawn() throws {
        try h.inject("To: alice@example.test, bob@example.test\nSubject: via lspawn\n\nx\n")
        let out = try h.qmtaSend(["-l", "./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(h.maildir("alice").count, 1, out.stdoutText)
        XCTAssertEqual(h.maildir("bob").count, 1, out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("success: did_1+0+0/"), out.stdoutText)
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testAForeignSpawnerSpeakingTheProtocolIsPluggedIn() throws {
        // A spawner in Python: announces 2 slots, answers every command with
        // a permanent failure naming the path, sender and recipient it got.
        let spawner = h.dir + "/spawner.py"
        TestEnv.write(spawner, """
        #!/usr/bin/env python3
        import os, sys
        os.write(1, bytes([2, 0]))
        buf = b""
        while True:
            chunk = os.read(0, 65536)
            if not chunk: break
            buf += chunk
            while True:
                parts = buf[2:].split(b"\\0", 5)
                if len(parts) < 6: break
                slot = buf[:2]
                path, sender, qqeh, envh, rcpt = parts[:5]
                buf = parts[5]
                os.write(1, slot + b"Dno thanks: " + path.split(b"/")[0] + b" " + sender + b" " + rcpt + b"\\n\\0")
        """, mode: 0o755)
        h.extraEnv["QMAILLSPAWN"] = spawner
        try h.inject("To: alice@example.test\n\nx\n", ["-f", ""])
        let out = try h.qmtaSend(["-l", "./Maildir/"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertTrue(out.stdoutText.contains("status: local 1/2 remote 0/20"), "concurrency clamped to the spawner's limit: " + out.stdoutText)
        let id = try XCTUnwrap(out.stdoutText.split(separator: "\n").first { $0.hasPrefix("new msg ") }.map { UInt64($0.dropFirst(8))! })
        XCTAssertTrue(out.stdoutText.contains("delivery 1: failure: no_thanks:_\(id % 23)__alice@example.test/"), out.stdoutText)
    }
}
