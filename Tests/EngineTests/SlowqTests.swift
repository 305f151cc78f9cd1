import XCTest
import SystemIO
import RateControl
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// slowq-send in real time against a loopback SMTP server.
final class SlowqTests: XCTestCase {
    var h: EngineHarness!
    override func setUp() { h = EngineHarness() }
    override func tearDown() { h.cleanup() }

    func smtp() throws -> (Int, String) { try h.startScriptedSMTP([], lifetime: 400) }

    /// A scripted SMTP server as the route for everything and one rate definition; the server's folder.
    func rateControlled(_ domain: String, rate: String) throws -> String {
        let (port, dir) = try smtp()
        h.writeControl("smtproutes", ":127.0.0.1:\(port)\n")
        mkdir(h.queue + "/ratelimit", 0o750)
        try Sys.writeFile(h.queue + "/ratelimit/" + domain, RateDefinition(expression: rate).bytes(), mode: 0o640)
        return dir
    }

    /// (recipient domain, arrival time) of every message the server accepted.
    func arrivals(_ dir: String) -> [(String, Double)] {
        ((try? Sys.listDirectory(dir)) ?? []).filter { $0.hasSuffix(".time") }.compactMap { n in
            let base = dir + "/" + String(n.dropLast(5))
            let env = String(decoding: TestEnv.read(base + ".env"), as: UTF8.self).split(separator: "\n")
            guard env.count >= 2, let t = Double(String(decoding: TestEnv.read(base + ".time"), as: UTF8.self).split(separator: "\n").first ?? "") else { return nil }
            return (String(env[1].split(separator: "@").last ?? ""), t)
        }.sorted { $0.1 < $1.1 }
    }

    func testTenPerMinuteIsKeptAcrossARestartWhileOtherDomainsGoAtOnce() throws {
        let dir = try rateControlled("limited.example", rate: "10/60")
        for i in 0..<30 { try h.inject("Subject: limited \(i)\n\nx\n", ["-f", "s@example.test", "u\(i)@limited.example"]) }
        for i in 0..<5 { try h.inject("Subject: free \(i)\n\nx\n", ["-f", "s@example.test", "u\(i)@free.example"]) }
        let start = Double(time(nil))
        var d = try h.startDaemon("slowq-send", [], logName: "slowq1.log")
        h.waitFor("the free domain", seconds: 20) { arrivals(dir).filter { $0.0 == "free.example" }.count == 5 }
        // Restart in the middle.
        h.waitFor("half of the limited domain", seconds: 120) { arrivals(dir).filter { $0.0 == "limited.example" }.count >= 12 }
        XCTAssertEqual(d.stop(), .exited(0))
        d = try h.startDaemon("slowq-send", [], logName: "slowq2.log")
        h.waitFor("all of the limited domain", seconds: 240) { arrivals(dir).filter { $0.0 == "limited.example" }.count == 30 }
        XCTAssertEqual(d.stop(), .exited(0))
        let all = arrivals(dir)
        let free = all.filter { $0.0 == "free.example" }.map { $0.1 }
        let limited = all.filter { $0.0 == "limited.example" }.map { $0.1 }
        XCTAssertLessThan(free.max()! - start, 15, "other domains are not held up")
        XCTAssertEqual(limited.count, 30)
        // At most 10 (+ the burst of 1) in any 60-second window, restart included.
        var j = 0
        for i in limited.indices {
            while limited[i] - limited[j] >= 60 { j += 1 }
            XCTAssertLessThanOrEqual(i - j + 1, 11, "window ending \(limited[i] - start)")
        }
        for (a, b) in zip(limited, limited.dropFirst()) { XCTAssertGreaterThan(b - a, 4.9, "deliveries \(b - a) s apart") }
        XCTAssertGreaterThan(limited.last! - limited.first!, 29 * 6 - 30, "the pace is the rate, not slower by much")
        let log = String(decoding: TestEnv.read(h.dir + "/slowq1.log"), as: UTF8.self)
        XCTAssertTrue(log.contains("info: queue limited.example msg "), log)
        XCTAssertTrue(log.contains("rate exceeded ["), log)
        XCTAssertEqual(h.queueFiles(), [])
    }

    func testDrateResetTakesEffectOnHup() throws {
        let dir = try rateControlled("slow.example", rate: "1/3600")
        for i in 0..<2 { try h.inject("Subject: \(i)\n\nx\n", ["-f", "s@example.test", "u\(i)@slow.example"]) }
        let d = try h.startDaemon("slowq-send", [], logName: "slowq.log")
        var log: String { String(decoding: TestEnv.read(h.dir + "/slowq.log"), as: UTF8.self) }
        h.waitFor("the first message and the wait of the second", seconds: 20) {
            arrivals(dir).count == 1 && log.contains("rate exceeded [")
        }
        // The administrator resets the domain's counters and tells slowq-send.
        let reset = try TestEnv.run(TestEnv.program("drate"), ["-D", h.queue + "/ratelimit", "-R", "-d", "slow.example"], environment: h.environment)
        XCTAssertEqual(reset.exitCode, 0, reset.stderrText)
        kill(d.pid, SIGHUP)
        h.waitFor("the second message after HUP", seconds: 20) { arrivals(dir).count == 2 }
        XCTAssertEqual(d.stop(), .exited(0))
        XCTAssertEqual(h.queueFiles(), [])
    }

    /// A drate -R is not undone by deliveries before the HUP: the engine finds the
    /// stored ledger changed under it and takes it instead of writing its own over it.
    func testDrateResetSurvivesDeliveriesBeforeHup() throws {
        let dir = try rateControlled("busy.example", rate: "3600/3600")
        let d = try h.startDaemon("slowq-send", [], logName: "slowq.log")
        defer { _ = d.stop() }
        func drate(_ args: [String]) throws -> String {
            try TestEnv.run(TestEnv.program("drate"), ["-D", h.queue + "/ratelimit"] + args, environment: h.environment).stdoutText
        }
        try h.inject("Subject: 0\n\nx\n", ["-f", "s@example.test", "u0@busy.example"])
        h.waitFor("the first message", seconds: 20) { arrivals(dir).count == 1 }
        h.waitFor("its count in the ledger") { (try? drate(["-s", "-d", "busy.example"]))?.contains("delivered 1") == true }
        _ = try drate(["-R", "-d", "busy.example"])
        try h.inject("Subject: 1\n\nx\n", ["-f", "s@example.test", "u1@busy.example"])
        h.waitFor("the second message", seconds: 20) { arrivals(dir).count == 2 }
        h.waitFor("the end of its turn") { d.log.contains("end msg ") && d.log.components(separatedBy: "end msg ").count == 3 }
        let shown = try drate(["-s", "-d", "busy.example"])
        XCTAssertTrue(shown.contains("delivered 0"), "the reset was written over: \(shown)")
    }

    func testDrateSimulationAndFileRoundTrip() throws {
        let rates = h.queue + "/ratelimit"
        mkdir(rates, 0o750)
        var env = h.environment
        env.append("RATELIMIT_DIR=\(rates)")
        func drate(_ args: [String]) throws -> TestEnv.Output { try TestEnv.run(TestEnv.program("drate"), args, environment: env) }
        // A definition exactly as indimail-mta's drate writes it.
        let t0 = Int64(time(nil)) - 100
        try Sys.writeFile(rates + "/old.example", Array("50/3600\u{0}3\u{0}\(t0)\u{0}\(t0 + 50)\u{0}".utf8), mode: 0o640)
        let sim = try drate(["-t", "-d", "old.example", "-C", "3", "-f"])
        XCTAssertEqual(sim.exitCode, 0, sim.stderrText)
        // 3 delivered in 100 s = 0.03/s > 50/3600: over rate at once (indimail's arithmetic).
        // (101 s when the clock ticked between t0 and drate's own reading of it.)
        let expected = ["[4/0.0300000000/0.0138888889] need 116 secs", "[4/0.0297029703/0.0138888889] need 115 secs"]
        XCTAssertTrue(expected.contains { sim.stdoutText.hasPrefix("warn: drate old.example msg 0: rate exceeded " + $0) }, sim.stdoutText)
        XCTAssertEqual(try drate(["-d", "new.example", "-r", "10/60"]).stdoutText, "new.example: rate 10/60 = 0.166667/s (600 an hour)\n")
        XCTAssertEqual(try drate(["-d", "new.example", "-r", "+5/60", "-c"]).stdoutText, "new.example: rate 0.25 = 0.25/s (900 an hour)\n")
        XCTAssertEqual(try drate(["-a", "alias.example", "-d", "new.example"]).exitCode, 0)
        XCTAssertEqual(try drate(["-l"]).stdoutText, "alias.example\nnew.example\nold.example\n")
        // Import the file counts into the ledgers, export them back: the bytes are unchanged.
        let before = TestEnv.read(rates + "/old.example")
        XCTAssertEqual(try drate(["--import"]).exitCode, 0)
        try Sys.writeFile(rates + "/old.example", Array("50/3600\u{0}0\u{0}0\u{0}0\u{0}".utf8))
        XCTAssertTrue(try drate(["--export"]).stdoutText.contains("exported old.example"))
        XCTAssertEqual(TestEnv.read(rates + "/old.example"), before)
        let show = try drate(["-s", "-d", "old.example"]).stdoutText
        XCTAssertTrue(show.hasPrefix("old.example: rate 50/3600 = 0.0138889/s, mode smooth, file count 3 since \(t0), delivered 3"), show)
        XCTAssertEqual(try drate(["-d", "x.example", "-r", "10/"]).exitCode, 100)
        // -d keeps the part after the last @; -a never replaces a real definition.
        XCTAssertEqual(try drate(["-d", "someone@third.example", "-r", "1/60"]).exitCode, 0)
        XCTAssertTrue(Sys.exists(rates + "/third.example"))
        let refused = try drate(["-a", "old.example", "-d", "new.example"])
        XCTAssertEqual(refused.exitCode, 100, refused.stderrText)
        XCTAssertEqual(TestEnv.read(rates + "/old.example"), before, "the definition is untouched")
        XCTAssertEqual(try drate(["-a", "alias.example", "-d", "third.example"]).exitCode, 0, "an alias link may be moved")
    }
}
