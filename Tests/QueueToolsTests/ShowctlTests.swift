import XCTest
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class ShowctlTests: XCTestCase {
    var dir = ""
    var control: String { dir + "/control" }
    var environment: [String] {
        TestEnv.environment(["QMAILHOME": dir, "CONTROLDIR": control, "QUEUEDIR": dir + "/queue", "QUEUE_BASE": nil,
                             "CONFSPLIT": nil, "BIGTODO": nil])
    }

    override func setUp() {
        dir = TestEnv.temporaryDirectory("showctl")
        mkdir(control, 0o755)
        TestEnv.write(control + "/me", "mx.example.test\n")
    }

    override func tearDown() { TestEnv.remove(dir) }

    func showctl(_ args: [String] = []) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("qmail-showctl"), args, environment: environment)
    }

    func testValuesAndDefaults() throws {
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), ["-s", "7", dir + "/queue"]).exitCode, 0)
        TestEnv.write(control + "/locals", "a.test\n# a comment\nB.test  \n")
        TestEnv.write(control + "/concurrencyremote", " 40\n")
        TestEnv.write(control + "/concurrencyr.queue", "3\n")
        TestEnv.write(control + "/smtproutes", "remote.test:127.0.0.1:2525\n")
        let out = try showctl()
        XCTAssertEqual(out.exitCode, 0, out.stdoutText)
        let t = out.stdoutText
        XCTAssertTrue(t.hasPrefix("qmail home directory: \(dir)\ncontrol directory: \(control)\nqueue: \(dir)/queue (split 7, big todo no)\n\n"), t)
        for line in ["me                    : mx.example.test\n",
                     "locals                : a.test\n                        B.test\n",
                     "concurrencylocal      : 10 (Default)\n",
                     "concurrencyremote     : 40\n",
                     "envnoathost           : mx.example.test (Default)\n",
                     "smtproutes            : remote.test:127.0.0.1:2525\n",
                     "bounceformat          : qsbmf (Default)\n",
                     "concurrencyr.queue    : 3\n"] {
            XCTAssertTrue(t.contains(line), "missing \(line.debugDescription) in\n\(t)")
        }
        XCTAssertFalse(t.contains("warning:"), t)
    }

    func testSyntaxErrorsAndUnknownNamesAreWarned() throws {
        TestEnv.write(control + "/concurrencylocal", "12x\n")
        TestEnv.write(control + "/bounceformat", "mime\n")
        TestEnv.write(control + "/smtproutes", "bad route line\n")
        TestEnv.write(control + "/concurrencyremot", "30\n")
        TestEnv.write(control + "/helohost", "a.test\nb.test\n")
        let out = try showctl()
        XCTAssertEqual(out.exitCode, 1)
        let t = out.stdoutText
        for line in ["concurrencylocal      : 12x\nwarning: \(control)/concurrencylocal:1: expected a number, found \"12x\"\n",
                     "warning: the engine would not start: \(control)/concurrencylocal:1: expected a number, found \"12x\"\n",
                     "warning: \(control)/smtproutes:1: expected domain:relay[:port], found \"bad route line\"\n",
                     "warning: \(control)/concurrencyremot: I have no idea what this file does\n",
                     "helohost              : a.test\nwarning: \(control)/helohost: only the first line is read; 1 more ignored\n"] {
            XCTAssertTrue(t.contains(line), "missing \(line.debugDescription) in\n\(t)")
        }
        // After fixing concurrencylocal, the engine's own check names bounceformat.
        TestEnv.write(control + "/concurrencylocal", "12\n")
        XCTAssertTrue(try showctl().stdoutText.contains("warning: the engine would not start: \(control)/bounceformat:1: expected qsbmf or dsn, found \"mime\"\n"))
    }

    func testUsage() throws {
        let h = try showctl(["--help"])
        XCTAssertEqual(h.exitCode, 0)
        XCTAssertTrue(h.stdoutText.hasPrefix("usage: qmail-showctl"))
        XCTAssertEqual(try showctl(["-x"]).exitCode, 100)
        XCTAssertEqual(try showctl(["-c", dir + "/nonexistent"]).exitCode, 111)
    }
}
