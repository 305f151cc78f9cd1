import XCTest
import QueueFormat
import QueueStore
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class QueueFixTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = TestEnv.temporaryDirectory("fix") }
    override func tearDown() { TestEnv.remove(dir) }

    func queueFix(_ args: [String]) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("queue-fix"), args)
    }

    func mode(_ path: String) throws -> mode_t { try XCTUnwrap(try Sys.lstat(path)).st_mode }

    func testCreatesTheClassicLayoutWithQmailModes() throws {
        let q = dir + "/q"
        let out = try queueFix([q])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertTrue(out.stdoutText.contains("created queue \(q) (split 23, todo/intd flat)"), out.stdoutText)
        XCTAssertEqual(try mode(q) & 0o7777, 0o750)
        for (folder, m) in [("mess", 0o750), ("intd", 0o700), ("todo", 0o750), ("info", 0o700), ("local", 0o700),
                            ("remote", 0o700), ("bounce", 0o700), ("pid", 0o700), ("lock", 0o750)] as [(String, mode_t)] {
            XCTAssertEqual(try mode(q + "/" + folder) & 0o7777, m, folder)
        }
        for folder in ["mess", "info", "local", "remote"] {
            XCTAssertEqual(try Sys.listDirectory(q + "/" + folder).sorted(), (0..<23).map(String.init).sorted(), folder)
            XCTAssertEqual(try mode(q + "/" + folder + "/22") & 0o7777, try mode(q + "/" + folder) & 0o7777)
        }
        XCTAssertEqual(try Sys.listDirectory(q + "/todo"), [])
        XCTAssertEqual(try mode(q + "/lock/trigger") & S_IFMT, S_IFIFO)
        XCTAssertEqual(try mode(q + "/lock/trigger") & 0o7777, 0o622)
        XCTAssertEqual(try mode(q + "/lock/sendmutex") & 0o7777, 0o600)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(q + "/lock/tcpto")).st_size, 2048)
        // A second run changes nothing.
        let again = try queueFix(["-v", q])
        XCTAssertEqual(again.exitCode, 0)
        XCTAssertEqual(again.stdoutText, "queue-fix: \(q) is sound; nothing changed\n")
    }

    func testRepairsADamagedQueueAndSaysWhat() throws {
        let q = dir + "/q"
        XCTAssertEqual(try queueFix([q]).exitCode, 0)
        TestEnv.remove(q + "/todo")
        TestEnv.remove(q + "/info/5")
        chmod(q + "/mess", 0o777)
        unlink(q + "/lock/trigger")
        TestEnv.write(q + "/lock/trigger", "not a fifo")
        truncate(q + "/lock/tcpto", 10)
        let out = try queueFix([q])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let lines = out.stdoutText
        XCTAssertTrue(lines.contains("created \(q)/todo\n"), lines)
        XCTAssertTrue(lines.contains("created \(q)/info/5\n"), lines)
        XCTAssertTrue(lines.contains("changed mode of \(q)/mess from 0777 to 0750\n"), lines)
        XCTAssertTrue(lines.contains("replaced \(q)/lock/trigger: wrong file type\n"), lines)
        XCTAssertTrue(lines.contains("resized \(q)/lock/tcpto to 2048 bytes\n"), lines)
        XCTAssertEqual(try mode(q + "/lock/trigger") & S_IFMT, S_IFIFO)
        XCTAssertEqual(try queueFix(["-v", q]).stdoutText, "queue-fix: \(q) is sound; nothing changed\n")
    }

    func testDryRunChangesNothing() throws {
        let q = dir + "/q"
        XCTAssertEqual(try queueFix([q]).exitCode, 0)
        TestEnv.remove(q + "/bounce")
        let out = try queueFix(["-N", q])
        XCTAssertTrue(out.stdoutText.contains("would have created \(q)/bounce"), out.stdoutText)
        XCTAssertFalse(Sys.exists(q + "/bounce"))
    }

    func testRefusesSomethingThatIsNotAQueue() throws {
        let notQueue = dir + "/home"
        mkdir(notQueue, 0o755)
        TestEnv.write(notQueue + "/letter.txt", "dear diary")
        let out = try queueFix([notQueue])
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertTrue(out.stderrText.contains("does not look like a qmail queue"), out.stderrText)
        XCTAssertEqual(try Sys.listDirectory(notQueue), ["letter.txt"])
        TestEnv.write(dir + "/file", "x")
        let file = try queueFix([dir + "/file"])
        XCTAssertEqual(file.exitCode, 100)
        XCTAssertTrue(file.stderrText.contains("is not a directory"), file.stderrText)
        XCTAssertEqual(try queueFix([]).exitCode, 100)
    }

    func testExistingSplitIsKeptAndASymlinkedQueueIsAccepted() throws {
        let real = dir + "/disk/queue"
        mkdir(dir + "/disk", 0o755)
        XCTAssertEqual(try queueFix(["-s", "7", real]).exitCode, 0)
        symlink(real, dir + "/q")
        let out = try queueFix(["-v", dir + "/q"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, "queue-fix: \(dir)/q is sound; nothing changed\n")
        XCTAssertEqual(try Sys.listDirectory(real + "/mess").count, 7)
    }

    func testBigTodoSplitsTodoAndIntd() throws {
        let q = dir + "/q"
        XCTAssertEqual(try queueFix(["-s", "5", "-b", "1", q]).exitCode, 0)
        XCTAssertEqual(try Sys.listDirectory(q + "/todo").sorted(), ["0", "1", "2", "3", "4"])
        XCTAssertEqual(try Sys.listDirectory(q + "/intd").sorted(), ["0", "1", "2", "3", "4"])
        XCTAssertEqual(try Sys.listDirectory(q + "/bounce"), [])
    }
}
