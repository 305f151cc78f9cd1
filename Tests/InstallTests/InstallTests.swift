import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `scripts/install` into a fresh prefix, as root, then the installed host used
/// as a mail administrator would: an ordinary user sends mail with sendmail and
/// qmail-inject through the setuid qmail-queue, the engine splits itself into
/// qmail's users, mail reaches a Maildir and an SMTP sink on 127.0.0.1.
final class InstallTests: XCTestCase {
    static let user = "sqmailtest"
    var base = ""
    var prefix: String { base + "/qmail" }
    var queue: String { prefix + "/queue" }
    var units: String { base + "/units" }
    var home: String { base + "/home/" + InstallTests.user }
    var engines: [pid_t] = []
    var sinks: [pid_t] = []

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        base = TestEnv.temporaryDirectory("install")
        chmod(base, 0o755)          // qmailr, qmailq and the user walk through it
        mkdir(base + "/home", 0o755)
    }

    override func tearDown() {
        for p in engines { kill(p, SIGTERM) }
        for p in engines { _ = try? Spawn.wait(p) }
        for p in sinks { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        TestEnv.remove(base)
    }

    // MARK: helpers

    func install(_ extra: [String] = []) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.packageRoot + "/scripts/install",
                        ["--prefix", prefix, "--from", TestEnv.buildDirectory, "--unitdir", units] + extra)
    }

    func installHost() throws {
        let out = try install()
        XCTAssertEqual(out.exitCode, 0, out.stderrText + out.stdoutText)
        let control = prefix + "/control/"
        for (n, v) in [("me", "host.test.example"), ("locals", "host.test.example"), ("rcpthosts", "host.test.example"),
                       ("defaultdomain", "test.example"), ("plusdomain", "test.example")] {
            TestEnv.write(control + n, v + "\n")
        }
        try makeUser()
    }

    /// The ordinary user that sends and receives, with a Maildir in its home.
    func makeUser() throws {
        let u = InstallTests.user
        if getpwnam(u) == nil {
            let r = try TestEnv.run("/usr/sbin/useradd", ["--no-create-home", "--home-dir", home, "--shell", "/bin/sh", u])
            XCTAssertEqual(r.exitCode, 0, r.stderrText)
        } else {
            _ = try TestEnv.run("/usr/sbin/usermod", ["--home", home, u])
        }
        mkdir(home, 0o755)
        for d in ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] { mkdir(home + "/" + d, 0o700) }
        _ = try TestEnv.run("/bin/chown", ["-R", "\(u):", home])
    }

    /// A program run as the test user (runuser), with a clean environment.
    func asUser(_ program: String, _ args: [String], input: String, env: [String] = []) throws -> TestEnv.Output {
        try TestEnv.run("/usr/sbin/runuser", ["-u", InstallTests.user, "--", "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
                                              "HOME=" + home, "QMAILHOME=" + prefix] + env + [program] + args,
                        input: Array(input.utf8), directory: home)
    }

    func startEngine() throws -> pid_t {
        let logPath = base + "/engine.log"
        func statusLines() -> Int { String(decoding: TestEnv.read(logPath), as: UTF8.self).components(separatedBy: "status: local").count - 1 }
        let before = statusLines()
        let log = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        defer { close(log) }
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let env = TestEnv.environment(["QMAIL_ONE_PROCESS": nil, "QMAILHOME": prefix, "QUEUEDIR": nil, "CONTROLDIR": nil,
                                       "CONFSPLIT": nil, "BIGTODO": nil, "QMAILQUEUE": nil, "QMAILREMOTE": nil])
        let pid = try Spawn.start(prefix + "/bin/qmail-send", arguments: ["qmail-send", "./Maildir/"], environment: env,
                                  fds: [.init(null, at: 0), .init(log, at: 1), .init(log, at: 2)], keepStandard: false,
                                  directory: prefix)
        engines.append(pid)
        // Started: its first status line (signals are handled from then on).
        _ = waitFor("the engine to start", seconds: 15) { statusLines() > before }
        return pid
    }

    func startSink() throws -> Int {
        let dir = base + "/sink"
        mkdir(dir, 0o755)
        let out = try Spawn.pipe()
        let pid = try Spawn.start("/usr/bin/env", arguments: ["env", "python3", TestEnv.packageRoot + "/Tests/RemoteDeliveryTests/Support/smtpd.py",
                                                              "--dir", dir, "--lifetime", "120"],
                                  fds: [.init(out.write, at: 1)], keepStandard: true)
        Sys.close(out.write)
        sinks.append(pid)
        var line: [UInt8] = []
        var b: UInt8 = 0
        while read(out.read, &b, 1) == 1, b != 10 { line.append(b) }
        Sys.close(out.read)
        return Int(String(decoding: line, as: UTF8.self)) ?? 0
    }

    func waitFor(_ what: String, seconds: Double = 30, _ cond: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if cond() { return true }
            usleep(50_000)
        }
        XCTFail("timed out waiting for \(what); engine log:\n" + String(decoding: TestEnv.read(base + "/engine.log"), as: UTF8.self))
        return false
    }

    func maildirCount() -> Int { ((try? Sys.listDirectory(home + "/Maildir/new")) ?? []).count }

    struct Proc { var pid: pid_t; var name: String; var uid: uid_t; var euid: uid_t }

    /// The processes whose parent is `pid`, and their children, with names and users.
    func processTree(_ root: pid_t) -> [Proc] {
        var parent: [pid_t: pid_t] = [:]
        for n in (try? Sys.listDirectory("/proc")) ?? [] {
            guard let p = pid_t(n), let stat = try? Sys.readFile("/proc/\(n)/stat") else { continue }
            // pid (comm) state ppid ...: the comm may hold spaces; fields follow the last ')'.
            let s = String(decoding: stat, as: UTF8.self)
            guard let close = s.lastIndex(of: ")") else { continue }
            let fields = s[s.index(after: close)...].split(separator: " ")
            if fields.count > 1, let pp = pid_t(fields[1]) { parent[p] = pp }
        }
        var tree: Set<pid_t> = [root]
        var grew = true
        while grew {
            grew = false
            for (p, pp) in parent where tree.contains(pp) && !tree.contains(p) { tree.insert(p); grew = true }
        }
        return tree.compactMap { p in
            guard let st = try? Sys.readFile("/proc/\(p)/status") else { return nil }
            var name = "", uid: uid_t = 0, euid: uid_t = 0
            for line in String(decoding: st, as: UTF8.self).split(separator: "\n") {
                if line.hasPrefix("Name:") { name = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("Uid:") {
                    let f = line.dropFirst(4).split(whereSeparator: { $0 == "\t" || $0 == " " })
                    uid = uid_t(f[0]) ?? 0; euid = uid_t(f[1]) ?? 0
                }
            }
            return Proc(pid: p, name: name, uid: uid, euid: euid)
        }
    }

    /// Inodes of the machine's TCP sockets.
    func tcpSocketInodes() -> Set<String> {
        var out = Set<String>()
        for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
            for line in String(decoding: TestEnv.read(f), as: UTF8.self).split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ")
                if cols.count > 9 { out.insert(String(cols[9])) }
            }
        }
        return out
    }

    func socketInodes(of pid: pid_t) -> Set<String> {
        var out = Set<String>()
        for fd in (try? Sys.listDirectory("/proc/\(pid)/fd")) ?? [] {
            var buf = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/\(pid)/fd/\(fd)", &buf, 255)
            guard n > 0 else { continue }
            let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("socket:[") { out.insert(String(target.dropFirst(8).dropLast())) }
        }
        return out
    }

    func uid(_ name: String) -> uid_t { getpwnam(name)!.pointee.pw_uid }

    // MARK: tests

    func testInstallIsCompleteAndIdempotent() throws {
        let out = try install()
        XCTAssertEqual(out.exitCode, 0, out.stderrText + out.stdoutText)
        for u in ["alias", "qmaild", "qmaill", "qmailp", "qmailq", "qmailr", "qmails"] { XCTAssertNotNil(getpwnam(u), u) }
        for g in ["qmail", "nofiles"] { XCTAssertNotNil(getgrnam(g), g) }
        let qq = try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-queue"))
        XCTAssertEqual(qq.st_uid, uid("qmailq"))
        XCTAssertEqual(qq.st_mode & 0o7777, 0o4711, "qmail-queue is setuid qmailq, mode 4711")
        let ls = try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-lspawn"))
        XCTAssertEqual(ls.st_mode & 0o7777, 0o700)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-send")).st_mode & 0o7777, 0o711)
        let mess = try XCTUnwrap(try Sys.stat(queue + "/mess"))
        XCTAssertEqual(mess.st_uid, uid("qmailq"))
        XCTAssertEqual(mess.st_mode & 0o7777, 0o750)
        XCTAssertEqual((try Sys.stat(queue + "/info"))?.st_uid, uid("qmails"))
        for q in ["queue/slowq", "queue/qmta"] { XCTAssertTrue(Sys.exists(prefix + "/" + q + "/mess/0"), q) }
        let host = String(decoding: TestEnv.read(prefix + "/control/me"), as: UTF8.self)
        XCTAssertFalse(host.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "control/me is written from the host name")
        for u in ["qmail-send", "slowq-send", "qmta-send", "qmail-smtpd"] {
            let text = String(decoding: TestEnv.read(units + "/\(u).service"), as: UTF8.self)
            XCTAssertTrue(text.contains("ExecStart=\(prefix)/bin/\(u)"), text)
        }
        // systemd accepts every unit (the programs they name exist under the prefix).
        let verify = try TestEnv.run("/usr/bin/systemd-analyze", ["verify"] + ["qmail-send", "slowq-send", "qmta-send", "qmail-smtpd"].map { units + "/\($0).service" })
        XCTAssertEqual(verify.exitCode, 0, verify.stderrText + verify.stdoutText)
        // A second run changes nothing, and says so.
        let me = TestEnv.read(prefix + "/control/me")
        let mtime = try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-queue")).st_mtim.tv_sec
        TestEnv.write(prefix + "/control/me", "kept.example\n")
        let again = try install()
        XCTAssertEqual(again.exitCode, 0)
        XCTAssertEqual(again.stdoutText, "install: nothing to change in \(prefix)\n")
        XCTAssertEqual(String(decoding: TestEnv.read(prefix + "/control/me"), as: UTF8.self), "kept.example\n", "an existing control file is kept")
        XCTAssertFalse(me.isEmpty)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-queue")).st_mtim.tv_sec, mtime)
        // A mode an administrator broke is repaired.
        chmod(prefix + "/bin/qmail-queue", 0o755)
        let repair = try install()
        XCTAssertTrue(repair.stdoutText.contains("mode of \(prefix)/bin/qmail-queue set to 4711"), repair.stdoutText)
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(prefix + "/bin/qmail-queue")).st_mode & 0o7777, 0o4711)
    }

    func testDestdirStagesWithoutTouchingTheSystem() throws {
        let stage = base + "/stage"
        let out = try TestEnv.run(TestEnv.packageRoot + "/scripts/install",
                                  ["--prefix", "/opt/sqtest-qmail", "--destdir", stage, "--from", TestEnv.buildDirectory, "--unitdir", "/lib/systemd/system"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertTrue(Sys.isExecutable(stage + "/opt/sqtest-qmail/bin/qmail-send"))
        XCTAssertFalse(Sys.exists("/opt/sqtest-qmail"), "nothing outside DESTDIR")
        let unit = String(decoding: TestEnv.read(stage + "/lib/systemd/system/qmail-send.service"), as: UTF8.self)
        XCTAssertTrue(unit.contains("ExecStart=/opt/sqtest-qmail/bin/qmail-send ./Maildir/"), "units name the final prefix, not DESTDIR")
    }

    /// The acceptance run of issue #18: an ordinary user sends, the split engine
    /// delivers locally and over SMTP, every process runs as its qmail user.
    func testAnOrdinaryUserSendsAndTheSplitEngineDelivers() throws {
        try installHost()
        let port = try startSink()
        XCTAssertGreaterThan(port, 0)
        TestEnv.write(prefix + "/control/smtproutes", "remote.example:127.0.0.1:\(port)\n")
        // Injected before the engine runs: the queue files have classic qmail's owners.
        let s1 = try asUser(prefix + "/bin/sendmail", ["-t"], input: "To: \(InstallTests.user)@host.test.example\nSubject: one\n\nby sendmail\n")
        XCTAssertEqual(s1.exitCode, 0, s1.stderrText)
        let qq = uid("qmailq")
        var messFiles = 0
        for f in TestEnv.files(under: queue + "/mess").map({ queue + "/mess/" + $0 }) {
            let st = try XCTUnwrap(try Sys.stat(f))
            XCTAssertEqual(st.st_uid, qq, "\(f) is qmailq's")
            XCTAssertEqual(st.st_mode & 0o777, 0o644)
            messFiles += 1
        }
        XCTAssertEqual(messFiles, 1)
        for f in TestEnv.files(under: queue + "/todo").map({ queue + "/todo/" + $0 }) + TestEnv.files(under: queue + "/intd").map({ queue + "/intd/" + $0 }) {
            XCTAssertEqual(try XCTUnwrap(try Sys.stat(f)).st_uid, qq, f)
        }
        let engine = try startEngine()
        XCTAssertTrue(waitFor("the sendmail message in the Maildir") { maildirCount() == 1 })
        let s2 = try asUser(prefix + "/bin/qmail-inject", [], input: "To: someone@remote.example\nSubject: two\n\nby qmail-inject\n")
        XCTAssertEqual(s2.exitCode, 0, s2.stderrText)
        let s3 = try asUser(prefix + "/bin/qmail-inject", [InstallTests.user], input: "Subject: three\n\nlocal again\n")
        XCTAssertEqual(s3.exitCode, 0, s3.stderrText)
        XCTAssertTrue(waitFor("the remote message at the sink") { ((try? Sys.listDirectory(base + "/sink")) ?? []).contains { $0.hasSuffix(".eml") } })
        XCTAssertTrue(waitFor("the second local message") { maildirCount() == 2 })
        let remoteMessage = String(decoding: TestEnv.read(base + "/sink/msg-1.eml"), as: UTF8.self)
        XCTAssertTrue(remoteMessage.contains("by qmail-inject"), remoteMessage)

        // Who runs what.
        let procs = processTree(engine)
        func procUsers(_ name: String) -> [uid_t] { procs.filter { $0.name == name }.flatMap { [$0.uid, $0.euid] } }
        XCTAssertEqual(Set(procUsers("qmail-send")), [uid("qmails")], "\(procs)")
        XCTAssertEqual(Set(procUsers("qmail-rspawn")), [uid("qmailr")], "\(procs)")
        XCTAssertEqual(Set(procUsers("qmail-clean")), [qq], "\(procs)")
        XCTAssertEqual(Set(procUsers("qmail-lspawn")), [0], "\(procs)")
        // No process running as root holds a TCP socket: only qmailr talks to the network.
        let tcp = tcpSocketInodes()
        for p in procs where p.uid == 0 || p.euid == 0 {
            XCTAssertTrue(socketInodes(of: p.pid).isDisjoint(with: tcp), "\(p.name) (pid \(p.pid)) runs as root and holds a TCP socket")
        }
        // The delivered local mail says who sent it.
        let newDir = home + "/Maildir/new"
        let texts = try Sys.listDirectory(newDir).map { String(decoding: TestEnv.read(newDir + "/" + $0), as: UTF8.self) }
        let invokedBy = "invoked by uid \(uid(InstallTests.user))"
        XCTAssertTrue(texts.allSatisfy { $0.contains(invokedBy) }, texts.joined(separator: "\n----\n"))
        // The queue is empty again: qmail-clean removed what qmailq owns.
        XCTAssertTrue(waitFor("an empty queue") { TestEnv.files(under: queue + "/mess").isEmpty && TestEnv.files(under: queue + "/info").isEmpty })
        XCTAssertTrue(TestEnv.files(under: queue + "/todo").isEmpty)
        XCTAssertTrue(TestEnv.files(under: queue + "/intd").isEmpty)
        // TERM stops the engine and its helpers.
        kill(engine, SIGTERM)
        XCTAssertEqual(try Spawn.wait(engine), .exited(0))
        engines.removeAll()
        XCTAssertTrue(waitFor("the helpers to exit") { processTree(engine).allSatisfy { $0.pid == engine } })
    }

    // MARK: setuid qmail-queue against a hostile caller

    /// Every variable the setuid qmail-queue reads, tried by an ordinary user with
    /// hostile values: nothing lands outside the installed queue, and the failures
    /// are the texts of the queue-client table.
    func testSetuidQmailQueueIgnoresOrRefusesAHostileEnvironment() throws {
        try installHost()
        let u = InstallTests.user
        let own = home + "/myqueue"                      // a folder the user owns
        _ = try asUser("/usr/bin/env", ["mkdir", "-p", own + "/mess/0", own + "/intd", own + "/todo", own + "/pid", own + "/lock"], input: "")
        let secret = base + "/secret"                    // one the user cannot read
        mkdir(secret, 0o700)
        let elsewhere = base + "/elsewhere"              // writable by qmailq, outside the queue
        mkdir(elsewhere, 0o755)
        _ = try TestEnv.run("/bin/chown", ["qmailq", elsewhere])
        _ = try asUser("/usr/bin/env", ["ln", "-s", elsewhere, home + "/link-elsewhere"], input: "")
        _ = try asUser("/usr/bin/env", ["ln", "-s", queue, home + "/link-queue"], input: "")
        func inject(_ env: [String], _ subject: String) throws -> TestEnv.Output {
            try asUser(prefix + "/bin/qmail-inject", [u], input: "Subject: \(subject)\n\nbody\n", env: env)
        }
        let refused = "qmail-inject: fatal: qq trouble in home directory (#4.3.0)\n"
        for (name, env) in [("own folder", ["QUEUEDIR=" + own]), ("unreadable folder", ["QUEUEDIR=" + secret]),
                            ("symlink elsewhere", ["QUEUEDIR=" + home + "/link-elsewhere"]),
                            ("QUEUE_BASE", ["QUEUE_BASE=" + home, "QUEUE_START=1", "QUEUE_COUNT=1"])] {
            let r = try inject(env, name)
            XCTAssertEqual(r.exitCode, 111, name)
            XCTAssertEqual(r.stderrText, refused, name)
        }
        XCTAssertEqual(TestEnv.files(under: own).count, 0, "nothing written in the user's folder")
        XCTAssertEqual(TestEnv.files(under: elsewhere).count, 0, "nothing written outside the queue")
        XCTAssertEqual(TestEnv.files(under: queue + "/mess").count, 0)

        // Ignored: each of these still queues into the installed queue, as the queue is.
        let accepted: [(String, [String])] = [
            ("QMAILHOME", ["QMAILHOME=" + own]), ("CONFSPLIT", ["CONFSPLIT=1"]), ("BIGTODO", ["BIGTODO=1"]),
            ("USE_FSYNC", ["USE_FSYNC=0", "USE_SYNCDIR=0", "USE_FDATASYNC=1"]), ("HOSTNAME", ["HOSTNAME=forged.example"]),
            ("TCPREMOTEIP", ["TCPREMOTEIP=192.0.2.66"]), ("symlink to the queue", ["QUEUEDIR=" + home + "/link-queue"]),
            ("ERROR_FD", ["QMAIL_QUEUE_CUSTOM_ERROR=1", "ERROR_FD=9"])]
        for (name, env) in accepted {
            let r = try inject(env, name)
            XCTAssertEqual(r.exitCode, 0, name + ": " + r.stderrText)
        }
        let mess = TestEnv.files(under: queue + "/mess").map { queue + "/mess/" + $0 }
        XCTAssertEqual(mess.count, accepted.count)
        for f in mess {
            // mess/<id % 23>/<id>: the split the queue was made with, whatever CONFSPLIT said.
            let parts = f.split(separator: "/")
            let id = UInt64(parts[parts.count - 1])!, folder = UInt64(parts[parts.count - 2])!
            XCTAssertEqual(id % 23, folder, f)
            let text = String(decoding: TestEnv.read(f), as: UTF8.self)
            XCTAssertFalse(text.contains("forged.example"), "HOSTNAME is the host's own: " + text)
            XCTAssertFalse(text.contains("192.0.2.66"), "a user cannot say the message came from the network: " + text)
            XCTAssertTrue(text.contains("invoked by uid \(uid(u))"), text)
        }
        XCTAssertEqual(TestEnv.files(under: queue + "/todo").count, accepted.count, "flat todo/, as the queue is (BIGTODO ignored)")
        XCTAssertEqual(TestEnv.files(under: own).count, 0)

        // A hard link of the setuid program in a folder the user controls (possible
        // where fs.protected_hardlinks is 0; made here by root) finds no queue: its
        // bin/ and prefix are not root's, so it refuses (61) and writes nothing.
        _ = try asUser("/usr/bin/env", ["mkdir", "-p", home + "/fake/bin", home + "/fake/queue"], input: "")
        XCTAssertEqual(link(prefix + "/bin/qmail-queue", home + "/fake/bin/qmail-queue"), 0)
        let linked = try TestEnv.run("/usr/sbin/runuser", ["-u", u, "--", "/usr/bin/env", "-i", "QUEUEDIR=" + home + "/fake/queue",
                                                           home + "/fake/bin/qmail-queue"],
                                     input: Array("Subject: x\n\nx\n".utf8), fd1Input: Array("Fme@x\0Tu@x\0\0".utf8))
        XCTAssertEqual(linked.exitCode, 61)
        XCTAssertEqual(TestEnv.files(under: home + "/fake/queue").count, 0)

        // A failure with the custom error protocol and a descriptor the caller never
        // opened: the text goes to descriptor 2, not to a file qmail-queue opened.
        let bad = try TestEnv.run("/usr/sbin/runuser", ["-u", u, "--", "/usr/bin/env", "-i", "QMAIL_QUEUE_CUSTOM_ERROR=1", "ERROR_FD=9",
                                                        prefix + "/bin/qmail-queue"],
                                  input: Array("Subject: x\n\nx\n".utf8), fd1Input: Array("Xnot an envelope\0".utf8))
        XCTAssertEqual(bad.exitCode, 88)
        XCTAssertTrue(bad.stderrText.hasPrefix("Zqmail-queue: envelope format error"), bad.stderrText)
        XCTAssertEqual(TestEnv.files(under: queue + "/mess").count, accepted.count, "the failed message left nothing")
    }

    // MARK: crash test of the split engine

    /// Processes of the installed engine still alive anywhere (a killed engine's
    /// helpers finish their deliveries and exit by themselves).
    func installedProcesses() -> [pid_t] {
        ((try? Sys.listDirectory("/proc")) ?? []).compactMap { n -> pid_t? in
            guard let p = pid_t(n) else { return nil }
            var buf = [CChar](repeating: 0, count: 4096)
            let len = readlink("/proc/\(p)/exe", &buf, 4095)
            guard len > 0 else { return nil }
            let exe = String(decoding: buf[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return exe.hasPrefix(prefix + "/bin/") ? p : nil
        }
    }

    /// SIGKILL of any one process of the split engine (qmail-send, qmail-lspawn,
    /// qmail-rspawn, qmail-clean) at random moments while 400 messages are
    /// delivered, half locally and half over SMTP: every message arrives (at least
    /// once) and the queue ends empty.
    func testKillingAnyProcessOfTheSplitEngineLosesNothing() throws {
        var generator = SeededGenerator(for: "testKillingAnyProcessOfTheSplitEngineLosesNothing")
        try installHost()
        let port = try startSink()
        TestEnv.write(prefix + "/control/smtproutes", "remote.example:127.0.0.1:\(port)\n")
        let total = 400
        let env = TestEnv.environment(["QMAILHOME": prefix, "QUEUEDIR": nil, "CONFSPLIT": nil, "BIGTODO": nil])
        for i in 0..<total {
            let rcpt = i % 2 == 0 ? "\(InstallTests.user)@host.test.example" : "r\(i)@remote.example"
            let r = try TestEnv.run(prefix + "/bin/qmail-queue", input: Array("Subject: \(i)\nX-N: \(i)\n\nbody \(i)\n".utf8),
                                    fd1Input: Array("Fs@host.test.example\0T\(rcpt)\0\0".utf8), environment: env)
            XCTAssertEqual(r.exitCode, 0, r.stderrText)
        }
        func arrived() -> Set<Int> {
            var seen = Set<Int>()
            let newDir = home + "/Maildir/new"
            for f in (try? Sys.listDirectory(newDir)) ?? [] { seen.formUnion(numbers(in: TestEnv.read(newDir + "/" + f))) }
            for f in (try? Sys.listDirectory(base + "/sink")) ?? [] where f.hasSuffix(".eml") {
                seen.formUnion(numbers(in: TestEnv.read(base + "/sink/" + f)))
            }
            return seen
        }
        func numbers(in bytes: [UInt8]) -> [Int] {
            // The sink keeps SMTP's CRLF, one Character in Swift: split on any line end.
            String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0.isNewline }).compactMap {
                $0.hasPrefix("X-N: ") ? Int($0.dropFirst(5)) : nil
            }
        }
        let victims = ["qmail-send", "qmail-lspawn", "qmail-rspawn", "qmail-clean"]
        var kills: [String] = []
        while kills.count < 8 && arrived().count < total {
            let engine = try startEngine()
            usleep(UInt32.random(in: 100_000...600_000, using: &generator))
            let name = victims.randomElement(using: &generator)!
            if let victim = processTree(engine).first(where: { $0.name == name }) {
                kill(victim.pid, SIGKILL)
                kills.append(name)
            }
            // The engine dies with its helper (as qmail-send does); a TERM ends it if it
            // has nothing left to ask the dead one.
            var exited = false
            for _ in 0..<100 {
                var st: Int32 = 0
                if waitpid(engine, &st, WNOHANG) == engine { exited = true; break }
                usleep(50_000)
            }
            if !exited { kill(engine, SIGTERM); _ = try Spawn.wait(engine) }
            engines.removeAll { $0 == engine }
            XCTAssertTrue(waitFor("the helpers of the killed engine to finish") { installedProcesses().isEmpty })
        }
        let engine = try startEngine()
        if !waitFor("every message", seconds: 90, { arrived().count == total }) {
            let missing = Set(0..<total).subtracting(arrived()).sorted()
            let sink = ((try? Sys.listDirectory(base + "/sink")) ?? []).sorted()
            XCTFail("\(missing.count) messages did not arrive: \(missing.prefix(20)); the sink holds \(sink.prefix(10))"
                    + (sink.first(where: { $0.hasSuffix(".eml") }).map { ":\n" + String(decoding: TestEnv.read(base + "/sink/" + $0), as: UTF8.self) } ?? ""))
        }
        XCTAssertTrue(waitFor("an empty queue") {
            ["mess", "todo", "intd", "info", "local", "remote", "bounce"].allSatisfy { TestEnv.files(under: queue + "/" + $0).isEmpty }
        })
        kill(engine, SIGTERM)
        XCTAssertEqual(try Spawn.wait(engine), .exited(0))
        engines.removeAll()
        let log = String(decoding: TestEnv.read(base + "/engine.log"), as: UTF8.self)
        XCTAssertFalse(log.contains("failure:"), "no delivery failed")
        print("split engine crash test: \(total) messages, kills: \(kills.joined(separator: " "))")
    }
}
