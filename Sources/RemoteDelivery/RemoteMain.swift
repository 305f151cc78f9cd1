#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import CNet
import ControlFiles
import QueueFormat

/// `qmail-remote host sender qqeh size recipient…`: one SMTP delivery with
/// qmail-remote's reports on standard output, and the ONSUCCESS_REMOTE /
/// ONFAILURE_REMOTE / ONTEMPORARY_REMOTE hooks.
public enum RemoteMain {
    public static let help = """
    usage: qmail-remote host sender qqeh size recipient [recipient ...]

    Delivers the message on standard input to the recipients at host by SMTP:
    smtproutes or MX lookup (every MX in turn on temporary failures; never this
    host or an MX no better than it), EHLO/HELO,
    STARTTLS when offered (required and verified for tlsdestinations), SIZE,
    8BITMIME, PIPELINING. Writes one report per recipient (r accepted, h refused,
    s refused for now) and one message report (K delivered, Z deferred, D failed),
    each NUL-terminated, as qmail-remote does; exits 0. Destinations named in
    qmtproutes (smtproutes' syntax, port 209 by default) get QMTP instead.

    hooks: ONSUCCESS_REMOTE, ONFAILURE_REMOTE, ONTEMPORARY_REMOTE name a program
      run after the delivery with qmail-remote's arguments, the message on
      descriptor 0, SMTPSTATUS (K/D/Z), SMTPTEXT, SMTPCODE, SMTPHOST set; its exit
      code becomes qmail-remote's.
    host memory: addresses with two connect timeouts are skipped for an hour;
      kept between runs in $QUEUEDIR/lock/tcpto (else $QMAILHOME/queue/lock/tcpto)
    environment: CONTROLDIR, QUEUEDIR, DNS_SERVER (ip[:port] of the resolver), TLS_CA_FILE
    control files: me, helohost, smtproutes, qmtproutes, timeoutconnect, timeoutremote,
      tlsdestinations, tlsca, notls, moreipme, notipme
    exit codes: 0 (the reports say what happened), 100 usage, 111 unable to read
      the message or the controls; with a hook, the hook's exit code

    """

    public static func run(_ args: [String]) -> Int32 {
        if args.first == "--help" || args.first == "-h" { printOut(help); return 0 }
        // A peer that resets during TLS must give an error, not kill us (SSL_write has no MSG_NOSIGNAL).
        signal(SIGPIPE, SIG_IGN)
        guard args.count >= 5 else {
            printError("qmail-remote: usage: qmail-remote host sender qqeh size recipient [recipient ...]")
            return 100
        }
        let host = args[0], sender = args[1]
        let recipients = args[4...].map { Array($0.utf8) }
        let settings: SMTPSettings
        do { settings = try SMTPSettings.load(.fromEnvironment()) } catch {
            try? Sys.write(1, Array("Zqmail-remote: unable to read controls: \(error) (#4.3.0)\n\0".utf8))
            return 111
        }
        // The queue file on descriptor 0 is read in chunks as it is sent; a pipe is read whole.
        guard let file = try? MessageFile.standardInput() else {
            try? Sys.write(1, Array("ZUnable to read message. (#4.3.0)\n\0".utf8))
            return 111
        }
        // QQEH headers go in front of the message (indimail's blast()).
        let message = OutgoingMessage(prefix: Array(args[2].utf8), file: file)
        // Hosts that timed out are remembered between runs in the queue's lock/tcpto.
        let client = SMTPClient(settings: settings, hosts: HostMemory(store: TcptoFile(path: Paths.queueDir + "/lock/tcpto")))
        let outcome = client.deliver(domain: host, sender: Array(sender.utf8), recipients: recipients, message: message)
        try? Sys.write(1, outcome.outputBytes)   // the reports first: QUIT cannot lose them
        client.pool.closeAll()
        return runHook(outcome: outcome, args: args)
    }

    static func runHook(outcome: RemoteOutcome, args: [String]) -> Int32 {
        let letter = outcome.messageReport.first.map { Character(UnicodeScalar($0)) } ?? "Z"
        let hookVar = letter == "K" ? "ONSUCCESS_REMOTE" : letter == "D" ? "ONFAILURE_REMOTE" : "ONTEMPORARY_REMOTE"
        guard let hook = Sys.environment(hookVar), !hook.isEmpty else { return 0 }
        var env: [String] = []
        var p = environ
        while let e = p.pointee {
            let s = String(cString: e)
            p += 1
            if s.hasPrefix("ONSUCCESS_REMOTE=") || s.hasPrefix("ONFAILURE_REMOTE=") || s.hasPrefix("ONTEMPORARY_REMOTE=") { if !s.hasPrefix(hookVar + "=") { continue } }
            env.append(s)
        }
        let text = String(decoding: outcome.messageReport.dropFirst(), as: UTF8.self)
        env.append("SMTPSTATUS=\(letter)")
        env.append("SMTPTEXT=\(letter)\(text)")
        if let r = text.range(ofSaid: "Remote host said: ") { env.append("SMTPCODE=\(text[r].prefix(3))") }
        if let ip = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first(where: { ipAddress(String($0)) != nil }) { env.append("SMTPHOST=\(ip)") }
        _ = lseek(0, 0, SEEK_SET)
        do {
            let pid = try Spawn.start(hook, arguments: [hook] + args, environment: env, fds: [], keepStandard: true)
            switch try Spawn.wait(pid) {
            case .exited(let c): return c
            case .signaled: return 111
            }
        } catch { return 111 }
    }
}

extension String {
    /// The text after `marker`, to the end of its line.
    func range(ofSaid marker: String) -> Range<String.Index>? {
        guard let r = range(ofText: marker) else { return nil }
        return r.upperBound..<(self[r.upperBound...].firstIndex(of: "\n") ?? endIndex)
    }
}
