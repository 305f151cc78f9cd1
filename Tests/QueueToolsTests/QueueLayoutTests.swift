import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The reading tools on the other layouts: BIGTODO, another split, and several
/// queues under QUEUE_BASE (indimail-mta's queue1, queue2, … and slowq).
final class QueueLayoutTests: XCTestCase {
    var dir = ""

    override func setUp() { dir = TestEnv.temporaryDirectory("qlayout") }
    override func tearDown() { TestEnv.remove(dir) }

    func make(_ queue: String, split: Int, bigTodo: Bool, count: Int, to: String = "alice@example.test") throws -> [UInt64] {
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "\(split)", "-b", bigTodo ? "1" : "0", queue]).exitCode, 0)
        var args = [TestEnv.packageRoot + "/bench/make_queue.py", queue, "\(count)", "--split", "\(split)", "--to", to]
        if bigTodo { args.append("--bigtodo") }
        let out = try TestEnv.run("/usr/bin/env", ["python3"] + args)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out.stdoutText.split(separator: "\n").map { UInt64($0.split(separator: " ")[0])! }
    }

    func env(_ changes: [String: String?]) -> [String] {
        var c: [String: String?] = ["QMAILHOME": dir, "CONTROLDIR": dir + "/control", "QUEUEDIR": nil, "QUEUE_BASE": nil,
                                    "QUEUE_START": nil, "QUEUE_COUNT": nil, "CONFSPLIT": nil, "BIGTODO": nil]
        for (k, v) in changes { c[k] = v }
        return TestEnv.environment(c)
    }

    func testBigTodoAndSplitAreFoundFromTheFolders() throws {
        let q = dir + "/queue"
        let ids = try make(q, split: 7, bigTodo: true, count: 3)
        // No CONFSPLIT or BIGTODO in the environment: the layout is read from the folders.
        let out = try TestEnv.run(TestEnv.program("qmail-qread"), ["-t", "-c"], environment: env(["QUEUEDIR": q]))
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        for id in ids { XCTAssertTrue(out.stdoutText.contains("  \(id % 7)/#\(id)  "), out.stdoutText) }
        XCTAssertEqual(out.stdoutText.components(separatedBy: "\ttodo\talice@example.test\n").count - 1, 3)
        XCTAssertTrue(out.stdoutText.hasSuffix("Total Messages in bounce queue: 0\nTotal Messages in todo   queue: 3\n"), out.stdoutText)
        let stat = try TestEnv.run(TestEnv.program("qmail-qstat"), [], environment: env(["QUEUEDIR": q]))
        XCTAssertEqual(stat.stdoutText, "messages in queue: 3\nmessages in queue but not yet preprocessed: 3\n")
        // With the environment saying otherwise, the environment wins (as for every program on a queue).
        let wrong = try TestEnv.run(TestEnv.program("qmail-qstat"), [], environment: env(["QUEUEDIR": q, "BIGTODO": "0"]))
        XCTAssertEqual(wrong.stdoutText, "messages in queue: 3\nmessages in queue but not yet preprocessed: 0\n")
    }

    func testSeveralQueuesUnderQueueBase() throws {
        let base = dir + "/qbase"
        mkdir(base, 0o755)
        _ = try make(base + "/queue1", split: 23, bigTodo: false, count: 2)
        _ = try make(base + "/queue2", split: 23, bigTodo: false, count: 1)
        _ = try make(base + "/slowq", split: 23, bigTodo: false, count: 1, to: "bob@example.test")
        _ = try make(base + "/queue4", split: 23, bigTodo: false, count: 5)   // after the gap at queue3: not read
        let e = env(["QUEUE_BASE": base])
        let out = try TestEnv.run(TestEnv.program("qmail-qread"), ["-t", "-c", "-s"], environment: e)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, """
            processing queue \(base)/queue1
            Messages in bounce queue: 0
            Messages in todo   queue: 2

            processing queue \(base)/queue2
            Messages in bounce queue: 0
            Messages in todo   queue: 1

            processing queue \(base)/slowq
            Messages in bounce queue: 0
            Messages in todo   queue: 1

            Total Messages in bounce queue: 0
            Total Messages in todo   queue: 4

            """)
        let json = try TestEnv.run(TestEnv.program("qmail-qread"), ["--json"], environment: e)
        let names = json.stdoutText.split(separator: "\n").map { l -> String in
            let r = l.range(of: "\"queue_name\":\"")!
            return String(l[r.upperBound...].prefix { $0 != "\"" })
        }
        XCTAssertEqual(names, ["queue1", "queue1", "queue2", "slowq"])
        let stat = try TestEnv.run(TestEnv.program("qmail-qstat"), [], environment: e)
        XCTAssertEqual(stat.stdoutText, "messages in queue: 4\nmessages in queue but not yet preprocessed: 4\n")
        let shape = try TestEnv.run(TestEnv.program("qmail-qshape"), ["-b", "2"], environment: e)
        XCTAssertTrue(shape.stdoutText.contains("      example.test 4 4  0\n"), shape.stdoutText)
    }
}
