#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import QueueStore
import SystemIO

enum QmailQueueMain {
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

    """

    static func run() -> Never {
        let args = CommandLine.arguments
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            printOut(help)
            exit(0)
        }
        umask(0o033)
        qs_ignore_sigpipe()
        qs_crash_exit(81)
        let death = Sys.environment("DEATH").flatMap { UInt32($0) } ?? 86400
        qs_death_alarm(death, 52)

        let hideHost = Sys.environment("HIDE_HOST") != nil
        var host: String? = nil
        if !hideHost {
            if let h = Sys.environment("HOSTNAME"), !h.isEmpty { host = h } else {
                var buf = [CChar](repeating: 0, count: 256)
                if gethostname(&buf, buf.count - 1) == 0 { host = String(cString: buf) }
            }
        }
        let uid = getuid()
        var invoker = ReceivedLine.Invoker.uid(uid, network: false, ip: nil)
        let special = UserDatabase.users(named: ["alias", "qmails"])
        if let a = special["alias"], a.uid == uid { invoker = .alias }
        else if let b = special["qmails"], b.uid == uid { invoker = .bounce }
        else if let ip = Sys.environment("TCPREMOTEIP") { invoker = .uid(uid, network: true, ip: ip.isEmpty ? nil : ip) }

        var qqeh: [UInt8]? = nil
        if let q = Sys.environment("QQEH"), !q.isEmpty { qqeh = Array(q.utf8) }

        let injection = Injection(queueDir: QueueEnvironment.injectionQueue(), names: QueueEnvironment.names(),
                                  sync: SyncPolicy.fromEnvironment(), received: invoker, host: host, qqeh: qqeh)
        do {
            _ = try injection.run()
            exit(0)
        } catch let error as Injection.Failure {
            if Sys.environment("QMAIL_QUEUE_CUSTOM_ERROR") != nil {
                var fd: Int32 = 2
                if let e = Sys.environment("ERROR_FD"), let v = Int32(e) { fd = v }
                if fd >= 0 {
                    let text = "Zqmail-queue: \(QueueClientText.text(forExitCode: error.code.rawValue).dropFirst(4).split(separator: "(").first.map { String($0).trimmingTrailingSpace() } ?? "failure"): \(error.cause) (#4.3.0)"
                    if (try? Sys.write(fd, text)) == nil { exit(53) }
                }
                exit(88)
            }
            exit(error.code.rawValue)
        } catch {
            exit(81)
        }
    }
}

extension String {
    func trimmingTrailingSpace() -> String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
