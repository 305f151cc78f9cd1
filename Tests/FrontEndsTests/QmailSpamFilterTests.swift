#if canImport(Glibc)
import Glibc
#endif
import XCTest
import Foundation
import SystemIO
import TestSupport

/// qmail-spamfilter with a real bogofilter trained by the test, behind the real
/// qmail-inject and in front of the real qmail-queue (a queue made by queue-fix).
final class QmailSpamFilterTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("spam")
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [dir + "/queue"]).exitCode, 0)
        try Sys.mkdir(dir + "/control", mode: 0o755)
        try Sys.mkdir(dir + "/bogo", mode: 0o755)
        try Sys.mkdir(dir + "/cap", mode: 0o755)
        TestEnv.write(dir + "/control/me", "mx.example.org\n")
        TestEnv.write(dir + "/control/defaultdomain", "example.org\n")
        // Train bogofilter on a handful of messages of each kind.
        for i in 1...6 {
            let spam = "From: promo\(i)@spam.example\nSubject: cheap pills viagra casino winner \(i)\n\nBuy cheap pills now! Viagra casino lottery winner prize money offer \(i) click here free free free\n"
            let ham = "From: colleague\(i)@work.example\nSubject: meeting notes project \(i)\n\nHi team, attached are the minutes from our project meeting \(i). Please review the schedule and the budget before Thursday. Regards\n"
            XCTAssertEqual(try TestEnv.run("/usr/bin/bogofilter", ["-d", dir + "/bogo", "-s"], input: Array(spam.utf8)).exitCode, 0)
            XCTAssertEqual(try TestEnv.run("/usr/bin/bogofilter", ["-d", dir + "/bogo", "-n"], input: Array(ham.utf8)).exitCode, 0)
        }
    }

    override func tearDown() { TestEnv.remove(dir) }

    let spam = "To: bob@example.org\nSubject: cheap viagra casino winner\n\nFree pills lottery prize, click here, cheap offer\n"
    let ham = "To: bob@example.org\nSubject: project meeting\n\nPlease review the minutes and the schedule before Thursday.\n"

    func env(_ extra: [String: String?] = [:]) -> [String] {
        var e: [String: String?] = ["QUEUEDIR": dir + "/queue", "CONTROLDIR": dir + "/control", "NULLQUEUE": nil,
                                   "QMAILQUEUE": TestEnv.program("qmail-spamfilter"),
                                   "SPAMFILTER": "/usr/bin/bogofilter -d \(dir)/bogo -p", "SPAMQUEUE": nil, "QUEUEPROG": nil,
                                   "USER": "tester", "QMAILUSER": nil, "MAILUSER": nil, "QMAILHOST": nil, "MAILHOST": nil,
                                   "QMAILNAME": nil, "MAILNAME": nil, "NAME": nil, "QMAILSUSER": nil, "QMAILSHOST": nil,
                                   "REJECTSPAM": nil, "SPAMREDIRECT": nil, "RELAYCLIENT": nil, "AUTHINFO": nil,
                                   "DKIMSIGN": nil, "DKIMVERIFY": nil]
        for (k, v) in extra { e[k] = v }
        return TestEnv.environment(e)
    }

    /// The queued messages: envelope text and message text.
    func queued() throws -> [(envelope: String, message: String)] {
        try TestEnv.files(under: dir + "/queue/todo").sorted().map { name in
            let id = UInt64(name)!
            return (String(decoding: TestEnv.read(dir + "/queue/todo/" + name), as: UTF8.self),
                    String(decoding: TestEnv.read(dir + "/queue/mess/\(id % 23)/\(id)"), as: UTF8.self))
        }
    }

    func inject(_ text: String, _ extra: [String: String?] = [:]) throws -> TestEnv.Output {
        try TestEnv.run(TestEnv.program("qmail-inject"), input: Array(text.utf8), environment: env(extra))
    }

    func testHamIsQueuedWithTheFiltersHeader() throws {
        let out = try inject(ham, ["REJECTSPAM": "1"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].message.contains("\nX-Bogosity: Ham, tests=bogofilter"), q[0].message)
        XCTAssertTrue(q[0].message.hasSuffix("Please review the minutes and the schedule before Thursday.\n"))
        XCTAssertTrue(q[0].envelope.contains("Tbob@example.org\0"), q[0].envelope)
    }

    func testSpamIsRefusedWithTheSeedsTextAndNotQueued() throws {
        let out = try inject(spam, ["REJECTSPAM": "1"])
        XCTAssertEqual(out.exitCode, 100, out.stderrText)
        XCTAssertEqual(out.stderrText, "qmail-inject: fatal: qq spam or junk mail threshold exceeded (#5.7.1)\n")
        XCTAssertEqual(try queued().count, 0)
        // Without REJECTSPAM the verdict is only marked.
        let kept = try inject(spam)
        XCTAssertEqual(kept.exitCode, 0, kept.stderrText)
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].message.contains("\nX-Bogosity: Spam, tests=bogofilter"), q[0].message)
    }

    func testSpamRedirectQueuesACopyForTheRedirectAddressOnly() throws {
        let out = try inject(spam, ["REJECTSPAM": "1", "SPAMREDIRECT": "spamtrap@example.org"])
        XCTAssertEqual(out.exitCode, 100)
        XCTAssertTrue(out.stderrText.contains("spam or junk mail threshold exceeded (#5.7.1)"))
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].envelope.contains("Tspamtrap@example.org\0"), q[0].envelope)
        XCTAssertFalse(q[0].envelope.contains("bob@example.org"), q[0].envelope)
        // REJECTSPAM > 1: silently dropped (the copy still goes to the redirect address).
        TestEnv.write(dir + "/control/globalspamredirect", "trap2@example.org\n")
        let quiet = try inject(spam, ["REJECTSPAM": "2"])
        XCTAssertEqual(quiet.exitCode, 0, quiet.stderrText)
        let q2 = try queued()
        XCTAssertEqual(q2.count, 2)
        XCTAssertTrue(q2.contains { $0.envelope.contains("Ttrap2@example.org\0") })
    }

    func testFailingCrashingOrHangingFilterIsATemporaryErrorAndNothingIsLost() throws {
        let hang = dir + "/hang.sh"
        TestEnv.write(hang, "#!/bin/sh\nexec sleep 30\n", mode: 0o755)
        let crash = dir + "/crash.sh"
        TestEnv.write(crash, "#!/bin/sh\ncat >/dev/null\nkill -SEGV $$\n", mode: 0o755)
        let quiet = dir + "/quiet.sh"
        TestEnv.write(quiet, "#!/bin/sh\ncat >/dev/null\nexit 1\n", mode: 0o755)
        let start = Date()
        let timedOut = try inject(ham, ["SPAMFILTER": hang, "SPAMFILTER_TIMEOUT": "1"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        for (name, out) in [("hang", timedOut), ("crash", try inject(ham, ["SPAMFILTER": crash])),
                            ("no output", try inject(ham, ["SPAMFILTER": quiet])),
                            ("bogofilter error", try inject(ham, ["SPAMFILTER": "/usr/bin/bogofilter -d \(dir)/missing/db -p"])),
                            ("not there", try inject(ham, ["SPAMFILTER": dir + "/absent"]))] {
            XCTAssertEqual(out.exitCode, 111, name + ": " + out.stderrText)
            XCTAssertEqual(out.stderrText, "qmail-inject: fatal: qq temporary problem with SPAM filter (#4.3.0)\n", name)
        }
        XCTAssertEqual(try queued().count, 0)
        // The client kept the message: sent again with a working filter, it is queued.
        XCTAssertEqual(try inject(ham).exitCode, 0)
        XCTAssertEqual(try queued().count, 1)
    }

    func testRelayClientsAndNoFilterPassStraightThrough() throws {
        XCTAssertEqual(try inject(spam, ["SPAMFILTER": nil, "REJECTSPAM": "1"]).exitCode, 0)
        XCTAssertEqual(try inject(spam, ["RELAYCLIENT": "", "RELAYCLIENT_NOSPAMFILTER": "", "REJECTSPAM": "1"]).exitCode, 0)
        let q = try queued()
        XCTAssertEqual(q.count, 2)
        XCTAssertFalse(q.contains { $0.message.contains("X-Bogosity") })
    }

    func testHelp() throws {
        let r = try TestEnv.run(TestEnv.program("qmail-spamfilter"), ["--help"])
        XCTAssertEqual(r.exitCode, 0)
        XCTAssertTrue(r.stdoutText.contains("SPAMFILTER"))
    }
}
