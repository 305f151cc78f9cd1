import XCTest
import Receivers
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// qmail-smtpd's conversation, scenario by scenario (the receivers reference's
/// test list), against the real program on a socket pair as tcpserver runs it,
/// queueing into a real queue through the real qmail-queue.
final class SMTPDProtocolTests: XCTestCase {
    var h: SMTPDHarness!
    override func setUp() { h = SMTPDHarness() }
    override func tearDown() { h.cleanup() }

    func testAWholeSessionQueuesTheMessageWithItsReceivedLine() throws {
        let (c, greeting) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(greeting, ["220 domain ESMTP"])
        XCTAssertEqual(c.command("helo dude"), "250 domain")
        XCTAssertEqual(c.command("mail <me@domain>"), "250 ok")
        XCTAssertEqual(c.command("rcpt <me@domain>"), "250 ok")
        XCTAssertEqual(c.command("data"), "354 go ahead")
        let done = c.command("Subject: testing\r\n\r\nThis is a test.\r\n.")
        XCTAssertTrue(done.hasPrefix("250 ok ") && done.contains(" qp "), done)
        XCTAssertEqual(c.command("quit"), "221 domain closing connection")
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertEqual(q[0].sender, "me@domain")
        XCTAssertEqual(q[0].recipients, ["me@domain"])
        let lines = q[0].message.components(separatedBy: "\n")
        // qmail-queue's own line, then ours, then the client's bytes with LF line ends.
        XCTAssertTrue(lines[0].hasPrefix("Received: indimail-mta queue "), q[0].message)
        let ours = lines.firstIndex { $0.hasPrefix("Received: indimail-mta smtpd ") }!
        XCTAssertTrue(lines[ours].hasSuffix(" (HELO dude) (192.0.2.7)"), lines[ours])
        XCTAssertTrue(lines[ours + 1].hasPrefix("  by domain with ESMTP; "), lines[ours + 1])
        XCTAssertTrue(q[0].message.hasSuffix("\nSubject: testing\n\nThis is a test.\n"), q[0].message)
    }

    func testEhloListsTheExtensions() throws {
        h.extraEnv["DATABYTES"] = "10000"
        let (c, _) = try h.classic()
        defer { c.close() }
        c.send("EHLO x\r\n")
        XCTAssertEqual(c.reply(), ["250-domain", "250-PIPELINING", "250-8BITMIME", "250-SIZE 10000", "250 HELP"])
    }

    func testSequencing() throws {
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("RCPT TO:<a@domain>"), "503 MAIL first (#5.5.1)")
        XCTAssertEqual(c.command("DATA"), "503 MAIL first (#5.5.1)")
        XCTAssertEqual(c.command("MAIL FROM:<a@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "503 RCPT first (#5.5.1)")
        XCTAssertEqual(c.command("RSET"), "250 flushed")
        XCTAssertEqual(c.command("RCPT TO:<a@domain>"), "503 MAIL first (#5.5.1)")
        XCTAssertEqual(c.command("FOO bar"), "502 unimplemented (#5.5.1)")
        XCTAssertEqual(c.command("VRFY x"), "252 send some mail, i'll try my best")
        XCTAssertEqual(c.command("NOOP"), "250 ok")
        XCTAssertEqual(c.command("DATA x"), "501 invalid parameter syntax (#5.3.2)")
    }

    func testRcpthostsAndMorercpthostsAndRelayclient() throws {
        h.writeControl("rcpthosts", "example.com\n.example.net\n")
        h.writeControl("morercpthosts", "Big.example\n.big.example\n")
        XCTAssertEqual(try TestEnv.run(TestEnv.program("qmail-newmrh"), [], environment: h.environment).exitCode, 0)
        XCTAssertTrue(Sys.exists(h.control + "/morercpthosts.cdb"))
        var (c, _) = try h.classic()
        XCTAssertEqual(c.command("MAIL FROM:<s@x>"), "250 ok")
        for (rcpt, code) in [("a@EXAMPLE.COM", "250"), ("a@x.example.net", "250"), ("a@example.net", "553"), ("postmaster", "250"),
                             ("a@big.example", "250"), ("a@sub.big.example", "250"), ("a@other.org", "553")] {
            let r = c.command("RCPT TO:<\(rcpt)>")
            XCTAssertTrue(r.hasPrefix(code), "\(rcpt): \(r)")
            if code == "553" { XCTAssertEqual(r, "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)") }
        }
        // A relay probe is refused even for a domain in rcpthosts.
        XCTAssertEqual(c.command("RCPT TO:<a%other.org@example.com>"), "550 we don't relay (#5.7.1)")
        c.close()
        unlink(h.control + "/morercpthosts.cdb")
        (c, _) = try h.classic()
        XCTAssertEqual(c.command("MAIL FROM:<s@x>"), "250 ok")
        XCTAssertTrue(c.command("RCPT TO:<a@big.example>").hasPrefix("553 "))
        c.close()
        // RELAYCLIENT: anything goes, its value appended.
        for (value, want) in [("", "a@other.org"), ("@gw", "a@other.org@gw")] {
            let (r, _) = try h.classic(env: ["RELAYCLIENT": value])
            XCTAssertEqual(r.command("MAIL FROM:<s@x>"), "250 ok")
            XCTAssertEqual(r.command("RCPT TO:<a@other.org>"), "250 ok")
            XCTAssertEqual(r.command("DATA"), "354 go ahead")
            XCTAssertTrue(r.command("Subject: r\r\n\r\nx\r\n.").hasPrefix("250 ok"))
            r.close()
            XCTAssertTrue(try h.queued().contains { $0.recipients == [want] }, want)
        }
    }

    func testBadmailfromAndBadrcptto() throws {
        h.writeControl("badmailfrom", "@spam.example\nbad@domain\n")
        h.writeControl("badrcptto", "nobody@domain\n")
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("MAIL FROM:<x@Spam.Example>"), "553 sorry, your envelope sender has been denied (#5.7.1)")
        XCTAssertEqual(c.command("MAIL FROM:<BAD@domain>"), "553 sorry, your envelope sender has been denied (#5.7.1)")
        XCTAssertEqual(c.command("MAIL FROM:<good@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<nobody@domain>"), "553 sorry, your envelope recipient has been denied (#5.7.1)")
    }

    func testAddressForms() throws {
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("MAIL FROM:<>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<@r1,@r2:\"a b\"@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<c@domain>"), "553 sorry, bounce messages should have a single envelope recipient (#5.7.1)")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("x: y\r\n\r\nz\r\n.").hasPrefix("250 ok"))
        XCTAssertEqual(c.command("MAIL FROM: x@domain SIZE=10"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO: y@domain"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("x: y\r\n\r\nz\r\n.").hasPrefix("250 ok"))
        XCTAssertEqual(c.command("MAIL FROM:"), "555 syntax error in address (#5.1.3)")
        let q = try h.queued()
        XCTAssertTrue(q.contains { $0.sender == "" && $0.recipients == ["a b@domain"] })
        XCTAssertTrue(q.contains { $0.sender == "x@domain" && $0.recipients == ["y@domain"] })
        // 899 bytes pass, 900 do not.
        let local899 = String(repeating: "a", count: 899 - "@domain".count)
        XCTAssertEqual(c.command("MAIL FROM:<\(local899)@domain>"), "250 ok")
        XCTAssertEqual(c.command("MAIL FROM:<a\(local899)@domain>"), "555 syntax error in address (#5.1.3)")
    }

    func testLocaliphostReplacesThisHostsAddress() throws {
        h.writeControl("moreipme", "192.0.2.99\n")
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("MAIL FROM:<s@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<postmaster@[127.0.0.1]>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<postmaster@[192.0.2.99]>"), "250 ok")
        XCTAssertTrue(c.command("RCPT TO:<postmaster@[203.0.113.9]>").hasPrefix("553 "))
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("x: y\r\n\r\nz\r\n.").hasPrefix("250 ok"))
        XCTAssertEqual(try h.queued()[0].recipients, ["postmaster@domain", "postmaster@domain"])
    }

    func send(_ c: SMTPDHarness.Client, body: String) -> String {
        XCTAssertEqual(c.command("MAIL FROM:<a@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        c.send(body)
        return c.reply().last ?? "<closed>"
    }

    func testDatabytesLimitsTheStoredSize() throws {
        h.writeControl("databytes", "100\n")
        let (c, _) = try h.classic()
        defer { c.close() }
        let hundred = String(repeating: "x", count: 99)   // + "\n" stored = 100 bytes
        XCTAssertTrue(send(c, body: hundred + "\r\n.\r\n").hasPrefix("250 ok"))
        XCTAssertEqual(send(c, body: hundred + "y\r\n.\r\n"), "552 sorry, that message size exceeds my databytes limit (#5.3.4)")
        XCTAssertEqual(c.command("MAIL FROM:<a@domain> SIZE=500"), "552 sorry, that message size exceeds my databytes limit (#5.3.4)")
        XCTAssertEqual(try h.queued().count, 1)
        // DATABYTES=0 in the environment: no limit.
        let (u, _) = try h.classic(env: ["DATABYTES": "0"])
        defer { u.close() }
        XCTAssertTrue(send(u, body: String(repeating: "z", count: 1000) + "\r\n.\r\n").hasPrefix("250 ok"))
    }

    func testTransparencyAndLineEnds() throws {
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertTrue(send(c, body: "..a\r\nb\rc\r\n.x\r\n.\r\n").hasPrefix("250 ok"))
        XCTAssertTrue(try h.queued()[0].message.hasSuffix("\n.a\nb\rc\nx\n"))
    }

    func testBareLFIsRefusedUnlessAllowed() throws {
        let (c, _) = try h.classic()
        XCTAssertEqual(send(c, body: "Subject: x\nbody\r\n.\r\n"), "451 Sorry, I received Bare LF. (#4.6.0)")
        XCTAssertTrue(c.closedByServer())
        c.close()
        XCTAssertEqual(try h.queued().count, 0)
        let (a, _) = try h.classic(env: ["ALLOW_BARELF": "1"])
        defer { a.close() }
        XCTAssertTrue(send(a, body: "Subject: x\nbody\n.\n").hasPrefix("250 ok"))
        XCTAssertTrue(try h.queued()[0].message.hasSuffix("\nSubject: x\nbody\n"))
    }

    func testHopCount() throws {
        let (c, _) = try h.classic()
        defer { c.close() }
        let r99 = String(repeating: "Received: x\r\n", count: 99)
        XCTAssertTrue(send(c, body: r99 + "\r\nbody\r\n.\r\n").hasPrefix("250 ok"))
        XCTAssertEqual(send(c, body: r99 + "Received: y\r\n\r\nbody\r\n.\r\n"), "554 too many hops, this message is looping (#5.4.6)")
        XCTAssertEqual(send(c, body: r99 + "Delivered-To: y\r\n\r\nbody\r\n.\r\n"), "554 too many hops, this message is looping (#5.4.6)")
        XCTAssertTrue(send(c, body: "Subject: s\r\n\r\n" + String(repeating: "Received: x\r\n", count: 100) + ".\r\n").hasPrefix("250 ok"))
        XCTAssertEqual(try h.queued().count, 2)
    }

    func testQueueFailuresAreReported() throws {
        let stub = h.dir + "/qq.sh"
        TestEnv.write(stub, "#!/bin/sh\ncat >/dev/null\ncat <&1 >/dev/null\nif [ \"$CODE\" = 88 ]; then printf 'Dno thanks (#5.7.1)' >&2; fi\nexit $CODE\n", mode: 0o755)
        for (code, want) in [("53", "451 qq write error or disk full (#4.3.0)"), ("31", "554 qq mail server permanently rejected message (#5.3.0)"),
                             ("88", "554 no thanks (#5.7.1)")] {
            let (c, _) = try h.classic(env: ["QMAILQUEUE": stub, "CODE": code])
            XCTAssertEqual(send(c, body: "x: y\r\n\r\nz\r\n.\r\n"), want, code)
            c.close()
        }
        // A queue program that cannot be started: the refusal comes at DATA, before 354.
        let (c, _) = try h.classic(env: ["QMAILQUEUE": h.dir + "/missing"])
        defer { c.close() }
        XCTAssertEqual(c.command("MAIL FROM:<a@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "451 qq unable to exec qq (#4.3.0)")
        XCTAssertEqual(c.command("NOOP"), "250 ok")
    }

    func testIdleClientTimesOutAndALongLineIsRefused() throws {
        h.writeControl("timeoutsmtpd", "1\n")
        let (c, _) = try h.classic()
        let start = time(nil)
        XCTAssertEqual(c.reply(), ["451 timeout (#4.4.2)"])
        XCTAssertTrue(c.closedByServer())
        XCTAssertLessThan(time(nil) - start, 5)
        c.close()
        // A 10 MB line: refused when it passes the limit, never held whole.
        let (l, _) = try h.classic()
        defer { l.close() }
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)
        let sender = TestSupport.Thread { for _ in 0..<10 { l.sendBytes(chunk) } }
        XCTAssertEqual(l.reply(), ["553 sorry, the given command is too long! (#5.5.2)"])
        XCTAssertTrue(l.closedByServer())
        shutdown(l.fd, Int32(SHUT_RDWR))
        sender.join()
    }

    func testPipelinedCommandsGetTheirRepliesInOrder() throws {
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("EHLO client").prefix(3), "250")
        c.send("MAIL FROM:<a@domain>\r\nRCPT TO:<b@domain>\r\nRCPT TO:<c@other.org>\r\nRCPT TO:<d@domain>\r\nDATA\r\n")
        XCTAssertEqual([c.line(), c.line(), c.line(), c.line(), c.line()],
                       ["250 ok", "250 ok", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", "250 ok", "354 go ahead"])
        c.send("Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<e@domain>\r\nQUIT\r\n")
        XCTAssertTrue(c.line()!.hasPrefix("250 ok "))
        XCTAssertEqual(c.line(), "250 ok")
        XCTAssertEqual(c.line(), "221 domain closing connection")
        XCTAssertEqual(try h.queued()[0].recipients, ["b@domain", "d@domain"])
    }

    func testTooManyRecipients() throws {
        h.writeControl("maxrecipients", "3\n")
        let (c, _) = try h.classic()
        defer { c.close() }
        XCTAssertEqual(c.command("MAIL FROM:<a@domain>"), "250 ok")
        for i in 0..<3 { XCTAssertEqual(c.command("RCPT TO:<r\(i)@domain>"), "250 ok") }
        XCTAssertEqual(c.command("RCPT TO:<r4@domain>"), "452 sorry, too many recipients (#4.5.3)")
    }

    // MARK: AUTH and STARTTLS

    /// A checkpassword program that records what it was given on descriptor 3
    /// and exits with the code in the file `code`.
    func checkProgram() -> String {
        let p = h.dir + "/check.sh"
        TestEnv.write(p, "#!/bin/sh\ncat <&3 > \(h.dir)/fd3.bin\nexit $(cat \(h.dir)/code)\n", mode: 0o755)
        chmod(h.dir, 0o755)
        return p
    }

    func testAuthPlainAndLoginWithACheckpasswordProgram() throws {
        let check = checkProgram()
        TestEnv.write(h.dir + "/code", "0\n")
        // Without TLS AUTH is not offered, unless ALLOW_INSECURE_AUTH says so.
        var (c, _) = try h.classic(["domain", check])
        c.send("EHLO x\r\n")
        XCTAssertFalse(c.reply().contains("250-AUTH LOGIN PLAIN"))
        XCTAssertEqual(c.command("AUTH PLAIN AHVzZXIAcGFzcw=="), "538 Encryption required for requested authentication mechanism (#5.7.11)")
        c.close()
        (c, _) = try h.classic(["domain", check], env: ["ALLOW_INSECURE_AUTH": "1"])
        c.send("EHLO x\r\n")
        XCTAssertTrue(c.reply().contains("250-AUTH LOGIN PLAIN"))
        XCTAssertEqual(c.command("AUTH PLAIN AHVzZXIAcGFzcw=="), "235 ok, go ahead (#2.0.0)")
        XCTAssertEqual(TestEnv.read(h.dir + "/fd3.bin"), Array("user\0pass\0\0\u{2}\0".utf8))
        XCTAssertEqual(c.command("AUTH PLAIN AHVzZXIAcGFzcw=="), "503 you're already authenticated (#5.5.0)")
        // Authenticated: relaying allowed, and the Received line names the user.
        XCTAssertEqual(c.command("MAIL FROM:<user@domain>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<a@other.org>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("Subject: a\r\n\r\nb\r\n.").hasPrefix("250 ok"))
        c.close()
        let authed = try h.queued()[0].message
        XCTAssertTrue(authed.contains(" (user@192.0.2.7)\n  by domain with ESMTPA; "), authed)
        // LOGIN, refused; then a temporary failure; a cancelled exchange.
        for (code, want) in [("1", "535 authorization failure (#5.7.8)"), ("111", "454 temporary authentication failure (#4.3.0)")] {
            TestEnv.write(h.dir + "/code", code + "\n")
            let (l, _) = try h.classic(["domain", check], env: ["ALLOW_INSECURE_AUTH": "1"])
            XCTAssertEqual(l.command("AUTH LOGIN"), "334 VXNlcm5hbWU6")
            XCTAssertEqual(l.command("dXNlcg=="), "334 UGFzc3dvcmQ6")
            XCTAssertEqual(l.command("cGFzcw=="), want)
            XCTAssertTrue(l.command("RCPT TO:<a@other.org>").hasPrefix("503"))
            l.close()
        }
        XCTAssertEqual(TestEnv.read(h.dir + "/fd3.bin"), Array("user\0pass\0\0\u{1}\0".utf8))
        let (x, _) = try h.classic(["domain", check], env: ["ALLOW_INSECURE_AUTH": "1"])
        defer { x.close() }
        XCTAssertEqual(x.command("AUTH LOGIN"), "334 VXNlcm5hbWU6")
        XCTAssertEqual(x.command("*"), "501 auth exchange cancelled (#5.0.0)")
        XCTAssertEqual(x.command("AUTH CRAM-MD5"), "504 auth type unimplemented (#5.5.1)")
        XCTAssertEqual(x.command("AUTH PLAIN !!!!"), "501 malformed auth input (#5.5.4)")
        let (n, _) = try h.classic()
        defer { n.close() }
        XCTAssertEqual(n.command("AUTH PLAIN AHVzZXIAcGFzcw=="), "503 auth not available (#5.3.3)")
    }

    func makeCertificate() throws -> String {
        let pem = h.control + "/servercert.pem"
        let out = try TestEnv.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=domain",
                                                       "-days", "2", "-keyout", h.dir + "/key.pem", "-out", h.dir + "/cert.pem"])
        XCTAssertEqual(out.exitCode, 0, out.stderrText)
        TestEnv.write(pem, String(decoding: TestEnv.read(h.dir + "/cert.pem") + TestEnv.read(h.dir + "/key.pem"), as: UTF8.self), mode: 0o640)
        chown(pem, 65534, 65534)   // the daemon serves as nobody and must read it
        return pem
    }

    /// Python's smtplib as the client: STARTTLS with a self-signed certificate,
    /// AUTH after it, a message sent; plaintext pipelined after STARTTLS is ignored.
    func testStartTLSThenAuthWithPythonSmtplib() throws {
        _ = try makeCertificate()
        let check = checkProgram()
        TestEnv.write(h.dir + "/code", "0\n")
        let port = try h.startDaemon(["domain", check])
        let script = """
        import smtplib, ssl, sys
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = smtplib.SMTP("127.0.0.1", \(port), timeout=20)
        code, text = s.ehlo("client.example")
        assert b"STARTTLS" in text and b"AUTH" not in text, text
        s.starttls(context=ctx)
        code, text = s.ehlo("client.example")
        assert b"STARTTLS" not in text and b"AUTH LOGIN PLAIN" in text, text
        s.login("user", "pass")
        refused = s.sendmail("user@domain", ["far@other.org"], b"Subject: tls\\r\\n\\r\\nover tls\\r\\n")
        assert refused == {}, refused
        s.quit()
        print("ok")
        """
        let out = try TestEnv.run("/usr/bin/env", ["python3", "-c", script])
        XCTAssertEqual(out.stdoutText, "ok\n", out.stderrText + h.daemonLog)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        guard let first = q.first else { return }
        XCTAssertEqual(first.recipients, ["far@other.org"])
        XCTAssertTrue(first.message.contains("by domain with ESMTPSA (TLS"), first.message)
        // Raw: STARTTLS with an argument, and bytes pipelined after STARTTLS are thrown away.
        let (c, _) = try h.connect(port)
        defer { c.close() }
        XCTAssertEqual(c.command("STARTTLS x"), "501 Syntax error (no parameters allowed) (#5.5.4)")
    }

    /// Debian's swaks as the client, through the daemon: TLS, AUTH PLAIN, a message.
    func testSwaksSendsThroughTheDaemon() throws {
        guard Sys.isExecutable("/usr/bin/swaks") else { XCTFail("swaks is not installed (scripts/ensure-deps installs it)"); return }
        _ = try makeCertificate()
        let check = checkProgram()
        TestEnv.write(h.dir + "/code", "0\n")
        let port = try h.startDaemon(["domain", check])
        let out = try TestEnv.run("/usr/bin/swaks", ["--server", "127.0.0.1:\(port)", "--from", "user@domain", "--to", "x@other.org",
                                                     "--tls", "--auth", "PLAIN", "--auth-user", "user", "--auth-password", "pass",
                                                     "--header", "Subject: swaks", "--body", "from swaks", "--timeout", "20"])
        XCTAssertEqual(out.exitCode, 0, out.stdoutText + out.stderrText)
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        guard let first = q.first else { return }
        XCTAssertEqual(first.recipients, ["x@other.org"])
        XCTAssertTrue(first.message.contains("\nSubject: swaks\n"), first.message)
    }
}
