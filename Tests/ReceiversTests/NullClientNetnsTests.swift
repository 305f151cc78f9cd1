import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Mail spread over hosts, each host a network namespace of its own on this
/// machine (veth pairs, private addresses, nothing leaves the machine): two
/// null clients (qmail-inject with QMAILQUEUE=qmail-qmqpc, no queue), one
/// central queue host (qmail-qmqpd as a daemon, writing in-process, and
/// qmail-send with its own QUEUEDIR), and a fourth host with an SMTP sink
/// (Postfix's smtp-sink) and a QMTP server (qmail-qmtpd writing a queue of its
/// own, reached through the queue host's qmtproutes).
/// The queue host's qmail-qmqpd is killed and started again while the clients
/// inject. Every message either got success from qmail-inject and is
/// delivered (to alice's Maildir on the queue host, or to the sink), or its
/// client got a temporary error (exit 111 with the queue-client layer's
/// text); none is lost.
final class NullClientNetnsTests: XCTestCase {
    var dir = ""
    var namespaces: [String] = []
    var pids: [pid_t] = []
    let uid: uid_t = 65534

    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("netns")
        chmod(dir, 0o755)
        // Namespaces left by an earlier run of this test that was killed (its pid is gone).
        if let list = try? TestEnv.run("/usr/sbin/ip", ["netns", "list"]) {
            for line in list.stdoutText.split(separator: "\n") {
                let name = String(line.split(separator: " ").first ?? "")
                let parts = name.split(separator: "-")
                if parts.count == 3, parts[0] == "sq21", let p = Int32(parts[1]), kill(p, 0) != 0 {
                    _ = try? TestEnv.run("/usr/sbin/ip", ["netns", "del", name])
                }
            }
        }
    }

    override func tearDown() {
        for p in pids { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        for n in namespaces { _ = try? TestEnv.run("/usr/sbin/ip", ["netns", "del", n]) }
        TestEnv.remove(dir)
    }

    @discardableResult
    func ip(_ args: [String]) throws -> TestEnv.Output {
        let out = try TestEnv.run("/usr/sbin/ip", args)
        if out.exitCode != 0 { throw SystemError("ip \(args.joined(separator: " ")): \(out.stderrText)", errno: EIO) }
        return out
    }

    func namespace(_ role: String) throws -> String {
        let n = "sq21-\(getpid())-\(role)"
        try ip(["netns", "add", n])
        namespaces.append(n)
        try ip(["-n", n, "link", "set", "lo", "up"])
        return n
    }

    /// A veth pair between two namespaces, with an address on each end of a /24.
    func link(_ a: String, _ aAddr: String, _ b: String, _ bAddr: String, _ tag: String) throws {
        let va = "v\(tag)a", vb = "v\(tag)b"
        try ip(["link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b])
        try ip(["-n", a, "addr", "add", aAddr + "/24", "dev", va])
        try ip(["-n", b, "addr", "add", bAddr + "/24", "dev", vb])
        try ip(["-n", a, "link", "set", va, "up"])
        try ip(["-n", b, "link", "set", vb, "up"])
    }

    /// A program inside a namespace; its pid (ip netns exec execs it, so this is the program's).
    func start(_ ns: String, _ argv: [String], env: [String], log: String) throws -> pid_t {
        let fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(fd) }
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(null) }
        let pid = try Spawn.start("/usr/sbin/ip", arguments: ["ip", "netns", "exec", ns] + argv, environment: env,
                                  fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        pids.append(pid)
        return pid
    }

    func waitFor(_ what: String, seconds: Int, _ condition: () -> Bool) -> Bool {
        let deadline = time(nil) + time_t(seconds)
        while !condition() {
            if time(nil) > deadline { XCTFail("timed out waiting for \(what)"); return false }
            usleep(50_000)
        }
        return true
    }

    func text(_ path: String) -> String { String(decoding: TestEnv.read(path), as: UTF8.self) }

    func testTwoNullClientsOneQueueHostAndASinkWithTheQueueDaemonRestarted() throws {
        guard Sys.isExecutable("/usr/sbin/ip") else { XCTFail("ip is not installed (scripts/ensure-deps installs iproute2)"); return }
        guard Sys.isExecutable("/usr/sbin/smtp-sink") else { XCTFail("smtp-sink is not installed (postfix)"); return }
        // ---- the hosts and their links: clients 10.21.1.2 and 10.21.2.2, sink 10.21.3.2,
        // the queue host .1 on each link.
        let queueNS = try namespace("q"), c1 = try namespace("c1"), c2 = try namespace("c2"), sinkNS = try namespace("s")
        try link(queueNS, "10.21.1.1", c1, "10.21.1.2", "\(getpid() % 100000)x")
        try link(queueNS, "10.21.2.1", c2, "10.21.2.2", "\(getpid() % 100000)y")
        try link(queueNS, "10.21.3.1", sinkNS, "10.21.3.2", "\(getpid() % 100000)z")

        // ---- the queue host: a queue, alice with a Maildir, the remote domain routed to the sink.
        let qhome = dir + "/queuehost"
        mkdir(qhome, 0o755)
        let queue = qhome + "/queue", control = qhome + "/control"
        let fix = try TestEnv.run(TestEnv.program("queue-fix"), [queue])
        XCTAssertEqual(fix.exitCode, 0, fix.stderrText)
        mkdir(control, 0o755)
        mkdir(qhome + "/users", 0o755)
        TestEnv.write(control + "/me", "queue.example\n")
        TestEnv.write(control + "/smtproutes", "remote.example:10.21.3.2:25\n")
        TestEnv.write(control + "/qmtproutes", "qmtp.example:10.21.3.2\n")
        let alice = qhome + "/alice"
        for d in ["", "/Maildir", "/Maildir/new", "/Maildir/cur", "/Maildir/tmp"] { mkdir(alice + d, 0o700) }
        TestEnv.write(qhome + "/users/assign", "=alice:alice:\(uid):\(uid):\(alice):::\n.\n")
        _ = try TestEnv.run("/bin/chown", ["-R", "\(uid):\(uid)", alice, queue])   // qmail-qmqpd serves as nobody and writes the queue
        let qenv = TestEnv.environment(["QMAILHOME": qhome, "QUEUEDIR": queue, "CONTROLDIR": control, "QMAILQUEUE": nil,
                                        "NULLQUEUE": nil, "USE_FSYNC": nil, "USE_SYNCDIR": nil])
        let sinkDir = dir + "/sink"
        mkdir(sinkDir, 0o777)
        chmod(sinkDir, 0o777)
        _ = try start(sinkNS, ["/usr/sbin/smtp-sink", "-u", "nobody", "-d", sinkDir + "/%M.", "10.21.3.2:25", "100"], env: qenv,
                      log: dir + "/sink.log")
        // The fourth host's QMTP server, with a queue of its own.
        let qmtpHome = dir + "/qmtphost"
        mkdir(qmtpHome, 0o755)
        let qmtpQueue = qmtpHome + "/queue"
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [qmtpQueue]).exitCode, 0)
        _ = try TestEnv.run("/bin/chown", ["-R", "\(uid):\(uid)", qmtpQueue])
        mkdir(qmtpHome + "/control", 0o755)
        TestEnv.write(qmtpHome + "/control/me", "qmtp.example\n")
        TestEnv.write(qmtpHome + "/control/rcpthosts", "qmtp.example\n")
        let qmtpLog = dir + "/qmtpd.log"
        _ = try start(sinkNS, [TestEnv.program("qmail-qmtpd"), "--daemon", "--listen", "10.21.3.2:209", "--user", "nobody"],
                      env: TestEnv.environment(["QMAILHOME": qmtpHome, "QUEUEDIR": qmtpQueue, "CONTROLDIR": qmtpHome + "/control",
                                                "QMAILQUEUE": nil, "NULLQUEUE": nil]), log: qmtpLog)
        guard waitFor("qmail-qmtpd", seconds: 20, { text(qmtpLog).contains("listening on") }) else { return }
        let sendLog = dir + "/send.log"
        _ = try start(queueNS, [TestEnv.program("qmail-send"), "./Maildir/"], env: qenv, log: sendLog)
        guard waitFor("qmail-send", seconds: 20, { text(sendLog).contains("status: local 0/") }) else { return }
        let qmqpdLog = dir + "/qmqpd.log"
        let qmqpdArgs = [TestEnv.program("qmail-qmqpd"), "--daemon", "--listen", "0.0.0.0:628", "--allow", "10.21.0.0/16", "--user", "nobody"]
        var qmqpd = try start(queueNS, qmqpdArgs, env: qenv, log: qmqpdLog)
        guard waitFor("qmail-qmqpd", seconds: 20, { text(qmqpdLog).contains("listening on") }) else { return }
        XCTAssertTrue(text(qmqpdLog).contains("in-process"), text(qmqpdLog))

        // ---- the null clients: control files only (no queue), qmail-inject through qmail-qmqpc.
        let perClient = 100
        var clientPIDs: [pid_t] = []
        for (n, (ns, server)) in [(c1, "10.21.1.1"), (c2, "10.21.2.1")].enumerated() {
            let home = dir + "/client\(n + 1)"
            mkdir(home, 0o755)
            mkdir(home + "/control", 0o755)
            TestEnv.write(home + "/control/qmqpservers", server + "\n")
            TestEnv.write(home + "/control/me", "client\(n + 1).example\n")
            TestEnv.write(home + "/control/defaulthost", "client\(n + 1).example\n")
            TestEnv.write(home + "/control/timeoutconnect", "2\n")
            TestEnv.write(home + "/control/timeoutremote", "5\n")
            let cenv = TestEnv.environment(["QMAILHOME": home, "CONTROLDIR": home + "/control", "QUEUEDIR": home + "/noqueue",
                                            "QMAILQUEUE": TestEnv.program("qmail-qmqpc"), "NULLQUEUE": nil])
            // Each message: to alice on the queue host, to the SMTP sink, or over QMTP to the
            // fourth host, in turn; one line per message with its exit code, then its error text.
            let script = """
                i=0
                while [ $i -lt \(perClient) ]; do
                  case $((i % 3)) in 0) to=alice@queue.example;; 1) to=r$i@remote.example;; *) to=q$i@qmtp.example;; esac
                  err=$(printf 'Subject: m-\(n + 1)-%d\\n\\nbody %d\\n' $i $i | \(TestEnv.program("qmail-inject")) -fs@client\(n + 1).example "$to" 2>&1)
                  echo "$i $? $err" >> \(home)/results
                  i=$((i + 1))
                done
                echo done >> \(home)/results
                """
            clientPIDs.append(try start(ns, ["/bin/sh", "-c", script], env: cenv, log: home + "/client.log"))
        }

        // ---- kill qmail-qmqpd while the clients send, and start it again.
        func sent() -> Int {
            (1...2).map { text(dir + "/client\($0)/results").split(separator: "\n").count }.reduce(0, +)
        }
        guard waitFor("the first messages", seconds: 30, { sent() >= 30 }) else { return }
        kill(qmqpd, SIGKILL)
        _ = try? Spawn.wait(qmqpd)
        pids.removeAll { $0 == qmqpd }
        let downAt = sent()
        guard waitFor("messages while the server is down", seconds: 30, { sent() >= min(downAt + 10, 2 * perClient + 2) }) else { return }
        qmqpd = try start(queueNS, qmqpdArgs, env: qenv, log: qmqpdLog)
        for p in clientPIDs { _ = try Spawn.wait(p); pids.removeAll { $0 == p } }

        // ---- every message: success and delivered, or a temporary error at its client.
        var succeeded: Set<String> = [], refused = 0
        for n in 1...2 {
            let lines = text(dir + "/client\(n)/results").split(separator: "\n")
            XCTAssertEqual(lines.last, "done")
            XCTAssertEqual(lines.count, perClient + 1)
            for l in lines.dropLast() {
                let f = l.split(separator: " ", maxSplits: 2).map(String.init)
                if f[1] == "0" { succeeded.insert("m-\(n)-\(f[0])"); continue }
                refused += 1
                XCTAssertEqual(f[1], "111", String(l))
                XCTAssertTrue(l.contains("qq connection to mail server rejected (#4.4.1)")
                              || l.contains("qq communication with mail server failed (#4.4.2)")
                              || l.contains("qq connection to mail server timed out (#4.4.1)"), String(l))
            }
        }
        XCTAssertGreaterThan(refused, 0, "the server was down: some client must have been refused")
        XCTAssertGreaterThan(succeeded.count, 2 * perClient / 2)
        func delivered() -> Set<String> {
            var out: Set<String> = []
            let files = ((try? Sys.listDirectory(alice + "/Maildir/new")) ?? []).map { alice + "/Maildir/new/" + $0 }
                + TestEnv.files(under: sinkDir).map { sinkDir + "/" + $0 }
                + TestEnv.files(under: qmtpQueue + "/mess").map { qmtpQueue + "/mess/" + $0 }
            for f in files {
                for line in text(f).split(separator: "\n") where line.hasPrefix("Subject: m-") { out.insert(String(line.dropFirst(9))) }
            }
            return out
        }
        _ = waitFor("every acknowledged message delivered", seconds: 60) { succeeded.isSubset(of: delivered()) }
        let missing = succeeded.subtracting(delivered())
        print("null clients: \(succeeded.count) acknowledged, \(refused) refused while qmail-qmqpd was down (killed after \(downAt)), \(delivered().count) delivered")
        XCTAssertTrue(missing.isEmpty, "acknowledged and not delivered: \(missing.sorted().prefix(20))")
        // Every way out was used: alice's Maildir on the queue host, SMTP and QMTP to the fourth host.
        for way in 0..<3 { XCTAssertTrue(delivered().contains { Int($0.split(separator: "-").last!).map { $0 % 3 == way } ?? false }, "\(way)") }
        XCTAssertTrue(text(sendLog).contains("Protocol_QMTP"), "no QMTP delivery in the engine's log")
        // The restarted daemon serves again: one more message from a client.
        let home = dir + "/client1"
        let again = try TestEnv.run("/usr/sbin/ip", ["netns", "exec", c1, TestEnv.program("qmail-inject"), "-fs@client1.example", "alice@queue.example"],
                                    input: Array("Subject: m-1-after\n\nafter the restart\n".utf8),
                                    environment: TestEnv.environment(["QMAILHOME": home, "CONTROLDIR": home + "/control",
                                                                      "QMAILQUEUE": TestEnv.program("qmail-qmqpc"), "NULLQUEUE": nil]))
        XCTAssertEqual(again.exitCode, 0, again.stderrText)
        _ = waitFor("the message after the restart", seconds: 30) { delivered().contains("m-1-after") }
    }
}
