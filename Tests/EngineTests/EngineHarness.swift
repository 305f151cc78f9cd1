import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A complete qmail installation under a temporary folder: queue, control
/// files, users/assign mapping alice, bob and joe to uid 65534 with homes
/// holding ./Maildir/, and helpers to inject mail and run the built engine.
final class EngineHarness {
    let dir: String
    var queue: String { dir + "/queue" }
    var control: String { dir + "/control" }
    let uid: uid_t = 65534
    let gid: gid_t = 65534
    var extraEnv: [String: String?] = [:]

    /// `alias`: a catch-all users/assign entry to an alias user with its own home,
    /// as a qmail installation has (mail for unknown users ends at alias/.qmail-<local>).
    init(me: String = "example.test", split: Int = 23, alias: Bool = false) {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("engine")
        chmod(dir, 0o755)
        let fix = try! TestEnv.run(TestEnv.program("queue-fix"), ["-s", "\(split)", queue])
        precondition(fix.exitCode == 0, fix.stderrText)
        mkdir(control, 0o755)
        mkdir(dir + "/users", 0o755)
        mkdir(dir + "/home", 0o755)
        TestEnv.write(control + "/me", me + "\n")
        var assign = ""
        for user in ["alice", "bob", "joe"] {
            let home = dir + "/home/" + user
            makeMaildirHome(home)
            assign += "=\(user):\(user):\(uid):\(gid):\(home):::\n+\(user)-:\(user):\(uid):\(gid):\(home):-::\n"
        }
        if alias {
            makeMaildirHome(dir + "/home/alias")
            assign += "+:alias:\(uid):\(gid):\(dir)/home/alias:-::\n"
        }
        TestEnv.write(dir + "/users/assign", assign + ".\n")
    }

    func makeMaildirHome(_ home: String) {
        mkdir(home, 0o755)
        for d in ["Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"] { mkdir(home + "/" + d, 0o700) }
        _ = try? TestEnv.run("/bin/chown", ["-R", "\(uid):\(gid)", home])
    }

    func home(_ user: String) -> String { dir + "/home/" + user }

    func writeControl(_ name: String, _ text: String) { TestEnv.write(control + "/" + name, text) }

    /// A file in a user's home, owned by the user.
    func writeHomeFile(_ user: String, _ name: String, _ text: String, mode: mode_t = 0o644) {
        let p = home(user) + "/" + name
        TestEnv.write(p, text, mode: mode)
        chown(p, uid, gid)
    }

    var environment: [String] {
        var e: [String: String?] = ["QMAILHOME": dir, "QUEUEDIR": queue, "CONTROLDIR": control,
                                   "QMAILQUEUE": nil, "NULLQUEUE": nil, "BOUNCEQUEUE": nil, "CONFSPLIT": nil, "BIGTODO": nil]
        for (k, v) in extraEnv { e[k] = v }
        return TestEnv.environment(e)
    }

    /// qmail-inject with the message text and arguments.
    @discardableResult
    func inject(_ message: String, _ args: [String] = []) throws -> TestEnv.Output {
        let out = try TestEnv.run(TestEnv.program("qmail-inject"), args, input: Array(message.utf8), environment: environment)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        return out
    }

    /// qmta-send for one pass; returns its log.
    func qmtaSend(_ args: [String] = [], timeout: Int = 60) throws -> TestEnv.Output {
        try TestEnv.run("/usr/bin/timeout", ["-k", "5", "\(timeout)", TestEnv.program("qmta-send")] + args, environment: environment)
    }

    /// A running engine process with its log in a file.
    final class Daemon {
        let pid: pid_t
        let logPath: String
        init(pid: pid_t, logPath: String) { self.pid = pid; self.logPath = logPath }
        var log: String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        func signal(_ s: Int32) { kill(pid, s) }
        /// TERM, then KILL if it has not exited within 30 s (a hung engine fails the test, not CI).
        func stop() -> ExitStatus? {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            for _ in 0..<3000 {
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid { return Spawn.decode(status) }
                usleep(10_000)
            }
            kill(pid, SIGKILL)
            _ = try? Spawn.wait(pid)
            return nil
        }
        func kill9() { kill(pid, SIGKILL); _ = try? Spawn.wait(pid) }
    }

    func startDaemon(_ program: String = "qmail-send", _ args: [String] = [], logName: String = "send.log") throws -> Daemon {
        let logPath = dir + "/" + logName
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        defer { close(fd) }
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let pid = try Spawn.start(TestEnv.program(program), arguments: [program] + args, environment: environment,
                                  fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        return Daemon(pid: pid, logPath: logPath)
    }

    /// qmail-send with `./Maildir/` as the default delivery, once it has logged its
    /// first status line.
    func startSend() throws -> Daemon {
        let d = try startDaemon("qmail-send", ["./Maildir/"])
        waitFor("start") { d.log.contains("status: local 0/10") }
        return d
    }

    /// Waits until `condition` holds (polling every 20 ms) or fails after `seconds`.
    func waitFor(_ what: String, seconds: Double = 20, file: StaticString = #filePath, line: UInt = #line, _ condition: () -> Bool) {
        let deadline = Double(time(nil)) + seconds
        while !condition() {
            if Double(time(nil)) > deadline { XCTFail("timed out waiting for \(what)", file: file, line: line); return }
            usleep(20_000)
        }
    }

    func maildir(_ user: String) -> [String] {
        ((try? Sys.listDirectory(home(user) + "/Maildir/new")) ?? []).sorted()
    }

    func maildirMessages(_ user: String) -> [String] {
        maildir(user).map { String(decoding: TestEnv.read(home(user) + "/Maildir/new/" + $0), as: UTF8.self) }
    }

    /// Files left in the queue's message folders (the engine's spare files,
    /// `info/spare.<n>`, are not a message's: `spareFiles`).
    func queueFiles() -> [String] {
        ["mess", "intd", "todo", "info", "local", "remote", "bounce"].flatMap { f in TestEnv.files(under: queue + "/" + f).map { f + "/" + $0 } }
            .filter { !$0.hasPrefix("info/spare.") }
    }

    /// The engine's spare files (SpareFiles) in `info/`.
    func spareFiles() -> [String] {
        ((try? Sys.listDirectory(queue + "/info")) ?? []).filter { $0.hasPrefix("spare.") }.sorted()
    }

    /// Helper servers started for this test; killed by `cleanup`.
    var serverPIDs: [pid_t] = []

    /// The scripted SMTP server (Tests/RemoteDeliveryTests/Support/smtpd.py) on
    /// 127.0.0.1; returns its port and the folder where it files what it accepts.
    func startScriptedSMTP(_ args: [String], lifetime: Int = 60) throws -> (port: Int, dir: String) {
        let d = dir + "/smtpd\(serverPIDs.count)"
        mkdir(d, 0o755)
        let out = try Spawn.pipe()
        let null = open("/dev/null", O_RDONLY)
        defer { close(null) }
        let pid = try Spawn.start("/usr/bin/env", arguments: ["env", "python3", TestEnv.packageRoot + "/Tests/RemoteDeliveryTests/Support/smtpd.py",
                                                              "--dir", d, "--lifetime", "\(lifetime)"] + args,
                                  fds: [.init(null, at: 0), .init(out.write, at: 1)])
        Sys.close(out.write)
        var line: [UInt8] = []
        var b: UInt8 = 0
        while read(out.read, &b, 1) == 1 && b != 10 { line.append(b) }
        Sys.close(out.read)
        serverPIDs.append(pid)
        guard let port = Int(String(decoding: line, as: UTF8.self)) else { throw SystemError("smtpd.py did not start", errno: EIO) }
        return (port, d)
    }

    func cleanup() {
        for p in serverPIDs { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        TestEnv.remove(dir)
    }
}
