import XCTest
import Engine
import SystemIO
import QueueFormat
import QueueStore
import ControlFiles
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class FakeClock: @unchecked Sendable {
    private var value: Int64
    private var lock = pthread_mutex_t()
    init(_ start: Int64) { value = start; pthread_mutex_init(&lock, nil) }
    var now: Int64 {
        get { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return value }
        set { pthread_mutex_lock(&lock); value = newValue; pthread_mutex_unlock(&lock) }
    }
}

/// The engine in process, driven by a fake clock: retries on qmail's schedule,
/// the lifetime, the bounce.
final class RetryAndBounceTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    func engine(clock: FakeClock, logPath: String, delivery: String = "./Maildir/", remoteProgram: String? = "/bin/false") throws -> Engine {
        // Child processes (qmail-queue for bounces) find the queue through the environment.
        setenv("QUEUEDIR", h.queue, 1)
        setenv("QMAILHOME", h.dir, 1)
        setenv("CONTROLDIR", h.control, 1)
        let fd = open(logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var o = EngineOptions(program: "qmail-send", queueDir: h.queue, names: QueueNames(), sync: .safe,
                              control: ControlDirectory(path: h.control), qmailHome: h.dir, defaultDelivery: delivery,
                              daemon: true, remoteProgram: remoteProgram, logFD: fd)
        o.clock = { clock.now }
        return try Engine(options: o)
    }

    /// A started in-process engine on a fake clock starting at `start`, logging to engine.log.
    func startEngine(at start: Int64 = Int64(time(nil)), remoteProgram: String? = "/bin/false") throws -> (Engine, FakeClock, String) {
        let clock = FakeClock(start)
        let logPath = h.dir + "/engine.log"
        let e = try engine(clock: clock, logPath: logPath, remoteProgram: remoteProgram)
        e.start()
        return (e, clock, logPath)
    }

    /// Sends `sig` to this process (the in-process engine takes it) and turns until `condition`.
    func send(_ sig: Int32, _ e: Engine, until condition: () -> Bool, seconds: Int = 20) {
        kill(getpid(), sig)
        turn(e, until: condition, seconds: seconds)
    }

    /// Turns the engine until `condition` or the real-time limit.
    func turn(_ e: Engine, until condition: () -> Bool, seconds: Int = 20) {
        let deadline = time(nil) + seconds
        while !condition() && time(nil) < deadline {
            _ = e.turn()
            e.waitForWork(limit: 0)
            usleep(2000)
        }
    }

    func testDeferralIsRetriedOnScheduleAndBouncesAfterTheLifetime() throws {
        h.writeControl("queuelifetime", "1000\n")
        h.writeHomeFile("joe", ".qmail", "|echo not now; exit 111\n")
        try h.inject("To: joe@example.test\nSubject: doomed\n\nthis will not arrive\n", ["-f", "alice@example.test"])
        let start = Int64(time(nil))
        let (e, clock, logPath) = try startEngine(at: start)
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        func count(_ s: String) -> Int { log.components(separatedBy: s).count - 1 }

        var attempts: [Int64] = []
        for _ in 0..<12 {
            let before = count("starting delivery")
            turn(e, until: { count("\ndelivery \(before + 1): ") > 0 }, seconds: 10)
            if count("starting delivery") > before { attempts.append(clock.now - start) }
            if log.contains(": failure: ") { break }
            // Jump to the next retry: birth + (isqrt(age) + 10)².
            let age = clock.now - start
            var n: Int64 = 0
            while (n + 1) * (n + 1) <= age { n += 1 }
            clock.now = start + (n + 10) * (n + 10)
        }
        // 0, 100, 400, 900 within the 1000 s lifetime, then one last try at 1600.
        XCTAssertEqual(attempts, [0, 100, 400, 900, 1600], log)
        XCTAssertTrue(log.contains("delivery 4: deferral: not_now/"), log)
        XCTAssertTrue(log.contains("delivery 5: failure: not_now/I'm_not_going_to_try_again;_this_message_has_been_in_the_queue_too_long./"), log)
        // The bounce goes back to alice through qmail-queue, and is delivered.
        turn(e, until: { h.maildir("alice").count == 1 && log.contains("end msg") && count("end msg") >= 2 })
        XCTAssertTrue(log.contains("bounce msg "), log)
        let bounce = try XCTUnwrap(h.maildirMessages("alice").first)
        XCTAssertTrue(bounce.contains("Hi. This is the qmail-send program at example.test.\n"), bounce)
        XCTAssertTrue(bounce.contains("<joe@example.test>:\nnot now\nI'm not going to try again; this message has been in the queue too long.\n\n"), bounce)
        XCTAssertTrue(bounce.contains("X-Bounced-Address: <joe@example.test>\n"), bounce)
        XCTAssertTrue(bounce.contains("Return-Path: <alice@example.test>\n"), bounce)
        XCTAssertTrue(bounce.contains("Subject: doomed"), bounce)
        XCTAssertTrue(bounce.hasPrefix("Return-Path: <>\nDelivered-To: alice@example.test\n"), bounce)
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testDelayWarningIsSentOnceAfterItsAge() throws {
        h.writeControl("bounceformat", "dsn\n")
        h.writeControl("delaywarning", "300\n")
        h.writeHomeFile("joe", ".qmail", "|echo mailbox locked; exit 111\n")
        try h.inject("To: joe@example.test\nSubject: slow\n\nx\n", ["-f", "alice@example.test"])
        let start = Int64(time(nil))
        let (e, clock, logPath) = try startEngine(at: start)
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        turn(e, until: { log.contains("delivery 1: deferral") })
        XCTAssertFalse(log.contains("delay warning"), "too young for a warning")
        clock.now = start + 400
        turn(e, until: { log.contains("delivery 2: deferral") && h.maildir("alice").count == 1 })
        clock.now = start + 900
        turn(e, until: { log.contains("delivery 4: deferral") })
        XCTAssertEqual(log.components(separatedBy: "delay warning msg ").count - 1, 1, log)
        let warning = try XCTUnwrap(h.maildirMessages("alice").first)
        XCTAssertTrue(warning.contains("Subject: Delayed Mail (still being retried)"), warning)
        XCTAssertTrue(warning.contains("Final-Recipient: rfc822; joe@example.test\nAction: delayed\nStatus: 4.0.0\n"), warning)
        XCTAssertTrue(warning.contains("<joe@example.test>:\nmailbox locked\n"), warning)
        XCTAssertTrue(warning.contains("Content-Type: text/rfc822-headers\n\nReturn-Path: <alice@example.test>\n"), warning)
    }

    func testAlarmRetriesNowAndHoldsFollowHup() throws {
        h.writeHomeFile("joe", ".qmail", "|exit 111\n")
        try h.inject("To: joe@example.test\n\nx\n")
        let (e, _, logPath) = try startEngine()
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        turn(e, until: { log.contains("delivery 1: deferral") })
        // ALRM: retried at once, without the clock moving.
        send(SIGALRM, e, until: { log.contains("delivery 2: deferral") })
        XCTAssertTrue(log.contains("info: got ALRM"), log)
        // holdlocal + HUP: nothing starts even when due.
        h.writeControl("holdlocal", "1\n")
        send(SIGHUP, e, until: { log.contains("info: local deliveries temporarily held") })
        kill(getpid(), SIGALRM)
        for _ in 0..<50 { _ = e.turn(); e.waitForWork(limit: 0); usleep(2000) }   // the signal is taken on the first turn
        XCTAssertFalse(log.contains("starting delivery 3"), log)
        h.writeControl("holdlocal", "0\n")
        send(SIGHUP, e, until: { log.contains("starting delivery 3") })
        XCTAssertTrue(log.contains("info: local deliveries resumed"), log)
    }

    func testHupRereadsTheSMTPControls() throws {
        // smtproutes points at a port where nothing listens; after HUP, at a real server.
        let server = try h.startScriptedSMTP([])
        var received: Int { ((try? Sys.listDirectory(server.dir)) ?? []).filter { $0.hasSuffix(".eml") }.count }
        h.writeControl("smtproutes", "remote.example:127.0.0.1:1\n")
        try h.inject("To: u@remote.example\nSubject: routed\n\nx\n", ["-f", "alice@example.test"])
        let (e, _, logPath) = try startEngine(remoteProgram: nil)   // the SMTP client in process
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        turn(e, until: { log.contains("delivery 1: deferral") })
        XCTAssertTrue(log.contains("delivery 1: deferral:"), log)
        h.writeControl("smtproutes", "remote.example:127.0.0.1:\(server.port)\n")
        send(SIGHUP, e, until: { log.contains("info: got HUP") })
        send(SIGALRM, e, until: { log.contains("delivery 2: success") })
        XCTAssertTrue(log.contains("delivery 2: success: From:_<alice@example.test>_RCPT:_<u@remote.example>_127.0.0.1_accepted_message"), log)
        XCTAssertEqual(received, 1)
    }

    func testConcurrencyLimitIsNeverExceeded() throws {
        h.writeControl("concurrencylocal", "2\n")
        h.writeHomeFile("bob", ".qmail", "|sleep 0.3\n")
        for i in 0..<5 { try h.inject("To: bob@example.test\nSubject: \(i)\n\nx\n") }
        let (e, _, logPath) = try startEngine()
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        turn(e, until: { log.components(separatedBy: ": success: ").count - 1 == 5 })
        let used = log.split(separator: "\n").filter { $0.hasPrefix("status: local ") }.map { line -> Int in
            Int(line.split(separator: " ")[2].split(separator: "/")[0])!
        }
        XCTAssertEqual(used.max(), 2, log)
        XCTAssertTrue(log.contains("status: local 2/2 remote 0/20"), log)
    }
}
