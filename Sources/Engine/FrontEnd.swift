#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import QueueStore
import ControlFiles

/// The command lines of the engine's front ends. `qmail-send` and `qmta-send`
/// are the same engine with different defaults.
public enum FrontEnd {
    public enum Kind { case qmailSend, qmtaSend }

    public static func help(_ kind: Kind) -> String {
        switch kind {
        case .qmailSend:
            return """
            usage: qmail-send [defaultdelivery]

            Delivers the mail in the queue: notices new messages (inotify on todo/, or
            the lock/trigger FIFO), preprocesses them, delivers local recipients
            (Maildir, mbox, programs, forwards, as qmail-local does) and remote ones
            (through qmail-remote), retries deferrals on qmail's schedule, bounces
            permanent failures, and logs qmail-send's activity record on standard output.
            Runs until TERM, which lets deliveries in progress finish (exit 0).
            defaultdelivery: delivery instructions when a user has no .qmail file
            (default ./Mailbox).

            signals: TERM finish and exit; ALRM retry everything now; HUP reread controls
            environment: QMAILHOME (/var/qmail), QUEUEDIR ($QMAILHOME/queue), CONTROLDIR
              ($QMAILHOME/control), CONFSPLIT (23), BIGTODO (0), USE_FSYNC, USE_FDATASYNC,
              QMAILREMOTE (an external qmail-remote program; default: the built-in SMTP
              client), DNS_SERVER, TLS_CA_FILE, QMAILQUEUE, BOUNCEQUEUE, OSSIFIED (129600),
              TODO_NOTIFY (inotify, or trigger: classic trigger FIFO and periodic scan only)
            control files: me, locals, virtualdomains, percenthack, envnoathost,
              concurrencylocal, concurrencyremote, concurrencyl.<queue>, concurrencyr.<queue>,
              holdlocal, holdremote, queuelifetime, bouncelifetime, bouncefrom, bouncehost,
              doublebouncehost, doublebounceto, bouncemaxbytes, bouncesubject,
              doublebouncesubject, bouncemessage, doublebouncemessage, todointerval,
              helohost, smtproutes, timeoutconnect, timeoutremote, tlsdestinations, tlsca, notls
            exit codes: 0 stopped by TERM; 111 cannot start (controls, queue, already running)

            """
        case .qmtaSend:
            return """
            usage: qmta-send [-d] [-s split] [-b] [-l] [-r] [defaultdelivery]

            A standalone delivery engine for small hosts: without -d it delivers
            everything that is due in the queue, then exits 0 when what is left only
            waits for a later retry (saying how many); with -d it runs until TERM.
            defaultdelivery: delivery instructions when a user has no .qmail file
            (default ./Maildir/).

            options:
              -d         daemon: keep running, notice new mail with inotify
              -s split   queue split (default $CONFSPLIT or 23)
              -b         todo/ and intd/ are split too (BIGTODO)
              -l         local deliveries through an external qmail-lspawn-compatible
                         spawner ($QMAILLSPAWN, else qmail-lspawn beside qmta-send)
              -r         remote deliveries through an external qmail-rspawn-compatible
                         spawner ($QMAILRSPAWN, else qmail-rspawn beside qmta-send)

            signals, environment and control files: as qmail-send(8); the default queue
            is $QMAILHOME/queue/qmta.
            exit codes: 0 done (or stopped by TERM); 100 usage; 111 cannot start

            """
        }
    }

    public static func main(_ kind: Kind) -> Int32 {
        let program = kind == .qmailSend ? "qmail-send" : "qmta-send"
        var args = Array(CommandLine.arguments.dropFirst())
        var names = QueueEnvironment.names()
        var daemon = kind == .qmailSend
        var delivery = kind == .qmailSend ? "./Mailbox" : "./Maildir/"
        var externalLocal = false, externalRemote = false
        while let a = args.first {
            if a == "--help" || a == "-h" { printOut(help(kind)); return 0 }
            guard kind == .qmtaSend, a.hasPrefix("-"), a.count > 1 else { break }
            args.removeFirst()
            switch a {
            case "-d": daemon = true
            case "-b": names.bigTodo = true
            case "-l": externalLocal = true
            case "-r": externalRemote = true
            case "-s":
                guard let v = args.first.flatMap({ Int($0) }), v > 0 else {
                    printError("\(program): usage: -s needs a positive number"); return 100
                }
                args.removeFirst()
                names.split = v
            case "--":
                if let d = args.first { delivery = d; args.removeFirst() }
                args.removeAll()
            default:
                printError("\(program): usage: unknown option \(a)")
                printError("usage: qmta-send [-d] [-s split] [-b] [-l] [-r] [defaultdelivery]")
                return 100
            }
        }
        if let d = args.first { delivery = d; args.removeFirst() }
        let home = Paths.qmailHome
        var queue = Paths.queueDir
        if kind == .qmtaSend, Sys.environment("QUEUEDIR").map({ $0.isEmpty }) ?? true { queue = home + "/queue/qmta" }
        // QMAILREMOTE names an external qmail-remote; otherwise the in-process SMTP client.
        let remote = Sys.environment("QMAILREMOTE").flatMap { $0.isEmpty ? nil : $0 }
        var ossified: Int64 = 129600
        if let o = Sys.environment("OSSIFIED"), let v = Int64(o), v > 0 { ossified = v }
        let options = EngineOptions(program: program, queueDir: queue, names: names, sync: SyncPolicy.fromEnvironment(),
                                    control: ControlDirectory.fromEnvironment(), qmailHome: home,
                                    defaultDelivery: delivery, daemon: daemon, remoteProgram: remote, ossified: ossified)
        func sibling(_ env: String, _ name: String) -> String {
            Sys.environment(env).flatMap { $0.isEmpty ? nil : $0 } ?? Paths.program(name)
        }
        var opts = options
        if externalLocal { opts.localSpawner = [sibling("QMAILLSPAWN", "qmail-lspawn"), delivery] }
        if externalRemote { opts.remoteSpawner = [sibling("QMAILRSPAWN", "qmail-rspawn")] }
        let engine: Engine
        do { engine = try Engine(options: opts) } catch {
            printOut("\(error)\n")
            printError("\(program): \(error)")
            return 111
        }
        return engine.run()
    }
}
