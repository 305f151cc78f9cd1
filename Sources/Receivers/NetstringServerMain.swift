#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import RemoteDelivery
import QueueStore

/// The command lines of qmail-qmtpd and qmail-qmqpd: tcpserver's one
/// connection on descriptors 0 and 1, or `--daemon` (the same daemon as
/// qmail-smtpd's: listeners, a thread per connection, bounds, the user it
/// serves as, the in-process queue writer).
public enum NetstringServerMain {
    public enum Kind: Sendable {
        case qmtp, qmqp
        var name: String { self == .qmtp ? "qmail-qmtpd" : "qmail-qmqpd" }
        var port: Int { self == .qmtp ? 209 : 628 }
    }

    static func usage(_ kind: Kind) -> String {
        let name = kind.name
        let what = kind == .qmtp
            ? """
              Receives mail over QMTP (several messages per connection, one answer per recipient),
              checks recipients against rcpthosts/morercpthosts.cdb unless RELAYCLIENT is set, and
              puts it into the queue (docs/man/qmail-qmtpd.8.md).
              """
            : """
              Receives mail over QMQP (one message per connection, one answer) from trusted clients
              (qmail-qmqpc on null clients) and puts it into the queue as it is: it relays anything,
              so only the clients' addresses may reach it (docs/man/qmail-qmqpd.8.md).
              """
        return """
            usage: \(name)
                   \(name) --daemon [--listen ADDRESS:PORT ...] [--user NAME] [--max-connections N]
                               [--max-per-ip N]\(kind == .qmtp ? " [--relay NETWORK/PREFIX ...]" : " --allow NETWORK/PREFIX ...")

            \(what)
            Without --daemon: one connection on descriptors 0 and 1, as started by tcpserver.
              --daemon               listen and serve many connections in one process
              --listen ADDR:PORT     address to listen on (IPv6 as [::1]:\(kind.port)); repeatable; default 0.0.0.0:\(kind.port)
              --user NAME            the user to serve as after binding, when started as root (default qmaild)
              --max-connections N    connections at once (default 200)
              --max-per-ip N         connections at once from one client address (default 20)
            \(kind == .qmtp ? "  --relay NET/PREFIX     clients that may relay (RELAYCLIENT=\"\"); repeatable"
                             : "  --allow NET/PREFIX     clients that may send (required in daemon mode); repeatable")
            environment: CONTROLDIR QMAILHOME QUEUEDIR QMAILQUEUE NULLQUEUE ERROR_FD DATABYTES\(kind == .qmtp ? " RELAYCLIENT HIDE_HOST" : "")
              TCPREMOTEIP TCPREMOTEHOST TCPREMOTEINFO TCPLOCALIP TCPLOCALHOST
            control files: \(kind == .qmtp ? "me rcpthosts morercpthosts.cdb databytes timeoutqmtpd" : "databytes timeoutqmqpd")
            """
    }

    /// The controls each reads: qmail-qmtpd qmail-smtpd's (me, rcpthosts,
    /// morercpthosts.cdb, databytes) with its own read timeout; qmail-qmqpd
    /// only databytes and its timeout.
    static func loadControls(_ kind: Kind, _ control: ControlDirectory) throws -> SMTPDControls {
        let env: (String) -> String? = Sys.environment
        switch kind {
        case .qmtp:
            var c = try SMTPDControls.load(control)
            c.timeout = max(1, try control.readInt("timeoutqmtpd", default: 1200))
            return c
        case .qmqp:
            var dataBytes = try control.readInt("databytes", default: 0)
            if let d = env("DATABYTES"), let v = Int(d) { dataBytes = v }
            let timeout = max(1, try control.readInt("timeoutqmqpd", default: 1200))
            return SMTPDControls(me: "", greeting: [], localIPHost: "", rcptHosts: nil, moreRcptHosts: nil, dataBytes: dataBytes,
                                 timeout: timeout, badMailFrom: [], badRcptTo: [], maxRecipients: 0, maxHops: 0,
                                 maxCommandLength: 0, certificate: nil, localAddresses: [])
        }
    }

    static func serve(_ kind: Kind, io: SMTPTransport, info: ConnectionInfo, environment: [String], controls: SMTPDControls,
                      queue: MessageQueue, settings: NetstringServerSettings, log: ((String) -> Void)?) -> NetstringSessionEnd {
        switch kind {
        case .qmtp:
            return QMTPSession(transport: io, controls: controls, connection: info, queue: queue, environment: environment,
                               settings: settings, log: log).run()
        case .qmqp:
            return QMQPSession(transport: io, connection: info, queue: queue, environment: environment,
                               dataBytes: controls.dataBytes, settings: settings, log: log).run()
        }
    }

    public static func main(_ kind: Kind, _ args: [String]) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let name = kind.name
        func fail(_ why: String) -> Int32 {
            _ = try? Sys.write(2, "\(name): usage: \(why)\n")
            return 100
        }
        var daemon = false
        var settings = SMTPDaemon.Settings()
        var allow: [AddressRange] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            func value() -> String? { i += 1; return i < args.count ? args[i] : nil }
            switch a {
            case "--help", "-h":
                _ = try? Sys.write(1, usage(kind) + "\n")
                return 0
            case "--daemon", "-d": daemon = true
            case "--listen", "--user", "--max-connections", "--max-per-ip":
                if let why = SMTPDMain.daemonOption(a, value(), &settings) { return fail(why) }
            case "--relay" where kind == .qmtp:
                guard let v = value(), let r = AddressRange(v) else { return fail("--relay needs NETWORK/PREFIX") }
                settings.relay.append(r)
            case "--allow" where kind == .qmqp:
                guard let v = value(), let r = AddressRange(v) else { return fail("--allow needs NETWORK/PREFIX") }
                allow.append(r)
            default:
                return fail("unknown argument \(a)")
            }
            i += 1
        }
        var netSettings = NetstringServerSettings()
        netSettings.hideHost = kind == .qmtp && Sys.environment("HIDE_HOST") != nil
        let control = ControlDirectory.fromEnvironment()
        let controls: SMTPDControls
        do { controls = try loadControls(kind, control) } catch {
            _ = try? Sys.write(2, "\(name): fatal: unable to read controls: \(error)\n")
            return 111
        }
        if !daemon {
            let io = SMTPTransport(readFD: 0, writeFD: 1, timeout: controls.timeout)
            let end = serve(kind, io: io, info: .fromEnvironment(), environment: SMTPDaemon.processEnvironment(), controls: controls,
                            queue: QueueClientQueue(), settings: netSettings, log: nil)
            io.flush()
            return end.rawValue
        }
        if kind == .qmqp && allow.isEmpty {
            return fail("--daemon needs --allow NETWORK/PREFIX for each network of trusted clients (QMQP relays anything)")
        }
        if settings.listen.isEmpty { settings.listen = [([0, 0, 0, 0], kind.port)] }
        if Sys.environment("RELAYCLIENT") != nil {
            SMTPDaemon.say("\(name): RELAYCLIENT in the environment is ignored in daemon mode\(kind == .qmtp ? "; use --relay" : "")")
        }
        let d = SMTPDaemon(settings: settings, control: control, controls: controls, queue: QueueClientQueue())
        d.name = name
        d.loadControls = { try loadControls(kind, $0) }
        // A client turned away gets a temporary failure it understands.
        d.busyReply = Netstring.encodeText("Ztoo many connections, try again later (#4.3.2)")
        do {
            let ports = try d.bind()
            try d.dropPrivileges()
            if let q = try SMTPDMain.inProcessQueue(name: name) { d.queue = q }
            let queue = d.queue
            let trusted = allow
            let netSettings = netSettings
            d.serveConnection = { io, info, env, controls in
                if kind == .qmqp && !trusted.contains(where: { $0.contains(info.remoteIP) }) {
                    SMTPDaemon.say("\(name): refused \(info.remoteIP): not in --allow")
                    return
                }
                _ = serve(kind, io: io, info: info, environment: env, controls: controls, queue: queue, settings: netSettings,
                          log: { SMTPDaemon.say($0) })
            }
            SMTPDaemon.say("\(name): listening on " + zip(settings.listen, ports).map { "\(ipText($0.0.address)):\($0.1)" }.joined(separator: " ")
                           + " as uid \(getuid())")
        } catch {
            SMTPDaemon.say("\(name): fatal: \(error)")
            return 111
        }
        d.serve()
        return 0
    }
}

import QueueFormat

extension Netstring {
    static func encodeText(_ s: String) -> [UInt8] { encode(Array(s.utf8)) }
}
