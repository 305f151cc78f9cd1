#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import LocalDelivery

/// qmail-local with the classic operands (plus indimail's trailing qqeh).
enum QmailLocalMain {
    static let help = """
    usage: qmail-local [-nN] -- user homedir local dash ext domain sender defaultdelivery [qqeh]

    Delivers the message on standard input (a seekable file) for one local
    recipient, as qmail-local(8): finds .qmail<dash><ext> (or a -default file)
    in homedir, else uses defaultdelivery, and delivers to each line: ./Maildir/,
    ./Mailbox, |program, &forward or a bare address. Prints "did F+W+P" (files,
    forwards, programs) and "qp N" for forwards on success; else the reason.
    Runs as the user it is started as (qmail-lspawn switches uid first), with
    umask 077.

      -n  deliver nothing: print each instruction (maildir, mbox, program,
          forward) and the "did" line
      -N  deliver (the default)

    exit codes: 0 delivered, 100 permanent failure, 111 temporary failure

    """

    static let usage = "qmail-local: usage: qmail-local [-nN] -- user homedir local dash ext domain sender defaultdelivery [qqeh]"

    static func run() -> Never {
        umask(0o077)
        var args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--help" || args.first == "-h" { printOut(help); exit(0) }
        // getopt("nN"): options up to "--" or the first operand ("-" alone is one).
        var printOnly = false
        while let a = args.first, a.hasPrefix("-"), a != "-" {
            args.removeFirst()
            if a == "--" { break }
            for c in a.dropFirst() {
                switch c {
                case "n": printOnly = true
                case "N": printOnly = false
                default: printError(usage); exit(100)
                }
            }
        }
        guard args.count == 8 || args.count == 9 else {
            printError(usage)
            exit(100)
        }
        // The message must be seekable (qmail-lspawn gives the mess file); -n never reads it.
        if !printOnly && lseek(0, 0, SEEK_CUR) == -1 {
            printOut("Unable to seek on standard input: the message must be a file. (#4.3.0)\n")
            exit(111)
        }
        let uid = getuid(), gid = getgid()
        let user = LocalUser(user: args[0], uid: uid, gid: gid, home: args[1], dash: args[3], ext: args[4])
        let req = LocalDeliveryRequest(user: user, local: args[2], domain: args[5], sender: args[6],
                                       qqeh: args.count == 9 ? args[8] : "", defaultDelivery: args[7],
                                       messageFD: 0, switchIdentity: false, printOnly: printOnly)
        let outcome = QmailLocal.deliver(req)
        if !outcome.warnings.isEmpty { printError(outcome.warnings) }
        printOut(outcome.text)
        exit(outcome.exitCode)
    }
}
