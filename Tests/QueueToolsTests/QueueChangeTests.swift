import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// qmail-rm and qmail-qctl while the engine delivers 10,000 messages: the removed
/// messages are never delivered and leave the queue, the held ones wait until
/// released, nothing else is lost or delivered twice, and the engine logs each change.
final class QueueChangeTests: XCTestCase {
    var dir = ""
    var queue: String { dir + "/queue" }
    var maildir: String { dir + "/alice/Maildir/new" }
    var environment: [String] {
        TestEnv.environment(["QMAILHOME": dir, "QUEUEDIR": queue, "CONTROLDIR": dir + "/control", "QUEUE_BASE": nil,
                             "QMAILQUEUE": nil, "CONFSPLIT": nil, "BIGTODO": nil])
    }
    var pid: pid_t = 0
    var logPath: String { dir + "/send.log" }
    func log() -> String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }

    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("qchange")
        chmod(dir, 0o755)
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "23", queue]).exitCode, 0)
        mkdir(dir + "/control", 0o755)
        mkdir(dir + "/users", 0o755)
        TestEnv.write(dir + "/control/me", "example.test\n")
        let home = dir + "/alice"
        for d in ["", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"] { mkdir(home + d, 0o755) }
        _ = try? TestEnv.run("/bin/chown", ["-R", "65534:65534", home])
        TestEnv.write(dir + "/users/assign", "=alice:alice:65534:65534:\(home):::\n.\n")
    }

    override func tearDown() {
        if pid > 0 { kill(pid, SIGKILL); _ = try? Spawn.wait(pid) }
        TestEnv.remove(dir)
    }

    func run(_ program: String, _ args: [String]) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program(program), args, environment: environment)
    }

    func startEngine() throws {
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        let null = open("/dev/null", O_RDONLY)
        pid = try Spawn.start(TestEnv.program("qmail-send"), arguments: ["qmail-send", "./Maildir/"], environment: environment,
                              fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        close(fd); close(null)
        waitFor("the engine's start", seconds: 20) { log().contains("status: local 0/10") }
    }

    func stopEngine() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<3000 {
            if waitpid(pid, &status, WNOHANG) == pid { pid = 0; return }
            usleep(10_000)
        }
        XCTFail("the engine did not stop")
    }

    func waitFor(_ what: String, seconds: Double, _ condition: () -> Bool) {
        let deadline = Double(time(nil)) + seconds
        while !condition() {
            if Double(time(nil)) > deadline { XCTFail("timed out waiting for \(what)"); return }
            usleep(200_000)
        }
    }

    /// The Subject of each delivered message (`m<index>`), duplicates kept.
    func delivered() -> [Int] {
        ((try? Sys.listDirectory(maildir)) ?? []).compactMap { name in
            let text = String(decoding: TestEnv.read(maildir + "/" + name), as: UTF8.self)
            guard let r = text.range(of: "Subject: m") else { return nil }
            return Int(text[r.upperBound...].prefix { $0.isNumber })
        }
    }

    func queued() throws -> Int {
        let out = try run("qmail-qstat", [])
        return Int(out.stdoutText.split(separator: "\n").first?.split(separator: " ").last ?? "") ?? -1
    }

    func testRemoveAndHoldDuringATenThousandMessageRun() throws {
        let total = 10_000
        let made = try TestEnv.run("/usr/bin/env", ["python3", TestEnv.packageRoot + "/bench/make_queue.py", queue, "\(total)"])
        XCTAssertEqual(made.exitCode, 0, made.stderrText)
        var idOf: [Int: UInt64] = [:], indexOf: [UInt64: Int] = [:]
        for line in made.stdoutText.split(separator: "\n") {
            let p = line.split(separator: " ")
            idOf[Int(p[1])!] = UInt64(p[0])!
            indexOf[UInt64(p[0])!] = Int(p[1])!
        }
        XCTAssertEqual(idOf.count, total)

        // Five held before the engine starts (it reads the holds from LMDB).
        let heldEarly = [7, 1007, 3007, 6007, 9007].map { idOf[$0]! }
        let h1 = try run("qmail-qctl", ["hold"] + heldEarly.map { "\($0)" })
        XCTAssertEqual(h1.exitCode, 0, h1.stderrText)

        try startEngine()
        // During the run: every 20th message removed, five more held.
        let doomed = stride(from: 0, to: total, by: 20).map { idOf[$0]! }
        let rm = try run("qmail-rm", doomed.map { "\($0)" })
        let removed = Set(rm.stdoutText.split(separator: "\n").filter { $0.hasPrefix("removed ") }.map { UInt64($0.dropFirst(8))! })
        let heldLate = [13, 2013, 4013, 8013, 9913].map { idOf[$0]! }
        let h2 = try run("qmail-qctl", ["hold"] + heldLate.map { "\($0)" })
        var held = Set(heldEarly)
        for line in h2.stdoutText.split(separator: "\n") where line.hasSuffix(" held") { held.insert(UInt64(line.split(separator: " ")[0])!) }
        // The run was under way: most were still queued, and those are removed.
        XCTAssertGreaterThan(removed.count, doomed.count / 2, rm.stdoutText + rm.stderrText)
        XCTAssertGreaterThanOrEqual(held.count, 5)

        let expected = Set(0..<total).subtracting(removed.map { indexOf[$0]! }).subtracting(held.map { indexOf[$0]! })
        func deliveredCount() -> Int { ((try? Sys.listDirectory(maildir)) ?? []).count }
        waitFor("every message but the held and removed ones", seconds: 120) { deliveredCount() >= expected.count && (try? queued()) == held.count }
        let got = delivered()
        XCTAssertEqual(got.count, Set(got).count, "a message was delivered twice")
        XCTAssertEqual(Set(got), expected)
        let text = log()
        for id in removed {
            XCTAssertTrue(text.contains("info: msg \(id) removed by the operator"), "\(id)")
            XCTAssertFalse(text.contains(": msg \(id) to local"), "removed message \(id) was delivered")
        }
        XCTAssertEqual(text.components(separatedBy: "info: msg ").filter { $0.contains(" held by the operator") }.count, held.count - heldEarly.count)

        // Release some of the held messages: they go at once; remove the rest.
        let release = Array(held.sorted().prefix(3)), rest = Array(held.sorted().dropFirst(3))
        let r = try run("qmail-qctl", ["release"] + release.map { "\($0)" })
        XCTAssertEqual(r.stdoutText, release.map { "\($0) released\n" }.joined(), r.stderrText)
        waitFor("the released messages", seconds: 30) { deliveredCount() == expected.count + release.count }
        let rm2 = try run("qmail-rm", rest.map { "\($0)" })
        XCTAssertEqual(rm2.exitCode, 0, rm2.stderrText)
        XCTAssertEqual(rm2.stdoutText, rest.map { "removed \($0)\n" }.joined() + "\(rest.count) messages matched, \(rest.count) removed\n")
        waitFor("an empty queue", seconds: 30) { (try? queued()) == 0 }
        XCTAssertEqual(Set(delivered()), expected.union(release.map { indexOf[$0]! }))
        stopEngine()
        // Nothing of any message is left behind.
        for f in ["mess", "info", "local", "remote", "todo", "intd", "bounce"] {
            XCTAssertEqual(TestEnv.files(under: queue + "/" + f), [], f)
        }
    }

    /// Without an engine the tools change the files themselves, holding lock/sendmutex.
    func testWithoutAnEngine() throws {
        let made = try TestEnv.run("/usr/bin/env", ["python3", TestEnv.packageRoot + "/bench/make_queue.py", queue, "3"])
        let ids = made.stdoutText.split(separator: "\n").map { UInt64($0.split(separator: " ")[0])! }
        let rm = try run("qmail-rm", ["-p", "Subject: m1$", "-n"])
        XCTAssertEqual(rm.stdoutText, "\(queue)/mess/\(ids[1] % 23)/\(ids[1]): yes\n1 message matched, 0 removed\n")
        let rm2 = try run("qmail-rm", ["-e", "-p", "Subject: m(1|2)$"])
        XCTAssertEqual(rm2.exitCode, 0, rm2.stderrText)
        XCTAssertEqual(Set(rm2.stdoutText.split(separator: "\n").filter { $0.hasPrefix("removed") }), ["removed \(ids[1])", "removed \(ids[2])"])
        XCTAssertEqual(try queued(), 1)
        XCTAssertEqual(TestEnv.files(under: queue + "/todo"), ["\(ids[0])"])
        // A hold without an engine is written where the engine (and qmail-qread) read it.
        XCTAssertEqual(try run("qmail-qctl", ["hold", "\(ids[0])"]).stdoutText, "\(ids[0]) held\n")
        XCTAssertTrue(try run("qmail-qread", ["--json"]).stdoutText.contains("\"held\":true"))
        XCTAssertEqual(try run("qmail-qctl", ["now", "12345"]).exitCode, 0)   // no such message: nothing to do
        XCTAssertEqual(try run("qmail-qctl", ["frobnicate", "1"]).exitCode, 100)
        XCTAssertEqual(try run("qmail-rm", []).exitCode, 100)
        XCTAssertEqual(try run("qmail-rm", ["-p", "a[b"]).exitCode, 100)
    }
}
