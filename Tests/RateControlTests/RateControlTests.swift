import XCTest
import RateControl
import Scheduler
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class RateExpressionTests: XCTestCase {
    func value(_ s: String) throws -> Double { try RateExpression(s).evaluate() }

    func testArithmeticAndFunctions() throws {
        XCTAssertEqual(try value("500/3600"), 500.0 / 3600, accuracy: 1e-12)
        XCTAssertEqual(try value("1+2*3"), 7)
        XCTAssertEqual(try value("(1+2)*3"), 9)
        XCTAssertEqual(try value("2**3**2"), 512)
        XCTAssertEqual(try value("-2**2"), 4)
        XCTAssertEqual(try value("7%4"), 3)
        // % works on integers, as indimail's evaluator: 7.9 % 2.5 is 7 % 2, and 5 % 0.5 divides by 0.
        XCTAssertEqual(try value("7.9%2.5"), 1)
        XCTAssertThrowsError(try value("5%0.5"))
        XCTAssertEqual(try value("$1f4/3600"), 500.0 / 3600, accuracy: 1e-12)
        XCTAssertEqual(try value(".5"), 0.5)
        XCTAssertEqual(try value("sqrt(16)+sqr(3)"), 13)
        XCTAssertEqual(try value("x = 60; 10/x"), 10.0 / 60, accuracy: 1e-12)
        XCTAssertEqual(try value("3 > 2 && 1 == 1"), 1)
        XCTAssertEqual(try value("1 << 4 | 1"), 17)
        XCTAssertEqual(try value("ln(exp(2))"), 2, accuracy: 1e-12)
    }

    /// A variable the expression does not assign comes from the environment (its
    /// leading number, as evaluate.c's scan_number reads it).
    func testUnassignedVariablesComeFromTheEnvironment() throws {
        setenv("SQRATEPERHOUR", "720 per hour", 1)
        setenv("SQRATEHEX", "$1f4", 1)
        setenv("SQRATEBAD", "many", 1)
        defer { for n in ["SQRATEPERHOUR", "SQRATEHEX", "SQRATEBAD"] { unsetenv(n) } }
        XCTAssertEqual(try value("SQRATEPERHOUR/3600"), 0.2, accuracy: 1e-12)
        XCTAssertEqual(try value("SQRATEHEX"), 500)
        XCTAssertEqual(try value("SQRATEPERHOUR = 60; SQRATEPERHOUR/60"), 1, "an assignment wins over the environment")
        XCTAssertThrowsError(try value("SQRATEBAD/60")) { XCTAssertEqual("\($0)", "the environment's SQRATEBAD is not a number at position 1") }
        XCTAssertThrowsError(try value("SQRATEUNSET/60")) { XCTAssertEqual("\($0)", "unknown variable SQRATEUNSET at position 1") }
    }

    func testErrorsNamePositions() {
        XCTAssertThrowsError(try value("10/0")) { XCTAssertEqual("\($0)", "division by zero at position 4") }
        XCTAssertThrowsError(try value("10 + ")) { XCTAssertEqual("\($0)", "unexpected end of expression at position 6") }
        XCTAssertThrowsError(try value("10 / hour")) { XCTAssertEqual("\($0)", "unknown variable hour at position 6") }
        XCTAssertThrowsError(try value("frob(2)")) { XCTAssertEqual("\($0)", "unknown function frob at position 1") }
        XCTAssertThrowsError(try value("(1+2")) { XCTAssertEqual("\($0)", "missing ) at position 5") }
        // Found by fuzzing (fuzz/regressions/rate-expr): a bit operator on a number with no
        // Int64 value trapped; it is an error naming the operator.
        XCTAssertThrowsError(try value("~5e30")) { XCTAssertTrue("\($0)".hasPrefix("~ of a number out of range"), "\($0)") }
        XCTAssertThrowsError(try value("1e300 | 1")) { XCTAssertTrue("\($0)".hasPrefix("| of a number out of range"), "\($0)") }
        XCTAssertThrowsError(try value("1 << (1/0.0)"))
        XCTAssertEqual(try value("~5"), -6)
    }

    /// Found by fuzzing (fuzz/regressions/rate-expr/crash-nested-parentheses-stack-overflow):
    /// a few thousand nested parentheses overflowed the stack of the recursive-descent
    /// parser. Nesting beyond about 250 parentheses (500 unary operators or ** chains) is an error.
    func testDeepNestingIsAnErrorNotAStackOverflow() throws {
        let deep = 100_000
        for s in [String(repeating: "(", count: deep) + "1" + String(repeating: ")", count: deep),
                  String(repeating: "-", count: deep) + "1",
                  Array(repeating: "2", count: deep).joined(separator: "**"),
                  String(repeating: "sqrt(", count: deep) + "4"] {
            XCTAssertThrowsError(try value(s)) { XCTAssertTrue("\($0)".hasPrefix("expression nested too deeply"), "\($0)") }
        }
        XCTAssertEqual(try value(String(repeating: "(", count: 100) + "7" + String(repeating: ")", count: 100)), 7)
        XCTAssertEqual(try value(String(repeating: "-", count: 400) + "7"), 7)
        XCTAssertEqual(try value("sqrt(sqrt(sqrt(256)))"), 2)
    }

    /// Found by fuzzing (fuzz/regressions/ratedefs): a QREGEX ratecontrol pattern of stacked
    /// repetitions made glibc's regcomp take gigabytes; such a pattern now matches nothing.
    func testStackedRepetitionsInARegexPatternMatchNothing() throws {
        XCTAssertTrue(RateDirectory.reasonableRegex("^[a-z]+\\.example\\.(com|net)$"))
        XCTAssertTrue(RateDirectory.reasonableRegex("[*+?]x{2,3}"))
        XCTAssertFalse(RateDirectory.reasonableRegex("[a-z]*." + String(repeating: "+", count: 90) + "net"))
        XCTAssertFalse(RateDirectory.reasonableRegex("a{2}{3}"))
        XCTAssertFalse(RateDirectory.reasonableRegex(String(repeating: "a", count: 1025)))
        let dir = TestEnv.temporaryDirectory("rate")
        defer { TestEnv.remove(dir) }
        TestEnv.write(dir + "/ratecontrol", "[a-z]*." + String(repeating: "+", count: 90) + "net:1/0\nslow\\.example:5/60\n")
        let r = RateDirectory(path: dir, useRegex: true)
        XCTAssertNil(try r.policy(for: "x.net"))
        XCTAssertNotNil(try r.policy(for: "slow.example"))
    }
}

final class RateLimiterTests: XCTestCase {
    func testDefinitionFileFormatOfIndimailDrate() throws {
        let d = try RateDefinition.parse(Array("500/3600\u{0}12\u{0}1700000000\u{0}1700000300\u{0}junk".utf8))
        XCTAssertEqual(d, RateDefinition(expression: "500/3600", count: 12, start: 1700000000, last: 1700000300))
        XCTAssertEqual(d.bytes(), Array("500/3600\u{0}12\u{0}1700000000\u{0}1700000300\u{0}".utf8))
        XCTAssertEqual(try RateDefinition.parse(Array("10/60\u{0}".utf8)).count, 0)
        XCTAssertThrowsError(try RateDefinition.parse(Array("10/60\u{0}x\u{0}".utf8)))
    }

    /// indimail's average: cur = count/(now-start); over when cur > conf; need = count/conf - elapsed.
    func testAverageModeArithmetic() {
        var g = RateGate()
        let p = DomainPolicy(key: "a.example", expression: "1/10", mode: .average)
        let t0: Int64 = 1_000_000
        // The first deliveries in the first second all pass (elapsed 0): indimail's burst.
        for _ in 0..<3 { if case .go = g.admit(domain: "a.example", id: 1, policy: p, nowMS: t0 * 1000) {} else { XCTFail() } }
        // 1 s later: cur = 3/1 > 0.1 → need = 3/0.1 - 1 = 29 s.
        XCTAssertEqual(g.admit(domain: "a.example", id: 7, policy: p, nowMS: (t0 + 1) * 1000),
                       .wait(until: t0 + 30, logLine: "warn: slowq a.example msg 7: rate exceeded [4/3.0000000000/0.1000000000] need 29 secs; will try again later"))
        // At t0+30: cur = 3/30 = 0.1, not > 0.1 → ok.
        XCTAssertEqual(g.admit(domain: "a.example", id: 8, policy: p, nowMS: (t0 + 30) * 1000),
                       .go(logLine: "info: slowq a.example msg 8: rate [4/0.1000000000/0.1000000000] ok since 30 secs"))
        // An idle spell longer than the interval restarts the sample.
        let later = t0 + 30 + 86401
        if case .go = g.admit(domain: "a.example", id: 9, policy: p, nowMS: later * 1000) {} else { XCTFail() }
        XCTAssertEqual(g.ledgers["a.example"]?.count, 1)
    }

    /// Smooth mode: no window of the period ever holds more than rate×period + burst.
    func testSmoothModeNeverExceedsTheRateInAnyWindow() {
        for burst in [1.0, 5.0] {
            var g = RateGate()
            let p = DomainPolicy(key: "b.example", expression: "500/3600", mode: .smooth, burst: burst)
            var now: Int64 = 1_000_000_000
            var sent: [Int64] = []
            var generator = SeededGenerator(for: "rate gate burst \(burst)")
            // Clients try often and irregularly for three hours.
            while now < 1_000_000_000 + 3 * 3_600_000 {
                switch g.admit(domain: "b.example", id: 1, policy: p, nowMS: now) {
                case .go: sent.append(now); g.finished(policyKey: "b.example", report: "", deferred: false)
                    now += Int64.random(in: 1...4000, using: &generator)
                case .wait(let until, _):
                    // The engine comes back exactly when told.
                    XCTAssertGreaterThan(until * 1000, now)
                    now = until * 1000
                case .broken, .busy: XCTFail()
                }
            }
            var j = 0
            for i in sent.indices {
                while sent[i] - sent[j] >= 3_600_000 { j += 1 }
                XCTAssertLessThanOrEqual(i - j + 1, 500 + Int(burst), "window ending at \(sent[i])")
            }
            // The first minute after an idle start gets at most its share plus the burst, not 500.
            XCTAssertLessThanOrEqual(sent.filter { $0 < 1_000_000_000 + 60_000 }.count, 9 + Int(burst))
            XCTAssertGreaterThan(sent.count, 1490, "the rate is used, not starved")
        }
    }

    func testGlobalLedgerIsShared() {
        var g = RateGate()
        let p = DomainPolicy(key: ".global", expression: "1/60")
        XCTAssertEqual(g.admit(domain: "x.example", id: 1, policy: p, nowMS: 0).isGo, true)
        XCTAssertEqual(g.admit(domain: "y.example", id: 2, policy: p, nowMS: 1000).isGo, false)
    }

    func testConcurrencyWindowAndBackoff() {
        var g = RateGate()
        let p = DomainPolicy(key: "c.example", expression: "100", concurrency: 2)
        XCTAssertTrue(g.admit(domain: "c.example", id: 1, policy: p, nowMS: 0).isGo)
        XCTAssertTrue(g.admit(domain: "c.example", id: 2, policy: p, nowMS: 100).isGo)
        XCTAssertFalse(g.admit(domain: "c.example", id: 3, policy: p, nowMS: 200).isGo)
        g.finished(policyKey: "c.example", report: "x\nRemote host said: 421 4.7.0 too many connections\n", deferred: true)
        XCTAssertEqual(g.ledgers["c.example"]?.backoff, 2)
        g.finished(policyKey: "c.example", report: "", deferred: false)
        XCTAssertTrue(RateGate.isRateLimitReply("Remote host said: 450 4.7.1 rate limited\n"))
        XCTAssertFalse(RateGate.isRateLimitReply("Remote host said: 450 mailbox busy\n"))
        // Successes recover the rate gradually.
        for _ in 0..<5 { g.finished(policyKey: "c.example", report: "", deferred: false) }
        XCTAssertLessThan(g.ledgers["c.example"]!.backoff, 2)
    }

    func testLedgerBytesRoundTrip() {
        var l = DomainLedger()
        l.count = 3; l.start = 10; l.last = 20; l.tatMS = 30_000; l.backoff = 4; l.successesSinceBackoff = 2
        XCTAssertEqual(DomainLedger(bytes: l.bytes), l)
    }
}

extension Admission {
    var isGo: Bool { if case .go = self { return true }; return false }
}

final class RateDirectoryTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = TestEnv.temporaryDirectory("rates") }
    override func tearDown() { TestEnv.remove(dir) }

    func testLookupOrderFileRatecontrolGlobalAliasOptions() throws {
        try Sys.writeFile(dir + "/a.example", RateDefinition(expression: "500/3600").bytes())
        TestEnv.write(dir + "/ratecontrol", "# comment\n*.b.example:10/60\nexact.example:remote:1/1\n")
        symlink("a.example", dir + "/alias.example")
        let r = RateDirectory(path: dir, useRegex: false)
        XCTAssertEqual(try r.policy(for: "A.Example")?.expression, "500/3600")
        XCTAssertEqual(try r.policy(for: "alias.example")?.key, "a.example", "an alias shares the ledger")
        let b = try XCTUnwrap(try r.policy(for: "mx.b.example"))
        XCTAssertEqual(b.expression, "10/60")
        XCTAssertEqual(try RateDefinition.parse(TestEnv.read(dir + "/mx.b.example")).expression, "10/60", "a ratecontrol match creates the domain's file")
        // exact.example:remote:1/1 applies to the remote channel only, with a ledger of its own.
        XCTAssertNil(try r.policy(for: "exact.example", channel: "local"))
        XCTAssertEqual(try r.policy(for: "exact.example", channel: "remote")?.expression, "1/1")
        XCTAssertEqual(try r.policy(for: "exact.example", channel: "remote")?.key, "remote:exact.example")
        XCTAssertFalse(Sys.exists(dir + "/exact.example"), "a channel's line creates no domain file")
        TestEnv.write(dir + "/ratecontrol", "# comment\n*.b.example:10/60\nexact.example:remote:1/1\nboth.example:3/60:QMAILREMOTE=/x,FOO=1\n")
        XCTAssertEqual(try r.policy(for: "both.example", channel: "local")?.expression, "3/60", "an :ENV= field is accepted")
        XCTAssertNil(try r.policy(for: "free.example"))
        try Sys.writeFile(dir + "/.global", RateDefinition(expression: "1").bytes())
        XCTAssertEqual(try r.policy(for: "free.example")?.key, ".global")
        TestEnv.write(dir + "/.options", "*:mode=average\na.example:mode=smooth,burst=5,concurrency=3\n")
        let a = try XCTUnwrap(try r.policy(for: "a.example"))
        XCTAssertEqual(a.mode, .smooth); XCTAssertEqual(a.burst, 5); XCTAssertEqual(a.concurrency, 3)
        XCTAssertEqual(try r.policy(for: "free.example")?.mode, .average)
        let re = RateDirectory(path: dir, useRegex: true)
        TestEnv.write(dir + "/ratecontrol", "^(x|y)\\.regex\\.example$:2/60\n")
        XCTAssertEqual(try re.policy(for: "y.regex.example")?.expression, "2/60")
    }

    func testBadDefinitionsAreReportedWithFileAndPosition() throws {
        try Sys.writeFile(dir + "/bad.example", RateDefinition(expression: "10/(60").bytes())
        XCTAssertThrowsError(try RateDirectory(path: dir).policy(for: "bad.example")) {
            XCTAssertEqual("\($0)", "\(dir)/bad.example: rate expression \"10/(60\": missing ) at position 7")
        }
        TestEnv.write(dir + "/.options", "*:mode=turbo\n")
        XCTAssertThrowsError(try RateDirectory(path: dir).policy(for: "x.example")) {
            XCTAssertEqual("\($0)", "\(dir)/.options: line 1: mode must be smooth or average")
        }
    }
}

/// The scheduler with a rate gate: an over-rate domain waits, others do not.
final class RateSchedulingTests: XCTestCase {
    func testOverRateDomainsNeverDelayOtherDomains() {
        var s = Scheduler(config: SchedulerConfig(concurrencyRemote: 5))
        s.rateGate = RateGate()
        s.ratePolicy = { d, _ in d == "slow.example" ? DomainPolicy(key: d, expression: "1/60") : nil }
        for id: MessageID in 1...4 { _ = s.add(id, channels: [.remote: 0]) }
        var started: [String] = []
        var logs: [String] = []
        var actions = s.step(now: 0)
        while let k = actions.compactMap({ if case let .load(k) = $0 { return k }; return nil }).first {
            let rcpt = k.id <= 2 ? "u\(k.id)@slow.example" : "u\(k.id)@fast.example"
            actions = s.jobLoaded(k, LoadedJob(key: k, birth: 0, sender: [], recipients: [.init(offset: 0, address: Array(rcpt.utf8))]), now: 0)
            for a in actions {
                if case let .start(d) = a { started.append(String(decoding: d.recipient.address, as: UTF8.self)) }
                if case let .log(l) = a { logs.append(l) }
            }
        }
        XCTAssertEqual(started.sorted(), ["u1@slow.example", "u3@fast.example", "u4@fast.example"])
        XCTAssertTrue(logs.contains { $0.hasPrefix("warn: slowq slow.example msg 2: rate exceeded [2/") && $0.hasSuffix("need 60 secs; will try again later") }, "\(logs)")
        // Message 2 waits exactly until its slot at 60 s, not qmail's retry schedule.
        XCTAssertEqual(s.scheduledTime(JobKey(2, .remote)), 60)
    }

    /// A definition's `concurrency` parks the waiting jobs (no reload every second);
    /// each delivery of the definition that ends wakes one, the one that waited longest.
    func testConcurrencyWaitParksAndOneFinishWakesOne() {
        var s = Scheduler(config: SchedulerConfig(concurrencyRemote: 10))
        s.rateGate = RateGate()
        s.ratePolicy = { d, _ in DomainPolicy(key: d, expression: "1000", concurrency: 1) }
        for id: MessageID in 1...3 { _ = s.add(id, channels: [.remote: 0]) }
        var starts: [Delivery] = []
        var logs: [String] = []
        func run(_ first: [SchedulerAction], now: Time) {
            var actions = first
            while let k = actions.compactMap({ if case let .load(k) = $0 { return k }; return nil }).first {
                actions = s.jobLoaded(k, LoadedJob(key: k, birth: 0, sender: [], recipients: [.init(offset: 0, address: Array("u\(k.id)@one.example".utf8))]), now: now)
                for a in actions {
                    if case let .start(d) = a { starts.append(d) }
                    if case let .log(l) = a { logs.append(l) }
                }
            }
        }
        run(s.step(now: 0), now: 0)
        XCTAssertEqual(starts.map(\.key.id), [1])
        XCTAssertEqual(logs.filter { $0.contains("1 deliveries in progress") }.count, 2, "\(logs)")
        // Parked, not due again a second later.
        XCTAssertNil(s.nextWakeup().flatMap { $0 <= 1 ? $0 : nil })
        XCTAssertEqual(s.step(now: 1), [])
        // Message 1's delivery ends: message 2, the one waiting longest, goes; 3 still waits.
        let (_, after) = s.finished(starts[0].number, DeliveryReport(.success, "ok"), now: 2)
        run(after, now: 2)
        XCTAssertEqual(starts.map(\.key.id), [1, 2])
    }
}
