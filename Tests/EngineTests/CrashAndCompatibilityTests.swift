import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class EngineCrashTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    /// SIGKILL the engine at random moments while it delivers 500 messages,
    /// restart, ten times: every message arrives at least once, nothing is left.
    func testKillingTheEngineNeverLosesAMessage() throws {
        let count = 500
        // Inject quickly with parallel clients.
        let threads = (0..<4).map { t in
            TestSupport.Thread {
                for i in stride(from: t, to: count, by: 4) {
                    let out = try? TestEnv.run(TestEnv.program("qmail-inject"), ["alice@example.test"],
                                               input: Array("Subject: crash \(i)\nX-Number: \(i)\n\nmessage \(i)\n".utf8),
                                               environment: self.h.environment)
                    if out?.exitCode != 0 { print("injection \(i) failed") }
                }
            }
        }
        threads.forEach { $0.join() }
        XCTAssertEqual(TestEnv.files(under: h.queue + "/todo").count, count)
        var generator = SeededGenerator(for: "testKillingTheEngineNeverLosesAMessage")
        for round in 0..<10 {
            let d = try h.startDaemon("qmail-send", ["./Maildir/"], logName: "crash-\(round).log")
            usleep(UInt32.random(in: 20_000...250_000, using: &generator))
            d.kill9()
        }
        // A last run to the end.
        let d = try h.startDaemon("qmail-send", ["./Maildir/"], logName: "final.log")
        h.waitFor("the engine to start") { d.log.contains("status: local") }
        h.waitFor("every message delivered", seconds: 120) { h.queueFiles().isEmpty }
        XCTAssertEqual(d.stop(), .exited(0))
        var seen = Set<Int>()
        var duplicates = 0
        for m in h.maildirMessages("alice") {
            guard let line = m.split(separator: "\n").first(where: { $0.hasPrefix("X-Number: ") }),
                  let n = Int(line.dropFirst(10)) else { XCTFail("unexpected message \(m)"); continue }
            if !seen.insert(n).inserted { duplicates += 1 }
        }
        XCTAssertEqual(seen.count, count, "messages lost: \(Set(0..<count).subtracting(seen).sorted())")
        XCTAssertEqual(h.queueFiles(), [])
        print("engine crash test: \(count) messages, 10 kills, \(duplicates) delivered twice")
    }
}

/// A queue written by classic qmail (queue-layout/fixtures/classic-qmail) is delivered.
final class ClassicQueueTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness(me: "fixture.example", alias: true) }
    override func tearDown() { h.cleanup() }

    /// Copies a classic message into our queue under a fresh id (= the inode of
    /// its new mess file), with its info/local/remote files renamed to match.
    func importPreprocessed(_ oldID: UInt64) throws -> UInt64 {
        let fx = TestEnv.classicQmailFixtures
        let mess = try TestEnv.readFixture(fx + "/queue-s4-queued/mess/\(oldID % 23)/\(oldID)")
        let tmp = h.queue + "/pid/import.\(oldID)"
        try Sys.writeFile(tmp, mess, mode: 0o644)
        let id = UInt64(try XCTUnwrap(try Sys.stat(tmp)).st_ino)
        try Sys.link(tmp, h.queue + "/mess/\(id % 23)/\(id)")
        try Sys.unlink(tmp)
        for folder in ["info", "local", "remote"] {
            let src = fx + "/queue-s5-preprocessed/\(folder)/\(oldID % 23)/\(oldID)"
            if Sys.exists(src) { try Sys.writeFile(h.queue + "/\(folder)/\(id % 23)/\(id)", TestEnv.read(src), mode: 0o600) }
        }
        return id
    }

    func testClassicPreprocessedQueueIsDeliveredAndBounced() throws {
        h.writeControl("locals", "fixture.example\n")
        h.writeControl("virtualdomains", "virt.example:joe\n")
        // The remote host answers 550 to RCPT, as in the fixture run.
        let remote = h.dir + "/remote.sh"
        TestEnv.write(remote, "#!/bin/sh\nprintf 'h127.0.0.1 does not like recipient.\\nRemote host said: 550 no such user here\\n\\0DGiving up on 127.0.0.1.\\n\\0'\n", mode: 0o755)
        h.extraEnv["QMAILREMOTE"] = remote
        h.writeHomeFile("alias", ".qmail-postmaster", "./Maildir/\n")
        var ids: [UInt64: UInt64] = [:]
        for old: UInt64 in [16229927, 16229929, 16229931, 16229933] { ids[old] = try importPreprocessed(old) }
        let out = try TestEnv.run(TestEnv.program("qmta-send"), ["./Maildir/"],
                                  environment: TestEnv.environment(["QUEUEDIR": h.queue, "QMAILHOME": h.dir, "CONTROLDIR": h.control, "QMAILREMOTE": remote]))
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let log = out.stdoutText
        // bob's delivery is byte for byte the one classic qmail-local wrote.
        let bob = h.maildirMessages("bob")
        XCTAssertEqual(bob.count, 1)
        XCTAssertEqual(bob.first, String(decoding: try TestEnv.readFixture(TestEnv.classicQmailFixtures + "/delivered/bob-local-delivery.eml"), as: UTF8.self))
        // The same failures as classic qmail's log.
        XCTAssertTrue(log.contains("delivery 2: failure: 127.0.0.1_does_not_like_recipient./Remote_host_said:_550_no_such_user_here/Giving_up_on_127.0.0.1./") ||
                      log.contains(": failure: 127.0.0.1_does_not_like_recipient./Remote_host_said:_550_no_such_user_here/Giving_up_on_127.0.0.1./"), log)
        XCTAssertTrue(log.contains("to local joe-info@virt.example"), log)
        for (_, id) in ids where id != ids[16229929] { XCTAssertTrue(log.contains("bounce msg \(id) qp "), log) }
        // postmaster goes to the alias user's .qmail-postmaster.
        XCTAssertEqual(h.maildir("alias").count, 1, log)
        // As in classic qmail-send's log, each start is followed by a status line.
        let first = ids[16229927]!
        let lines = log.split(separator: "\n").map(String.init)
        for target in ["msg \(first) to local bob@fixture.example", "msg \(first) to remote carol@remote.example"] {
            let i = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("starting delivery ") && $0.hasSuffix(target) }, log)
            XCTAssertTrue(lines[i + 1].hasPrefix("status: local "), log)
        }
        // The bounces to alice name the failed recipients, joe's prepend stripped.
        let bounces = h.maildirMessages("alice")
        XCTAssertEqual(bounces.count, 3, log)
        XCTAssertEqual(h.queueFiles(), [])
        let all = bounces.joined()
        XCTAssertTrue(all.contains("<nosuchuser@fixture.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"), all)
        XCTAssertTrue(all.contains("<info@virt.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"), all)
        XCTAssertTrue(all.contains("<dave@fixture.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"), all)
        XCTAssertTrue(all.contains("<carol@remote.example>:\n127.0.0.1 does not like recipient.\nRemote host said: 550 no such user here\nGiving up on 127.0.0.1.\n\n"), all)
    }

    /// The S3 leftover of a dead qmail-queue is removed once older than OSSIFIED.
    func testOssifiedLeftoversAreCleanedAtStart() throws {
        let fx = try TestEnv.fixture(TestEnv.classicQmailFixtures + "/queue-s3-leftover")
        let tmp = h.queue + "/pid/leftover"
        try Sys.writeFile(tmp, try TestEnv.readFixture(fx + "/mess/8/16229935"), mode: 0o644)
        let id = UInt64(try XCTUnwrap(try Sys.stat(tmp)).st_ino)
        try Sys.link(tmp, h.queue + "/mess/\(id % 23)/\(id)")
        try Sys.unlink(tmp)
        try Sys.writeFile(h.queue + "/intd/\(id)", try TestEnv.readFixture(fx + "/intd/16229935"), mode: 0o644)
        var old = [timespec(tv_sec: time(nil) - 200_000, tv_nsec: 0), timespec(tv_sec: time(nil) - 200_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, h.queue + "/mess/\(id % 23)/\(id)", &old, 0)
        // A fresh leftover is kept (its qmail-queue may still be running).
        let tmp2 = h.queue + "/pid/fresh"
        try Sys.writeFile(tmp2, Array("x".utf8), mode: 0o644)
        let fresh = UInt64(try XCTUnwrap(try Sys.stat(tmp2)).st_ino)
        try Sys.link(tmp2, h.queue + "/mess/\(fresh % 23)/\(fresh)")
        try Sys.unlink(tmp2)
        let out = try h.qmtaSend()
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertTrue(out.stdoutText.contains("info: removed ossified message \(id)"), out.stdoutText)
        XCTAssertEqual(h.queueFiles(), ["mess/\(fresh % 23)/\(fresh)"])
    }
}
