// new-inject's program: options, configuration, the message. Built with Embedded
// Swift only (the other files of this folder are symbolic links to library files).
import CShims

/// The new-inject program: options, configuration, then the message read from
/// standard input, its header rewritten, queued through the queue-client layer
/// (or printed with -n). Only the header is held in memory; the body streams.
enum NewInjectCommandLine {
    static let help = """
    usage: new-inject [-nNaAhHFIMRS] [-f sender] [recipient ...]

    Reads a message on standard input, rewrites the hosts of every address in its
    header with the rewriting rules, writes the header again in a fixed order
    (trace fields, Date, Message-ID, From, Sender, Reply-To, Mail-Reply-To,
    Mail-Followup-To, To, Cc, Notice-Requested-Upon-Delivery-To, the rest), and
    queues it through the queue-client layer (qmail-queue, or $QMAILQUEUE;
    $NULLQUEUE discards).

    options:
      -n          print the envelope and the message instead of queueing; -N queues (default)
      -a          recipients from the arguments only
      -h          recipients from the header only (Envelope-Recipients, else To, Cc, Bcc)
      -H          recipients from the arguments and the header
      -A          the arguments if there are any, else the header (default)
      -F          drop the message's From: (a new one is made)
      -I          drop the message's Message-ID: (a new one is made)
      -S          ignore the message's Return-Path: as envelope sender
      -M          per-message VERP: the default sender gets -<time>.<pid>
      -R          per-recipient VERP: the default sender gets - and -@[]
      -f sender   envelope sender
    $QMAILINJECT: the letters F I M R S (either case) as the options.

    rewriting rules: $QMAILREWRITEFILE, else control/rewrite, else built from
      defaulthost, plusdomain, defaultdomain ($QMAILDEFAULTHOST ..., control files, me)
    environment: QMAILNAME MAILNAME NAME QMAILUSER MAILUSER USER LOGNAME QMAILHOST
      MAILHOST QMAILSUSER QMAILSHOST QMAILIDHOST QMAILMFTFILE QMAILQUEUE NULLQUEUE ERROR_FD
    exit codes: 0 queued (or printed), 100 usage or permanent failure, 111 temporary

    """

    static let fatal = "new-inject: fatal: "

    static func main() -> Int32 {
        var options = NewInjectOptions()
        if let q = Sys.environment("QMAILINJECT") { options.apply(qmailInject: q) }
        switch options.parse(Array(Sys.arguments().dropFirst())) {
        case .help:
            printOut(help)
            return 0
        case .usage:
            printError(NewInjectOptions.usage)
            return 100
        case .run: break
        }
        let control = ControlDirectory.fromEnvironment()
        // set_environment (toolbox.md §0.4), root allowed: ~/.defaultqueue, control/defaultqueue.
        do throws(SystemError) {
            for w in try DefaultQueue.setEnvironment(rootAllowed: true, control: control) { printError("new-inject: warn: " + w) }
        } catch {
            printError(fatal + error.description)
            return 111
        }
        let now = Int(time(nil))
        let pid = getpid()
        let config: NewInjectConfig
        do throws(NewInjectConfig.Failure) {
            config = try NewInjectConfig.load(options: options, control: control, now: now, pid: pid, env: Sys.environment)
        } catch {
            printError(fatal + error.message)
            return 111
        }
        return run(options: options, config: config, now: now)
    }

    /// Reads standard input, prepares, queues (or prints). Returns the exit code.
    static func run(options: NewInjectOptions, config: NewInjectConfig, now: Int) -> Int32 {
        let chunkSize = 65536
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { chunk.deallocate() }
        func readFailed(_ error: SystemError) -> Int32 {
            printError(fatal + "unable to read input: " + error.reason)
            return 111
        }
        // The header: read until where it ends is decided, or to the end of input.
        var header: HeaderBlock
        var atEnd: Bool
        do throws(SystemError) {
            (header, atEnd) = try HeaderBlock.read(into: chunk) { b throws(SystemError) in try Sys.read(0, into: b, path: "standard input") }
        } catch { return readFailed(error) }
        let hasBody = header.hadSeparator || !header.body.isEmpty || !atEnd
        let prepared = NewInjector.prepare(header, options: options, config: config, now: now, hasBody: hasBody)
        var first = header.body
        header.body = []

        if options.printOnly {
            var out = BufferedWriter(fd: 1, path: "standard output")
            var last: UInt8? = nil
            do throws(SystemError) {
                try out.write(prepared.envelopeText)
                try out.write(prepared.header)
                try out.write(first)
                last = first.last
                first = []
                while !atEnd {
                    let n: Int
                    do throws(SystemError) { n = try Sys.read(0, into: chunk, path: "standard input") } catch { return readFailed(error) }
                    if n == 0 { break }
                    try out.write(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                    last = chunk[n - 1]
                }
                if let l = last, l != 10 { try out.write(byte: 10) }
                try out.flush()
            } catch {
                printError(fatal + "unable to write output: " + error.reason)
                return 111
            }
            return 0
        }

        if prepared.recipients.isEmpty {
            if !atEnd { Sys.discardToEnd(0) }
            printError(fatal + "no recipients")
            return 100
        }
        let session: QueueSession
        do throws(QueueSession.StartFailure) { session = try QueueSession() } catch {
            if !atEnd { Sys.discardToEnd(0) }
            printError(fatal + "unable to run qmail-queue: " + error.cause.reason)
            return 111
        }
        session.put(prepared.header)
        session.put(first)
        var last = first.last
        first = []
        let readError = atEnd ? nil : session.putRest(of: 0, chunk: chunk, last: &last)
        if readError == nil, let l = last, l != 10 { session.put(CollectionOfOne(UInt8(10))) }
        session.from(prepared.sender)
        for r in prepared.recipients { session.to(r) }
        let result = session.close()
        if let readError { return readFailed(readError) }
        if result.isQueued { return 0 }
        var text = result.message
        while text.hasSuffix("\n") { text.removeLast() }
        printError(fatal + text)
        return result.isPermanent ? 100 : 111
    }
}
