#if canImport(Glibc)
import Glibc
#endif
import QueueFormat
import QueueStore
import SystemIO

enum QueueFixMain {
    static let help = """
    usage: queue-fix [-N] [-v] [-s split] [-b 0|1] queuedir

    Creates a qmail queue in queuedir, or repairs one: the folders mess intd todo
    info local remote bounce pid lock, their split sub-folders, lock/sendmutex,
    lock/tcpto and the lock/trigger FIFO, with qmail's modes (and owners qmailq,
    qmails, qmailr, group qmail, when run as root and those users exist).
    A sound queue is left untouched. Refuses a folder that is not a queue.

    options:
      -s split   number of split sub-folders (default $CONFSPLIT; else, for an
                 existing queue, the split it was made with; else 23)
      -b 0|1     split todo/ and intd/ too (BIGTODO; default $BIGTODO or 0)
      -N         dry run: say what would change, change nothing
      -v         verbose: also say when nothing changed

    exit codes: 0 queue sound (or repaired), 100 usage or refused, 111 system error

    """

    static func usage(_ why: String) -> Never {
        printError("queue-fix: \(why)")
        printError("usage: queue-fix [-N] [-v] [-s split] [-b 0|1] queuedir")
        exit(100)
    }

    static func run() -> Never {
        var args = Array(CommandLine.arguments.dropFirst())
        var names = QueueEnvironment.names()
        var dryRun = false, verbose = false, splitGiven = false
        var dir: String?
        while !args.isEmpty {
            let a = args.removeFirst()
            switch a {
            case "--help", "-h": printOut(help); exit(0)
            case "-N": dryRun = true
            case "-v": verbose = true
            case "-s":
                guard let v = args.first.flatMap({ Int($0) }), v > 0 else { usage("-s needs a positive number") }
                args.removeFirst(); names.split = v; splitGiven = true
            case "-b":
                guard let v = args.first.flatMap({ Int($0) }), v == 0 || v == 1 else { usage("-b needs 0 or 1") }
                args.removeFirst(); names.bigTodo = v == 1
            default:
                if a.hasPrefix("-") && a.count > 1 { usage("unknown option \(a)") }
                if dir != nil { usage("only one queue directory") }
                dir = a
            }
        }
        guard let dir else { usage("no queue directory given") }
        // Without -s or CONFSPLIT, an existing queue keeps the split it has.
        if !splitGiven && Sys.environment("CONFSPLIT") == nil, let existing = QueueFix.existingSplit(dir) { names.split = existing }
        umask(0o022)
        do {
            let changes = try QueueFix(queueDir: dir, names: names, dryRun: dryRun).run()
            for c in changes { printOut((dryRun ? "would have " : "") + c + "\n") }
            if changes.isEmpty && verbose { printOut("queue-fix: \(dir) is sound; nothing changed\n") }
            else if !changes.isEmpty { printOut("queue-fix: \(dir): \(changes.count) change\(changes.count == 1 ? "" : "s")\(dryRun ? " needed" : " made")\n") }
            exit(0)
        } catch let refusal as QueueFix.Refusal {
            printError(refusal.message)
            exit(refusal.message.contains("refusing") || refusal.message.contains("by hand") ? 100 : 111)
        } catch {
            printError("queue-fix: fatal: \(error)")
            exit(111)
        }
    }
}
