#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat

/// qmail-qstat: the number of messages in the queues, as qmail's script prints it
/// (qmail-qstat(8)): the files under `mess/`, and under `todo/` those not yet
/// preprocessed.
public enum Qstat {
    public static let usage = """
        usage: qmail-qstat [-q queue]...
          prints "messages in queue: N" (files under mess/) and "messages in queue but
          not yet preprocessed: M" (files under todo/), summed over the queues
          -q queue   count this queue (repeatable); default as qmail-qread(8)
          -h, --help this text

        """

    public static func main(_ args: [String]) -> Int32 {
        guard let queues = Tcpto.queues(args, program: "qmail-qstat", usage: usage) else { return 0 }
        var mess = 0, todo = 0
        var trouble = false
        for q in queues {
            let loc = QueueLocation.detect(q)
            let scanner = QueueScanner(loc)
            for folder in (0..<loc.names.split).map({ "mess/\($0)" }) {
                switch scanner.ids(folder) {
                case .success(let ids): mess += ids.count
                case .failure(let e): printError("qmail-qstat: warn: \(q): \(e)\n"); trouble = true
                }
            }
            for folder in scanner.todoFolders {
                switch scanner.ids(folder) {
                case .success(let ids): todo += ids.count
                case .failure(let e): printError("qmail-qstat: warn: \(q): \(e)\n"); trouble = true
                }
            }
        }
        printOut("messages in queue: \(mess)\nmessages in queue but not yet preprocessed: \(todo)\n")
        return trouble ? 111 : 0
    }
}
