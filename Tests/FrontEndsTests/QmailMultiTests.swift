#if canImport(Glibc)
import Glibc
#endif
import XCTest
import Foundation
import SystemIO
import TestSupport

/// qmail-multi spreading messages over several queues, each drained by its own
/// qmail-send (the real engine, one process per queue as the systemd template
/// unit runs them), and its filter.
final class QmailMultiTests: XCTestCase {
    var dir = ""
    var base: String { dir + "/queues" }
    let uid: uid_t = 65534

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("multi")
        chmod(dir, 0o755)
        try Sys.mkdir(base, mode: 0o755)
        for n in 1...5 {
            let fix = try TestEnv.run(TestEnv.program("queue-fix"), [base + "/queue\(n)"])
            XCTAssertEqual(fix.exitCode, 0, fix.stderrText)
        }
        for d in ["control", "users", "home", "home/alice", "home/alice/Maildir", "home/alice/Maildir/new",
                  "home/alice/Maildir/cur", "home/alice/Maildir/tmp"] { try Sys.mkdir(dir + "/" + d, mode: 0o755) }
        _ = try TestEnv.run("/bin/chown", ["-R", "\(uid):\(uid)", dir + "/home/alice"])
        TestEnv.write(dir + "/control/me", "example.test\n")
        TestEnv.write(dir + "/users/assign", "=alice:alice:\(uid):\(uid):\(dir)/home/alice:::\n.\n")
        TestEnv.write(dir + "/envelope", "Fsender@example.test\0Talice@example.test\0\0")
    }

    override func tearDown() { TestEnv.remove(dir) }

    func env(_ extra: [String: String?]) -> [String] {
        var e: [String: String?] = ["QMAILHOME": dir, "CONTROLDIR": dir + "/control", "QUEUEDIR": nil, "QUEUE_BASE": base,
                                   "QUEUE_START": "1", "QUEUE_COUNT": "5", "QMAILQUEUE": nil, "NULLQUEUE": nil, "QUEUEPROG": nil,
                                   "FILTERARGS": nil, "MIN_FREE": nil]
        for (k, v) in extra { e[k] = v }
        return TestEnv.environment(e)
    }

    func todo(_ n: Int) -> [String] { (try? TestEnv.files(under: base + "/queue\(n)/todo")) ?? [] }

    func testTenThousandInjectionsOverFiveQueuesEachDrainedByItsOwnEngine() throws {
        // One engine per queue.
        var engines: [(pid: pid_t, log: String)] = []
        defer { for e in engines { kill(e.pid, SIGTERM); _ = try? Spawn.wait(e.pid) } }
        for n in 1...5 {
            let log = dir + "/send\(n).log"
            let fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            let null = open("/dev/null", O_RDONLY)
            let pid = try Spawn.start(TestEnv.program("qmail-send"), arguments: ["qmail-send", "./Maildir/"],
                                      environment: env(["QUEUEDIR": base + "/queue\(n)", "QUEUE_BASE": nil]),
                                      fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
            close(fd); close(null)
            engines.append((pid, log))
        }
        func logText(_ n: Int) -> String { String(decoding: TestEnv.read(engines[n].log), as: UTF8.self) }
        waitFor("the engines to start", seconds: 30) { (0..<5).allSatisfy { logText($0).contains("status: local 0/10") } }

        // 10,000 injections through qmail-multi (it execs qmail-queue), four streams at once
        // (qmail-queue waits on fsync most of its time).
        let total = 10_000
        let script = """
        i=$1
        while [ $i -le $2 ]; do
            printf 'Message-ID: <%d@multi.test>\\nSubject: m %d\\n\\nbody %d\\n' $i $i $i | "$MULTI" 1<"$ENVELOPE" || echo "failed $i: $?"
            i=$((i + 1))
        done
        """
        TestEnv.write(dir + "/inject.sh", script, mode: 0o755)
        let started = Date()
        let streams = 4
        final class Box: @unchecked Sendable { var output: TestEnv.Output? }
        let boxes = (0..<streams).map { _ in Box() }
        let share = total / streams
        let threads = (0..<streams).map { k in
            Thread {
                boxes[k].output = try? TestEnv.run("/bin/sh", [self.dir + "/inject.sh", "\(k * share + 1)", "\((k + 1) * share)"],
                                              environment: self.env(["MULTI": TestEnv.program("qmail-multi"), "ENVELOPE": self.dir + "/envelope"]))
            }
        }
        for t in threads { t.join() }
        let injected = Date().timeIntervalSince(started)
        for o in boxes.map({ $0.output }) {
            XCTAssertEqual(o?.exitCode, 0)
            XCTAssertEqual(o?.stdoutText, "", "failed injections")
        }
        // Everything delivered, every queue empty.
        let maildir = dir + "/home/alice/Maildir/new"
        waitFor("10,000 deliveries", seconds: 150) { ((try? Sys.listDirectory(maildir)) ?? []).count >= total }
        let drained = Date().timeIntervalSince(started)
        waitFor("empty queues", seconds: 30) { (1...5).allSatisfy { todo($0).isEmpty && ((try? TestEnv.files(under: base + "/queue\($0)/mess")) ?? []).isEmpty } }
        let files = (try? Sys.listDirectory(maildir)) ?? []
        XCTAssertEqual(files.count, total)
        var seen = Set<Int>()
        for f in files {
            let text = String(decoding: TestEnv.read(maildir + "/" + f), as: UTF8.self)
            guard let r = text.range(of: "Message-ID: <"), let end = text[r.upperBound...].firstIndex(of: "@"),
                  let i = Int(text[r.upperBound..<end]) else { XCTFail("no Message-ID in \(f)"); continue }
            XCTAssertFalse(seen.contains(i), "message \(i) delivered twice")
            seen.insert(i)
        }
        XCTAssertEqual(seen, Set(1...total), "every message delivered once")
        // The distribution: each engine logged the messages its queue received.
        let counts = (0..<5).map { n in logText(n).components(separatedBy: "\n").filter { $0.contains("new msg ") }.count }
        XCTAssertEqual(counts.reduce(0, +), total, "\(counts)")
        for c in counts { XCTAssertTrue((1600...2400).contains(c), "uneven spread \(counts)") }
        let record = "qmail-multi: \(total) messages over 5 queues: \(counts.map(String.init).joined(separator: " ")); injected in \(String(format: "%.1f", injected)) s, all delivered in \(String(format: "%.1f", drained)) s\n"
        print(record)
        try? Sys.writeFile(TestEnv.packageRoot + "/.build/qmail-multi-distribution.txt", Array(record.utf8))
    }

    func testFilterAndMinFree() throws {
        let q1 = base + "/queue1"
        func multi(_ extra: [String: String?]) throws -> TestEnv.Output {
            var e = extra
            e["QUEUE_COUNT"] = "1"
            return try TestEnv.run(TestEnv.program("qmail-multi"), input: Array("Subject: x\n\nhello\n".utf8),
                                   fd1Input: Array("Fa@example.test\0Tb@example.test\0\0".utf8), environment: env(e))
        }
        // The filter's output is queued.
        let ok = try multi(["FILTERARGS": "sed s/hello/filtered/"])
        XCTAssertEqual(ok.exitCode, 0, ok.stderrText)
        XCTAssertEqual(todo(1).count, 1)
        let id = UInt64(todo(1)[0])!
        XCTAssertTrue(String(decoding: TestEnv.read(q1 + "/mess/\(id % 23)/\(id)"), as: UTF8.self).hasSuffix("\nfiltered\n"))
        // Verdicts: dropped, refused, its own text, crash, other.
        XCTAssertEqual(try multi(["FILTERARGS": "cat >/dev/null; exit 99"]).exitCode, 0)
        XCTAssertEqual(try multi(["FILTERARGS": "cat >/dev/null; exit 100"]).exitCode, 31)
        let custom = try multi(["FILTERARGS": "cat >/dev/null; printf 'Dfilter: no thanks (#5.7.1)' >&2; exit 88"])
        XCTAssertEqual(custom.exitCode, 88)
        XCTAssertEqual(custom.stderrText, "Dfilter: no thanks (#5.7.1)")
        XCTAssertEqual(try multi(["FILTERARGS": "kill -9 $$"]).exitCode, 123)
        XCTAssertEqual(try multi(["FILTERARGS": "cat >/dev/null; exit 5"]).exitCode, 71)
        XCTAssertEqual(todo(1).count, 1, "nothing else queued")
        // MIN_FREE beyond the disk: "disk full" before anything is written.
        XCTAssertEqual(try multi(["MIN_FREE": "\(UInt64(1) << 62)"]).exitCode, 53)
        XCTAssertEqual(todo(1).count, 1)
        // QUEUEDIR set: no choice.
        XCTAssertEqual(try multi(["QUEUEDIR": base + "/queue4", "QUEUE_BASE": nil]).exitCode, 0)
        XCTAssertEqual(todo(4).count, 1)
    }

    /// The template unit scripts/install puts beside qmail-send.service: one engine
    /// per queue, qmail-send@N for <prefix>/queue/queueN; systemd accepts an instance.
    func testTemplateUnitForOneEnginePerQueue() throws {
        let prefix = dir + "/prefix"
        try Sys.mkdir(prefix, mode: 0o755)
        try Sys.mkdir(prefix + "/bin", mode: 0o755)
        XCTAssertEqual(symlink(TestEnv.program("qmail-send"), prefix + "/bin/qmail-send"), 0)
        let template = String(decoding: TestEnv.read(TestEnv.packageRoot + "/systemd/qmail-send@.service.in"), as: UTF8.self)
        let unit = template.replacingOccurrences(of: "@PREFIX@", with: prefix)
        XCTAssertTrue(unit.contains("Environment=QUEUEDIR=\(prefix)/queue/queue%i\n"))
        XCTAssertTrue(unit.contains("ReadWritePaths=\(prefix)/queue/queue%i\n"))
        TestEnv.write(dir + "/qmail-send@3.service", unit)
        let verify = try TestEnv.run("/usr/bin/systemd-analyze", ["verify", dir + "/qmail-send@3.service"])
        XCTAssertEqual(verify.exitCode, 0, verify.stderrText + verify.stdoutText)
    }

    func testHelp() throws {
        let r = try TestEnv.run(TestEnv.program("qmail-multi"), ["--help"])
        XCTAssertEqual(r.exitCode, 0)
        XCTAssertTrue(r.stdoutText.contains("QUEUE_BASE"))
    }

    func waitFor(_ what: String, seconds: Double, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { XCTFail("timed out waiting for \(what)"); return }
            usleep(50_000)
        }
    }
}
