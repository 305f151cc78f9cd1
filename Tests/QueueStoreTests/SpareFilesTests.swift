import XCTest
import QueueFormat
@testable import QueueStore
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The engine's pool of emptied info and channel files (SpareFiles), on a real
/// queue made by queue-fix and written by the real qmail-queue.
final class SpareFilesTests: QueueTestCase {
    var names: QueueNames { QueueNames(split: QueueNames.defaultSplit, bigTodo: false) }

    func spareNames() -> [String] {
        ((try? Sys.listDirectory(queue + "/info")) ?? []).filter { $0.hasPrefix("spare.") }.sorted()
    }

    func testRetiredFileLeavesItsNameAndTheFullPoolUnlinks() throws {
        let pool = SpareFiles(queueDir: queue, limit: 4)
        for i in 0..<6 { TestEnv.write(queue + "/local/\(i)/\(i)", "Tx@y\0") }
        for i in 0..<6 { XCTAssertTrue(try pool.retire(queue + "/local/\(i)/\(i)")) }
        XCTAssertEqual(pool.count, 4, "at most `limit` spares")
        XCTAssertEqual(spareNames().count, 4)
        XCTAssertEqual(files("local"), [], "every retired name is gone, kept or unlinked")
        XCTAssertFalse(try pool.retire(queue + "/local/0/0"), "a missing file: nothing to retire")
        pool.drain()
        XCTAssertEqual(pool.count, 0)
        XCTAssertEqual(spareNames(), [])
    }

    func testAnEarlierRunsSparesAreRemovedAtStart() throws {
        TestEnv.write(queue + "/info/spare.17", "Fold@sender\0")
        TestEnv.write(queue + "/info/spare.18", "Tc@d\0")
        let pool = SpareFiles(queueDir: queue)
        XCTAssertEqual(pool.count, 0)
        XCTAssertEqual(spareNames(), [])
        XCTAssertEqual((try Sys.listDirectory(queue + "/info")).count, QueueNames.defaultSplit, "the split folders stay")
    }

    /// The default pool holds up to 128 spares and always keeps 32 back: with 40
    /// retired, 8 messages' files come from the pool and the next is created.
    func testTheDefaultPoolKeeps32BackAndHolds128() throws {
        let pool = SpareFiles(queueDir: queue)
        XCTAssertEqual(pool.limit, 128)
        XCTAssertEqual(pool.reserve, 32)
        for i in 0..<130 {
            let p = queue + "/local/\(i % 23)/\(i)"
            TestEnv.write(p, "Tx@y\0")
            try pool.retire(p)
        }
        XCTAssertEqual(pool.count, 128, "two past the limit were unlinked")
        XCTAssertEqual(spareNames().count, 128)
        pool.drain()
        for i in 0..<40 {
            let p = queue + "/local/\(i % 23)/\(i)"
            TestEnv.write(p, "Tx@y\0")
            try pool.retire(p)
        }
        XCTAssertEqual(pool.count, 40)
        var reused = 0
        for i in 0..<10 {
            let p = queue + "/info/\(i % 23)/r\(i)"
            if let fd = pool.reuse(as: p) { close(fd); reused += 1 }
        }
        XCTAssertEqual(reused, 8)
        XCTAssertEqual(pool.count, 32)
    }

    /// Preprocessing writes into reused files exactly the bytes a new file gets:
    /// a longer old content is cut, the mtime is the new birth, the mode stays
    /// 0600, the oldest spare goes first, and the files read back as written.
    func testPreprocessingIntoSparesWritesExactlyTheNewFiles() throws {
        var q = QueueFiles(root: queue, names: names, sync: .safe)
        let pool = SpareFiles(queueDir: queue, limit: 8)
        q.spares = pool
        // Eight long files retired, in order: spare.1 … spare.8.
        var inodes: [UInt64] = []
        for i in 0..<8 {
            let p = queue + "/remote/\(i)/\(i)"
            try Sys.writeFile(p, Array(("T" + String(repeating: "old-recipient-\(i)@example.test ", count: 200) + "\0").utf8), mode: 0o600)
            inodes.append(UInt64(try XCTUnwrap(try Sys.stat(p)).st_ino))
            try pool.retire(p)
        }
        XCTAssertEqual(pool.count, 8)

        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8),
                                      envelope: Array("Fa@b\0Tc@d\0Te@remote.test\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        let before = time(nil)
        let p = try q.preprocess(id) { ($0 == "c@d", $0) }
        XCTAssertTrue(p.hasLocal && p.hasRemote)
        XCTAssertEqual(TestEnv.read(q.path(.info, id)), Array("Fa@b\0".utf8))
        XCTAssertEqual(TestEnv.read(q.path(.local, id)), Array("Tc@d\0".utf8))
        XCTAssertEqual(TestEnv.read(q.path(.remote, id)), Array("Te@remote.test\0".utf8))
        // info took the oldest spare, then local, then remote (first in, first out).
        XCTAssertEqual(UInt64(try XCTUnwrap(try Sys.stat(q.path(.info, id))).st_ino), inodes[0])
        XCTAssertEqual(UInt64(try XCTUnwrap(try Sys.stat(q.path(.local, id))).st_ino), inodes[1])
        XCTAssertEqual(UInt64(try XCTUnwrap(try Sys.stat(q.path(.remote, id))).st_ino), inodes[2])
        XCTAssertEqual(pool.count, 5)
        for f in [q.path(.info, id), q.path(.local, id), q.path(.remote, id)] {
            let st = try XCTUnwrap(try Sys.stat(f))
            XCTAssertEqual(st.st_mode & 0o7777, 0o600, f)
            XCTAssertGreaterThanOrEqual(Int(st.st_mtim.tv_sec), before, "the mtime is the message's birth")
        }
        XCTAssertEqual(Int(try XCTUnwrap(try Sys.stat(q.path(.info, id))).st_mtim.tv_sec), Int(p.birth))
        let info = try XCTUnwrap(try q.info(id))
        XCTAssertEqual(info.sender, Array("a@b".utf8))
        XCTAssertEqual(try q.channelRecords(id, local: true)?.map { $0.address }, [Array("c@d".utf8)])

        // The message finishes: its files go back into the pool, and nothing of it is left under its id.
        try q.removeChannel(id, local: true)
        try q.removeChannel(id, local: false)
        try q.removeMessage(id, preprocessedHere: true)
        XCTAssertEqual(files("info").filter { !$0.hasPrefix("spare.") }, [])
        XCTAssertEqual(files("local"), [])
        XCTAssertEqual(files("remote"), [])
        XCTAssertEqual(files("mess"), [])
        XCTAssertEqual(pool.count, 8)
        pool.drain()
        assertQueueEmpty()
    }

    /// A file written into a spare and then failing (here: a spare that vanished)
    /// falls back to a new file; a failed write leaves no file under the name.
    func testAVanishedSpareFallsBackToANewFile() throws {
        var q = QueueFiles(root: queue, names: names, sync: .safe)
        let pool = SpareFiles(queueDir: queue, limit: 2)
        q.spares = pool
        for i in 0..<2 { TestEnv.write(queue + "/local/\(i)/\(i)", "Tx\0"); try pool.retire(queue + "/local/\(i)/\(i)") }
        for n in spareNames() { unlink(queue + "/info/" + n) }
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8), envelope: Array("Fa@b\0Tc@d\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        _ = try q.preprocess(id) { (true, $0) }
        XCTAssertEqual(TestEnv.read(q.path(.info, id)), Array("Fa@b\0".utf8))
        XCTAssertEqual(TestEnv.read(q.path(.local, id)), Array("Tc@d\0".utf8))
    }

    // MARK: the pid/ ring between qmail-clean and the daemon's writer (SpareSlots)

    func pidSpares() -> [String] {
        ((try? Sys.listDirectory(queue + "/pid")) ?? []).filter { $0.hasPrefix("spare.") }.sorted()
    }

    /// Removed files fill the ring in order and are claimed in the same order;
    /// a full ring unlinks; a missing file is not an error; drop empties it.
    func testTheRingIsFirstInFirstOutAndBounded() throws {
        let ring = SpareSlots(root: queue)
        var inodes: [UInt64] = []
        for i in 0..<(SpareSlots.count + 2) {
            let p = queue + "/mess/\(i % 23)/\(i)"
            try Sys.writeFile(p, Array("message \(i)\n".utf8), mode: 0o644)
            inodes.append(UInt64(try XCTUnwrap(try Sys.stat(p)).st_ino))
            XCTAssertTrue(try ring.retire(p))
            XCTAssertFalse(Sys.exists(p))
        }
        XCTAssertEqual(pidSpares().count, SpareSlots.count, "the two past the ring's size were unlinked")
        XCTAssertFalse(try ring.retire(queue + "/mess/0/0"))
        for i in 0..<3 {
            let target = queue + "/pid/claimed.\(i)"
            let fd = try XCTUnwrap(ring.claim(as: target))
            close(fd)
            XCTAssertEqual(UInt64(try XCTUnwrap(try Sys.stat(target)).st_ino), inodes[i], "first in, first out")
            unlink(target)
        }
        // Three names are free again, behind the remover's position (it moved on four
        // past each full window): removals are unlinked until it comes round to them,
        // within one turn of the ring.
        var attempts = 0
        while pidSpares().count < SpareSlots.count - 2 && attempts < SpareSlots.count / 4 + 1 {
            attempts += 1
            try Sys.writeFile(queue + "/intd/7", Array("x".utf8), mode: 0o644)
            XCTAssertTrue(try ring.retire(queue + "/intd/7"))
            XCTAssertFalse(Sys.exists(queue + "/intd/7"))
        }
        XCTAssertEqual(pidSpares().count, SpareSlots.count - 2, "after \(attempts) removals")
        ring.drop()
        XCTAssertEqual(pidSpares(), [])
        XCTAssertNil(ring.claim(as: queue + "/pid/none"))
    }

    /// The real qmail-clean puts the intd file of a preprocessed message (renamed
    /// while its todo link still exists, then the link removed) and a finished
    /// message's mess file into the ring, and drop/ empties it.
    func testQmailCleanFillsTheRingAndDropsIt() throws {
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8), envelope: Array("Fa@b\0Tc@d\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        let intdIno = UInt64(try XCTUnwrap(try Sys.stat(queue + "/intd/\(id)")).st_ino)
        let cleaner = try QueueCleaner(program: TestEnv.program("qmail-clean"), queueDir: queue, credentials: nil)
        defer { cleaner.finish() }
        let failures = try cleaner.removeTodos([id])
        XCTAssertEqual(failures.count, 1)
        XCTAssertNil(failures[0].map { "\($0)" })
        XCTAssertEqual(files("todo"), [])
        XCTAssertEqual(files("intd"), [])
        XCTAssertEqual(pidSpares(), ["spare.0"])
        let st = try XCTUnwrap(try Sys.stat(queue + "/pid/spare.0"))
        XCTAssertEqual(UInt64(st.st_ino), intdIno)
        XCTAssertEqual(st.st_nlink, 1, "the todo link is gone: the file can be written again")
        XCTAssertEqual(try cleaner.removeMessages([id]), [true])
        XCTAssertEqual(files("mess"), [])
        XCTAssertEqual(pidSpares(), ["spare.0", "spare.1"])
        try cleaner.dropSpares()
        XCTAssertEqual(pidSpares(), [])
    }
}
