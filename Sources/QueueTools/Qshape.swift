#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat

/// qmail-qshape: the queue by destination (or sender) domain and age, like Postfix's
/// qshape(1) (qmail-qshape(8)).
public struct Qshape {
    public var bySender = false
    public var minutes = 5
    public var buckets = 10
    public var linear = false
    public var queues: [String] = []
    public var now: Int64 = Int64(time(nil))

    public static let usage = """
        usage: qmail-qshape [-s] [-l] [-t minutes] [-b buckets] [-q queue]...
          a table of the messages waiting, by recipient domain (a message counts once
          for each domain it still has to reach) and age in minutes
          -s          by sender domain instead (the empty sender is MAILER-DAEMON)
          -t minutes  width of the first age bucket (default 5)
          -b buckets  number of age buckets (default 10)
          -l          buckets of equal width (default: each twice the one before)
          -q queue    read this queue (repeatable); default as qmail-qread(8)
          -h, --help  this text

        """

    public static func main(_ args: [String]) -> Int32 {
        var q = Qshape()
        var i = 0
        func number(_ name: String) -> Int? {
            guard i < args.count, let v = Int(args[i]), v > 0, v <= 100_000 else {
                printError("qmail-qshape: fatal: \(name) needs a positive number\n" + usage)
                return nil
            }
            i += 1
            return v
        }
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "-h", "--help": printOut(usage); return 0
            case "-s": q.bySender = true
            case "-l": q.linear = true
            case "-t": guard let v = number("-t") else { return 100 }; q.minutes = v
            case "-b":
                guard let v = number("-b") else { return 100 }
                if v < 2 { printError("qmail-qshape: fatal: -b needs at least 2\n"); return 100 }
                q.buckets = v
            case "-q":
                guard i < args.count else { printError("qmail-qshape: fatal: -q needs a queue folder\n" + usage); return 100 }
                q.queues.append(args[i]); i += 1
            default:
                printError("qmail-qshape: fatal: unknown argument \(a)\n" + usage)
                return 100
            }
        }
        let (text, trouble) = q.render()
        printOut(text)
        return trouble ? 111 : 0
    }

    /// Upper bound (minutes) of each bucket but the last.
    var limits: [Int] {
        (0..<(buckets - 1)).map { k in linear ? minutes * (k + 1) : minutes << min(k, 40) }
    }

    func bucket(age seconds: Int64) -> Int {
        let m = Double(max(0, seconds)) / 60
        for (k, l) in limits.enumerated() where m < Double(l) { return k }
        return buckets - 1
    }

    static func domain(_ address: [UInt8], sender: Bool) -> String {
        if sender && address.isEmpty { return "MAILER-DAEMON" }
        let d: ArraySlice<UInt8> = address.lastIndex(of: UInt8(ascii: "@")).map { address[($0 + 1)...] } ?? address[...]
        let s = String(decoding: d.map { $0 >= 32 && $0 <= 126 ? $0 : UInt8(ascii: "_") }, as: UTF8.self).lowercased()
        return s.isEmpty ? "(none)" : s
    }

    /// The table, and whether anything could not be read.
    public func render() -> (String, Bool) {
        var rows: [String: [Int]] = [:]
        var total = [Int](repeating: 0, count: buckets)
        var trouble = false
        func count(_ domains: Set<String>, birth: Int64) {
            let b = bucket(age: now - birth)
            for d in domains { rows[d, default: [Int](repeating: 0, count: buckets)][b] += 1 }
            if !domains.isEmpty { total[b] += 1 }
        }
        for path in queues.isEmpty ? QueueLocation.defaultQueues() : queues {
            let scanner = QueueScanner(QueueLocation.detect(path))
            for (n, folder) in scanner.infoFolders.enumerated() {
                guard case .success(let ids) = scanner.ids(folder) else {
                    printError("qmail-qshape: warn: \(path): unable to read \(folder)\n"); trouble = true; continue
                }
                scanner.prepare(split: n)
                for id in ids {
                    guard let m = scanner.message(id), !m.infoProblem else { continue }
                    let pending = (m.local + m.remote).filter { !$0.done }
                    if pending.isEmpty { continue }
                    count(bySender ? [Qshape.domain(m.sender, sender: true)] : Set(pending.map { Qshape.domain($0.address, sender: false) }), birth: m.birth)
                }
            }
            for folder in scanner.todoFolders {
                guard case .success(let ids) = scanner.ids(folder) else {
                    printError("qmail-qshape: warn: \(path): unable to read \(folder)\n"); trouble = true; continue
                }
                for id in ids {
                    guard let m = scanner.todoEntry(id), !m.infoProblem, !m.todo.isEmpty else { continue }
                    count(bySender ? [Qshape.domain(m.sender, sender: true)] : Set(m.todo.map { Qshape.domain($0, sender: false) }), birth: m.birth)
                }
            }
        }
        var labels = ["T"] + limits.map { "\($0)" }
        labels.append("\(limits.last ?? minutes)+")
        let table: [(String, [Int])] = [("TOTAL", total)] + rows.sorted {
            let a = $0.value.reduce(0, +), b = $1.value.reduce(0, +)
            return a != b ? a > b : $0.key < $1.key
        }.map { ($0.key, $0.value) }
        let width = max(18, table.map { $0.0.count }.max() ?? 0)
        var widths = labels.map { $0.count }
        for (_, v) in table {
            let cells = [v.reduce(0, +)] + v
            for (k, x) in cells.enumerated() { widths[k] = max(widths[k], "\(x)".count) }
        }
        func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        var out = pad("", width)
        for (k, l) in labels.enumerated() { out += " " + pad(l, widths[k]) }
        out += "\n"
        for (name, v) in table {
            out += pad(name, width)
            for (k, x) in ([v.reduce(0, +)] + v).enumerated() { out += " " + pad("\(x)", widths[k]) }
            out += "\n"
        }
        return (out, trouble)
    }
}
