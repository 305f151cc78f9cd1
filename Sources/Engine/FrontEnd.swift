#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Workers
import QueueFormat
import QueueStore
import ControlFiles
import RateControl

/// The command lines of the engine's front ends. `qmail-send` and `qmta-send`
/// are the same engine with different defaults.
public enum FrontEnd {
    public enum Kind { case qmailSend, qmtaSend, slowqSend }

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
              helohost, smtproutes, qmtproutes, timeoutconnect, timeoutremote, tlsdestinations, tlsca, notls
            exit codes: 0 stopped by TERM; 111 cannot start (controls, queue, already running)

            """
        case .slowqSend:
            return """
            usage: slowq-send [defaultdelivery]

            The delivery engine with per-domain rate control, for senders that must not
            exceed what each receiving domain tolerates. Same engine as qmail-send(8);
            before each delivery the recipient's domain is checked against its rate
            definition and waits exactly until it fits, without holding up other
            domains. Default queue $QMAILHOME/queue/slowq. Runs until TERM.

            rate definitions (RATELIMIT_DIR, default <queue>/ratelimit; set but empty = off):
              <domain>     drate's format: expr NUL count NUL start NUL last NUL
                           (e.g. 500/3600 = 500 an hour); aliases are symbolic links
              ratecontrol  lines pattern:expr (exact, wildmat, regex with QREGEX);
                           a match creates the domain's file; pattern:local:expr and
                           pattern:remote:expr apply to one channel (own ledger, no file)
              .global      one definition shared by every other domain
              .options     domain:mode=smooth|average,burst=N,concurrency=N (* = all)
            mode smooth (default): one delivery every 1/rate seconds, bursts of up to
            burst; mode average: indimail-mta's average since the sample start.
            A 421 or 4.7.x answer halves a domain's rate (up to 64 times); successes
            bring it back. Ledgers live in the queue's LMDB; see drate(8).

            environment: as qmail-send(8), plus RATELIMIT_DIR, RATELIMIT_INTERVAL (86400), QREGEX
            log lines: info: slowq <domain> msg <id>: rate [n/cur/conf] ok since N secs
                       warn: slowq <domain> msg <id>: rate exceeded [n/cur/conf] need N secs; will try again later
            exit codes: 0 stopped by TERM; 111 cannot start

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
        // qmail-local's umask: what deliveries and their programs create is private. The
        // engine's own files have explicit modes; qmail-queue (bounces, forwards) sets its own.
        umask(0o077)
        let program = kind == .qmailSend ? "qmail-send" : kind == .slowqSend ? "slowq-send" : "qmta-send"
        var args = Array(CommandLine.arguments.dropFirst())
        var names = QueueEnvironment.names()
        var daemon = kind != .qmtaSend
        var delivery = kind == .qmtaSend ? "./Maildir/" : "./Mailbox"
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
        if kind != .qmailSend, Sys.environment("QUEUEDIR").map({ $0.isEmpty }) ?? true {
            queue = home + (kind == .qmtaSend ? "/queue/qmta" : "/queue/slowq")
        }
        // An absolute path: the helpers of the privilege split start in the queue, not
        // in the engine's working directory, and a relative QUEUEDIR must mean the same.
        if !queue.hasPrefix("/"), let cwd = getcwd(nil, 0) {
            queue = String(cString: cwd) + "/" + queue
            free(cwd)
        }
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
        if kind == .slowqSend { opts.rateDirectory = RateDirectory.forQueue(queue) }
        else if kind == .qmailSend, let d = Sys.environment("RATELIMIT_DIR"), !d.isEmpty { opts.rateDirectory = RateDirectory(path: d) }
        if externalLocal { opts.localSpawner = [sibling("QMAILLSPAWN", "qmail-lspawn"), delivery] }
        if externalRemote { opts.remoteSpawner = [sibling("QMAILRSPAWN", "qmail-rspawn")] }
        // Started as root: qmail's privilege split, unless QMAIL_ONE_PROCESS asks for
        // everything in one root process (tests, tiny hosts; docs/architecture.md).
        if geteuid() == 0 {
            if let one = Sys.environment("QMAIL_ONE_PROCESS"), !one.isEmpty, one != "0" {
                printError("\(program): warning: QMAIL_ONE_PROCESS is set: running every part as root in one process")
            } else {
                do {
                    opts.privilegeSplit = try PrivilegeSplit.lookup { name in
                        sibling(name == "qmail-lspawn" ? "QMAILLSPAWN" : name == "qmail-rspawn" ? "QMAILRSPAWN" : "QMAILCLEAN", name)
                    }
                } catch {
                    printOut("alert: cannot start: \(error) does not exist\n")
                    printError("\(program): alert: cannot start as root: \(error) does not exist (make install creates qmail's users and groups; QMAIL_ONE_PROCESS=1 runs everything as root in one process)")
                    return 111
                }
            }
        }
        let engine: Engine
        do { engine = try Engine(options: opts) } catch {
            printOut("\(error)\n")
            printError("\(program): \(error)")
            return 111
        }
        return engine.run()
    }
}
