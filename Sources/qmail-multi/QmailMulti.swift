#if canImport(Glibc)
import Glibc
#endif
import CShims
import FrontEnds
import SystemIO
import ControlFiles

/// qmail-multi: a queue front end that spreads messages over several queues
/// (`<base>/queue<N>`), optionally running a filter first.
@main
enum QmailMulti {
    static let help = """
    usage: qmail-multi [queue-program [arg ...]] < message 1< envelope

    A qmail-queue front end (put it in QMAILQUEUE) for hosts with several queues,
    each drained by its own engine. It picks one queue at random,
    <base>/queue<N> with N in QUEUE_START … QUEUE_START+QUEUE_COUNT-1, sets
    QUEUEDIR to it and runs qmail-queue there. With FILTERARGS it first runs that
    command (/bin/sh -c) on the message and queues what the command writes.

    environment:
      QUEUE_BASE     where the queues are (else control queue_base, else
                     $QMAILHOME/queue)
      QUEUE_START, QUEUE_COUNT   the queue numbers (default 1 and 10)
      QUEUEDIR       set: that queue, no choice
      MIN_FREE       bytes that must stay free on the chosen queue's file system
                     (else exit 53, "Zqq write error or disk full")
      FILTERARGS     a filter command; its exit 0 queues its output, 2 or 99 drops
                     the message (exit 0), 88 passes its own error text on, 100 or
                     31 refuses (31), a crash is 123, anything else 71
      QUEUEPROG      the queue program (default qmail-queue beside this one); a
                     program not named qmail-queue is run as is, without a queue choice
      CONTROLDIR, QMAILHOME, DEATH (86400), ERROR_FD, TMPDIR

    exit codes: qmail-queue's; 0 dropped by the filter, 31, 51, 52 timeout, 53 disk
      full, 54 read or statfs error, 55 unreadable queue_base, 60, 68, 71, 81, 88,
      120 unable to run the queue program, 121, 122, 123

    """

    static func main() {
        let args = Sys.arguments()
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            _ = try? Sys.write(1, help)
            exit(0)
        }
        qs_crash_exit(QueueHandOff.Exit.internalBug)
        qs_death_alarm(Sys.environment("DEATH").flatMap { UInt32($0) } ?? 86400, QueueHandOff.Exit.timeout)
        qs_ignore_sigpipe()

        var message: [UInt8]? = nil
        if let filter = Sys.environment("FILTERARGS"), !filter.isEmpty {
            unsetenv("FILTERARGS")
            unsetenv("SPAMFILTER")
            message = runFilter(filter)
        }
        let program = QueueHandOff.nextProgram(arguments: args, variable: nil)
        if program[0].hasSuffix("/qmail-queue") || program[0] == "qmail-queue" {
            if Sys.environment("QUEUEDIR").map({ $0.isEmpty }) ?? true {
                let queue = chooseQueue()
                setenv("QUEUEDIR", queue, 1)
            }
            if let minFree = Sys.environment("MIN_FREE").flatMap({ UInt64($0) }), minFree > 0 {
                var st = statvfs()
                guard statvfs(Sys.environment("QUEUEDIR")!, &st) == 0 else { exit(QueueHandOff.Exit.readError) }
                if UInt64(st.f_bavail).multipliedReportingOverflow(by: UInt64(st.f_frsize)).partialValue < minFree {
                    exit(QueueHandOff.Exit.writeError)
                }
            }
        }
        if let message { QueueHandOff.execQueue(program, message: [message]) }
        QueueHandOff.execProgram(program)
    }

    /// `<base>/queue<N>`: base from QUEUE_BASE, control queue_base, else $QMAILHOME/queue.
    static func chooseQueue() -> String {
        var base = Sys.environment("QUEUE_BASE") ?? ""
        if base.isEmpty {
            do throws(ControlError) { base = try ControlDirectory.fromEnvironment().readLine("queue_base") ?? "" } catch {
                exit(55)
            }
        }
        if base.isEmpty { base = Paths.qmailHome + "/queue" }
        let start = Sys.environment("QUEUE_START").flatMap { Int($0) } ?? 1
        let count = max(1, Sys.environment("QUEUE_COUNT").flatMap { Int($0) } ?? 10)
        return base + "/queue\(start + Int(qs_random_below(UInt32(clamping: count))))"
    }

    /// Runs `/bin/sh -c filter` on the message; its output is the message to queue.
    /// Filter verdicts other than 0 end qmail-multi here.
    static func runFilter(_ filter: String) -> [UInt8] {
        let input = QueueHandOff.readMessage()
        guard let fd = QueueHandOff.memoryFile([input]) else { exit(QueueHandOff.Exit.tempFile) }
        let out: (read: Int32, write: Int32)
        do throws(SystemError) { out = try Spawn.pipe() } catch { exit(QueueHandOff.Exit.pipe) }
        let pid: pid_t
        do throws(SystemError) {
            pid = try Spawn.start("/bin/sh", arguments: ["qmailfilter", "-c", filter], fds: [.init(fd, at: 0), .init(out.write, at: 1)],
                                  keepStandard: true, directory: "/")
        } catch { exit(QueueHandOff.Exit.fork) }
        Sys.close(fd)
        Sys.close(out.write)
        let output = (try? Sys.readAll(out.read)) ?? []
        Sys.close(out.read)
        switch try? Spawn.wait(pid) {
        case .exited(let c)?:
            switch c {
            case 0: return output
            case 2, 99: exit(0)
            case 88: exit(QueueHandOff.Exit.custom)
            case 100, 31: exit(31)
            default: exit(71)
            }
        case .signaled?: exit(QueueHandOff.Exit.crashed)
        default: exit(QueueHandOff.Exit.waitSurprise)
        }
    }
}
