import XCTest
import SystemIO
import LMDB
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// qmail-tcpto and qmail-tcpok on both memories of failing hosts: qmail-remote's
/// `lock/tcpto` and the engine's LMDB, with and without a running engine.
final class TcptoTests: XCTestCase {
    var dir = ""
    var queue: String { dir + "/queue" }
    var environment: [String] {
        TestEnv.environment(["QMAILHOME": dir, "QUEUEDIR": queue, "CONTROLDIR": dir + "/control", "QUEUE_BASE": nil,
                             "QMAILQUEUE": nil, "CONFSPLIT": nil, "BIGTODO": nil])
    }

    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("tcpto")
        chmod(dir, 0o755)
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [queue]).exitCode, 0)
        mkdir(dir + "/control", 0o755)
        mkdir(dir + "/users", 0o755)
        TestEnv.write(dir + "/control/me", "example.test\n")
        TestEnv.write(dir + "/users/assign", ".\n")
    }

    override func tearDown() { TestEnv.remove(dir) }

    /// Two records as qmail-remote writes them (queue-layout §3.2).
    func writeTcptoFile(now: Int64) {
        var bytes = [UInt8](repeating: 0, count: 2048)
        func record(_ k: Int, family: Int32, count: UInt8, when: Int64, address: [UInt8]) {
            let o = 32 * k
            bytes[o] = UInt8(family)
            bytes[o + 4] = count
            for i in 0..<4 { bytes[o + 8 + i] = UInt8(truncatingIfNeeded: when >> Int64(8 * i)) }
            for (i, b) in address.enumerated() { bytes[o + 16 + i] = b }
        }
        record(0, family: AF_INET, count: 3, when: now - 100, address: [192, 0, 2, 7])
        record(5, family: AF_INET6, count: 1, when: now - 20, address: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1])
        try! Sys.writeFile(queue + "/lock/tcpto", bytes)
    }

    /// An entry in the engine's memory, as its LMDB store writes it.
    func writeEngineMemory(_ ip: String, failures: Int64, last: Int64) throws {
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        o.mapSize = 4 << 30
        let env = try LMDBEnvironment(path: queue + "/lock/engine.lmdb", options: o)
        let db = try env.database("tcpto")
        var v: [UInt8] = []
        for x in [failures, last] { for s in stride(from: 56, through: 0, by: -8) { v.append(UInt8(truncatingIfNeeded: x >> Int64(s))) } }
        try env.write { try $0.put(db, Array(ip.utf8), v) }
    }

    func tcpto() throws -> TestEnv.Output { try TestEnv.run(TestEnv.program("qmail-tcpto"), [], environment: environment) }
    func tcpok() throws -> TestEnv.Output { try TestEnv.run(TestEnv.program("qmail-tcpok"), [], environment: environment) }

    func testListAndClearWithoutEngine() throws {
        let now = Int64(time(nil))
        writeTcptoFile(now: now)
        try writeEngineMemory("198.51.100.4", failures: 2, last: now - 50)
        let out = try tcpto()
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        let lines = out.stdoutText.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, out.stdoutText)
        // Seconds may tick between our clock and the tool's.
        XCTAssertTrue(lines[0].hasPrefix("192.0.2.7 ipv4 timed out 10") && lines[0].hasSuffix(" seconds ago; # recent timeouts: 3"), lines[0])
        XCTAssertTrue(lines[1].hasPrefix("2001:db8::1 ipv6 timed out 2") && lines[1].hasSuffix("; # recent timeouts: 1"), lines[1])
        XCTAssertTrue(lines[2].hasPrefix("198.51.100.4 ipv4 timed out 5") && lines[2].hasSuffix("; # recent timeouts: 2 (engine)"), lines[2])
        let ok = try tcpok()
        XCTAssertEqual(ok.exitCode, 0, ok.stderrText)
        XCTAssertEqual(TestEnv.read(queue + "/lock/tcpto"), [UInt8](repeating: 0, count: 2048))
        XCTAssertEqual(try tcpto().stdoutText, "")
    }

    func testClearThroughTheRunningEngine() throws {
        let now = Int64(time(nil))
        writeTcptoFile(now: now)
        try writeEngineMemory("198.51.100.4", failures: 2, last: now - 50)
        let logPath = dir + "/send.log"
        let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        let null = open("/dev/null", O_RDONLY)
        let pid = try Spawn.start(TestEnv.program("qmail-send"), arguments: ["qmail-send", "./Maildir/"], environment: environment,
                                  fds: [.init(null, at: 0), .init(fd, at: 1), .init(fd, at: 2)], keepStandard: false)
        close(fd); close(null)
        var reaped = false
        defer { if !reaped { kill(pid, SIGKILL); _ = try? Spawn.wait(pid) } }
        func log() -> String { String(decoding: TestEnv.read(logPath), as: UTF8.self) }
        for _ in 0..<1000 where !log().contains("status: local 0/10") { usleep(10_000) }
        XCTAssertTrue(log().contains("status: local 0/10"), log())
        // The engine holds its memory: clearing only LMDB would not do; it is asked.
        let ok = try tcpok()
        XCTAssertEqual(ok.exitCode, 0, ok.stderrText)
        XCTAssertTrue(log().contains("info: qmail-tcpok: forgot 1 remote host\n"), log())
        XCTAssertEqual(try tcpto().stdoutText, "")
        XCTAssertEqual(try Sys.listDirectory(queue + "/lock/commands"), [])
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<2000 {
            if waitpid(pid, &status, WNOHANG) == pid { reaped = true; break }
            usleep(10_000)
        }
    }

    func testUsage() throws {
        for p in ["qmail-tcpto", "qmail-tcpok"] {
            let o = try TestEnv.run(TestEnv.program(p), ["--help"])
            XCTAssertEqual(o.exitCode, 0)
            XCTAssertTrue(o.stdoutText.hasPrefix("usage: \(p)"))
            XCTAssertEqual(try TestEnv.run(TestEnv.program(p), ["-z"]).exitCode, 100)
        }
    }
}
