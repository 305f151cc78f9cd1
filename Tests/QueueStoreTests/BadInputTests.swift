import XCTest
import QueueFormat
import QueueStore
import QueueClient
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every failure gives the documented exit code and leaves nothing in todo/
/// (nor a half-written mess or intd).
final class BadInputTests: QueueTestCase {
    let message = Array("Subject: t\n\nbody\n".utf8)

    func testTruncatedEnvelopeExits54AndLeavesNothing() throws {
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa@b\0Tc@d".utf8)).exitCode, 54)
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa@b\0Tc@d\0".utf8)).exitCode, 54)
        XCTAssertEqual(try qmailQueue(message: message, envelope: []).exitCode, 54)
        assertQueueEmpty()
    }

    func testEnvelopeWithoutFExits79() throws {
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Xa@b\0Tc@d\0\0".utf8)).exitCode, 79)
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa@b\0Xc@d\0\0".utf8)).exitCode, 79)
        assertQueueEmpty()
    }

    func testAddressOverTheLimitExits11() throws {
        let long = [UInt8](repeating: UInt8(ascii: "a"), count: 1003)
        XCTAssertEqual(try qmailQueue(message: message, envelope: [UInt8(ascii: "F")] + long + [0, 0]).exitCode, 11)
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa\0T".utf8) + long + [0, 0]).exitCode, 11)
        assertQueueEmpty()
        // 1002 bytes is the longest accepted.
        let out = try qmailQueue(message: message, envelope: Array("Fa\0T".utf8) + long.dropLast() + [0, 0])
        XCTAssertEqual(out.exitCode, 0)
        XCTAssertEqual(files("todo").count, 1)
    }

    func testUnreadableMessageExits54() throws {
        // A directory on descriptor 0: read() fails with EISDIR.
        let dirFD = open(dir, O_RDONLY | O_DIRECTORY)
        defer { close(dirFD) }
        let envPipe = try Spawn.pipe()
        let pid = try Spawn.start(TestEnv.program("qmail-queue"), arguments: ["qmail-queue"],
                                  environment: TestEnv.environment(["QUEUEDIR": queue]),
                                  fds: [.init(dirFD, at: 0), .init(envPipe.read, at: 1)])
        Sys.close(envPipe.read)
        // qmail-queue may already have failed and closed its end: a broken pipe here is fine.
        _ = try? Sys.write(envPipe.write, Array("Fa\0Tb\0\0".utf8))
        Sys.close(envPipe.write)
        XCTAssertEqual(try Spawn.wait(pid), .exited(54))
        assertQueueEmpty()
    }

    func testMissingQueueExits61() throws {
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa\0Tb\0\0".utf8), queueDir: dir + "/nonexistent").exitCode, 61)
    }

    func testQueueWithoutTodoFolderExits66AndCleansUp() throws {
        try Sys.rename(queue + "/todo", queue + "/todo.gone")
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa\0Tb\0\0".utf8)).exitCode, 66)
        for folder in ["mess", "intd", "pid"] { XCTAssertEqual(files(folder), [], folder) }
    }

    func testTimeoutExits52() throws {
        // The client never finishes the message: DEATH=1 ends it.
        let msgPipe = try Spawn.pipe()
        let envPipe = try Spawn.pipe()
        let pid = try Spawn.start(TestEnv.program("qmail-queue"), arguments: ["qmail-queue"],
                                  environment: TestEnv.environment(["QUEUEDIR": queue, "DEATH": "1"]),
                                  fds: [.init(msgPipe.read, at: 0), .init(envPipe.read, at: 1)])
        Sys.close(msgPipe.read); Sys.close(envPipe.read)
        try Sys.write(msgPipe.write, Array("Subject: slow\n".utf8))
        XCTAssertEqual(try Spawn.wait(pid), .exited(52))
        Sys.close(msgPipe.write); Sys.close(envPipe.write)
        XCTAssertEqual(files("todo"), [])
    }

    func testCustomErrorModeReportsTextAndExits88() throws {
        let out = try qmailQueue(message: message, envelope: Array("Xa\0\0".utf8), env: ["QMAIL_QUEUE_CUSTOM_ERROR": "1"])
        XCTAssertEqual(out.exitCode, 88)
        XCTAssertEqual(out.stderrText, "Zqmail-queue: envelope format error: envelope does not start with F (#4.3.0)")
    }

    // MARK: file-system failures on a real small tmpfs

    func mountTmpfs(_ path: String, size: String) throws {
        mkdir(path, 0o755)
        let out = try TestEnv.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path])
        XCTAssertEqual(out.exitCode, 0, "mount failed (the tests run as root): \(out.stderrText)")
    }

    func unmount(_ path: String) { _ = try? TestEnv.run("/bin/umount", [path]) }

    func testDiskFullExits53AndLeavesNothing() throws {
        let mnt = dir + "/small"
        try mountTmpfs(mnt, size: "400k")
        defer { unmount(mnt) }
        let q = mnt + "/queue"
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [q]).exitCode, 0)
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 2 << 20)
        let out = try qmailQueue(message: big, envelope: Array("Fa\0Tb\0\0".utf8), queueDir: q)
        XCTAssertEqual(out.exitCode, 53, out.stderrText)
        assertQueueEmpty(q)
        // Through the client layer the text is the table's.
        let session = try QueueSession(program: .init(arguments: [TestEnv.program("qmail-queue")], errorFD: 2),
                                       environment: TestEnv.environment(["QUEUEDIR": q]))
        session.put(big); session.from("a"); session.to("b")
        XCTAssertEqual(session.close().string, "Zqq write error or disk full (#4.3.0)")
        assertQueueEmpty(q)
        // Room again: a small message goes through.
        XCTAssertEqual(try qmailQueue(message: message, envelope: Array("Fa\0Tb\0\0".utf8), queueDir: q).exitCode, 0)
    }

    func testReadOnlyQueueExits70() throws {
        let mnt = dir + "/ro"
        try mountTmpfs(mnt, size: "1m")
        defer { unmount(mnt) }
        let q = mnt + "/queue"
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [q]).exitCode, 0)
        XCTAssertEqual(try TestEnv.run("/bin/mount", ["-o", "remount,ro", mnt]).exitCode, 0)
        let out = try qmailQueue(message: message, envelope: Array("Fa\0Tb\0\0".utf8), queueDir: q)
        XCTAssertEqual(out.exitCode, 70)
        assertQueueEmpty(q)
    }
}
