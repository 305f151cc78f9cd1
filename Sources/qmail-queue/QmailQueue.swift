// Built with Embedded Swift: see Injection.swift and Package.swift.
import CShims

@main
enum QmailQueue {
    static let help = """
    usage: qmail-queue < message 1< envelope

    Puts one message into the qmail queue. Reads the message on descriptor 0 and
    the envelope (F sender NUL, T recipient NUL ..., NUL) on descriptor 1, writes
    mess/, intd/ and links into todo/, then wakes the scheduler via lock/trigger.
    Exits 0 when queued, else a qmail-queue exit code (see qmail-queue(8)).

    environment:
      QUEUEDIR            queue to write (default $QMAILHOME/queue)
      QUEUE_BASE, QUEUE_START, QUEUE_COUNT
                          with QUEUEDIR unset: <base>/queue<N>, N random in the range
      CONFSPLIT, BIGTODO  queue layout (default 23, 0)
      USE_FSYNC, USE_FDATASYNC, USE_SYNCDIR
                          durability (default: fsync files and the todo folder)
      DEATH               seconds before giving up (default 86400, exit 52)
      HIDE_HOST           leave the host name out of the Received line
      HOSTNAME            host name for the Received line
      TCPREMOTEIP         marks the message as received from the network
      QQEH                headers added at delivery (e record)
      QMAIL_QUEUE_CUSTOM_ERROR  report failures as text on ERROR_FD and exit 88
      ERROR_FD            descriptor for custom error text (default 2)

    Installed setuid qmailq and run by another user, it writes only into the
    queue installed beside it (PREFIX/queue for PREFIX/bin/qmail-queue) and
    ignores QMAILHOME, CONFSPLIT, BIGTODO, USE_FSYNC, USE_FDATASYNC, USE_SYNCDIR
    and HOSTNAME; QUEUEDIR and QUEUE_BASE must name that queue or a queue inside
    it; TCPREMOTEIP counts only for qmaild (see qmail-queue(8)).

    """

    static func env(_ name: String) -> String? { Sys.environment(name) }

    static func main() {
        let args = Sys.arguments()
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            printOut(help)
            exit(0)
        }
        umask(0o033)
        qs_ignore_sigpipe()
        qs_crash_exit(81)
        if let code = Privilege.checkStandardDescriptors() { exit(code.rawValue) }
        // Setuid and run by someone else: the caller's environment may not steer
        // the queue, its layout or its durability (Privilege.swift has the table).
        let restricted = Privilege.restricted
        var queueDir = ""
        var names = QueueNames(split: QueueNames.defaultSplit, bigTodo: false)
        var sync = SyncPolicy.safe
        if restricted {
            guard let q = Privilege.restrictedQueue() else { exit(QueueExitCode.homeDirectory.rawValue) }
            queueDir = q
            names = Privilege.layout(of: q)
        } else {
            queueDir = QueueEnvironment.injectionQueue()
            names = QueueEnvironment.names()
            sync = SyncPolicy.fromEnvironment()
        }
        let errorFDAtStart: Int32? = env("ERROR_FD").flatMap { Int32($0) }.flatMap { Privilege.isOpen($0) ? $0 : nil }
        let death = env("DEATH").flatMap { UInt32($0) } ?? 86400
        qs_death_alarm(death, 52)

        var host: String? = nil
        if env("HIDE_HOST") == nil {
            if !restricted, let h = env("HOSTNAME"), !h.isEmpty { host = h } else {
                var buf = [UInt8](repeating: 0, count: 256)
                let r = buf.withUnsafeMutableBytes { gethostname($0.baseAddress!.assumingMemoryBound(to: CChar.self), 255) }
                if r == 0 { host = String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self) }
            }
        }
        let uid = getuid()
        var invoker = ReceivedLine.Invoker.uid(uid, network: false, ip: nil)
        let special = UserDatabase.users(named: ["alias", "qmails", "qmaild"])
        if let a = special["alias"], a.uid == uid { invoker = .alias }
        else if let b = special["qmails"], b.uid == uid { invoker = .bounce }
        else if let ip = env("TCPREMOTEIP"), !restricted || special["qmaild"]?.uid == uid {
            invoker = .uid(uid, network: true, ip: ip.isEmpty ? nil : ip)
        }

        var qqeh: [UInt8]? = nil
        if let q = env("QQEH"), !q.isEmpty { qqeh = Array(q.utf8) }

        let injection = Injection(queueDir: queueDir, names: names, sync: sync, received: invoker, host: host, qqeh: qqeh)
        do throws(Injection.Failure) {
            try injection.run()
            exit(0)
        } catch {
            if env("QMAIL_QUEUE_CUSTOM_ERROR") != nil {
                var fd: Int32 = 2
                if restricted { fd = errorFDAtStart ?? 2 } else if let e = env("ERROR_FD"), let v = Int32(e) { fd = v }
                if fd >= 0 {
                    let text = "Zqmail-queue: " + summary(error.code) + ": " + error.cause + " (#4.3.0)"
                    if (try? Sys.write(fd, text)) == nil { exit(53) }
                }
                exit(88)
            }
            exit(error.code.rawValue)
        }
    }

    /// The client text of an exit code without its `Zqq ` and its `(#…)`:
    /// "trouble creating files in intd.".
    static func summary(_ code: QueueExitCode) -> String {
        var s = Substring(QueueClientText.text(forExitCode: code.rawValue).dropFirst(4))
        if let paren = s.firstIndex(of: "(") { s = s[..<paren] }
        while s.last == " " { s = s.dropLast() }
        return s.isEmpty ? "failure" : String(s)
    }
}
