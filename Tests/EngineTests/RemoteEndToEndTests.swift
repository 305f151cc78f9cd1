import XCTest
import SystemIO
import QueueFormat
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The engine's remote channel against real SMTP servers on 127.0.0.1.
final class RemoteEndToEndTests: XCTestCase {
    var h: EngineHarness!
    var pids: [pid_t] = []
    override func setUp() { h = EngineHarness() }
    override func tearDown() {
        for p in pids { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        h.cleanup()
    }

    /// Debian postfix's smtp-sink on a free loopback port, dumping messages into `dir`.
    func startSink(dir: String) throws -> Int {
        mkdir(dir, 0o777)
        chmod(dir, 0o777)   // smtp-sink runs as nobody
        for _ in 0..<20 {
            let port = Int.random(in: 20000...40000)
            let null = open("/dev/null", O_RDWR)
            defer { close(null) }
            let pid = try Spawn.start("/usr/sbin/smtp-sink", arguments: ["smtp-sink", "-u", "nobody", "-d", dir + "/%M.", "127.0.0.1:\(port)", "100"],
                                      fds: [.init(null, at: 0), .init(null, at: 1), .init(null, at: 2)], keepStandard: false)
            usleep(300_000)
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == 0 { pids.append(pid); return port }
        }
        throw SystemError("smtp-sink did not start", errno: EIO)
    }

    func scripted(_ args: [String]) throws -> Int { try h.startScriptedSMTP(args).port }

    func testManyMessagesToSmtpSinkOverReusedConnections() throws {
        let sinkDir = h.dir + "/sink"
        let port = try startSink(dir: sinkDir)
        h.writeControl("smtproutes", "remote.example:127.0.0.1:\(port)\n")
        let count = 200
        let threads = (0..<4).map { t in
            TestSupport.Thread {
                for i in stride(from: t, to: count, by: 4) {
                    _ = try? TestEnv.run(TestEnv.program("qmail-inject"), ["-f", "s@example.test", "r\(i)@remote.example", "x\(i)@remote.example"],
                                         input: Array("Subject: \(i)\n\nbody \(i)\n".utf8), environment: self.h.environment)
                }
            }
        }
        threads.forEach { $0.join() }
        let out = try h.qmtaSend(["./Maildir/"], timeout: 120)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let successes = out.stdoutText.components(separatedBy: ": success: ").count - 1
        let problems = out.stdoutText.split(separator: "\n").filter { $0.contains(": deferral: ") || $0.contains(": failure: ") }
        XCTAssertEqual(successes, 2 * count, problems.prefix(10).joined(separator: "\n") + out.stderrText)
        XCTAssertTrue(out.stdoutText.contains("accepted_message_-_Protocol_SMTP./Remote_host_said:_250"), String(out.stdoutText.prefix(2000)))
        XCTAssertEqual(h.queueFiles().count, 0)
        // Both recipients of a message went in one transaction: one dump file per message.
        h.waitFor("sink files") { ((try? Sys.listDirectory(sinkDir)) ?? []).count >= count }
        XCTAssertEqual(((try? Sys.listDirectory(sinkDir)) ?? []).count, count)
    }

    func testVerpSenderGetsOneTransactionPerRecipient() throws {
        let server = try h.startScriptedSMTP([])
        h.writeControl("smtproutes", ":127.0.0.1:\(server.port)\n")
        try h.inject("Subject: list mail\n\nbody\n", ["-f", "owner-@lists.example-@[]", "a@remote.example", "b@remote.example"])
        let out = try h.qmtaSend(["./Maildir/"], timeout: 60)
        XCTAssertEqual(out.stdoutText.components(separatedBy: ": success: ").count - 1, 2, out.stdoutText)
        let envs = ((try? Sys.listDirectory(server.dir)) ?? []).filter { $0.hasSuffix(".env") }
            .map { String(decoding: TestEnv.read(server.dir + "/" + $0), as: UTF8.self).split(separator: "\n").prefix(2).joined(separator: " ") }
        XCTAssertEqual(envs.sorted(), ["owner-a=remote.example@lists.example a@remote.example",
                                       "owner-b=remote.example@lists.example b@remote.example"])
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testPermanentRemoteFailureBouncesToTheSender() throws {
        let port = try scripted(["--rcpt-default", "550"])
        h.writeControl("smtproutes", ":127.0.0.1:\(port)\n")
        try h.inject("To: nobody@remote.example\nSubject: will bounce\n\nbody\n", ["-f", "alice@example.test"])
        let out = try h.qmtaSend(["./Maildir/"], timeout: 60)
        XCTAssertTrue(out.stdoutText.contains("failure: From:_<alice@example.test>_RCPT:_<nobody@remote.example>_127.0.0.1_does_not_like_recipient./Remote_host_said:_550_no_such_user_here/Giving_up_on_127.0.0.1./"), out.stdoutText)
        let bounces = h.maildirMessages("alice")
        XCTAssertEqual(bounces.count, 1, out.stdoutText)
        XCTAssertTrue(bounces[0].contains("<nobody@remote.example>:\nFrom: <alice@example.test> RCPT: <nobody@remote.example> 127.0.0.1 does not like recipient.\nRemote host said: 550 no such user here\nGiving up on 127.0.0.1.\n\n"), bounces[0])
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testQmailRemoteExecutableAndItsHooks() throws {
        let port = try scripted([])
        h.writeControl("smtproutes", ":127.0.0.1:\(port)\n")
        let hook = h.dir + "/hook.sh"
        TestEnv.write(hook, "#!/bin/sh\necho \"$SMTPSTATUS $SMTPCODE $SMTPHOST $# $1 $5\" > \(h.dir)/hook.out\nexit 7\n", mode: 0o755)
        let msg = h.dir + "/msg"
        TestEnv.write(msg, "Subject: direct\n\nhello\n")
        let fd = open(msg, O_RDONLY)
        defer { close(fd) }
        var env = h.environment
        env.append("ONSUCCESS_REMOTE=\(hook)")
        let out = try Spawn.pipe()
        let pid = try Spawn.start(TestEnv.program("qmail-remote"), arguments: ["qmail-remote", "dest.example", "s@x.example", "", "24", "u@dest.example"],
                                  environment: env, fds: [.init(fd, at: 0), .init(out.write, at: 1)])
        Sys.close(out.write)
        let text = String(decoding: try Sys.readAll(out.read), as: UTF8.self)
        Sys.close(out.read)
        XCTAssertEqual(try Spawn.wait(pid), .exited(7), "the hook's exit code becomes qmail-remote's")
        XCTAssertEqual(text, "rFrom: <s@x.example> RCPT: <u@dest.example> \0K127.0.0.1 accepted message - Protocol SMTP.\nRemote host said: 250 ok\n\0")
        XCTAssertEqual(String(decoding: TestEnv.read(h.dir + "/hook.out"), as: UTF8.self), "K 250 127.0.0.1 5 dest.example u@dest.example\n")
    }
}
