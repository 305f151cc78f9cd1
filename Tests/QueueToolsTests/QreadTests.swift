import XCTest
import Foundation
import SystemIO
import QueueFormat
import LMDB
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A real queue written by the engine (qmail-send) holding a message in every state:
///
/// | message | sender | state |
/// |---|---|---|
/// | A | a@sender.test | partly delivered: alice done, alice-defer deferred (a retry time, a report) |
/// | B | b@sender.test | bouncing: alice-fail failed (bounce file), alice-defer deferred |
/// | C | c@sender.test | remote, deferred: bob@remote.test refused on 127.0.0.1 |
/// | D | d@sender.test | preprocessed, not tried (holdlocal) |
/// | E | e@sender.test | todo: queued while no engine ran |
///
/// Built once for the tests of this class.
final class ToolQueue {
    let dir: String
    var queue: String { dir + "/queue" }
    var control: String { dir + "/control" }
    var ids: [String: UInt64] = [:]

    var environment: [String] {
        TestEnv.environment(["QMAILHOME": dir, "QUEUEDIR": queue, "CONTROLDIR": control, "TZ": "UTC",
                             "QMAILQUEUE": nil, "NULLQUEUE": nil, "BOUNCEQUEUE": nil, "CONFSPLIT": nil, "BIGTODO": nil,
                             "QUEUE_BASE": nil])
    }

    init() throws {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("qread")
        chmod(dir, 0o755)
        let fix = try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "23", queue])
        precondition(fix.exitCode == 0, fix.stderrText)
        mkdir(control, 0o755)
        mkdir(dir + "/users", 0o755)
        TestEnv.write(control + "/me", "example.test\n")
        // Nothing listens on port 1: the remote delivery is refused at once and deferred.
        TestEnv.write(control + "/smtproutes", "remote.test:127.0.0.1:1\n")
        let home = dir + "/alice"
        for d in ["", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"] { mkdir(home + d, 0o755) }
        TestEnv.write(home + "/.qmail-defer", "|echo try later; exit 111\n")
        TestEnv.write(home + "/.qmail-fail", "|echo no such user here; exit 100\n")
        _ = try TestEnv.run("/bin/chown", ["-R", "65534:65534", home])
        TestEnv.write(dir + "/users/assign", "=alice:alice:65534:65534:\(home):::\n+alice-:alice:65534:65534:\(home):-::\n.\n")

        // Run 1: A, B and C are delivered as far as they go.
        var send = try startSend()
        inject("a", ["alice@example.test", "alice-defer@example.test"])
        inject("b", ["alice-fail@example.test", "alice-defer@example.test"])
        inject("c", ["bob@remote.test"])
        waitFor("five delivery reports") { send.log.components(separatedBy: "\n").filter { $0.contains(": deferral: ") || $0.contains(": success: ") || $0.contains(": failure: ") }.count >= 5 }
        XCTAssertNotNil(send.stop())
        // Run 2: D is preprocessed but held.
        TestEnv.write(control + "/holdlocal", "1\n")
        send = try startSend()
        inject("d", ["alice@example.test"])
        waitFor("D preprocessed") { send.log.contains("from <d@sender.test>") }
        running = send
    }

    var running: Daemon? = nil

    /// Stops the second engine run and queues E while no engine runs.
    func finish() {
        guard let d = running else { return }
        XCTAssertNotNil(d.stop())
        running = nil
        inject("e", ["alice@example.test", "carol@remote.test"])
        let logs = String(decoding: TestEnv.read(dir + "/send.log"), as: UTF8.self)
        for line in logs.components(separatedBy: "\n") where line.hasPrefix("info msg ") {
            // info msg 123: bytes 456 from <a@sender.test> qp 1 uid 0
            let parts = line.split(separator: " ")
            guard parts.count > 6, let id = UInt64(parts[2].dropLast()) else { continue }
            let sender = parts[6].dropFirst().dropLast()
            ids[String(sender.prefix(1))] = id
        }
        let todo = (try? Sys.listDirectory(queue + "/todo")) ?? []
        if todo.count == 1, let id = UInt64(todo[0]) { ids["e"] = id }
    }

    final class Daemon {
        let pid: pid_t
        let logPath: String
        init(pid: pid_t, logPath: String) { self.pid = pid; self.logPath = logPath }
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        func stop() -> ExitStatus? {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            for _ in 0..<3000 {
                if waitpid(pid, &status, WNOHANG) == pid { return Spawn.decode(status) }
                usleep(10_000)
            }
            kill(pid, SIGKILL)
            _ = try? Spawn.wait(pid)
            return nil
        }
    }

    func startSend() throws -> Daemon {
        let logPath = dir + "/send.log"
        let before = TestEnv.read(logPath).count
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        defer { close(fd) }
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let pid = try Spawn.start(TestEnv.program("qmail-send"), arguments: ["qmail-send", "./Maildir/"], environment: environment,
                                  fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        let d = Daemon(pid: pid, logPath: logPath)
        waitFor("start") { String(d.log.dropFirst(before)).contains("status: local 0/10") }
        return d
    }

    func inject(_ who: String, _ rcpts: [String]) {
        let out = try! TestEnv.run(TestEnv.program("qmail-inject"), ["-f\(who)@sender.test"] + rcpts,
                                   input: Array("Subject: \(who)\n\nmessage \(who)\n".utf8), environment: environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
    }

    func waitFor(_ what: String, seconds: Double = 30, _ condition: () -> Bool) {
        let deadline = Double(time(nil)) + seconds
        while !condition() {
            if Double(time(nil)) > deadline { XCTFail("timed out waiting for \(what)"); return }
            usleep(20_000)
        }
    }

    /// `{id}`, `{split}`, `{size}`, `{date}` (indimail's), `{cdate}` (qmail's) of a message.
    func fields(_ who: String) -> [String: String] {
        let id = ids[who]!
        let split = id % 23
        let mess = try! Sys.stat(queue + "/mess/\(split)/\(id)")!
        let birthFile = who == "e" ? queue + "/todo/\(id)" : queue + "/info/\(split)/\(id)"
        let birth = try! Sys.stat(birthFile)!.st_mtim.tv_sec
        var t = time_t(birth)
        var tm = tm()
        gmtime_r(&t, &tm)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        let clock = String(format: "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec)
        let d = "\(tm.tm_mday) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) \(clock)"
        return ["id": "\(id)", "split": "\(split)", "size": "\(mess.st_size)", "date": "\(days[Int(tm.tm_wday)]), \(d)", "cdate": d,
                "birth": "\(birth)"]
    }

    func fill(_ template: String, _ who: String) -> String {
        var s = template
        for (k, v) in fields(who) { s = s.replacingOccurrences(of: "{\(k)}", with: v) }
        return s
    }

    /// Messages in the order the tools list them: by split folder, then id.
    func ordered(_ whos: [String]) -> [String] {
        whos.sorted { (ids[$0]! % 23, ids[$0]!) < (ids[$1]! % 23, ids[$1]!) }
    }

    func qread(_ args: [String], env: [String]? = nil, prefix: [String] = []) throws -> TestEnv.Output {
        if prefix.isEmpty { return try TestEnv.run(TestEnv.program("qmail-qread"), args, environment: env ?? environment) }
        return try TestEnv.run(prefix[0], Array(prefix.dropFirst()) + [TestEnv.program("qmail-qread")] + args, environment: env ?? environment)
    }
}

final class QreadTests: XCTestCase {
    nonisolated(unsafe) static var shared: ToolQueue? = nil
    nonisolated(unsafe) static var duringRun: TestEnv.Output? = nil

    var q: ToolQueue { QreadTests.shared! }

    override class func setUp() {
        let q = try! ToolQueue()
        // Read while the engine runs: it is not locked out, and neither are we.
        duringRun = try? q.qread(["--json"])
        q.finish()
        shared = q
    }

    override class func tearDown() {
        // QREAD_KEEP=1 keeps the queue for a look by hand.
        if let q = shared, getenv("QREAD_KEEP") == nil { TestEnv.remove(q.dir) }
        shared = nil
    }

    // Golden outputs: one block per message, filled with the message's id, split
    // folder, size and birth date, in the order the tools list them.
    static let indimailBlocks: [String: String] = [
        "a": "{date} GMT  {split}/#{id}  {size}  <a@sender.test> \n  done\tlocal\talice@example.test\n\tlocal\talice-defer@example.test\n",
        "b": "{date} GMT  {split}/#{id}  {size}  <b@sender.test>  bouncing\n  done\tlocal\talice-fail@example.test\n\tlocal\talice-defer@example.test\n",
        "c": "{date} GMT  {split}/#{id}  {size}  <c@sender.test> \n\tremote\tbob@remote.test\n",
        "d": "{date} GMT  {split}/#{id}  {size}  <d@sender.test> \n\tlocal\talice@example.test\n",
        "e": "{date} GMT  {split}/#{id}  {size}  <e@sender.test> \n\ttodo\talice@example.test\n\ttodo\tcarol@remote.test\n",
    ]
    static let classicBlocks: [String: String] = [
        "a": "{cdate} GMT  #{id}  {size}  <a@sender.test> \n  done\tlocal\talice@example.test\n\tlocal\talice-defer@example.test\n",
        "b": "{cdate} GMT  #{id}  {size}  <b@sender.test>  bouncing\n  done\tlocal\talice-fail@example.test\n\tlocal\talice-defer@example.test\n",
        "c": "{cdate} GMT  #{id}  {size}  <c@sender.test> \n\tremote\tbob@remote.test\n",
        "d": "{cdate} GMT  #{id}  {size}  <d@sender.test> \n\tlocal\talice@example.test\n",
    ]

    func testQueueHoldsEveryState() {
        XCTAssertEqual(Set(q.ids.keys), ["a", "b", "c", "d", "e"], "\(q.ids)")
    }

    func testIndimailFormatWithCounts() throws {
        let out = try q.qread(["-a", "-c"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        var want = q.ordered(["a", "b", "c", "d"]).map { q.fill(QreadTests.indimailBlocks[$0]!, $0) }.joined()
        want += q.fill(QreadTests.indimailBlocks["e"]!, "e")
        want += "Total Messages in local  queue: 5\nTotal Messages in remote queue: 1\nTotal Messages in bounce queue: 1\nTotal Messages in todo   queue: 2\n"
        XCTAssertEqual(out.stdoutText, want)
        XCTAssertEqual(out.stderrText, "")
    }

    func testDefaultIsLocalAndRemote() throws {
        let out = try q.qread([])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, q.ordered(["a", "b", "c", "d"]).map { q.fill(QreadTests.indimailBlocks[$0]!, $0) }.joined())
    }

    func testRemoteOnlySilentCounts() throws {
        let r = try q.qread(["-r"])
        XCTAssertEqual(r.stdoutText, q.fill(QreadTests.indimailBlocks["c"]!, "c"))
        let s = try q.qread(["-c", "-s", "-l"])
        XCTAssertEqual(s.stdoutText, "Total Messages in local  queue: 5\nTotal Messages in bounce queue: 1\n")
    }

    func testClassicFormat() throws {
        let out = try q.qread(["--classic"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, q.ordered(["a", "b", "c", "d"]).map { q.fill(QreadTests.classicBlocks[$0]!, $0) }.joined())
    }

    /// The next attempt the engine stored for (id, channel), read straight from LMDB.
    func storedNextAttempt(_ id: UInt64, channel: UInt8) throws -> Int64? {
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        o.readOnly = true
        o.mapSize = 4 << 30
        let env = try LMDBEnvironment(path: q.queue + "/lock/engine.lmdb", options: o)
        guard let db = try env.existingDatabase("schedule") else { return nil }
        var key: [UInt8] = (0..<8).map { UInt8(truncatingIfNeeded: id >> UInt64(56 - 8 * $0)) }
        key.append(channel)
        guard let v = try env.read({ try $0.get(db, key) }) else { return nil }
        return v.reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

    func testJSONMatchesTheSchedule() throws {
        let out = try q.qread(["--json"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let lines = out.stdoutText.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        var byID: [String: [String: Any]] = [:]
        for l in lines {
            let o = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any], String(l))
            byID[o["queue_id"] as! String] = o
        }
        func msg(_ who: String) -> [String: Any] { byID["\(q.ids[who]!)"]! }
        func rcpts(_ who: String) -> [[String: Any]] { msg(who)["recipients"] as! [[String: Any]] }
        for who in ["a", "b", "c", "d", "e"] {
            let f = q.fields(who)
            XCTAssertEqual(msg(who)["queue_name"] as? String, "queue")
            XCTAssertEqual(msg(who)["sender"] as? String, "\(who)@sender.test")
            XCTAssertEqual(msg(who)["message_size"] as? Int, Int(f["size"]!))
            XCTAssertEqual(msg(who)["arrival_time"] as? Int, Int(f["birth"]!))
            XCTAssertEqual(msg(who)["state"] as? String, who == "e" ? "todo" : "preprocessed")
            XCTAssertEqual(msg(who)["bouncing"] as? Bool, who == "b")
            XCTAssertNil(msg(who)["problems"])
        }
        // A: alice done; alice-defer deferred with the engine's retry time and report.
        let a = rcpts("a")
        XCTAssertEqual(a.map { $0["address"] as! String }, ["alice@example.test", "alice-defer@example.test"])
        XCTAssertEqual(a.map { $0["done"] as! Bool }, [true, false])
        XCTAssertEqual(a.map { $0["channel"] as! String }, ["local", "local"])
        let next = try XCTUnwrap(storedNextAttempt(q.ids["a"]!, channel: 0))
        XCTAssertGreaterThan(next, Int64(q.fields("a")["birth"]!)!)
        XCTAssertEqual(a[1]["next_attempt"] as? Int, Int(next))
        XCTAssertNil(a[0]["next_attempt"])
        let report = try XCTUnwrap(a[1]["last_report"] as? [String: Any])
        XCTAssertEqual(report["status"] as? String, "deferral")
        XCTAssertTrue((report["text"] as? String ?? "").contains("try later"), "\(report)")
        XCTAssertEqual(a[1]["delay_reason"] as? String, report["text"] as? String)
        if let r0 = a[0]["last_report"] as? [String: Any] { XCTAssertEqual(r0["status"] as? String, "success") }
        // B: the failure is remembered beside the bounce.
        let b = rcpts("b")
        XCTAssertEqual(b.map { $0["done"] as! Bool }, [true, false])
        let fail = try XCTUnwrap(b[0]["last_report"] as? [String: Any])
        XCTAssertEqual(fail["status"] as? String, "failure")
        XCTAssertTrue((fail["text"] as? String ?? "").contains("no such user here"), "\(fail)")
        // C: the remote deferral.
        let c = rcpts("c")
        XCTAssertEqual(c.first?["channel"] as? String, "remote")
        XCTAssertEqual(c.first?["next_attempt"] as? Int, try storedNextAttempt(q.ids["c"]!, channel: 1).map { Int($0) })
        XCTAssertEqual((c.first?["last_report"] as? [String: Any])?["status"] as? String, "deferral")
        // D: scheduled (held), never tried.
        let d = rcpts("d")
        XCTAssertEqual(d.first?["next_attempt"] as? Int, try storedNextAttempt(q.ids["d"]!, channel: 0).map { Int($0) })
        XCTAssertNil(d.first?["last_report"])
        // E: not yet preprocessed.
        XCTAssertEqual(rcpts("e").map { $0["channel"] as! String }, ["todo", "todo"])
    }

    func testReadWhileTheEngineRuns() throws {
        let out = try XCTUnwrap(QreadTests.duringRun)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText.split(separator: "\n").count, 4, out.stdoutText)
        XCTAssertTrue(out.stdoutText.contains("\"sender\":\"d@sender.test\""))
    }

    func testQstat() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-qstat"), [], environment: q.environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(out.stdoutText, "messages in queue: 5\nmessages in queue but not yet preprocessed: 1\n")
    }

    func testShape() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-qshape"), [], environment: q.environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        // Every message is younger than 5 minutes. example.test: A, B, D, E; remote.test: C, E.
        let pad = String(repeating: " ", count: 18)
        XCTAssertEqual(out.stdoutText,
                       pad + " T 5 10 20 40 80 160 320 640 1280 1280+\n"
                       + "             TOTAL 5 5  0  0  0  0   0   0   0    0     0\n"
                       + "      example.test 4 4  0  0  0  0   0   0   0    0     0\n"
                       + "       remote.test 2 2  0  0  0  0   0   0   0    0     0\n")
        let s = try TestEnv.run(TestEnv.program("qmail-qshape"), ["-s", "-t", "60", "-b", "3", "-l"], environment: q.environment)
        XCTAssertEqual(s.exitCode, 0, s.stderrText)
        XCTAssertEqual(s.stdoutText,
                       pad + " T 60 120 120+\n"
                       + "             TOTAL 5  5   0    0\n"
                       + "       sender.test 5  5   0    0\n")
    }

    /// A damaged copy of the queue: a truncated info file, a missing mess file and an
    /// unreadable folder are each named; the listing goes on; nothing is changed.
    func testBadInputIsNamedAndNothingChanges() throws {
        let copy = q.dir + "/damaged"
        XCTAssertEqual(try TestEnv.run("/bin/cp", ["-a", q.queue, copy]).exitCode, 0)
        defer { TestEnv.remove(copy) }
        let a = q.ids["a"]!, c = q.ids["c"]!
        TestEnv.write(copy + "/info/\(a % 23)/\(a)", "Fa@sender.te")          // no NUL: cut short
        unlink(copy + "/mess/\(c % 23)/\(c)")
        let used = Set(q.ids.values.map { Int($0 % 23) })
        let bad = (0..<23).first { !used.contains($0) }!
        _ = try TestEnv.run("/bin/chmod", ["-R", "a+rX", copy])
        chmod(copy + "/info/\(bad)", 0)
        func snapshot() throws -> String {
            try TestEnv.run("/usr/bin/find", [copy, "-printf", "%p %s %T@ %m\\n"]).stdoutText
                + TestEnv.run("/bin/sh", ["-c", "find \(copy) -type f -exec md5sum {} + | sort"]).stdoutText
        }
        let before = try snapshot()
        var env = q.environment.filter { !$0.hasPrefix("QUEUEDIR=") }
        env.append("QUEUEDIR=" + copy)
        let asNobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let out = try q.qread(["-a"], env: env, prefix: asNobody)
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertTrue(out.stderrText.contains("qmail-qread: warn: trouble with #\(a): info/\(a % 23)/\(a): truncated info file"), out.stderrText)
        XCTAssertTrue(out.stderrText.contains("qmail-qread: warn: trouble with #\(c): missing mess/\(c % 23)/\(c)"), out.stderrText)
        XCTAssertTrue(out.stderrText.contains("qmail-qread: warn: unable to read folder info/\(bad): Permission denied"), out.stderrText)
        // B, D and E are still listed.
        for who in ["b", "d", "e"] { XCTAssertTrue(out.stdoutText.contains("<\(who)@sender.test>"), out.stdoutText) }
        XCTAssertFalse(out.stdoutText.contains("<a@sender.test>"))
        let json = try q.qread(["--json"], env: env, prefix: asNobody)
        XCTAssertEqual(json.exitCode, 111)
        XCTAssertTrue(json.stderrText.contains("unable to read folder info/\(bad)"), json.stderrText)
        let lines = json.stdoutText.split(separator: "\n")
        XCTAssertEqual(lines.count, 5)
        for l in lines { XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(l.utf8))) }
        let aLine = try XCTUnwrap(lines.first { $0.contains("\"queue_id\":\"\(a)\"") })
        XCTAssertTrue(aLine.contains("\"arrival_time\":null") && aLine.contains("truncated info file"), String(aLine))
        let cLine = try XCTUnwrap(lines.first { $0.contains("\"queue_id\":\"\(c)\"") })
        XCTAssertTrue(cLine.contains("\"message_size\":null") && cLine.contains("missing mess/"), String(cLine))
        let stat = try TestEnv.run(asNobody[0], Array(asNobody.dropFirst()) + [TestEnv.program("qmail-qstat")], environment: env)
        XCTAssertEqual(stat.exitCode, 0, stat.stderrText)
        XCTAssertEqual(stat.stdoutText, "messages in queue: 4\nmessages in queue but not yet preprocessed: 1\n")
        XCTAssertEqual(try snapshot(), before)
    }

    func testUsage() throws {
        let h = try q.qread(["--help"])
        XCTAssertEqual(h.exitCode, 0)
        XCTAssertTrue(h.stdoutText.hasPrefix("usage: qmail-qread"))
        let bad = try q.qread(["-x"])
        XCTAssertEqual(bad.exitCode, 100)
        XCTAssertTrue(bad.stderrText.contains("unknown option -x"))
        for p in ["qmail-qstat", "qmail-qshape"] {
            let o = try TestEnv.run(TestEnv.program(p), ["--help"])
            XCTAssertEqual(o.exitCode, 0)
            XCTAssertTrue(o.stdoutText.hasPrefix("usage: \(p)"))
        }
    }
}
