#if canImport(Glibc)
import Glibc
#endif
import XCTest
import Foundation
import SystemIO
import TestSupport

/// The chain qmail-smtpd → qmail-spamfilter (a trained bogofilter) → qmail-dkim →
/// qmail-queue, all real programs, qmail-smtpd on a socket pair as tcpserver
/// starts it, into a queue made by queue-fix.
final class FrontEndChainTests: XCTestCase {
    var dir = ""
    var zone = ""
    let support = TestEnv.packageRoot + "/Tests/FrontEndsTests/Support"

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        dir = TestEnv.temporaryDirectory("chain")
        XCTAssertEqual(try TestEnv.run(TestEnv.program("queue-fix"), [dir + "/queue"]).exitCode, 0)
        for d in ["control", "bogo", "control/domainkeys", "control/domainkeys/example.com"] { try Sys.mkdir(dir + "/" + d, mode: 0o755) }
        TestEnv.write(dir + "/control/me", "mx.example.org\n")
        TestEnv.write(dir + "/control/rcpthosts", "example.org\n")
        for i in 1...6 {
            let spam = "From: promo\(i)@spam.example\nSubject: cheap pills viagra casino winner \(i)\n\nBuy cheap pills now! Viagra casino lottery winner prize money offer \(i) click here free free free\n"
            let ham = "From: colleague\(i)@work.example\nSubject: meeting notes project \(i)\n\nHi team, attached are the minutes from our project meeting \(i). Please review the schedule and the budget before Thursday. Regards\n"
            _ = try TestEnv.run("/usr/bin/bogofilter", ["-d", dir + "/bogo", "-s"], input: Array(spam.utf8))
            _ = try TestEnv.run("/usr/bin/bogofilter", ["-d", dir + "/bogo", "-n"], input: Array(ham.utf8))
        }
        let key = dir + "/control/domainkeys/example.com/sel"
        let gen = try TestEnv.run("/bin/sh", ["-c", "openssl genpkey -algorithm ed25519 -out '\(key)' && openssl pkey -in '\(key)' -pubout -outform DER | tail -c 32 | base64"])
        XCTAssertEqual(gen.exitCode, 0, gen.stderrText)
        zone = dir + "/zone"
        TestEnv.write(zone, "sel._domainkey.example.com v=DKIM1; k=ed25519; p=\(gen.stdoutText.replacingOccurrences(of: "\n", with: ""))\n")
    }

    override func tearDown() { TestEnv.remove(dir) }

    /// One SMTP session with qmail-smtpd; returns the reply to the end of DATA.
    func smtp(_ message: String, env: [String: String?]) throws -> String {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds), 0)
        var e: [String: String?] = ["QMAILHOME": dir, "QUEUEDIR": dir + "/queue", "CONTROLDIR": dir + "/control", "NULLQUEUE": nil,
                                   "TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "mx.example.org",
                                   "TCPREMOTEHOST": nil, "TCPREMOTEINFO": nil, "RELAYCLIENT": nil, "PENALTY": "0",
                                   "QMAILQUEUE": TestEnv.program("qmail-spamfilter"), "SPAMQUEUE": TestEnv.program("qmail-dkim"),
                                   "DKIMQUEUE": nil, "QUEUEPROG": nil,
                                   "SPAMFILTER": "/usr/bin/bogofilter -d \(dir)/bogo -p", "REJECTSPAM": "1",
                                   "DKIMSIGN": nil, "DKIMKEY": nil, "DKIMVERIFY": nil]
        for (k, v) in env { e[k] = v }
        let pid = try Spawn.start(TestEnv.program("qmail-smtpd"), arguments: ["qmail-smtpd"], environment: TestEnv.environment(e),
                                  fds: [.init(fds[1], at: 0), .init(fds[1], at: 1)], keepStandard: true)
        close(fds[1])
        let fd = fds[0]
        defer { close(fd); _ = try? Spawn.wait(pid) }
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer: [UInt8] = []
        func reply() -> String {
            var last = ""
            while true {
                while let nl = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[..<nl], as: UTF8.self).replacingOccurrences(of: "\r", with: "")
                    buffer.removeFirst(nl + 1)
                    last = line
                    if line.count < 4 || Array(line)[3] != "-" { return last }
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return last.isEmpty ? "<closed>" : last }
                buffer += chunk[0..<n]
            }
        }
        func command(_ text: String) -> String {
            let b = Array((text + "\r\n").utf8)
            _ = b.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return reply()
        }
        XCTAssertTrue(reply().hasPrefix("220 "))
        XCTAssertEqual(command("helo client.example"), "250 mx.example.org")
        XCTAssertEqual(command("mail <alice@example.com>"), "250 ok")
        XCTAssertEqual(command("rcpt <bob@example.org>"), "250 ok")
        XCTAssertEqual(command("data"), "354 go ahead")
        let body = message.replacingOccurrences(of: "\n", with: "\r\n")
        let done = command(body + ".")
        _ = command("quit")
        return done
    }

    func queued() throws -> [String] {
        try TestEnv.files(under: dir + "/queue/todo").sorted().map { name in
            let id = UInt64(name)!
            return String(decoding: TestEnv.read(dir + "/queue/mess/\(id % 23)/\(id)"), as: UTF8.self)
        }
    }

    let ham = "From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: project meeting\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <m1@example.com>\n\nPlease review the minutes and the schedule before Thursday.\n"
    let spam = "From: Promo <promo@spam.example>\nTo: bob@example.org\nSubject: cheap viagra casino winner\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nFree pills lottery prize, click here, cheap offer\n"

    func testRelayClientMailIsFilteredSignedAndQueued() throws {
        let reply = try smtp(ham, env: ["RELAYCLIENT": "", "DKIMKEY": "domainkeys/%/sel"])
        XCTAssertTrue(reply.hasPrefix("250 ok"), reply)
        let q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].contains("\nDKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com; s=sel;"), q[0])
        XCTAssertTrue(q[0].contains("\nX-Bogosity: Ham, tests=bogofilter"), q[0])
        // The queued message, as it will leave, verifies with dkimpy.
        let v = try TestEnv.run("/usr/bin/env", ["python3", support + "/dkimcheck.py", "verify", zone], input: Array(q[0].utf8))
        XCTAssertEqual(v.stdoutText, "pass\n", v.stderrText)
    }

    func testIncomingMailIsVerifiedAndSpamRefused() throws {
        let dns = try ScriptServer(["/usr/bin/env", "python3", support + "/txtdns.py", "--lifetime", "60", zone])
        defer { dns.stop() }
        let s = try TestEnv.run("/usr/bin/env", ["python3", support + "/dkimcheck.py", "sign", dir + "/control/domainkeys/example.com/sel", "sel", "example.com", "ed25519"],
                                input: Array(ham.utf8))
        XCTAssertEqual(s.exitCode, 0, s.stderrText)
        let env: [String: String?] = ["DKIMVERIFY": "FGHIJKLMNPQRSTUVWX", "DNS_SERVER": "127.0.0.1:\(dns.port)", "AUTHSERV_ID": "mx.example.org"]
        let reply = try smtp(s.stdoutText, env: env)
        XCTAssertTrue(reply.hasPrefix("250 ok"), reply)
        var q = try queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].contains("\nDKIM-Status: good        \nAuthentication-Results: mx.example.org;\n\tdkim=pass header.d=example.com header.s=sel header.a=ed25519-sha256\n"), q[0])
        XCTAssertTrue(q[0].contains("\nX-Bogosity: Ham"), q[0])
        // Tampered on the way: refused for good by DKIMVERIFY's U.
        let bad = try smtp(s.stdoutText.replacingOccurrences(of: "before Thursday", with: "before Friday"), env: env)
        XCTAssertEqual(bad, "554 qmail-dkim: signature verify error: message body does not hash to bh value (#5.7.7)")
        // Spam: refused by the filter, before DKIM.
        let refused = try smtp(spam, env: env)
        XCTAssertEqual(refused, "554 qq spam or junk mail threshold exceeded (#5.7.1)")
        q = try queued()
        XCTAssertEqual(q.count, 1)
    }
}
