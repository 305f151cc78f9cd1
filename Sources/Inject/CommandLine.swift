// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift builds of qmail-inject and sendmail. Keep it Embedded-clean:
// typed throws, no existentials, no casts.
#if hasFeature(Embedded)
import CShims
#else
import SystemIO
#endif

/// Command-line parsing for `qmail-inject` and `sendmail`.
public enum InjectCommandLine {
    public enum Flavor { case qmailInject, sendmail }

    public struct Usage: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func help(_ flavor: Flavor) -> String {
        switch flavor {
        case .qmailInject:
            return """
            usage: qmail-inject [-a] [-h] [-t] [-fsender] [-Fname] [recipient ...]

            Reads a message on standard input, adds missing Date:, Message-ID: and From:
            headers, removes Bcc:, and queues it through the queue-client layer
            (qmail-queue, or $QMAILQUEUE; $NULLQUEUE discards).
            Recipients: the arguments; with -h or -t, or with no arguments, the To:,
            Cc: and Bcc: headers (Resent-To: etc. when Resent- headers exist).

            options:
              -a          recipients from the arguments only
              -h, -t      recipients from the header (plus any arguments)
              -f sender   envelope sender (default $QMAILSUSER@$QMAILSHOST, else user@defaulthost)
              -F name     full name for an added From: (default $QMAILNAME, $MAILNAME, $NAME)

            control files ($CONTROLDIR): me, defaulthost, defaultdomain, idhost
            environment: QMAILUSER MAILUSER USER LOGNAME QMAILHOST MAILHOST QMAILNAME
              MAILNAME NAME QMAILSUSER QMAILSHOST QMAILQUEUE NULLQUEUE ERROR_FD
            exit codes: 0 queued, 100 permanent failure (message refused), 111 temporary

            """
        case .sendmail:
            return """
            usage: sendmail [-t] [-i] [-oi] [-f sender] [-F name] [-- ] [recipient ...]

            sendmail-compatible front end to qmail-inject: reads a message on standard
            input and queues it. A line with a single dot is not special (qmail's
            behaviour), so -i and -oi change nothing.

            options:
              -t          recipients from To:, Cc:, Bcc: (plus any arguments)
              -f sender   envelope sender, and the address of an added From:
                          (also -fsender, -r sender)
              -F name     full name for an added From:
              -i, -oi     accepted (dots are never special)
              -o X, -B X, -e X, -p X, -U, -L, -h, -n, -I, -A, -v, -m, -E, -J, -x, -bm
                          accepted and ignored; flags may be combined (-ti)
            exit codes: 0 queued, 100 permanent failure, 111 temporary

            """
        }
    }

    /// Applies the arguments to `settings`. Returns nil when --help was asked for.
    public static func parse(_ args: [String], flavor: Flavor, into settings: inout InjectSettings) throws(Usage) -> Bool {
        var i = 0
        var endOfOptions = false
        func value(_ a: String, _ flag: String) throws(Usage) -> String {
            if a.count > flag.count { return String(a.dropFirst(flag.count)) }
            i += 1
            guard i < args.count else { throw Usage(message: "option \(flag) needs a value") }
            return args[i]
        }
        if flavor == .sendmail { return try parseSendmail(args, into: &settings) }
        while i < args.count {
            let a = args[i]
            if endOfOptions || !a.hasPrefix("-") || a == "-" {
                settings.recipients.append(a)
                i += 1
                continue
            }
            switch a {
            case "--help": return false
            case "--": endOfOptions = true
            case "-t": settings.recipientsFromHeader = true
            case "-h": settings.recipientsFromHeader = true
            case "-a": settings.argumentsOnly = true
            case "-i", "-oi", "-v", "-bm", "-odi", "-odb", "-Am", "-Ac": break
            default:
                if a.hasPrefix("-f") { settings.sender = try value(a, "-f") }
                else if a.hasPrefix("-F") { settings.fullName = try value(a, "-F") }
                else if a.hasPrefix("-N") { /* qmail-inject -N: ignored */ }
                else { throw Usage(message: "unknown option \(a)") }
            }
            i += 1
        }
        return true
    }

    /// sendmail's options as indimail's sendmail reads them, with getopt's rules
    /// (`ULhnIAvimte:f:r:p:o:B:F:EJxb:`): flags may be combined (`-ti`), an option
    /// value is attached or the next argument (`-oi`, `-o i`, `-B8BITMIME`), and the
    /// options end at the first non-option or `--`. `-f` (or `-r`) also makes the
    /// added From: that address, as sendmail's do_sender sets QMAILUSER and QMAILHOST.
    static func parseSendmail(_ args: [String], into settings: inout InjectSettings) throws(Usage) -> Bool {
        let flags = Set("ULhnIAvimtEJx")
        let withValue = Set("efrpoBFb")
        var i = 0
        var from: String? = nil, name: String? = nil
        while i < args.count {
            let a = args[i]
            if a == "--help" { return false }
            if a == "--" { i += 1; break }
            if !a.hasPrefix("-") || a == "-" { break }
            var chars = Array(a.dropFirst())
            while !chars.isEmpty {
                let c = chars.removeFirst()
                if flags.contains(c) {
                    if c == "t" { settings.recipientsFromHeader = true }
                    continue
                }
                guard withValue.contains(c) else { throw Usage(message: "unknown option -\(c)") }
                let v: String
                if !chars.isEmpty { v = String(chars); chars = [] } else {
                    i += 1
                    guard i < args.count else { throw Usage(message: "option -\(c) needs a value") }
                    v = args[i]
                }
                switch c {
                case "f", "r": from = v
                case "F": name = v
                case "b" where v != "m": throw Usage(message: "sendmail mode -b\(v) is not supported; only -bm")
                default: break   // -e, -p, -o, -B, -bm: accepted, no effect with qmail
                }
            }
            i += 1
        }
        settings.recipients += args[i...]
        if let from {
            settings.sender = from
            if let at = from.lastIndex(of: "@") {
                settings.user = String(from[..<at])
                settings.mailHost = String(from[from.index(after: at)...])
            } else if !from.isEmpty {
                settings.user = from
            }
            settings.fullName = nil
        }
        if let name { settings.fullName = name }
        return true
    }

    /// The whole program: parse, read, queue; returns the exit code.
    public static func main(_ flavor: Flavor) -> Int32 {
        let name = flavor == .sendmail ? "sendmail" : "qmail-inject"
        var settings: InjectSettings
        do { settings = try InjectSettings.fromEnvironment() } catch {
            printError("\(name): fatal: unable to read controls: \(error.description)")
            return 111
        }
        do {
            if try !parse(Array(Sys.arguments().dropFirst()), flavor: flavor, into: &settings) {
                printOut(help(flavor))
                return 0
            }
        } catch {
            printError("\(name): usage: \(error.message)")
            return 100
        }
        if let why = settings.refuseLineBreaks() {
            printError("\(name): fatal: \(why)")
            return 100
        }
        return Injector.run(program: name, settings: settings)
    }
}
