#if canImport(Glibc)
import Glibc
#endif
import XCTest
import Foundation
import SystemIO
import TestSupport

/// qmail-dkim against independent DKIM implementations: signatures it makes are
/// checked by PyPI's dkimpy and by OpenDKIM's opendkim-testmsg (in a network
/// namespace whose resolver is a DNS stub on its 127.0.0.1:53), messages dkimpy
/// signs are checked by qmail-dkim (keys from a DNS stub on loopback). RSA keys
/// come from opendkim-genkey; Ed25519 keys from openssl (opendkim-genkey 2.11
/// cannot make them).
final class QmailDKIMTests: XCTestCase {
    var dir = ""
    var zone = ""
    static let support = TestEnv.packageRoot + "/Tests/FrontEndsTests/Support"
    let capture = QmailDKIMTests.support + "/capture.sh"

    let message = """
    From: Alice <alice@example.com>
    To: bob@example.org
    Subject: a test of DKIM
    Date: Mon, 1 Jan 2024 00:00:00 +0000
    Message-ID: <1@example.com>
    X-Mailer: swiftqmail tests
    X-Other: not signed

    Hello,
      this body has  spaces and a trailing blank line.

    """

    override func setUpWithError() throws {
        dir = TestEnv.temporaryDirectory("dkim")
        try Sys.mkdir(dir + "/keys", mode: 0o755)
        try Sys.mkdir(dir + "/cap", mode: 0o755)
        // RSA: opendkim-genkey, the key file named after its selector.
        let gen = try TestEnv.run("/usr/sbin/opendkim-genkey", ["--domain=example.com", "--selector=rsa1", "--directory=" + dir])
        XCTAssertEqual(gen.exitCode, 0, gen.stderrText)
        try Sys.rename(dir + "/rsa1.private", dir + "/keys/rsa1")
        let txt = String(decoding: TestEnv.read(dir + "/rsa1.txt"), as: UTF8.self)
        var rsaRecord = ""
        var inQuote = false
        for ch in txt {
            if ch == "\"" { inQuote.toggle(); continue }
            if inQuote { rsaRecord.append(ch) }
        }
        // Ed25519: openssl; the DNS record carries the raw 32-byte public key.
        let ed = try sh("openssl genpkey -algorithm ed25519 -out '\(dir)/keys/ed1' && openssl pkey -in '\(dir)/keys/ed1' -pubout -outform DER | tail -c 32 | base64")
        XCTAssertEqual(ed.exitCode, 0, ed.stderrText)
        let edPublic = ed.stdoutText.trimmingCharacters(in: "\n")
        zone = dir + "/zone"
        TestEnv.write(zone, "rsa1._domainkey.example.com \(rsaRecord)\ned1._domainkey.example.com v=DKIM1; k=ed25519; p=\(edPublic)\n")
    }

    override func tearDown() {
        TestEnv.remove(dir)
    }

    func sh(_ command: String, input: [UInt8] = []) throws -> TestEnv.Output {
        try TestEnv.run("/bin/sh", ["-c", command], input: input)
    }

    /// Runs qmail-dkim with the capture script as the next queue program.
    func dkim(_ env: [String: String?], input: String) throws -> (TestEnv.Output, message: String, envelope: [UInt8]) {
        try? Sys.unlink(dir + "/cap/message")
        var changes = env
        changes["DKIMQUEUE"] = capture
        changes["CAPTURE_DIR"] = dir + "/cap"
        changes["CONTROLDIR"] = dir
        let out = try TestEnv.run(TestEnv.program("qmail-dkim"), input: Array(input.utf8), fd1Input: Array("Falice@example.com\0Tbob@example.org\0\0".utf8),
                                  environment: TestEnv.environment(changes))
        return (out, String(decoding: TestEnv.read(dir + "/cap/message"), as: UTF8.self), TestEnv.read(dir + "/cap/envelope"))
    }

    func dkimpyVerifies(_ signed: String) throws -> Bool {
        let r = try TestEnv.run("/usr/bin/env", ["python3", QmailDKIMTests.support + "/dkimcheck.py", "verify", zone], input: Array(signed.utf8))
        XCTAssertTrue(r.stdoutText == "pass\n" || r.stdoutText == "fail\n", r.stdoutText + r.stderrText)
        return r.exitCode == 0
    }

    func signedBy(_ key: String, canon: String = "relaxed") throws -> String {
        var opts: [String: String?] = ["DKIMSIGN": dir + "/keys/" + key, "DKIMVERIFY": nil, "RELAYCLIENT": nil]
        if canon == "simple" { opts["DKIMSIGNOPTIONS"] = "-c s" }
        let (out, signed, envelope) = try dkim(opts, input: message)
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        XCTAssertEqual(envelope, Array("Falice@example.com\0Tbob@example.org\0\0".utf8), "the envelope passes unchanged")
        XCTAssertTrue(signed.hasPrefix("DKIM-Signature: v=1; a=\(key == "ed1" ? "ed25519-sha256" : "rsa-sha256"); c=\(canon)/\(canon); d=example.com;"), signed)
        XCTAssertTrue(signed.hasSuffix(message), "the message follows the signature unchanged")
        XCTAssertTrue(signed.contains("s=\(key);"))
        return signed
    }

    func testSignaturesVerifyWithDkimpy() throws {
        for key in ["rsa1", "ed1"] {
            for canon in ["relaxed", "simple"] {
                let signed = try signedBy(key, canon: canon)
                XCTAssertTrue(try dkimpyVerifies(signed), "\(key) \(canon)")
                // X-* fields (but X-Mailer) are not signed: changing them keeps it valid.
                XCTAssertTrue(try dkimpyVerifies(signed.replacingOccurrences(of: "X-Other: not signed", with: "X-Other: changed")))
                XCTAssertFalse(try dkimpyVerifies(signed.replacingOccurrences(of: "Hello,", with: "Hello!")), "tampered body \(key) \(canon)")
                XCTAssertFalse(try dkimpyVerifies(signed.replacingOccurrences(of: "Subject: a test", with: "Subject: A test")), "tampered header")
                XCTAssertFalse(try dkimpyVerifies(signed.replacingOccurrences(of: "X-Mailer: swiftqmail", with: "X-Mailer: other")), "X-Mailer is signed")
            }
        }
    }

    func testSignaturesVerifyWithOpendkimTestmsgInANamespace() throws {
        let ns = "sqdkim\(getpid())"
        let netns = "/etc/netns/" + ns
        XCTAssertEqual(try TestEnv.run("/usr/sbin/ip", ["netns", "add", ns]).exitCode, 0)
        defer {
            _ = try? TestEnv.run("/usr/sbin/ip", ["netns", "del", ns])
            TestEnv.remove(netns)
        }
        _ = try TestEnv.run("/bin/mkdir", ["-p", netns])
        TestEnv.write(netns + "/resolv.conf", "nameserver 127.0.0.1\n")
        XCTAssertEqual(try TestEnv.run("/usr/sbin/ip", ["netns", "exec", ns, "ip", "link", "set", "lo", "up"]).exitCode, 0)
        let dns = try ScriptServer(["/usr/sbin/ip", "netns", "exec", ns, "python3", QmailDKIMTests.support + "/txtdns.py",
                                    "--address", "127.0.0.1", "--port", "53", "--lifetime", "60", zone])
        defer { dns.stop() }
        XCTAssertEqual(dns.port, 53)
        func testmsg(_ text: String) throws -> TestEnv.Output {
            try TestEnv.run("/usr/sbin/ip", ["netns", "exec", ns, "/usr/sbin/opendkim-testmsg"], input: Array(text.utf8))
        }
        for key in ["rsa1", "ed1"] {
            for canon in ["relaxed", "simple"] {
                let signed = try signedBy(key, canon: canon)
                let good = try testmsg(signed)
                XCTAssertEqual(good.exitCode, 0, "\(key) \(canon): \(good.stderrText)")
                let bad = try testmsg(signed.replacingOccurrences(of: "Hello,", with: "Hello!"))
                XCTAssertNotEqual(bad.exitCode, 0, "tampered body \(key) \(canon)")
                XCTAssertTrue(bad.stderrText.contains("Bad signature"), bad.stderrText)
                let badHeader = try testmsg(signed.replacingOccurrences(of: "Subject: a test", with: "Subject: A test"))
                XCTAssertNotEqual(badHeader.exitCode, 0, "tampered header \(key) \(canon)")
            }
        }
    }

    func testVerifiesDkimpySignaturesWithKeysFromADNSStub() throws {
        let dns = try ScriptServer(["/usr/bin/env", "python3", QmailDKIMTests.support + "/txtdns.py", "--lifetime", "60", zone])
        defer { dns.stop() }
        let resolver = "127.0.0.1:\(dns.port)"
        for (key, alg) in [("rsa1", "rsa"), ("ed1", "ed25519")] {
            let s = try TestEnv.run("/usr/bin/env", ["python3", QmailDKIMTests.support + "/dkimcheck.py", "sign", dir + "/keys/" + key, key, "example.com", alg],
                                    input: Array(message.utf8))
            XCTAssertEqual(s.exitCode, 0, s.stderrText)
            let signed = s.stdoutText
            let env: [String: String?] = ["DKIMVERIFY": "", "DNS_SERVER": resolver, "AUTHSERV_ID": "mx.example.org", "DKIMSIGN": nil, "RELAYCLIENT": nil]
            let (ok, out, _) = try dkim(env, input: signed)
            XCTAssertEqual(ok.exitCode, 0, ok.stderrText)
            XCTAssertTrue(out.hasPrefix("DKIM-Status: good        \nAuthentication-Results: mx.example.org;\n\tdkim=pass header.d=example.com header.s=\(key) header.a=\(alg == "rsa" ? "rsa-sha256" : "ed25519-sha256")\n"), out)
            XCTAssertTrue(out.hasSuffix(signed))

            let (_, body, _) = try dkim(env, input: signed.replacingOccurrences(of: "Hello,", with: "Hello!"))
            XCTAssertTrue(body.hasPrefix("DKIM-Status: signature verify error: message body does not hash to bh value\n"), body)
            XCTAssertTrue(body.contains("dkim=fail"), body)
            let (_, header, _) = try dkim(env, input: signed.replacingOccurrences(of: "Subject: a test", with: "Subject: A test"))
            XCTAssertTrue(header.hasPrefix("DKIM-Status: signature error: RSA/ED25519 verify failed\n"), header)
            XCTAssertTrue(header.contains("dkim=fail"), header)

            // DKIMVERIFY letters turn results into refusals: U (body hash) upper case = permanent.
            var refuse = env
            refuse["DKIMVERIFY"] = "FGHIJKLMNPQRSTUVWX"
            let (r, _, _) = try dkim(refuse, input: signed.replacingOccurrences(of: "Hello,", with: "Hello!"))
            XCTAssertEqual(r.exitCode, 88)
            XCTAssertEqual(r.stderrText, "Dqmail-dkim: signature verify error: message body does not hash to bh value (#5.7.7)")
            refuse["DKIMVERIFY"] = "i"
            let (z, _, _) = try dkim(refuse, input: signed.replacingOccurrences(of: "Subject: a test", with: "Subject: A test"))
            XCTAssertEqual(z.exitCode, 88)
            XCTAssertEqual(z.stderrText, "Zqmail-dkim: signature error: RSA/ED25519 verify failed (#4.7.5)")
            // A good signature passes even with every failure letter listed.
            refuse["DKIMVERIFY"] = "FGHIJKLMNPQRSTUVWX"
            let (g, _, _) = try dkim(refuse, input: signed)
            XCTAssertEqual(g.exitCode, 0, g.stderrText)
        }
        // Unsigned: "no signatures"; a key the DNS does not have: permanent DNS failure.
        let (_, unsigned, _) = try dkim(["DKIMVERIFY": "", "DNS_SERVER": resolver, "AUTHSERV_ID": "mx"], input: message)
        XCTAssertTrue(unsigned.hasPrefix("DKIM-Status: no signatures\nAuthentication-Results: mx; dkim=none\n"), unsigned)
        let (_, malformed, _) = try dkim(["DKIMVERIFY": "", "DNS_SERVER": resolver, "AUTHSERV_ID": "mx"], input: "DKIM-Signature: eeee\n" + message)
        XCTAssertTrue(malformed.hasPrefix("DKIM-Status: signature error: DKIM-Signature could not parse or has bad tags/values\nAuthentication-Results: mx; dkim=neutral ("), malformed)
        let other = try signedBy("rsa1").replacingOccurrences(of: "s=rsa1;", with: "s=nokey;")
        let (_, nokey, _) = try dkim(["DKIMVERIFY": "", "DNS_SERVER": resolver, "AUTHSERV_ID": "mx"], input: other)
        XCTAssertTrue(nokey.hasPrefix("DKIM-Status: signature error: permanent dns failure requesting selector\n"), nokey)
        XCTAssertTrue(nokey.contains("dkim=permerror"), nokey)
    }

    func testKeyErrorsAndOptions() throws {
        // A missing key without %: indimail-mta's custom error, exit 88, nothing queued.
        let (missing, m1, _) = try dkim(["DKIMSIGN": dir + "/keys/absent"], input: message)
        XCTAssertEqual(missing.exitCode, 88)
        XCTAssertEqual(missing.stderrText, "Zqmail-dkim: unable to read private key. (#4.3.0)")
        XCTAssertEqual(m1, "")
        // Relative to CONTROLDIR, with %: the domain's key, else the name without %, else unsigned.
        try Sys.mkdir(dir + "/domainkeys", mode: 0o755)
        try Sys.mkdir(dir + "/domainkeys/example.com", mode: 0o755)
        let (none, passed, _) = try dkim(["DKIMSIGN": "domainkeys/%/rsa1"], input: message)
        XCTAssertEqual(none.exitCode, 0, none.stderrText)
        XCTAssertEqual(passed, message, "no key for the domain: passed on unsigned")
        try Sys.link(dir + "/keys/rsa1", dir + "/domainkeys/example.com/rsa1")
        let (withKey, signed, _) = try dkim(["DKIMSIGN": "domainkeys/%/rsa1"], input: message)
        XCTAssertEqual(withKey.exitCode, 0, withKey.stderrText)
        XCTAssertTrue(signed.hasPrefix("DKIM-Signature: v=1; a=rsa-sha256;"))
        XCTAssertTrue(try dkimpyVerifies(signed))
        // RELAYCLIENT without DKIMSIGN: DKIMKEY, else domainkeys/%/default.
        let (relay, relayed, _) = try dkim(["RELAYCLIENT": "", "DKIMKEY": dir + "/keys/ed1"], input: message)
        XCTAssertEqual(relay.exitCode, 0, relay.stderrText)
        XCTAssertTrue(relayed.hasPrefix("DKIM-Signature: v=1; a=ed25519-sha256;"), relayed)
        // Two signatures: DKIMSIGNEXTRA (ed25519 beside rsa), both valid.
        let (both, dual, _) = try dkim(["DKIMSIGN": dir + "/keys/rsa1", "DKIMSIGNEXTRA": dir + "/keys/ed1"], input: message)
        XCTAssertEqual(both.exitCode, 0, both.stderrText)
        XCTAssertEqual(dual.components(separatedBy: "DKIM-Signature:").count, 3)
        XCTAssertTrue(try dkimpyVerifies(dual))
        // A file that is no key: permanent error.
        TestEnv.write(dir + "/keys/junk", "not a key\n")
        let (junk, _, _) = try dkim(["DKIMSIGN": dir + "/keys/junk"], input: message)
        XCTAssertEqual(junk.exitCode, 88)
        XCTAssertEqual(junk.stderrText, "Dqmail-dkim: Could not parse private key (#5.7.5)")
        // Bad options; -z asking for a type the key is not.
        let (bad, _, _) = try dkim(["DKIMSIGN": dir + "/keys/rsa1", "DKIMSIGNOPTIONS": "-c q"], input: message)
        XCTAssertEqual(bad.exitCode, 88)
        XCTAssertEqual(bad.stderrText, "Zqmail-dkim: Invalid DKIMSIGNOPTIONS (#4.3.0)")
        let (mismatch, _, _) = try dkim(["DKIMSIGN": dir + "/keys/rsa1", "DKIMSIGNOPTIONS": "-z 4"], input: message)
        XCTAssertEqual(mismatch.exitCode, 88)
        // Options that change the signature: expiry off, identity, body length.
        let (opt, optSigned, _) = try dkim(["DKIMSIGN": dir + "/keys/rsa1", "DKIMSIGNOPTIONS": "-x - -i alice@example.com -l"], input: message)
        XCTAssertEqual(opt.exitCode, 0, opt.stderrText)
        let sigField = optSigned.components(separatedBy: "\nFrom:")[0]
        XCTAssertFalse(sigField.contains("x="), sigField)
        XCTAssertTrue(sigField.contains("i=alice@example.com"), sigField)
        XCTAssertTrue(sigField.contains("l="), sigField)
        XCTAssertTrue(try dkimpyVerifies(optSigned))
        // The next program's exit code is qmail-dkim's.
        let (code, _, _) = try dkim(["DKIMSIGN": dir + "/keys/rsa1", "CAPTURE_EXIT": "71"], input: message)
        XCTAssertEqual(code.exitCode, 71)
    }

    func testHelp() throws {
        let r = try TestEnv.run(TestEnv.program("qmail-dkim"), ["--help"])
        XCTAssertEqual(r.exitCode, 0)
        XCTAssertTrue(r.stdoutText.contains("DKIMSIGNOPTIONS"))
    }
}

/// A helper server (python) started as a child: its first output line is its port.
final class ScriptServer {
    let pid: pid_t
    let port: Int
    init(_ argv: [String]) throws {
        let out = try Spawn.pipe()
        pid = try Spawn.start(argv[0], arguments: argv, fds: [.init(out.write, at: 1)], keepStandard: true)
        Sys.close(out.write)
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(out.read, &byte, 1) == 1 && byte != 0x0A { line.append(byte) }
        Sys.close(out.read)
        port = Int(String(decoding: line, as: UTF8.self)) ?? -1
        if port < 0 { kill(pid, SIGTERM); _ = try? Spawn.wait(pid); throw Failure() }
    }
    struct Failure: Error {}
    func stop() {
        kill(pid, SIGTERM)
        _ = try? Spawn.wait(pid)
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let c = s.last, set.contains(c) { s = s.dropLast() }
        return String(s)
    }
}
