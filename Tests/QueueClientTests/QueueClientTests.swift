import XCTest
import QueueClient
import QueueFormat
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The queue-client layer against real queue programs (small scripts) that
/// exit with every code of the table.
final class QueueClientTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = TestEnv.temporaryDirectory("client") }
    override func tearDown() { TestEnv.remove(dir) }

    /// A queue program script; `$OUT` receives what it read.
    func script(_ name: String, _ body: String) -> String {
        let path = dir + "/" + name
        TestEnv.write(path, "#!/bin/sh\n" + body + "\n", mode: 0o755)
        return path
    }

    func inject(_ program: QueueSession.Program, env: [String: String?] = [:],
                message: String = "Subject: x\n\nhello\n", sender: String = "a@b", recipients: [String] = ["c@d"]) throws -> QueueResult {
        let session = try QueueSession(program: program, environment: TestEnv.environment(env))
        session.put(message)
        session.from(sender)
        for r in recipients { session.to(r) }
        return session.close()
    }

    func testEveryExitCodeOfTheTableGivesItsText() throws {
        let prog = script("exit-code", "cat >/dev/null; cat <&1 >/dev/null; exit $CODE")
        var codes: [Int32] = [0, 11, 31, 32, 33, 34, 35, 41, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59] + Array(60...82) + [87, 91, 115, 120, 121, 122, 123]
        codes += [12, 40, 1, 99, 100, 111, 88]
        for code in codes {
            let r = try inject(.init(arguments: [prog], errorFD: 2), env: ["CODE": "\(code)"])
            XCTAssertEqual(r.string, QueueClientText.text(forExitCode: code), "exit \(code)")
            XCTAssertEqual(r.outcome, QueueProgramOutcome.exited(code: code, customText: []), "exit \(code)")
        }
        // Spot checks against the manual page's literal table.
        let r31 = try inject(.init(arguments: [prog], errorFD: 2), env: ["CODE": "31"])
        XCTAssertEqual(r31.string, "Dqq mail server permanently rejected message (#5.3.0)")
        XCTAssertTrue(r31.isPermanent)
        let r71 = try inject(.init(arguments: [prog], errorFD: 2), env: ["CODE": "71"])
        XCTAssertEqual(r71.string, "Zqq mail server temporarily rejected message (#4.3.0)")
        XCTAssertFalse(r71.isPermanent)
        XCTAssertEqual(try inject(.init(arguments: [prog], errorFD: 2), env: ["CODE": "25"]).string, "Dqq permanent problem (#5.3.0)")
        XCTAssertEqual(try inject(.init(arguments: [prog], errorFD: 2), env: ["CODE": "42"]).string, "Zqq temporary problem (#4.3.0)")
    }

    func testExit88WithAndWithoutCustomText() throws {
        let withText = script("custom", "cat >/dev/null; cat <&1 >/dev/null; printf 'Dqmail-dkim: no key for this domain (#5.3.5)' >&2; exit 88")
        XCTAssertEqual(try inject(.init(arguments: [withText], errorFD: 2)).string, "Dqmail-dkim: no key for this domain (#5.3.5)")
        let noText = script("nocustom", "cat >/dev/null; cat <&1 >/dev/null; exit 88")
        XCTAssertEqual(try inject(.init(arguments: [noText], errorFD: 2)).string, "Zqq temporary problem (#4.3.0)")
        let tiny = script("tiny", "cat >/dev/null; cat <&1 >/dev/null; printf 'Zx' >&2; exit 88")
        XCTAssertEqual(try inject(.init(arguments: [tiny], errorFD: 2)).string, "Zqq temporary problem (#4.3.0)")
    }

    func testErrorFDMovedAndDisabled() throws {
        let on5 = script("on5", "cat >/dev/null; cat <&1 >/dev/null; printf 'Zcustom on five' >&5; exit 88")
        // ERROR_FD=5 through the environment, as programs see it.
        let moved = QueueSession.chooseProgram(environment: { ["ERROR_FD": "5", "QMAILQUEUE": on5][$0] })
        XCTAssertEqual(moved, .init(arguments: [on5], errorFD: 5))
        XCTAssertEqual(try inject(moved).string, "Zcustom on five")
        // Text written to fd 2 is not read when ERROR_FD is 5.
        let on2 = script("on2", "cat >/dev/null; cat <&1 >/dev/null; printf 'Zcustom on two' >&2; exit 88")
        XCTAssertEqual(try inject(.init(arguments: [on2], errorFD: 5)).string, "Zqq temporary problem (#4.3.0)")
        // ERROR_FD=-1 disables custom errors.
        let off = QueueSession.chooseProgram(environment: { ["ERROR_FD": "-1", "QMAILQUEUE": on2][$0] })
        XCTAssertNil(off.errorFD)
        XCTAssertEqual(try inject(off).string, "Zqq temporary problem (#4.3.0)")
    }

    func testKilledBySignalIsACrash() throws {
        let killer = script("killer", "kill -9 $$")
        let r = try inject(.init(arguments: [killer], errorFD: 2), message: String(repeating: "x", count: 200_000))
        XCTAssertEqual(r.string, "Zqq crashed (#4.3.0)")
        XCTAssertEqual(r.outcome, QueueProgramOutcome.signaled(9))
    }

    func testSuccessButUnreadMessageIsAReadError() throws {
        // Exits 0 without reading: our writes hit EPIPE, which qmail reports as a read error.
        let lazy = script("lazy", "exit 0")
        let big = String(repeating: "y", count: 1 << 20)
        XCTAssertEqual(try inject(.init(arguments: [lazy], errorFD: 2), message: big).string, "Zqq read error (#4.3.0)")
    }

    func testProgramThatDoesNotExist() throws {
        XCTAssertThrowsError(try QueueSession(program: .init(arguments: [dir + "/nope"], errorFD: 2))) { e in
            XCTAssertEqual((e as? QueueSession.StartFailure)?.description, "Zqq unable to exec qq (#4.3.0)")
        }
        // Any failed exec is "unable to exec qq", as qmail's child exit 120 (a symlink loop: ELOOP).
        XCTAssertEqual(symlink(dir + "/loop", dir + "/loop"), 0)
        XCTAssertThrowsError(try QueueSession(program: .init(arguments: [dir + "/loop"], errorFD: 2))) { e in
            XCTAssertEqual((e as? QueueSession.StartFailure)?.description, "Zqq unable to exec qq (#4.3.0)")
        }
    }

    /// An address with a NUL ends at the NUL, as qmail_puts writes it: never a
    /// second record (qmail-queue would refuse the envelope for good).
    func testAddressWithANulEndsThere() throws {
        let out = dir + "/envelope"
        let prog = script("save", "cat >/dev/null; cat <&1 > \"$OUT\"")
        let session = try QueueSession(program: .init(arguments: [prog], errorFD: 2), environment: TestEnv.environment(["OUT": out]))
        session.put("x\n")
        session.from("a@b")
        session.to(Array("c@d".utf8) + [0] + Array("Tevil@x".utf8))
        XCTAssertTrue(session.close().isQueued)
        XCTAssertEqual(TestEnv.read(out), Array("Fa@b\u{0}Tc@d\u{0}\u{0}".utf8))
    }

    /// A queue program that keeps writing to the error descriptor after the 1023
    /// bytes kept is read to the end, not cut off: its exit code stands (it used to
    /// die of SIGPIPE, and a queued message looked like a crash, to be sent again).
    func testLongErrorOutputDoesNotKillTheQueueProgram() throws {
        let chatty = script("chatty", "cat >/dev/null; cat <&1 >/dev/null; head -c 1100 /dev/zero | tr '\\0' x >&2; sleep 0.3; echo more >&2 || exit 7; exit 0")
        let r = try inject(.init(arguments: [chatty], errorFD: 2))
        XCTAssertEqual(r.outcome, QueueProgramOutcome.exited(code: 0, customText: Array(repeating: UInt8(ascii: "x"), count: 1023)))
        XCTAssertTrue(r.isQueued, r.string)
    }

    func testMessageOnZeroEnvelopeOnOneCwdRootAndNoLeakedDescriptors() throws {
        let py = dir + "/probe.py"
        TestEnv.write(py, """
        #!/usr/bin/env python3
        import os, sys
        out = os.environ["OUT"]
        msg = os.read(0, 1 << 20)
        env = b""
        while True:
            b = os.read(1, 65536)
            if not b: break
            env += b
        fds = []
        for name in os.listdir("/proc/self/fd"):
            try:
                os.readlink("/proc/self/fd/" + name)
                fds.append(int(name))
            except OSError:
                pass
        open(out + ".msg", "wb").write(msg)
        open(out + ".env", "wb").write(env)
        open(out + ".fds", "w").write(" ".join(str(f) for f in sorted(fds)) + "\\n" + os.getcwd())
        """, mode: 0o755)
        // Open descriptors without close-on-exec: they must not reach the child.
        let leaks = (0..<3).map { _ in open("/dev/null", O_RDONLY) }
        defer { leaks.forEach { close($0) } }
        let r = try inject(.init(arguments: [py], errorFD: 2), env: ["OUT": dir + "/probe"],
                           message: "Subject: s\n\nbody\n", sender: "me@here", recipients: ["a@x", "b@y"])
        XCTAssertTrue(r.isQueued, r.string)
        XCTAssertEqual(TestEnv.read(dir + "/probe.msg"), Array("Subject: s\n\nbody\n".utf8))
        XCTAssertEqual(TestEnv.read(dir + "/probe.env"), Array("Fme@here\0Ta@x\0Tb@y\0\0".utf8))
        XCTAssertEqual(String(decoding: TestEnv.read(dir + "/probe.fds"), as: UTF8.self), "0 1 2\n/")
        // With the error descriptor at 7, the child has exactly 0, 1, 2 and 7.
        _ = try inject(.init(arguments: [py], errorFD: 7), env: ["OUT": dir + "/probe7"])
        XCTAssertEqual(String(decoding: TestEnv.read(dir + "/probe7.fds"), as: UTF8.self), "0 1 2 7\n/")
    }

    func testProgramChoice() {
        let q = "/x/qmail-queue-wrapper"
        // NULLQUEUE wins, even empty.
        let n = QueueSession.chooseProgram(environment: { ["NULLQUEUE": "", "QMAILQUEUE": q][$0] })
        XCTAssertTrue(n.arguments[0].hasSuffix("/qmail-nullqueue"), n.arguments[0])
        // QMAILQUEUE with arguments is split at spaces.
        let a = QueueSession.chooseProgram(environment: { ["QMAILQUEUE": "/bin/filter -v  --x"][$0] })
        XCTAssertEqual(a.arguments, ["/bin/filter", "-v", "--x"])
        // A trailing space means a plain path.
        let t = QueueSession.chooseProgram(environment: { ["QMAILQUEUE": "/odd path "][$0] })
        XCTAssertEqual(t.arguments, ["/odd path "])
        // Bounces try BOUNCEQUEUE first.
        let b = QueueSession.chooseProgram(forBounce: true, environment: { ["QMAILQUEUE": q, "BOUNCEQUEUE": "/b/q"][$0] })
        XCTAssertEqual(b.arguments, ["/b/q"])
        XCTAssertEqual(QueueSession.chooseProgram(forBounce: false, environment: { ["QMAILQUEUE": q, "BOUNCEQUEUE": "/b/q"][$0] }).arguments, [q])
        // Default: qmail-queue next to this executable.
        let d = QueueSession.chooseProgram(environment: { _ in nil })
        XCTAssertEqual(d.arguments, [TestEnv.program("qmail-queue")])
        XCTAssertEqual(d.errorFD, 2)
    }

    func testNullQueueDiscards() throws {
        let r = try inject(.init(arguments: [TestEnv.program("qmail-nullqueue")], errorFD: 2), message: String(repeating: "z", count: 300_000))
        XCTAssertTrue(r.isQueued)
    }
}
