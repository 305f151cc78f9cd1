import XCTest
import QueueFormat
import QueueStore
import QueueClient
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class InjectionTests: QueueTestCase {
    func testInjectionMatchesTheGoldenFixturesByteForByte() throws {
        let fx = TestEnv.queueLayoutFixtures
        let qqeh = String(decoding: try TestEnv.readFixture(fx + "/qqeh.txt"), as: UTF8.self)
        let out = try qmailQueue(message: try TestEnv.readFixture(fx + "/message.eml"), envelope: try TestEnv.readFixture(fx + "/client-envelope.bin"),
                                 env: ["QQEH": qqeh, "HOSTNAME": "golden.example"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let todo = files("todo")
        XCTAssertEqual(todo.count, 1)
        let id = UInt64(todo[0])!
        let names = QueueNames()
        // The message id is the inode number of the mess file, in its split folder.
        let st = try XCTUnwrap(try Sys.stat(queue + "/" + names.path(.mess, id)))
        XCTAssertEqual(UInt64(st.st_ino), id)
        XCTAssertEqual(st.st_mode & 0o777, 0o644)
        let todoBytes = TestEnv.read(queue + "/todo/\(id)")
        XCTAssertEqual(Self.stripUP(todoBytes), try TestEnv.readFixture(fx + "/todo-expected.bin"))
        XCTAssertTrue(todoBytes.starts(with: Array("u\(getuid())\0p".utf8)))
        // intd and todo are one file (two links).
        let intd = try XCTUnwrap(try Sys.stat(queue + "/intd/\(id)"))
        XCTAssertEqual(intd.st_ino, try XCTUnwrap(try Sys.stat(queue + "/todo/\(id)")).st_ino)
        XCTAssertEqual(intd.st_nlink, 2)
        let mess = TestEnv.read(queue + "/" + names.path(.mess, id))
        let expectedBody = try TestEnv.readFixture(fx + "/mess-expected-body.eml")
        XCTAssertEqual(Self.stripReceived(mess), expectedBody)
        let received = String(decoding: mess[0..<(mess.count - expectedBody.count)], as: UTF8.self)
        XCTAssertTrue(received.hasPrefix("Received: indimail-mta queue "), received)
        XCTAssertTrue(received.contains(" by host golden.example\n (invoked by uid \(getuid())); "), received)
        XCTAssertEqual(files("pid"), [])
    }

    /// The same message and envelope classic qmail queued give the same bytes
    /// (apart from the u/p values and the Received line).
    func testSameBytesAsClassicQmailForTheSameInput() throws {
        let classic = try TestEnv.fixture(TestEnv.classicQmailFixtures + "/queue-s4-queued")
        for name in try Sys.listDirectory(classic + "/todo").sorted() {
            let classicID = UInt64(name)!
            let classicMess = try TestEnv.readFixture(classic + "/mess/\(classicID % 23)/\(name)")
            let classicTodo = try TestEnv.readFixture(classic + "/todo/\(name)")
            let message = Self.stripReceived(classicMess)
            let clientEnvelope = Self.stripUP(classicTodo) + [0]
            let out = try qmailQueue(message: message, envelope: clientEnvelope, env: ["HIDE_HOST": "1"])
            XCTAssertEqual(out.exitCode, 0, out.stderrText)
            let ours = files("todo").filter { !$0.isEmpty }
            let id = try XCTUnwrap(ours.compactMap { UInt64($0) }.first { (try? Sys.stat(queue + "/mess/\($0 % 23)/\($0)")) != nil && Self.stripReceived(TestEnv.read(queue + "/mess/\($0 % 23)/\($0)")) == message })
            XCTAssertEqual(Self.stripUP(TestEnv.read(queue + "/todo/\(id)")), Self.stripUP(classicTodo), name)
            XCTAssertEqual(Self.stripReceived(TestEnv.read(queue + "/mess/\(id % 23)/\(id)")), Self.stripReceived(classicMess), name)
            // Our u/p records have classic's shape.
            let env = try Envelope.parseQueueFile(TestEnv.read(queue + "/todo/\(id)"))
            XCTAssertEqual(env.uid, Array("\(getuid())".utf8))
            XCTAssertEqual(env.pid.map { Int(String(decoding: $0, as: UTF8.self)) != nil }, true)
            try Sys.unlink(queue + "/todo/\(id)")
        }
    }

    func testClientLayerQueuesThroughTheRealQmailQueue() throws {
        setenv("QUEUEDIR", queue, 1)
        defer { unsetenv("QUEUEDIR") }
        let (result, qp) = queueMessage(Array("Subject: via client\n\nhi\n".utf8), sender: Array("s@x".utf8),
                                        recipients: [Array("r1@y".utf8), Array("r2@z".utf8)])
        XCTAssertTrue(result.isQueued, result.string)
        let todo = files("todo")
        XCTAssertEqual(todo.count, 1)
        let env = try Envelope.parseQueueFile(TestEnv.read(queue + "/todo/" + todo[0]))
        XCTAssertEqual(env.pid, qp.map { Array("\($0)".utf8) })
        XCTAssertEqual(env.recipients, [Array("r1@y".utf8), Array("r2@z".utf8)])
    }

    func testTriggerIsPulled() throws {
        let fd = open(queue + "/lock/trigger", O_RDONLY | O_NONBLOCK)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let out = try qmailQueue(message: Array("x\n".utf8), envelope: Array("Fa\0Tb\0\0".utf8))
        XCTAssertEqual(out.exitCode, 0)
        var byte: UInt8 = 9
        XCTAssertEqual(read(fd, &byte, 1), 1)
        XCTAssertEqual(byte, 0)
    }

    func testSplitAndBigTodoLayout() throws {
        let q = dir + "/big"
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "7", "-b", "1", q]).exitCode, 0)
        let out = try qmailQueue(message: Array("x\n".utf8), envelope: Array("Fa\0Tb\0\0".utf8), queueDir: q, env: ["CONFSPLIT": "7", "BIGTODO": "1"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let todo = files("todo", in: q)
        XCTAssertEqual(todo.count, 1)
        let parts = todo[0].split(separator: "/")
        XCTAssertEqual(parts.count, 2)
        XCTAssertEqual(UInt64(parts[1])! % 7, UInt64(parts[0])!)
        XCTAssertEqual(files("intd", in: q), todo)
    }

    func testMultiQueueSelectionWithQueueBase() throws {
        let base = dir + "/base"
        mkdir(base, 0o755)
        for n in 3...4 { XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [base + "/queue\(n)"]).exitCode, 0) }
        for _ in 0..<12 {
            let out = try TestEnv.run(TestEnv.program("qmail-queue"), input: Array("x\n".utf8), fd1Input: Array("Fa\0Tb\0\0".utf8),
                                      environment: TestEnv.environment(["QUEUEDIR": nil, "QUEUE_BASE": base, "QUEUE_START": "3", "QUEUE_COUNT": "2"]))
            XCTAssertEqual(out.exitCode, 0, out.stderrText)
        }
        let c3 = files("todo", in: base + "/queue3").count, c4 = files("todo", in: base + "/queue4").count
        XCTAssertEqual(c3 + c4, 12)
    }
}
