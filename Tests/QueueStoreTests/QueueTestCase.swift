import XCTest
import QueueFormat
import QueueStore
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A test with a fresh queue made by the real queue-fix.
class QueueTestCase: XCTestCase {
    var dir = ""
    var queue: String { dir + "/queue" }

    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("queue")
        let out = try! TestEnv.run(TestEnv.program("queue-fix"), [queue])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
    }

    override func tearDown() {
        TestEnv.remove(dir)
    }

    /// Runs the built qmail-queue on `queue` (or another folder).
    func qmailQueue(message: [UInt8], envelope: [UInt8], queueDir: String? = nil, env: [String: String?] = [:]) throws -> TestEnv.Output {
        var changes = env
        changes["QUEUEDIR"] = queueDir ?? queue
        return try TestEnv.run(TestEnv.program("qmail-queue"), input: message, fd1Input: envelope, environment: TestEnv.environment(changes))
    }

    func files(_ folder: String, in q: String? = nil) -> [String] {
        TestEnv.files(under: (q ?? queue) + "/" + folder)
    }

    /// No message is visible to the scheduler and nothing was left half-written.
    func assertQueueEmpty(_ q: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        for folder in ["todo", "intd", "mess", "pid", "info", "local", "remote"] {
            XCTAssertEqual(files(folder, in: q), [], "\(folder)/ not empty", file: file, line: line)
        }
    }

    /// The mess file without the Received line qmail-queue put on top
    /// (its first line and any continuation lines).
    static func stripReceived(_ mess: [UInt8]) -> [UInt8] {
        var i = 0
        repeat {
            while i < mess.count && mess[i] != 10 { i += 1 }
            i += 1
        } while i < mess.count && (mess[i] == 32 || mess[i] == 9)
        return Array(mess[min(i, mess.count)...])
    }

    /// A queue file without its `u` and `p` records.
    static func stripUP(_ todo: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < todo.count {
            var j = i
            while j < todo.count && todo[j] != 0 { j += 1 }
            if todo[i] != UInt8(ascii: "u") && todo[i] != UInt8(ascii: "p") { out += todo[i..<min(j + 1, todo.count)] }
            i = j + 1
        }
        return out
    }
}
