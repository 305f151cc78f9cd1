import XCTest
import QueueFormat
import QueueStore
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// SIGKILL qmail-queue at random moments: whatever is in todo/ is complete.
final class CrashTests: QueueTestCase {
    func testKillingQmailQueueAtRandomNeverExposesAPartialMessage() throws {
        var generator = SeededGenerator(for: "testKillingQmailQueueAtRandomNeverExposesAPartialMessage")
        var messages: [String: [UInt8]] = [:]   // recipient -> message
        var killed = 0
        let injections = 240
        for i in 0..<injections {
            let size = Int.random(in: 100...300_000, using: &generator)
            var msg = Array("Subject: crash \(i)\n\n".utf8)
            msg += [UInt8](repeating: UInt8(ascii: "a") + UInt8(i % 26), count: size)
            msg += Array("\nend \(i)\n".utf8)
            let rcpt = "r\(i)@crash.example"
            messages[rcpt] = msg
            let envelope = Array("Fs@crash.example\0T\(rcpt)\0\0".utf8)
            let msgPipe = try Spawn.pipe()
            let envPipe = try Spawn.pipe()
            let pid = try Spawn.start(TestEnv.program("qmail-queue"), arguments: ["qmail-queue"],
                                      environment: TestEnv.environment(["QUEUEDIR": queue]),
                                      fds: [.init(msgPipe.read, at: 0), .init(envPipe.read, at: 1)])
            Sys.close(msgPipe.read); Sys.close(envPipe.read)
            let feeder = TestSupport.Thread {
                _ = try? Sys.write(msgPipe.write, msg); Sys.close(msgPipe.write)
                _ = try? Sys.write(envPipe.write, envelope); Sys.close(envPipe.write)
            }
            // qmail-queue (musl, Embedded Swift) lives about 1-3 ms here: kill within its life.
            usleep(UInt32.random(in: 0...2000, using: &generator))
            kill(pid, SIGKILL)
            feeder.join()
            if case .signaled = try Spawn.wait(pid) { killed += 1 }
        }
        XCTAssertGreaterThan(killed, injections / 4, "too few injections were actually interrupted")

        let names = QueueNames()
        var complete = 0
        for name in files("todo") {
            let id = try XCTUnwrap(UInt64(name))
            let todo = TestEnv.read(queue + "/todo/" + name)
            // intd is the same complete file.
            XCTAssertEqual(TestEnv.read(queue + "/intd/" + name), todo)
            let env = try Envelope.parseQueueFile(todo)
            XCTAssertEqual(env.recipients.count, 1)
            let rcpt = String(decoding: env.recipients[0], as: UTF8.self)
            let mess = TestEnv.read(queue + "/" + names.path(.mess, id))
            XCTAssertEqual(Self.stripReceived(mess), messages[rcpt], "mess of \(rcpt) incomplete")
            complete += 1
        }
        // Nothing else is visible to the scheduler: no info/local/remote were made.
        for folder in ["info", "local", "remote", "bounce"] { XCTAssertEqual(files(folder), [], folder) }
        // Leftovers are only S2/S3 states (mess, maybe intd, no todo) and pid files.
        for name in files("intd") where !files("todo").contains(name) {
            let id = UInt64(name)!
            XCTAssertNotNil(try Sys.stat(queue + "/" + names.path(.mess, id)), "intd without mess: \(name)")
        }
        print("crash test: \(injections) injections, \(killed) killed, \(complete) complete in todo/")
    }

    /// A message still being injected (mess and intd, no info yet) under an id the
    /// engine believes finished (a stale schedule entry) is not removed.
    func testRemovalWithoutAnInfoFileLeavesAnInjectionAlone() throws {
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8), envelope: Array("Fa@b\0Tc@d\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        unlink(queue + "/todo/\(id)")    // as if still between intd and the link into todo
        let q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        try q.removeMessage(id)
        XCTAssertEqual(files("mess").count, 1)
        XCTAssertEqual(files("intd").count, 1)
    }

    /// A todo entry with an empty record (NUL NUL, zeros after a crash) is an
    /// error for that entry, not a crash of the engine.
    func testEmptyTodoRecordIsAnError() throws {
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8), envelope: Array("Fa@b\0Tc@d\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        TestEnv.write(queue + "/todo/\(id)", "u0\0\0Fa@b\0Tc@d\0")
        let q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        XCTAssertThrowsError(try q.preprocess(id) { (true, $0) }) { XCTAssertTrue("\($0)".contains("unknown record type in todo/\(id)"), "\($0)") }
        XCTAssertEqual(files("todo").count, 1, "todo/ stays for a later try")
        XCTAssertEqual(files("info"), [])
    }

    /// Several todo entries preprocessed as one group (one shared flush): each
    /// gets its files and loses its todo entry, except one whose todo is damaged,
    /// which fails alone and keeps its todo entry with nothing beside it.
    func testAGroupIsPreprocessedTogetherAndADamagedEntryFailsAlone() throws {
        for k in 0..<4 {
            XCTAssertEqual(try qmailQueue(message: Array("Subject: \(k)\n\nbody\n".utf8),
                                          envelope: Array("Fa@b\0Tr\(k)@d\0\0".utf8)).exitCode, 0)
        }
        let ids = files("todo").compactMap { UInt64($0) }.sorted()
        XCTAssertEqual(ids.count, 4)
        // each entry's recipient, as qmail-queue wrote it (the T record of its todo file)
        var recipient: [UInt64: [UInt8]] = [:]
        for id in ids {
            let todo = TestEnv.read(queue + "/todo/\(id)")
            let t = try XCTUnwrap(todo.split(separator: 0).first { $0.first == UInt8(ascii: "T") })
            recipient[id] = Array(t) + [0]
        }
        TestEnv.write(queue + "/todo/\(ids[2])", "u0\0\0Fa@b\0Tc@d\0")
        var q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        q.sharedSync = try SharedSync(queueDir: queue)
        let results = q.preprocessMany(ids) { (true, $0) }
        XCTAssertEqual(results.map(\.0), ids)
        for (i, (id, r)) in results.enumerated() {
            if i == 2 {
                XCTAssertThrowsError(try r.get())
                XCTAssertFalse(Sys.exists(q.path(.info, id)))
            } else {
                let p = try r.get()
                XCTAssertTrue(p.hasLocal)
                XCTAssertEqual(TestEnv.read(q.path(.local, id)), recipient[id])
            }
        }
        XCTAssertEqual(files("todo"), ["\(ids[2])"], "only the damaged entry's todo stays")
        XCTAssertEqual(q.sharedSync?.flushes, 1, "one flush for the group")
    }

    /// Preprocessing after an interrupted pass replaces what that pass left (an old
    /// routing included: a channel this pass does not use is removed), and what it
    /// returns for the scheduler is what the files say.
    func testPreprocessingReplacesAnInterruptedPassAndReturnsWhatItWrote() throws {
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8),
                                      envelope: Array("Fa@b\0Tc@d\0Te@f\0\0".utf8)).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        let q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        TestEnv.write(queue + "/todo/\(id)", "u0\0p1\0Fa@b\0eX-QQ: 1\n\0hX-Env: 2\0Tc@d\0Te@f\0")
        TestEnv.write(q.path(.info, id), "Fold@sender\0")
        TestEnv.write(q.path(.local, id), "Dstale@local\0")
        TestEnv.write(q.path(.remote, id), "Tc@d\0")        // routed remote by the earlier pass
        let p = try q.preprocess(id) { (true, $0) }
        XCTAssertEqual(TestEnv.read(q.path(.local, id)), Array("Tc@d\0Te@f\0".utf8))
        XCTAssertFalse(Sys.exists(q.path(.remote, id)), "the channel this pass does not use is gone")
        XCTAssertTrue(p.hasLocal)
        XCTAssertFalse(p.hasRemote)
        XCTAssertEqual(files("todo"), [])
        XCTAssertEqual(files("intd"), [])
        let info = try XCTUnwrap(try q.info(id))
        XCTAssertEqual(p.sender, info.sender)
        XCTAssertEqual(p.sender, Array("a@b".utf8))
        XCTAssertEqual(p.qqeh, info.qqeh)
        XCTAssertEqual(p.qqeh, Array("X-QQ: 1\n".utf8))
        XCTAssertEqual(p.envHeaders, Array("X-Env: 2".utf8))
        XCTAssertEqual(p.envHeaders, info.envHeaders)
        XCTAssertEqual(p.birth, info.birth)
        XCTAssertEqual(p.localRecords, try XCTUnwrap(try q.channelRecords(id, local: true)))
        XCTAssertEqual(p.remoteRecords, [])
    }

    /// An info file without its F record (empty, torn) is an error to retry, never a sender <>.
    func testInfoWithoutSenderRecordIsAnError() throws {
        let q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        TestEnv.write(q.path(.info, 77), "")
        XCTAssertThrowsError(try q.info(77))
        TestEnv.write(q.path(.info, 77), "Fa@b")          // no NUL: torn
        XCTAssertThrowsError(try q.info(77))
        TestEnv.write(q.path(.info, 77), "Fa@b\0eX-Q: 1\n\0")
        XCTAssertEqual(try q.info(77)?.sender, Array("a@b".utf8))
    }

    /// Recipient addresses are bytes: an 8-bit address that is not UTF-8 reaches
    /// the channel file unchanged (not as U+FFFD).
    func testEightBitRecipientIsKeptByteForByte() throws {
        let rcpt: [UInt8] = Array("j".utf8) + [0xF6] + Array("rg@x.example".utf8)
        XCTAssertEqual(try qmailQueue(message: Array("Subject: x\n\nbody\n".utf8),
                                      envelope: Array("Fa@b\0T".utf8) + rcpt + [0, 0]).exitCode, 0)
        let id = try XCTUnwrap(files("todo").first.flatMap { UInt64($0) })
        let q = QueueFiles(root: queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe)
        _ = try q.preprocess(id) { (false, $0) }
        XCTAssertEqual(TestEnv.read(q.path(.remote, id)), [UInt8(ascii: "T")] + rcpt + [0])
    }
}
