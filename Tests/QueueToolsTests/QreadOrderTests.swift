import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// qmail-qread reads a split folder's messages on two threads, in chunks of 512: with
/// 2,000 messages in one folder (split 1) every message is listed once, in id order,
/// as the one-thread reading of the same files would list it.
final class QreadOrderTests: XCTestCase {
    func testTwoThreadsListEveryMessageOnceInOrder() throws {
        signal(SIGPIPE, SIG_IGN)
        let dir = TestEnv.temporaryDirectory("qorder")
        defer { TestEnv.remove(dir) }
        let queue = dir + "/queue"
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "1", queue]).exitCode, 0)
        let n = 2000
        let made = try TestEnv.run("/usr/bin/env", ["python3", TestEnv.packageRoot + "/bench/make_queue.py", queue, "\(n)",
                                                    "--preprocessed", "--split", "1", "--to", "bob@remote.test"])
        XCTAssertEqual(made.exitCode, 0, made.stderrText)
        var indexOf: [UInt64: Int] = [:]
        for line in made.stdoutText.split(separator: "\n") {
            let p = line.split(separator: " ")
            indexOf[UInt64(p[0])!] = Int(p[1])!
        }
        XCTAssertEqual(indexOf.count, n)
        // Some variety: a bounce file, a done recipient, a local channel, one message gone.
        let ids = indexOf.keys.sorted()
        TestEnv.write(queue + "/bounce/\(ids[700])", "")
        TestEnv.write(queue + "/remote/0/\(ids[1500])", "Dbob@remote.test\u{0}")
        TestEnv.write(queue + "/local/0/\(ids[1999])", "Talice@example.test\u{0}")
        unlink(queue + "/mess/0/\(ids[3])")
        let env = TestEnv.environment(["QUEUEDIR": queue, "CONFSPLIT": "1", "BIGTODO": "0", "QUEUE_BASE": nil])
        let out = try TestEnv.run(TestEnv.program("qmail-qread"), ["--json", "-q", queue], environment: env)
        XCTAssertEqual(out.exitCode, 111)   // the missing mess file
        XCTAssertEqual(out.stderrText, "qmail-qread: warn: trouble with #\(ids[3]): missing mess/0/\(ids[3])\n")
        let lines = out.stdoutText.split(separator: "\n")
        XCTAssertEqual(lines.count, n)
        for (i, line) in lines.enumerated() {
            let id = ids[i]
            XCTAssertTrue(line.hasPrefix("{\"queue_name\":\"queue\",\"queue_id\":\"\(id)\",\"split\":0,\"state\":\"preprocessed\""), String(line))
            XCTAssertTrue(line.contains(i == 700 ? "\"bouncing\":true" : "\"bouncing\":false"), String(line))
            let remoteDone = i == 1500 ? "true" : "false"
            let local = i == 1999 ? "{\"address\":\"alice@example.test\",\"channel\":\"local\",\"done\":false}," : ""
            XCTAssertTrue(line.contains("\"recipients\":[\(local){\"address\":\"bob@remote.test\",\"channel\":\"remote\",\"done\":\(remoteDone)}]"), String(line))
            XCTAssertTrue(line.contains(i == 3 ? "\"message_size\":null" : "\"message_size\":\(TestEnv.read(queue + "/mess/0/\(id)").count)"), String(line))
        }
        // The counts agree.
        let counts = try TestEnv.run(TestEnv.program("qmail-qread"), ["-c", "-s", "-q", queue], environment: env)
        XCTAssertEqual(counts.stdoutText, "Total Messages in local  queue: 1\nTotal Messages in remote queue: \(n - 1)\nTotal Messages in bounce queue: 1\n")
    }
}
