#if canImport(Glibc)
import Glibc
#endif
import Receipts
import QueueClient
import QueueFormat
import ControlFiles
import SystemIO

/// rrt's exit codes (indimail-mta `rrt.c`).
enum RRTExit: Int32 {
    case ok = 0
    case readError = 1
    case writeError = 2
    case memory = 3
    case openError = 4
    case dupError = 5
    case lseekError = 6
    case usage = 7
    case parseError = 8
    case permanentQueueError = 100
    case temporary = 111
}

enum RRTMain {
    static let usage = "usage: rrt [-n] [-b] host sender qqeh size recip [recip ...]\n"

    static let help = """
    usage: rrt [-n] [-b] host sender qqeh size recip [recip ...]

    Return-receipt generator: a hook qmail-remote runs after a delivery attempt
    (ONSUCCESS_REMOTE, ONFAILURE_REMOTE or ONTEMPORARY_REMOTE=/path/to/rrt), with
    qmail-remote's own arguments and the message on descriptor 0 (seekable).
    When the message has both Return-Receipt-To: and Message-ID:, rrt queues a
    multipart/report delivery report to the Return-Receipt-To: address (envelope
    sender empty). A permanent failure is not reported when the envelope sender
    is the Return-Receipt-To: address (the bounce tells them).

    options:
      -n          print the report on standard output instead of queueing it
      -b          enclose the whole message (default: its header only)

    operands: host, envelope sender, qqeh, size, recipient (the first is reported)

    environment:
      ONSUCCESS_REMOTE, ONFAILURE_REMOTE, ONTEMPORARY_REMOTE
                  the first one set gives the report type; none set: nothing to do
      SMTPTEXT, QMTPTEXT   the remote reply (shown from its second character)
      SMTPCODE, QMTPCODE   the remote status code (Status: line)
      CONTROLDIR  control files: me, bouncefrom (MAILER-DAEMON), bouncehost (me)
      QMAILQUEUE, NULLQUEUE, ERROR_FD, QUEUE_BASE, HOME
                  queueing (after $HOME/.defaultqueue unless root, and
                  control/defaultqueue unless QUEUE_BASE is set)

    exit codes: 0 report sent or nothing to do, 1 read error, 2 write error or
      unable to start the queue program, 4 open error, 6 lseek error (descriptor 0
      not seekable), 7 usage, 8 unparsable From:/Return-Receipt-To:, 100 permanent
      queue error, 111 temporary queue error or unreadable control file

    """

    static func fatal(_ text: String, _ code: RRTExit) -> Never {
        printError("rrt: fatal: " + text)
        exit(code.rawValue)
    }

    static func run() -> Never {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--help" {
            printOut(help)
            exit(0)
        }
        // getopt "nb": options until the first operand or "--".
        var queueIt = true
        var encloseWhole = false
        var i = 0
        scan: while i < args.count {
            let a = args[i]
            if a == "--" { i += 1; break }
            if !a.hasPrefix("-") || a == "-" { break }
            for c in a.dropFirst() {
                switch c {
                case "n": queueIt = false
                case "b": encloseWhole = true
                default:
                    try? Sys.write(2, usage)
                    exit(RRTExit.usage.rawValue)
                }
            }
            i += 1
            continue scan
        }
        let operands = Array(args[i...])
        // qmail-remote passes: host sender qqeh size recipient.
        guard operands.count >= 5 else {
            try? Sys.write(2, usage)
            exit(RRTExit.usage.rawValue)
        }
        let returnPath = Array(operands[1].utf8)
        let recipient = Array(operands[4].utf8)
        let birth = Int64(time(nil))
        let pid = getpid()

        // The message: qmail-remote has read it, so rewind descriptor 0.
        if lseek(0, 0, SEEK_SET) == -1 { fatal("lseek error: \(SystemError("lseek").reason)", .lseekError) }
        let message: [UInt8]
        do { message = try Sys.readAll(0) } catch { fatal("read error: \(error.systemError.reason)", .readError) }

        let headers: ReturnReceipt.OriginalHeaders
        do { headers = try ReturnReceipt.extractHeaders(message) } catch {
            fatal("\(error)", .parseError)
        }
        guard headers.wantsReceipt, let receiptTo = headers.returnReceiptTo else { exit(0) }

        let control = ControlDirectory.fromEnvironment()
        var settings = ReturnReceipt.Settings()
        do {
            let me = try control.readLine("me").flatMap { $0.isEmpty ? nil : $0 }
            settings.bounceFrom = try control.readLine("bouncefrom").flatMap { $0.isEmpty ? nil : $0 } ?? "MAILER-DAEMON"
            settings.bounceHost = try control.readLine("bouncehost").flatMap { $0.isEmpty ? nil : $0 } ?? me ?? "bouncehost"
        } catch {
            fatal("unable to read controls: \(error)", .temporary)
        }

        guard let kind = ReturnReceipt.Kind.fromEnvironment(Sys.environment) else { exit(0) }
        guard ReturnReceipt.shouldReport(kind: kind, returnPath: returnPath, receiptTo: receiptTo) else { exit(0) }

        let delivery = ReturnReceipt.Delivery.from(environment: Sys.environment, returnPath: returnPath, recipient: recipient)
        let report = ReturnReceipt.compose(kind: kind, headers: headers, delivery: delivery, original: message,
                                           encloseWholeMessage: encloseWhole, settings: settings,
                                           date: Date822.local(time_t(birth)), unixTime: birth, pid: pid)
        if !queueIt {
            do { try Sys.write(1, report, path: "standard output") } catch {
                fatal("write: \(error.systemError.reason)", .writeError)
            }
            exit(0)
        }
        do {
            for w in try DefaultQueue.setEnvironment(rootAllowed: false, control: control) { printError("rrt: warn: " + w) }
        } catch {
            fatal("\(error)", .temporary)
        }
        let session: QueueSession
        do { session = try QueueSession() } catch {
            if isExecFailure(error.cause.errno) {
                fatal("temporary qmail-queue error", .temporary)
            }
            fatal("unable to fork", .writeError)
        }
        session.put(report)
        session.from([UInt8]())
        session.to(receiptTo)
        let result = session.close()
        if result.isQueued { exit(0) }
        if result.isPermanent { fatal("permanent qmail-queue error", .permanentQueueError) }
        fatal("temporary qmail-queue error", .temporary)
    }

    /// The queue program could not be executed (qmail-queue's child would exit 120 → `Z`).
    static func isExecFailure(_ e: Int32) -> Bool {
        e == ENOENT || e == EACCES || e == ENOEXEC || e == ENOTDIR
    }
}
