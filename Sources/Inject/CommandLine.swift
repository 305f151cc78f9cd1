import SystemIO

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
            usage: sendmail [-t] [-i] [-oi] [-f sender] [-F name] [recipient ...]

            sendmail-compatible front end to qmail-inject: reads a message on standard
            input and queues it. A line with a single dot is not special (qmail's
            behaviour), so -i and -oi change nothing.

            options:
              -t          recipients from To:, Cc:, Bcc: (plus any arguments)
              -f sender   envelope sender (also -fsender, -r sender)
              -F name     full name for an added From:
              -i, -oi     accepted (dots are never special)
              -oX..., -v, -bm, -odi, -odb  accepted and ignored
            exit codes: 0 queued, 100 permanent failure, 111 temporary

            """
        }
    }

    /// Applies the arguments to `settings`. Returns nil when --help was asked for.
    public static func parse(_ args: [String], flavor: Flavor, into settings: inout InjectSettings) throws -> Bool {
        var i = 0
        var endOfOptions = false
        func value(_ a: String, _ flag: String) throws -> String {
            if a.count > flag.count { return String(a.dropFirst(flag.count)) }
            i += 1
            guard i < args.count else { throw Usage(message: "option \(flag) needs a value") }
            return args[i]
        }
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
            case "-h" where flavor == .qmailInject: settings.recipientsFromHeader = true
            case "-a" where flavor == .qmailInject: settings.argumentsOnly = true
            case "-i", "-oi", "-v", "-bm", "-odi", "-odb", "-Am", "-Ac": break
            default:
                if a.hasPrefix("-f") { settings.sender = try value(a, "-f") }
                else if a.hasPrefix("-r") && flavor == .sendmail { settings.sender = try value(a, "-r") }
                else if a.hasPrefix("-F") { settings.fullName = try value(a, "-F") }
                else if a.hasPrefix("-o") && flavor == .sendmail { /* sendmail -oXvalue options: ignored */ }
                else if a.hasPrefix("-N") && flavor == .qmailInject { /* qmail-inject -N: ignored */ }
                else if a.hasPrefix("-b") && flavor == .sendmail {
                    throw Usage(message: "sendmail mode \(a) is not supported; only -bm")
                }
                else { throw Usage(message: "unknown option \(a)") }
            }
            i += 1
        }
        return true
    }

    /// The whole program: parse, read, queue; returns the exit code.
    public static func main(_ flavor: Flavor) -> Int32 {
        let name = flavor == .sendmail ? "sendmail" : "qmail-inject"
        var settings: InjectSettings
        do { settings = try InjectSettings.fromEnvironment() } catch {
            printError("\(name): fatal: unable to read controls: \(error)")
            return 111
        }
        do {
            if try !parse(Array(CommandLine.arguments.dropFirst()), flavor: flavor, into: &settings) {
                printOut(help(flavor))
                return 0
            }
        } catch {
            printError("\(name): usage: \(error)")
            return 100
        }
        return Injector.run(program: name, settings: settings)
    }
}
