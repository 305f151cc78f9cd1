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

    /// The ids and indexes bench/make_queue.py printed.
    func makeQueue(_ n: Int, _ extra: [String] = []) throws -> [UInt64] {
        let made = try TestEnv.run("/usr/bin/env", ["python3", TestEnv.packageRoot + "/bench/make_queue.py", queue, "\(n)"] + extra)
        XCTAssertEqual(made.exitCode, 0, made.stderrText)
        return made.stdoutText.split(separator: "\n").map { UInt64($0.split(separator: " ")[0])! }
    }

    func mtime(_ path: String) -> Int64 { Int64((try? Sys.stat(path))??.st_mtim.tv_sec ?? -1) }

    func setMtime(_ path: String, _ t: Int64) {
        var times = [timespec(tv_sec: time_t(t), tv_nsec: 0), timespec(tv_sec: time_t(t), tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0, path)
    }

    /// qmail-rm -r without an engine: each file of the chosen messages moves to
    /// <trash>/<id>.<folder>, unchanged; the others stay; -n moves nothing.
    func testYankWithoutAnEngine() throws {
        let ids = try makeQueue(4)
        func contents(_ id: UInt64) -> [String: [UInt8]] {
            var out: [String: [UInt8]] = [:]
            for f in ["mess/\(id % 23)/\(id)", "todo/\(id)", "intd/\(id)"] { out[String(f.prefix { $0 != "/" })] = TestEnv.read(queue + "/" + f) }
            return out
        }
        let before = contents(ids[1])
        let look = try run("qmail-rm", ["-r", "-n", "-p", "Subject: m1$"])
        XCTAssertEqual(look.stdoutText, "\(queue)/mess/\(ids[1] % 23)/\(ids[1]): yes\n1 message matched, 0 moved to the trash\n")
        XCTAssertFalse(Sys.exists(queue + "/trash"))
        let rm = try run("qmail-rm", ["-r", "-p", "Subject: m1$"])
        XCTAssertEqual(rm.exitCode, 0, rm.stderrText)
        let t = queue + "/trash"
        XCTAssertEqual(rm.stdoutText, """
            moved \(queue)/todo/\(ids[1]) to \(t)/\(ids[1]).todo
            moved \(queue)/intd/\(ids[1]) to \(t)/\(ids[1]).intd
            moved \(queue)/mess/\(ids[1] % 23)/\(ids[1]) to \(t)/\(ids[1]).mess
            1 message matched, 1 moved to the trash

            """)
        XCTAssertEqual(TestEnv.files(under: t).sorted(), ["\(ids[1]).intd", "\(ids[1]).mess", "\(ids[1]).todo"])
        for (f, bytes) in before { XCTAssertEqual(TestEnv.read(t + "/\(ids[1]).\(f)"), bytes, f) }
        var st = stat()
        XCTAssertEqual(stat(t, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700)
        XCTAssertEqual(try queued(), 3)
        // -y: another folder, relative to the queue or absolute; by id.
        let other = dir + "/elsewhere"
        let rm2 = try run("qmail-rm", ["-r", "-y", other, "\(ids[2])"])
        XCTAssertEqual(rm2.exitCode, 0, rm2.stderrText)
        XCTAssertEqual(TestEnv.files(under: other).sorted(), ["\(ids[2]).intd", "\(ids[2]).mess", "\(ids[2]).todo"])
        XCTAssertEqual(try queued(), 2)
        XCTAssertEqual(Set(TestEnv.files(under: queue + "/todo")), ["\(ids[0])", "\(ids[3])"])
    }

    /// -X and -x set the info file's time of exactly the chosen messages; -X moves
    /// each message's own time, 0 meaning a week; -x reads -f's format.
    func testRestampWithoutAnEngine() throws {
        let ids = try makeQueue(3, ["--preprocessed"])
        let info = ids.map { queue + "/info/\($0 % 23)/\($0)" }
        let t0: Int64 = 1_800_000_000
        for (i, p) in info.enumerated() { setMtime(p, t0 + Int64(i)) }
        let r = try run("qmail-rm", ["-X", "3600", "-p", "Subject: m[01]$"])
        XCTAssertEqual(r.exitCode, 0, r.stderrText)
        XCTAssertEqual(r.stdoutText, "Offsetting timestamps by 3600 seconds\n2 messages matched, 2 restamped\n")
        XCTAssertTrue(r.stderrText.contains("Set timestamp on \(info[0])"), r.stderrText)
        XCTAssertEqual(info.map(mtime), [t0 - 3600, t0 + 1 - 3600, t0 + 2])
        let week = try run("qmail-rm", ["-X", "0", "\(ids[2])"])
        XCTAssertEqual(week.stdoutText, "Offsetting timestamps by 604800 seconds\n1 message matched, 1 restamped\n")
        XCTAssertEqual(mtime(info[2]), t0 + 2 - 604800)
        let younger = try run("qmail-rm", ["-X", "-100", "\(ids[2])"])
        XCTAssertEqual(younger.exitCode, 0, younger.stderrText)
        XCTAssertEqual(mtime(info[2]), t0 + 2 - 604800 + 100)
        // -x: an absolute time (TZ=UTC here), in date(1)'s format or -f's.
        let env = environment.filter { !$0.hasPrefix("TZ=") } + ["TZ=UTC"]
        let x = try TestEnv.run(TestEnv.program("qmail-rm"), ["-x", "Mon Dec 07 10:00:00 UTC 2026", "-p", "Subject: m1$"], environment: env)
        XCTAssertEqual(x.exitCode, 0, x.stderrText)
        XCTAssertEqual(x.stdoutText, "time in seconds: 1796637600 [Mon Dec 07 10:00:00 UTC 2026]\n1 message matched, 1 restamped\n")
        XCTAssertEqual(info.map(mtime), [t0 - 3600, 1_796_637_600, t0 + 2 - 604800 + 100])
        let f = try TestEnv.run(TestEnv.program("qmail-rm"), ["-x", "07-12-2026 10:00:01", "-f", "%d-%m-%Y %H:%M:%S", "\(ids[0])"], environment: env)
        XCTAssertEqual(f.exitCode, 0, f.stderrText)
        XCTAssertEqual(mtime(info[0]), 1_796_637_601)
        // A bad date changes nothing: exit 111 and where the parsing stopped.
        let bad = try TestEnv.run(TestEnv.program("qmail-rm"), ["-x", "07-12-2026 10:00:01 junk", "-f", "%d-%m-%Y %H:%M:%S", "\(ids[0])"], environment: env)
        XCTAssertEqual(bad.exitCode, 111)
        XCTAssertEqual(bad.stdoutText, "Error parsing the date specified at: [ junk] col 19 [07-12-2026 10:00:01 junk]\n")
        XCTAssertEqual(mtime(info[0]), 1_796_637_601)
        XCTAssertEqual(try run("qmail-rm", ["-x", "now", "-X", "5", "\(ids[0])"]).exitCode, 100)
        // -n: nothing changes.
        let dry = try run("qmail-rm", ["-n", "-X", "5", "\(ids[0])"])
        XCTAssertEqual(dry.exitCode, 0)
        XCTAssertEqual(mtime(info[0]), 1_796_637_601)
        // qmail-qread shows the new arrival times.
        let json = try run("qmail-qread", ["--json"]).stdoutText
        XCTAssertTrue(json.contains("\"queue_id\":\"\(ids[1])\",\"split\":\(ids[1] % 23),\"state\":\"preprocessed\",\"arrival_time\":1796637600"), json)
    }

    /// With the engine running: yanked messages are held while their files move, land
    /// in the trash intact and are never delivered; restamped ones get the new time
    /// (and a deferral past the queue lifetime becomes a failure); the engine logs each.
    func testYankAndRestampBesideTheEngine() throws {
        let home = dir + "/alice"
        TestEnv.write(home + "/.qmail-defer", "|echo try later; exit 111\n")
        _ = try? TestEnv.run("/bin/chown", ["-R", "65534:65534", home])
        TestEnv.write(dir + "/control/holdlocal", "1\n")
        let ids = try makeQueue(6)
        let deferred = try makeQueue(1, ["--to", "alice-defer@example.test"])[0]
        try startEngine()
        func preprocessed(_ id: UInt64) -> Bool { Sys.exists(queue + "/info/\(id % 23)/\(id)") }
        waitFor("preprocessing", seconds: 30) { (ids + [deferred]).allSatisfy(preprocessed) && TestEnv.files(under: queue + "/todo").isEmpty }
        let yanked = [ids[1], ids[4]]
        var before: [UInt64: [String: [UInt8]]] = [:]
        for id in yanked {
            for f in ["mess", "info", "local"] { before[id, default: [:]][f] = TestEnv.read(queue + "/\(f)/\(id % 23)/\(id)") }
        }
        let rm = try run("qmail-rm", ["-r", "-e", "-p", "Subject: m(1|4)$"])
        XCTAssertEqual(rm.exitCode, 0, rm.stderrText)
        XCTAssertTrue(rm.stdoutText.hasSuffix("2 messages matched, 2 moved to the trash\n"), rm.stdoutText)
        for id in yanked {
            XCTAssertEqual(Set(TestEnv.files(under: queue + "/trash").filter { $0.hasPrefix("\(id).") }), ["\(id).mess", "\(id).info", "\(id).local"])
            for (f, bytes) in before[id]! { XCTAssertEqual(TestEnv.read(queue + "/trash/\(id).\(f)"), bytes, "\(id) \(f)") }
            XCTAssertTrue(log().contains("info: msg \(id) held by the operator: to be moved to the trash"), log())
            XCTAssertTrue(log().contains("info: msg \(id) moved to the trash by the operator"), log())
            XCTAssertFalse(preprocessed(id))
        }
        // Restamp: -X moves the arrival back a day; the deferred message is made a week
        // older than its queue lifetime (-X 0 would make it exactly as old as its
        // lifetime, which is not past it when everything runs within one second).
        let infoOf = { (id: UInt64) in self.queue + "/info/\(id % 23)/\(id)" }
        let was = mtime(infoOf(ids[0]))
        let r = try run("qmail-rm", ["-X", "86400", "\(ids[0])"])
        XCTAssertEqual(r.exitCode, 0, r.stderrText)
        XCTAssertEqual(mtime(infoOf(ids[0])), was - 86400)
        XCTAssertTrue(log().contains("info: msg \(ids[0]) restamped by the operator: arrival \(was - 86400)"), log())
        let old = try run("qmail-rm", ["-X", "1209600", "\(deferred)"])
        XCTAssertEqual(old.exitCode, 0, old.stderrText)
        // Deliveries resume: every message but the yanked ones arrives; the restamped
        // deferred one fails for good instead of being tried again.
        unlink(dir + "/control/holdlocal")
        kill(pid, SIGHUP)
        let expected = Set([0, 2, 3, 5])
        waitFor("the deliveries", seconds: 60) { Set(self.delivered()) == expected }
        waitFor("the deferred message's failure", seconds: 60) { self.log().contains("failure:") && !Sys.exists(infoOf(deferred)) }
        usleep(500_000)
        XCTAssertEqual(Set(delivered()), expected)
        XCTAssertEqual(delivered().count, 4)
        stopEngine()
        // The trash is untouched by the engine.
        XCTAssertEqual(TestEnv.files(under: queue + "/trash").count, 6)
        for id in yanked { XCTAssertFalse(log().contains("msg \(id) to local"), log()) }
    }
}
