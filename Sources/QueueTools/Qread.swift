#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import Scheduler

/// Dates as the listings print them. qmail's qmail-qread prints UTC as
/// `D Mon YYYY hh:mm:ss GMT`; indimail-mta's adds the weekday (`Www, D Mon YYYY
/// hh:mm:ss GMT`) but prints local time under that label; ours is UTC in both.
enum ListingDate {
    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    static func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }

    static func format(_ t: Int64, weekday: Bool) -> String {
        var tt = time_t(t)
        var tm = tm()
        gmtime_r(&tt, &tm)
        let d = "\(tm.tm_mday) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))"
        return weekday ? "\(days[Int(tm.tm_wday)]), " + d : d
    }
}

/// qmail-qread: lists the messages of the queues (qmail-qread(8)).
public struct Qread {
    public enum Format { case indimail, classic, json }
    public var format: Format = .indimail
    public var local = false, remote = false, todo = false, counts = false, silent = false
    public var queues: [String] = []

    public static let usage = """
        usage: qmail-qread [-alrtcs] [--classic | --json] [-q queue]...
          -a  local, remote and todo      -l  local recipients
          -r  remote recipients           -t  todo (not yet preprocessed)
          -c  counts after each queue and in total
          -s  silent: no message lines (with -c: counts only)
          --classic  qmail's format (one header per message, no split folder)
          --json     one JSON object per message and line, with the schedule's
                     next attempt and last delivery report of each recipient
          -q queue   read this queue (repeatable); default: $QUEUE_BASE's queues,
                     else $QUEUEDIR, else $QMAILHOME/queue (and its slowq, qmta)
          -h, --help this text

        """

    public static func main(_ args: [String]) -> Int32 {
        var q = Qread()
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "--json": q.format = .json
            case "--classic": q.format = .classic
            case "--help", "-h":
                printOut(usage)
                return 0
            case "-q":
                guard i < args.count else { printError("qmail-qread: fatal: -q needs a queue folder\n" + usage); return 100 }
                q.queues.append(args[i]); i += 1
            default:
                guard a.hasPrefix("-"), a.count > 1, !a.hasPrefix("--") else {
                    printError("qmail-qread: fatal: unknown argument \(a)\n" + usage)
                    return 100
                }
                for c in a.dropFirst() {
                    switch c {
                    case "a": q.local = true; q.remote = true; q.todo = true
                    case "l": q.local = true
                    case "r": q.remote = true
                    case "t": q.todo = true
                    case "c": q.counts = true
                    case "s": q.silent = true
                    case "h": printOut(usage); return 0
                    default:
                        printError("qmail-qread: fatal: unknown option -\(c)\n" + usage)
                        return 100
                    }
                }
            }
        }
        if !q.local && !q.remote && !q.todo {
            // JSON lists everything the queue holds unless parts were chosen.
            q.local = true; q.remote = true; q.todo = q.format == .json
        }
        return q.run()
    }

    struct Counts { var local = 0, remote = 0, bounce = 0, todo = 0 }

    public func run() -> Int32 {
        let out = OutputBuffer(fd: 1)
        let err = OutputBuffer(fd: 2)
        let list = queues.isEmpty ? QueueLocation.defaultQueues() : queues
        let banners = list.count > 1
        var total = Counts()
        var trouble = false
        for path in list {
            if banners && format != .json { out.put("processing queue \(path)\n") }
            let loc = QueueLocation.detect(path)
            var st = stat()
            if stat(path, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
                err.put("qmail-qread: warn: unable to read queue \(path): \(stat(path, &st) != 0 ? String(cString: strerror(errno)) : "not a folder")\n")
                out.flush(); err.flush()
                trouble = true
                continue
            }
            var schedule: ScheduleReader? = nil
            if format == .json {
                do { schedule = try ScheduleReader(queue: path) } catch {
                    err.put("qmail-qread: warn: unable to read the schedule \(ScheduleReader.path(queue: path)): \(error); retry times and reports left out\n")
                    trouble = true
                }
            }
            // The look-ups run on this thread (ParallelScan calls back here, in order).
            let session = schedule?.session()
            var c = Counts()
            let scanner = QueueScanner(loc)
            let queueName = Array(JSON.string(loc.name).utf8)
            func warn(_ id: UInt64, _ problem: String) {
                trouble = true
                let line = "trouble with #\(id): \(problem)\n"
                if format == .classic { out.put("warning: " + line) } else { err.put("qmail-qread: warn: " + line) }
            }
            func folderTrouble(_ e: QueueScanner.ListError) {
                trouble = true
                if format == .classic { out.put("warning: \(e.description)\n") } else { err.put("qmail-qread: warn: \(e.description)\n") }
            }
            let wantInfo = local || remote || format == .classic
            for (n, folder) in scanner.infoFolders.enumerated() where wantInfo || counts {
                let ids: [UInt64]
                switch scanner.ids(folder) {
                case .success(let v): ids = v
                case .failure(let e): folderTrouble(e); continue
                }
                scanner.prepare(split: n)
                ParallelScan(location: loc, listing: scanner.listing, ids: ids).forEach(scanner: scanner) { id, found in
                    guard let m = found else { return }
                    for p in m.problems { warn(id, p) }
                    if m.bouncing { c.bounce += 1 }
                    let fatal = m.size == nil || m.infoProblem
                    if format == .json {
                        out.append { putJSON(m, queueName: queueName, schedule: session, into: &$0) }
                        return
                    }
                    if fatal { return }
                    if format == .classic {
                        out.putSafe(Array("\(ListingDate.format(m.birth, weekday: false)) GMT  #\(m.id)  \(m.size!)  <".utf8) + m.sender + Array("> \(m.bouncing ? " bouncing" : "")".utf8))
                        out.put("\n")
                        for (name, records) in [("local", m.local), ("remote", m.remote)] {
                            for r in records { out.put((r.done ? "  done" : "") + "\t\(name)\t"); out.putSafe(r.address); out.put("\n") }
                        }
                        return
                    }
                    var header = false
                    for (on, name, records) in [(local, "local", m.local), (remote, "remote", m.remote)] where on {
                        if name == "local" { c.local += records.count } else { c.remote += records.count }
                        if silent { continue }
                        for r in records {
                            if !header { putHeader(out, m); header = true }
                            out.put((r.done ? "  done" : "") + "\t\(name)\t"); out.putSafe(r.address); out.put("\n")
                        }
                    }
                }
            }
            if todo && format != .classic {
                for folder in scanner.todoFolders {
                    let ids: [UInt64]
                    switch scanner.ids(folder) {
                    case .success(let v): ids = v
                    case .failure(let e): folderTrouble(e); continue
                    }
                    for id in ids {
                        guard let m = scanner.todoEntry(id) else { continue }
                        for p in m.problems { warn(id, p) }
                        c.todo += m.todo.count
                        if format == .json { out.append { putJSON(m, queueName: queueName, schedule: session, into: &$0) }; continue }
                        if silent || m.size == nil || !m.problems.isEmpty { continue }
                        var header = false
                        for r in m.todo {
                            if !header { putHeader(out, m); header = true }
                            out.put("\ttodo\t"); out.putSafe(r); out.put("\n")
                        }
                    }
                }
            }
            if counts && format != .json {
                if banners { putCounts(out, c, prefix: "") }
                total.local += c.local; total.remote += c.remote; total.bounce += c.bounce; total.todo += c.todo
            }
            if banners && format != .json { out.put("\n") }
            out.flush(); err.flush()
        }
        if counts && format != .json { putCounts(out, total, prefix: "Total ") }
        out.flush(); err.flush()
        if out.failed { return 111 }
        return trouble ? 111 : 0
    }

    func putHeader(_ out: OutputBuffer, _ m: QueuedMessage) {
        out.putSafe(Array("\(ListingDate.format(m.birth, weekday: true)) GMT  \(m.folder)/#\(m.id)  \(m.size ?? 0)  <".utf8) + m.sender
                    + Array("> \(m.bouncing ? " bouncing" : "")".utf8))
        out.put("\n")
    }

    func putCounts(_ out: OutputBuffer, _ c: Counts, prefix: String) {
        if local { out.put("\(prefix)Messages in local  queue: \(c.local)\n") }
        if remote { out.put("\(prefix)Messages in remote queue: \(c.remote)\n") }
        out.put("\(prefix)Messages in bounce queue: \(c.bounce)\n")
        if todo { out.put("\(prefix)Messages in todo   queue: \(c.todo)\n") }
    }

    /// One message as a JSON object: Postfix's `postqueue -j` keys where they exist
    /// (`queue_name`, `queue_id`, `arrival_time`, `message_size`, `sender`,
    /// `recipients` with `address` and `delay_reason`), and ours. `queueName` is the
    /// queue's name already as JSON. Written as bytes into `s`.
    func putJSON(_ m: QueuedMessage, queueName: [UInt8], schedule: ScheduleReader.Session?, into s: inout [UInt8]) {
        var next: [Channel: Time] = [:]
        var reports: [Channel: [Int: ScheduleReader.Report]] = [:]
        var problems = m.problems
        if let schedule, !m.isTodo {
            do { (next, reports) = try schedule.lookup(m.id) } catch { problems.append("schedule: \(error)") }
        }
        JSON.raw("{\"queue_name\":", into: &s)
        s.append(contentsOf: queueName)
        JSON.raw(",\"queue_id\":\"", into: &s)
        JSON.put(m.id, into: &s)
        JSON.raw("\",\"split\":", into: &s)
        JSON.put(Int64(m.folder), into: &s)
        if m.isTodo { JSON.raw(",\"state\":\"todo\"", into: &s) } else { JSON.raw(",\"state\":\"preprocessed\"", into: &s) }
        JSON.raw(",\"arrival_time\":", into: &s)
        if m.infoProblem { JSON.raw("null", into: &s) } else { JSON.put(m.birth, into: &s) }
        JSON.raw(",\"message_size\":", into: &s)
        if let size = m.size { JSON.put(size, into: &s) } else { JSON.raw("null", into: &s) }
        JSON.raw(",\"sender\":", into: &s)
        JSON.put(m.sender, into: &s)
        if m.bouncing { JSON.raw(",\"bouncing\":true", into: &s) } else { JSON.raw(",\"bouncing\":false", into: &s) }
        if let schedule, schedule.isHeld(m.id) { JSON.raw(",\"held\":true", into: &s) }
        JSON.raw(",\"recipients\":[", into: &s)
        var first = true
        func comma() { if first { first = false } else { s.append(UInt8(ascii: ",")) } }
        if m.isTodo {
            for r in m.todo {
                comma()
                JSON.raw("{\"address\":", into: &s)
                JSON.put(r, into: &s)
                JSON.raw(",\"channel\":\"todo\",\"done\":false}", into: &s)
            }
        } else {
            for (ch, records) in [(Channel.local, m.local), (.remote, m.remote)] {
                for r in records {
                    comma()
                    JSON.raw("{\"address\":", into: &s)
                    JSON.put(r.address, into: &s)
                    if ch == .local { JSON.raw(",\"channel\":\"local\"", into: &s) } else { JSON.raw(",\"channel\":\"remote\"", into: &s) }
                    if r.done { JSON.raw(",\"done\":true", into: &s) } else { JSON.raw(",\"done\":false", into: &s) }
                    if !r.done, let t = next[ch] { JSON.raw(",\"next_attempt\":", into: &s); JSON.put(t, into: &s) }
                    if let rep = reports[ch]?[r.offset] {
                        var text = rep.report.text
                        while text.last == 10 { text.removeLast() }
                        if !r.done && rep.report.kind == .deferral { JSON.raw(",\"delay_reason\":", into: &s); JSON.put(text, into: &s) }
                        JSON.raw(",\"last_report\":{\"time\":", into: &s)
                        JSON.put(rep.time, into: &s)
                        switch rep.report.kind {
                        case .success: JSON.raw(",\"status\":\"success\"", into: &s)
                        case .failure: JSON.raw(",\"status\":\"failure\"", into: &s)
                        default: JSON.raw(",\"status\":\"deferral\"", into: &s)
                        }
                        JSON.raw(",\"text\":", into: &s)
                        JSON.put(text, into: &s)
                        s.append(UInt8(ascii: "}"))
                    }
                    s.append(UInt8(ascii: "}"))
                }
            }
        }
        s.append(UInt8(ascii: "]"))
        if !problems.isEmpty {
            JSON.raw(",\"problems\":[", into: &s)
            for (i, p) in problems.enumerated() {
                if i > 0 { s.append(UInt8(ascii: ",")) }
                JSON.put(Array(p.utf8), into: &s)
            }
            s.append(UInt8(ascii: "]"))
        }
        JSON.raw("}\n", into: &s)
    }
}
