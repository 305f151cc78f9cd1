#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO

/// Who is on the other end of a connection (tcpserver's environment, or what
/// the daemon learnt from `accept`).
public struct ConnectionInfo: Sendable {
    public var remoteIP: String
    public var remoteHost: String?
    public var remoteInfo: String?
    public var localIP: String
    public var localHost: String?
    public var localPort: Int?
    /// `RELAYCLIENT`: set = this client may relay; its value is appended to each recipient.
    public var relayClient: String?

    public init(remoteIP: String, remoteHost: String? = nil, remoteInfo: String? = nil, localIP: String,
                localHost: String? = nil, localPort: Int? = nil, relayClient: String? = nil) {
        self.remoteIP = remoteIP
        self.remoteHost = remoteHost
        self.remoteInfo = remoteInfo
        self.localIP = localIP
        self.localHost = localHost
        self.localPort = localPort
        self.relayClient = relayClient
    }

    /// tcpserver's variables (`TCPREMOTEIP` …, `RELAYCLIENT`); `unknown` where unset.
    public static func fromEnvironment(_ env: (String) -> String? = Sys.environment) -> ConnectionInfo {
        ConnectionInfo(remoteIP: env("TCP6REMOTEIP") ?? env("TCPREMOTEIP") ?? "unknown", remoteHost: env("TCPREMOTEHOST"),
                       remoteInfo: env("TCPREMOTEINFO"), localIP: env("TCP6LOCALIP") ?? env("TCPLOCALIP") ?? "unknown",
                       localHost: env("TCPLOCALHOST"), localPort: env("TCPLOCALPORT").flatMap { Int($0) },
                       relayClient: env("RELAYCLIENT"))
    }

    /// The variables a queue program sees for this connection.
    public var environment: [String] {
        var e = ["PROTO=TCP", "TCPREMOTEIP=\(remoteIP)", "TCPLOCALIP=\(localIP)"]
        if let h = remoteHost { e.append("TCPREMOTEHOST=\(h)") }
        if let i = remoteInfo { e.append("TCPREMOTEINFO=\(i)") }
        if let h = localHost { e.append("TCPLOCALHOST=\(h)") }
        if let p = localPort { e.append("TCPLOCALPORT=\(p)") }
        return e
    }
}

/// Behaviour switches from the command line and the environment.
public struct SMTPDOptions: Sendable {
    /// `hostname` (the first operand): the `by` host when `TCPLOCALHOST` is unset.
    public var hostname: String? = nil
    /// The checkpassword-interface program and its arguments (the operands after
    /// the host name): AUTH exists only when one is given.
    public var checkProgram: [String] = []
    /// `ALLOW_INSECURE_AUTH`: AUTH PLAIN/LOGIN offered without TLS (default: only after STARTTLS).
    public var allowInsecureAuth = false
    /// `ALLOW_BARELF`: a bare LF in DATA ends a line instead of being refused.
    public var allowBareLF = false
    /// `HIDE_HOST`: the Received line carries no host names or addresses.
    public var hideHost = false
    /// `REQUIREAUTH`: MAIL is refused until the client has authenticated.
    public var requireAuth = false
    /// `PENALTY`: seconds to wait before answering a failed AUTH (default 5).
    public var penalty = 5
    /// `DISABLE_EXTRA_GREET`: the greeting is `smtpgreeting` alone, without ` ESMTP`.
    public var plainGreeting = false

    public init() {}

    public static func fromEnvironment(_ env: (String) -> String? = Sys.environment) -> SMTPDOptions {
        var o = SMTPDOptions()
        o.allowInsecureAuth = env("ALLOW_INSECURE_AUTH") != nil
        o.allowBareLF = env("ALLOW_BARELF") != nil
        o.hideHost = env("HIDE_HOST") != nil
        o.requireAuth = env("REQUIREAUTH") != nil
        if let p = env("PENALTY"), let v = Int(p), v >= 0 { o.penalty = v }
        o.plainGreeting = env("DISABLE_EXTRA_GREET") != nil
        return o
    }
}

/// One SMTP conversation, as qmail-smtpd holds it (docs/man/qmail-smtpd.8.md
/// lists every reply). The same code serves tcpserver's process per
/// connection and the daemon's thread per connection.
public final class SMTPSession {
    let io: SMTPTransport
    let controls: SMTPDControls
    var connection: ConnectionInfo
    let options: SMTPDOptions
    let queue: MessageQueue
    let baseEnvironment: [String]
    /// Written to for each message accepted (the daemon's log); nil = quiet.
    let log: ((String) -> Void)?

    var helo: String?
    var seenMail = false
    var sender: [UInt8] = []
    var recipients: [[UInt8]] = []
    var authUser: String? = nil
    var relayAllowed: Bool
    var relaySuffix: [UInt8]
    var declaredSize: Int? = nil

    public init(transport: SMTPTransport, controls: SMTPDControls, connection: ConnectionInfo, options: SMTPDOptions,
                queue: MessageQueue, environment: [String], log: ((String) -> Void)? = nil) {
        io = transport
        self.controls = controls
        self.connection = connection
        self.options = options
        self.queue = queue
        baseEnvironment = environment
        self.log = log
        relayAllowed = connection.relayClient != nil
        relaySuffix = Array((connection.relayClient ?? "").utf8)
        helo = connection.remoteHost
    }

    var greeting: String { controls.greeting[0] }

    func replyLines(_ code: Int, _ lines: [String]) {
        for (i, l) in lines.enumerated() { io.reply("\(code)\(i == lines.count - 1 ? " " : "-")\(l)") }
    }

    var authOffered: Bool { !options.checkProgram.isEmpty && (io.isTLS || options.allowInsecureAuth) }

    /// Runs the conversation to its end (QUIT, EOF, timeout, a fatal error).
    public func run() {
        var lines = controls.greeting
        if !options.plainGreeting { lines[0] += " ESMTP" }
        replyLines(220, lines)
        while true {
            switch io.readLine(maxLength: controls.maxCommandLength) {
            case .eof:
                io.flush()
                return
            case .timeout:
                io.reply("451 timeout (#4.4.2)")
                io.flush()
                return
            case .tooLong:
                io.reply("553 sorry, the given command is too long! (#5.5.2)")
                io.flush()
                return
            case .line(let line):
                if !command(line) { io.flush(); return }
                if io.failed { return }
            }
        }
    }

    func resetTransaction() {
        seenMail = false
        sender = []
        recipients = []
        declaredSize = nil
    }

    /// One command; false ends the session.
    func command(_ line: [UInt8]) -> Bool {
        let space = line.firstIndex(of: UInt8(ascii: " ")) ?? line.count
        let verb = String(decoding: line[..<space].map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)
        var a = space
        while a < line.count && line[a] == UInt8(ascii: " ") { a += 1 }
        let arg = Array(line[a...])
        switch verb {
        case "HELO":
            helo = String(decoding: arg, as: UTF8.self)
            resetTransaction()
            replyLines(250, controls.greeting)
        case "EHLO":
            helo = String(decoding: arg, as: UTF8.self)
            resetTransaction()
            var ext = [greeting]
            if authOffered { ext.append("AUTH LOGIN PLAIN") }
            ext += ["PIPELINING", "8BITMIME"]
            if controls.dataBytes > 0 { ext.append("SIZE \(controls.dataBytes)") }
            if controls.certificate != nil && !io.isTLS { ext.append("STARTTLS") }
            ext.append("HELP")
            replyLines(250, ext)
        case "MAIL": mail(arg)
        case "RCPT": rcpt(arg)
        case "DATA":
            if !arg.isEmpty { io.reply("501 invalid parameter syntax (#5.3.2)") } else { return data() }
        case "RSET":
            if !arg.isEmpty { io.reply("501 invalid parameter syntax (#5.3.2)") } else {
                resetTransaction()
                io.reply("250 flushed")
            }
        case "NOOP": io.reply("250 ok")
        case "VRFY": io.reply("252 send some mail, i'll try my best")
        case "HELP":
            var cmds = "HELO EHLO RSET NOOP MAIL RCPT DATA "
            if !options.checkProgram.isEmpty { cmds += "AUTH " }
            if controls.certificate != nil { cmds += "STARTTLS " }
            replyLines(214, ["swiftqmail qmail-smtpd; this server supports the following commands:", cmds + "VRFY HELP QUIT"])
        case "QUIT":
            replyLines(221, Array(controls.greeting.dropLast()) + [controls.greeting.last! + " closing connection"])
            io.flush()
            return false
        case "STARTTLS": return startTLS(arg)
        case "AUTH": auth(arg)
        default:
            io.reply("502 unimplemented (#5.5.1)")
        }
        return true
    }

    func isLocalIP(_ text: [UInt8]) -> Bool {
        controls.localAddresses.contains(String(decoding: text, as: UTF8.self))
    }

    func mail(_ arg: [UInt8]) {
        if options.requireAuth && authUser == nil { io.reply("530 authentication required (#5.7.1)"); return }
        guard let p = SMTPAddress.parse(arg, localIPHost: Array(controls.localIPHost.utf8), isLocalIP: isLocalIP) else {
            io.reply("555 syntax error in address (#5.1.3)")
            return
        }
        let size = SMTPAddress.sizeParameter(p.parameters)
        if let size, controls.dataBytes > 0, size > controls.dataBytes {
            io.reply("552 sorry, that message size exceeds my databytes limit (#5.3.4)")
            return
        }
        if SMTPDControls.listed(p.address, in: controls.badMailFrom) {
            io.reply("553 sorry, your envelope sender has been denied (#5.7.1)")
            return
        }
        resetTransaction()
        seenMail = true
        sender = p.address
        declaredSize = size
        io.reply("250 ok")
    }

    func rcpt(_ arg: [UInt8]) {
        guard seenMail else { io.reply("503 MAIL first (#5.5.1)"); return }
        guard var p = SMTPAddress.parse(arg, localIPHost: Array(controls.localIPHost.utf8), isLocalIP: isLocalIP) else {
            io.reply("555 syntax error in address (#5.1.3)")
            return
        }
        if SMTPDControls.listed(p.address, in: controls.badRcptTo) {
            io.reply("553 sorry, your envelope recipient has been denied (#5.7.1)")
            return
        }
        if relayAllowed {
            p.address += relaySuffix
        } else {
            // A relay probe (user%host@us, user@host@us, host!user@us) from a client
            // that may not relay is refused before rcpthosts could let it through.
            if let at = p.address.lastIndex(of: UInt8(ascii: "@")),
               p.address[..<at].contains(where: { $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "!") }) {
                io.reply("550 we don't relay (#5.7.1)")
                return
            }
            guard controls.rcptHostAllowed(p.address) else {
                io.reply("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
                return
            }
        }
        if sender.isEmpty && recipients.count >= 1 {
            io.reply("553 sorry, bounce messages should have a single envelope recipient (#5.7.1)")
            return
        }
        if recipients.count >= controls.maxRecipients {
            io.reply("452 sorry, too many recipients (#4.5.3)")
            return
        }
        recipients.append(p.address)
        io.reply("250 ok")
    }

    var protocolName: String {
        var p = "ESMTP"
        if io.isTLS { p += "S" }
        if authUser != nil { p += "A" }
        if let d = io.tlsDescription { p += " (\(d))" }
        return p
    }

    /// DATA to the end of the message; false ends the session.
    func data() -> Bool {
        guard seenMail else { io.reply("503 MAIL first (#5.5.1)"); return true }
        guard !recipients.isEmpty else { io.reply("503 RCPT first (#5.5.1)"); return true }
        seenMail = false
        var env = baseEnvironment
        if let u = authUser { env.append("TCPREMOTEINFO=\(u)"); env.append("AUTHINFO=\(u)") }
        let txn: QueueTransaction
        switch queue.begin(environment: env) {
        case .failure(let e):
            io.reply("451 " + String(decoding: e.text.dropFirst(), as: UTF8.self))
            return true
        case .success(let t): txn = t
        }
        io.reply("354 go ahead")
        var received = ReceivedLine()
        received.remoteHost = connection.remoteHost
        received.helo = helo
        received.remoteInfo = authUser ?? connection.remoteInfo
        received.remoteIP = connection.remoteIP == "unknown" ? nil : connection.remoteIP
        received.localHost = connection.localHost ?? options.hostname ?? connection.localIP
        received.hide = options.hideHost
        txn.put(Array(received.text(protocol: protocolName, date: ReceivedLine.date()).utf8)[...])
        var parser = SMTPDataParser(limit: controls.dataBytes, allowBareLF: options.allowBareLF)
        var out: [UInt8] = []
        out.reserveCapacity(70_000)
        var outcome = SMTPDataParser.Outcome.needMore
        let status = io.consume { chunk in
            let (used, o) = parser.feed(chunk, into: &out)
            outcome = o
            if out.count >= 65536 { txn.put(out[...]); out.removeAll(keepingCapacity: true) }
            return (used, o != .needMore)
        }
        if !out.isEmpty { txn.put(out[...]) }
        switch status {
        case .ok: break
        case .eof:
            txn.fail(); _ = txn.finish(sender: sender, recipients: recipients)
            return false
        case .timeout:
            txn.fail(); _ = txn.finish(sender: sender, recipients: recipients)
            io.reply("451 timeout (#4.4.2)")
            return false
        }
        if outcome == .bareLF {
            txn.fail(); _ = txn.finish(sender: sender, recipients: recipients)
            io.reply("451 Sorry, I received Bare LF. (#4.6.0)")
            return false
        }
        if parser.hops >= controls.maxHops {
            txn.fail(); _ = txn.finish(sender: sender, recipients: recipients)
            io.reply("554 too many hops, this message is looping (#5.4.6)")
            return true
        }
        if parser.overflowed {
            txn.fail(); _ = txn.finish(sender: sender, recipients: recipients)
            io.reply("552 sorry, that message size exceeds my databytes limit (#5.3.4)")
            return true
        }
        let text = txn.finish(sender: sender, recipients: recipients)
        if text.isEmpty {
            io.reply("250 ok \(time(nil)) qp \(txn.qp)")
            log?("qmail-smtpd: pid \(getpid()) from \(connection.remoteIP) HELO <\(helo ?? "")> MAIL from <\(String(decoding: sender, as: UTF8.self))> RCPT <\(recipients.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ","))> AUTH <\(authUser ?? "")> Size: \(parser.stored) TLS=\(io.tlsDescription ?? "No") qp \(txn.qp)")
        } else {
            io.reply(SMTPSession.queueReply(text))
        }
        recipients = []
        sender = []
        return true
    }

    /// qmail's mapping of a queue result: `D…` → 554, anything else → 451; of a
    /// text of several lines the last decides.
    public static func queueReply(_ text: [UInt8]) -> String {
        var t = text
        if t.last == 10 { t.removeLast() }
        if let nl = t.lastIndex(of: 10) { t = Array(t[(nl + 1)...]) }
        let clean = String(decoding: t.map { $0 < 32 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        if t.first == UInt8(ascii: "D") { return "554 " + String(clean.dropFirst()) }
        if t.first == UInt8(ascii: "Z") { return "451 " + String(clean.dropFirst()) }
        return "451 " + clean
    }

    func startTLS(_ arg: [UInt8]) -> Bool {
        if !arg.isEmpty { io.reply("501 Syntax error (no parameters allowed) (#5.5.4)"); return true }
        if io.isTLS { io.reply("502 command STARTTLS not recognized (#5.5.2)"); return true }
        guard let cert = controls.certificate else { io.reply("454 TLS not available: no server certificate (#4.3.0)"); return true }
        io.reply("220 ready for tls")
        if let why = io.startTLS(certificate: cert) {
            log?("qmail-smtpd: pid \(getpid()) from \(connection.remoteIP): TLS handshake failed: \(why)")
            return false
        }
        // RFC 3207: forget what the client said before.
        helo = connection.remoteHost
        resetTransaction()
        return true
    }

    // MARK: AUTH (RFC 4954), PLAIN and LOGIN, checked by a checkpassword program

    static func base64Decode(_ text: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 3 * (text.count / 4) + 3)
        let n = text.withUnsafeBufferPointer { t in out.withUnsafeMutableBufferPointer { qs_base64_decode(t.baseAddress, Int32(t.count), $0.baseAddress) } }
        if n < 0 { return nil }
        return Array(out[0..<Int(n)])
    }

    /// The client's next line in an AUTH exchange; nil ends the exchange (cancelled or the connection is gone).
    func authLine() -> [UInt8]? {
        switch io.readLine(maxLength: controls.maxCommandLength) {
        case .line(let l):
            if l == [UInt8(ascii: "*")] { io.reply("501 auth exchange cancelled (#5.0.0)"); return nil }
            return l
        default: return nil
        }
    }

    func auth(_ arg: [UInt8]) {
        guard !options.checkProgram.isEmpty else { io.reply("503 auth not available (#5.3.3)"); return }
        if authUser != nil { io.reply("503 you're already authenticated (#5.5.0)"); return }
        if seenMail { io.reply("503 no auth during mail transaction (#5.5.0)"); return }
        let words = arg.split(separator: UInt8(ascii: " "), maxSplits: 1).map(Array.init)
        guard let mech = words.first.map({ String(decoding: $0, as: UTF8.self).uppercased() }), mech == "PLAIN" || mech == "LOGIN" else {
            io.reply("504 auth type unimplemented (#5.5.1)")
            return
        }
        if !io.isTLS && !options.allowInsecureAuth {
            io.reply("538 Encryption required for requested authentication mechanism (#5.7.11)")
            return
        }
        var initial = words.count > 1 ? words[1] : nil
        if initial == [UInt8(ascii: "=")] { initial = [] }
        let user: [UInt8], password: [UInt8], method: UInt8
        if mech == "PLAIN" {
            var response = initial
            if response == nil {
                io.reply("334 ")
                guard let l = authLine() else { return }
                response = l
            }
            guard let decoded = SMTPSession.base64Decode(response!) else { io.reply("501 malformed auth input (#5.5.4)"); return }
            let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
            guard parts.count == 3 else { io.reply("501 malformed auth input (#5.5.4)"); return }
            user = Array(parts[1]); password = Array(parts[2]); method = 2
        } else {
            var u: [UInt8]
            if let i = initial, !i.isEmpty {
                guard let d = SMTPSession.base64Decode(i) else { io.reply("501 malformed auth input (#5.5.4)"); return }
                u = d
            } else {
                io.reply("334 VXNlcm5hbWU6")
                guard let l = authLine() else { return }
                guard let d = SMTPSession.base64Decode(l) else { io.reply("501 malformed auth input (#5.5.4)"); return }
                u = d
            }
            io.reply("334 UGFzc3dvcmQ6")
            guard let l = authLine() else { return }
            guard let p = SMTPSession.base64Decode(l) else { io.reply("501 malformed auth input (#5.5.4)"); return }
            user = u; password = p; method = 1
        }
        if user.isEmpty || password.isEmpty || user.contains(0) || password.contains(0) {
            io.reply("501 malformed auth input (#5.5.4)")
            return
        }
        io.flush()
        switch SMTPSession.checkPassword(options.checkProgram, user: user, password: password, method: method) {
        case .exited(let code) where code == 0 || code == 3:
            // 0: authenticated and may relay; 3: authenticated, no relay right.
            authUser = String(decoding: user, as: UTF8.self)
            if code == 0 { relayAllowed = true; relaySuffix = [] }
            io.reply("235 ok, go ahead (#2.0.0)")
        case .exited(1), .exited(2):
            if options.penalty > 0 { sleep(UInt32(options.penalty)) }
            io.reply("535 authorization failure (#5.7.8)")
        case .exited(111):
            io.reply("454 temporary authentication failure (#4.3.0)")
        case .startFailed:
            io.reply("451 Sorry, my child won't start and I can't auth (#4.3.0)")
        default:
            io.reply("451 Sorry, there is a problem with my child and I can't auth (#4.3.0)")
        }
    }

    enum CheckResult: Equatable { case exited(Int32), signaled, startFailed }

    /// Runs the checkpassword-interface program: descriptor 3 carries
    /// `user\0password\0\0` and the method byte (1 LOGIN, 2 PLAIN) with its NUL,
    /// as indimail-mta's qmail-smtpd writes it; descriptors 0 and 1 are /dev/null.
    static func checkPassword(_ program: [String], user: [UInt8], password: [UInt8], method: UInt8) -> CheckResult {
        guard let pipe = try? Spawn.pipe() else { return .startFailed }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { if null >= 0 { close(null) } }
        let pid: pid_t
        do {
            pid = try Spawn.start(program[0], arguments: program,
                                  fds: [.init(null, at: 0), .init(null, at: 1), .init(pipe.read, at: 3)], keepStandard: true)
        } catch {
            Sys.close(pipe.read); Sys.close(pipe.write)
            return .startFailed
        }
        Sys.close(pipe.read)
        var payload = user + [0] + password + [0, 0] + [method, 0]
        _ = try? Sys.write(pipe.write, payload)
        for i in payload.indices { payload[i] = 0 }
        Sys.close(pipe.write)
        switch try? Spawn.wait(pid) {
        case .exited(let c)?: return .exited(c)
        default: return .signaled
        }
    }
}
