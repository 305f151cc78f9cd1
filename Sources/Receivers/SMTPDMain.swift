#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import RemoteDelivery
import QueueStore

/// qmail-smtpd's command line: tcpserver's one connection on descriptors 0
/// and 1, or `--daemon`.
public enum SMTPDMain {
    static let usage = """
        usage: qmail-smtpd [hostname checkprogram [arg ...]]
               qmail-smtpd --daemon [--listen ADDRESS:PORT ...] [--user NAME] [--max-connections N]
                           [--max-per-ip N] [--relay NETWORK/PREFIX ...] [hostname checkprogram [arg ...]]

        Receives mail over SMTP and puts it into the queue (docs/man/qmail-smtpd.8.md).
        Without --daemon: one connection on descriptors 0 and 1, as started by tcpserver,
        with tcpserver's environment (TCPREMOTEIP, TCPLOCALIP, TCPREMOTEHOST, TCPREMOTEINFO,
        RELAYCLIENT, DATABYTES ...).
          --daemon               listen and serve many connections in one process
          --listen ADDR:PORT     address to listen on (IPv6 as [::1]:25); repeatable; default 0.0.0.0:25
          --user NAME            the user to serve as after binding, when started as root (default qmaild)
          --max-connections N    connections at once (default 200)
          --max-per-ip N         connections at once from one client address (default 20)
          --relay NET/PREFIX     clients that may relay (RELAYCLIENT=""); repeatable
          hostname checkprogram  enable AUTH PLAIN and LOGIN, checked by a checkpassword program
        environment: CONTROLDIR QMAILHOME QMAILQUEUE NULLQUEUE ERROR_FD DATABYTES MAXRECIPIENTS
          HIDE_HOST ALLOW_BARELF ALLOW_INSECURE_AUTH REQUIREAUTH PENALTY DISABLE_EXTRA_GREET
          CERTDIR SERVERCERT
        """

    static func parseListen(_ s: String) -> (address: [UInt8], port: Int)? {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port >= 0, port < 65536 else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard let a = ipAddress(host) else { return nil }
        return (a, port)
    }

    /// The daemon options every receiver takes (qmail-smtpd, qmail-qmtpd, qmail-qmqpd):
    /// `--listen ADDRESS:PORT`, `--user NAME`, `--max-connections N`, `--max-per-ip N`,
    /// with the option's value. Nil when taken, else the usage error.
    static func daemonOption(_ option: String, _ value: String?, _ settings: inout SMTPDaemon.Settings) -> String? {
        switch option {
        case "--listen":
            guard let v = value, let l = parseListen(v) else { return "--listen needs ADDRESS:PORT" }
            settings.listen.append(l)
        case "--user":
            guard let v = value else { return "--user needs a name" }
            settings.user = v
        case "--max-connections":
            guard let v = value.flatMap({ Int($0) }), v > 0 else { return "--max-connections needs a positive number" }
            settings.maxConnections = v
        case "--max-per-ip":
            guard let v = value.flatMap({ Int($0) }), v > 0 else { return "--max-per-ip needs a positive number" }
            settings.maxPerIP = v
        default:
            return "unknown option \(option)"
        }
        return nil
    }

    public static func main(_ args: [String]) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        var daemon = false
        var settings = SMTPDaemon.Settings()
        var rest: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            func value() -> String? { i += 1; return i < args.count ? args[i] : nil }
            switch a {
            case "--help", "-h":
                _ = try? Sys.write(1, usage + "\n")
                return 0
            case "--daemon", "-d": daemon = true
            case "--listen", "--user", "--max-connections", "--max-per-ip":
                if let why = daemonOption(a, value(), &settings) { return fail(why) }
            case "--relay":
                guard let v = value(), let r = AddressRange(v) else { return fail("--relay needs NETWORK/PREFIX") }
                settings.relay.append(r)
            default:
                if a.hasPrefix("--") && rest.isEmpty { return fail("unknown option \(a)") }
                rest = Array(args[i...])
                i = args.count
                continue
            }
            i += 1
        }
        var options = SMTPDOptions.fromEnvironment()
        if let h = rest.first { options.hostname = h }
        if rest.count >= 2 { options.checkProgram = Array(rest[1...]) }
        let control = ControlDirectory.fromEnvironment()
        let controls: SMTPDControls
        do { controls = try SMTPDControls.load(control) } catch {
            if !daemon {
                _ = try? Sys.write(1, "421 unable to read controls (#4.3.0)\r\n")
            }
            _ = try? Sys.write(2, "qmail-smtpd: fatal: unable to read controls: \(error)\n")
            return 111
        }
        if !daemon {
            let io = SMTPTransport(readFD: 0, writeFD: 1, timeout: controls.timeout)
            let session = SMTPSession(transport: io, controls: controls, connection: .fromEnvironment(), options: options,
                                      queue: QueueClientQueue(), environment: SMTPDaemon.processEnvironment())
            session.run()
            io.flush()
            io.endTLS()
            return 0
        }
        settings.options = options
        if settings.listen.isEmpty { settings.listen = [([0, 0, 0, 0], 25)] }
        if Sys.environment("RELAYCLIENT") != nil {
            SMTPDaemon.say("qmail-smtpd: RELAYCLIENT in the environment is ignored in daemon mode; use --relay")
        }
        let d = SMTPDaemon(settings: settings, control: control, controls: controls, queue: QueueClientQueue())
        do {
            let ports = try d.bind()
            try d.dropPrivileges()
            // With no queue program named, messages are written in-process (shared flushes)
            // when the user served as can write the queue; else each goes through qmail-queue.
            if let q = try inProcessQueue(name: "qmail-smtpd") { d.queue = q }
            SMTPDaemon.say("qmail-smtpd: listening on " + zip(settings.listen, ports).map { "\(ipText($0.0.address)):\($0.1)" }.joined(separator: " ")
                           + " as uid \(getuid())")
        } catch {
            SMTPDaemon.say("qmail-smtpd: fatal: \(error)")
            return 111
        }
        d.serve()
        return 0
    }

    /// The daemons' queue after the privilege drop: with no queue program named
    /// (`QMAILQUEUE`, `NULLQUEUE`), messages are written in-process (shared
    /// flushes) when the user served as can write the queue; else (nil) each goes
    /// through qmail-queue.
    static func inProcessQueue(name: String) throws -> InProcessQueue? {
        guard Sys.environment("QMAILQUEUE") == nil && Sys.environment("NULLQUEUE") == nil else { return nil }
        let queueDir = QueueEnvironment.injectionQueue()
        guard QueueWriter.canWrite(queueDir) else {
            SMTPDaemon.say("\(name): \(queueDir) is not writable as uid \(getuid()): each message goes through qmail-queue")
            return nil
        }
        var host: String? = nil
        if Sys.environment("HIDE_HOST") == nil {
            if let h = Sys.environment("HOSTNAME"), !h.isEmpty { host = h } else {
                var buf = [CChar](repeating: 0, count: 256)
                if gethostname(&buf, 255) == 0 { host = String(cString: buf) }
            }
        }
        let qqeh = Sys.environment("QQEH").flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        let writer = try QueueWriter(queueDir: queueDir, names: QueueEnvironment.names(), sync: SyncPolicy.fromEnvironment(),
                                     host: host, qqeh: qqeh)
        SMTPDaemon.say("\(name): writing into \(queueDir) in-process")
        // Inflow control (FlowControl): how many messages may be queued ahead of the
        // engine's first deliveries, and how long a message then waits for the engine.
        let control = ControlDirectory.fromEnvironment()
        // By default FlowControl.defaultWindow, or one round of the engine's slots
        // (concurrencylocal + concurrencyremote) when that is smaller.
        let slots = ((try? control.readInt("concurrencylocal", default: 10)) ?? 10)
            + ((try? control.readInt("concurrencyremote", default: 20)) ?? 20)
        let window = try control.readInt("flowwindow", default: max(1, min(slots, FlowControl.defaultWindow)))
        let delay = try control.readInt("flowdelay", default: FlowControl.defaultDelayMS)
        let gate = FlowControl.Gate(queueDir: queueDir, window: window, delayMS: delay)
        if let gate {
            SMTPDaemon.say("\(name): inflow control: \(gate.window) messages ahead of the engine, then up to \(gate.delayMS) ms each")
        }
        return InProcessQueue(writer: writer, flow: gate)
    }

    static func fail(_ why: String) -> Int32 {
        _ = try? Sys.write(2, "qmail-smtpd: usage: \(why)\n")
        return 100
    }
}

extension SMTPDaemon {
    /// Our environment as `NAME=value` strings.
    static func processEnvironment() -> [String] { currentEnvironment() }
}
