#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueFormat
import Scheduler
import LMDB

/// Changing the queue while the engine runs: qmail-rm (remove messages) and qmail-qctl
/// (hold, release, deliver now). With an engine on the queue every change goes
/// through it (`EngineCommand`), so a message being delivered is never torn; without
/// one, the tool holds the queue's `lock/sendmutex` (no engine can start) and changes
/// the files itself.
public enum QueueChange {
    static let batch = 300

    struct Failure: Error, CustomStringConvertible {
        let why: String
        var description: String { why }
    }

    /// Sends `verb id…` in batches; ids answered `busy` are asked again every 200 ms
    /// for up to `patience` seconds. Returns each id's last answer.
    static func ask(_ verb: String, _ ids: [UInt64], queue: String, patience: Int = 60) -> Result<[UInt64: String], Failure> {
        var answers: [UInt64: String] = [:]
        var todo = ids
        var waited = 0
        while !todo.isEmpty {
            var busy: [UInt64] = []
            var start = 0
            while start < todo.count {
                let part = Array(todo[start..<min(start + batch, todo.count)])
                start += batch
                switch EngineCommand.send(verb + " " + part.map { "\($0)" }.joined(separator: " "), queue: queue) {
                case .answered(let a):
                    let words = a.split(separator: " ").map(String.init)
                    guard words.count == part.count else { return .failure(Failure(why: "the engine answered \"\(a)\"")) }
                    for (id, w) in zip(part, words) { answers[id] = w; if w == "busy" { busy.append(id) } }
                case .noEngine(let fd):
                    close(fd)
                    return .failure(Failure(why: "the engine stopped"))
                case .failed(let why):
                    return .failure(Failure(why: why))
                }
            }
            todo = busy
            if todo.isEmpty || waited >= patience * 5 { break }
            usleep(200_000)
            waited += 1
        }
        return .success(answers)
    }

    /// Every id of a queue: preprocessed (`info/`) and not yet (`todo/`).
    static func allIDs(_ scanner: QueueScanner) -> [UInt64] {
        var out: [UInt64] = []
        for f in scanner.infoFolders + scanner.todoFolders { if case .success(let ids) = scanner.ids(f) { out += ids } }
        return out
    }

    /// Removes a message's files with no engine running (we hold its mutex): todo
    /// first (so nothing preprocesses it), the message last, info at the very end.
    static func removeFiles(_ id: UInt64, _ loc: QueueLocation) -> Bool {
        let n = loc.names
        var found = false
        for f in [QueueNames.Folder.todo, .intd, .local, .remote, .bounce, .mess, .info] {
            let p = loc.path + "/" + n.path(f, id)
            if unlink(p) == 0 { found = true } else if errno != ENOENT {
                printError("qmail-rm: warn: unable to remove \(p): \(String(cString: strerror(errno)))\n")
            }
        }
        return found
    }

    public static let rmUsage = """
        usage: qmail-rm [-n] [-v] [-i] [-e] [-p regex] [-q queue]... [id]...
          removes messages from the queue; with an engine running, through it (a
          message being delivered is removed when its delivery ends)
          id          a message id (as qmail-qread shows it after #)
          -p regex    every message whose mess file matches (POSIX regex, basic)
          -e          extended regex; -i  ignore case
          -n          only list what matches; remove nothing
          -v          also list the messages that do not match
          -q queue    this queue (repeatable); default as qmail-qread(8)
          -h, --help  this text

        """

    public static func rmMain(_ args: [String]) -> Int32 {
        var queues: [String] = []
        var pattern: String? = nil
        var flags: Int32 = 0
        var dry = false, verbose = false
        var ids: [UInt64] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "-h", "--help": printOut(rmUsage); return 0
            case "-n": dry = true
            case "-v": verbose = true
            case "-i": flags |= REG_ICASE
            case "-e": flags |= REG_EXTENDED
            case "-p", "-q":
                guard i < args.count else { printError("qmail-rm: fatal: \(a) needs a value\n" + rmUsage); return 100 }
                if a == "-p" { pattern = args[i] } else { queues.append(args[i]) }
                i += 1
            default:
                guard let id = QueueNames.parseID(a.utf8) else {
                    printError("qmail-rm: fatal: unknown argument \(a)\n" + rmUsage); return 100
                }
                ids.append(id)
            }
        }
        if pattern == nil && ids.isEmpty { printError("qmail-rm: fatal: name the messages: ids or -p regex\n" + rmUsage); return 100 }
        var re = regex_t()
        if let pattern {
            // REG_NEWLINE: ^ and $ match at each line of the message.
            let rc = regcomp(&re, pattern, flags | REG_NOSUB | REG_NEWLINE)
            if rc != 0 {
                var buf = [CChar](repeating: 0, count: 256)
                regerror(rc, &re, &buf, buf.count)
                printError("qmail-rm: fatal: bad regex \(pattern): \(String(cString: buf))\n")
                return 100
            }
        }
        defer { if pattern != nil { regfree(&re) } }
        if queues.isEmpty { queues = QueueLocation.defaultQueues() }
        var trouble = false
        var removed = 0, matched = 0
        for q in queues {
            let loc = QueueLocation.detect(q)
            let scanner = QueueScanner(loc)
            var chosen: [UInt64] = []
            let candidates = pattern == nil ? ids : allIDs(scanner)
            for id in candidates {
                let mess = q + "/" + loc.names.path(.mess, id)
                guard var bytes = (try? Sys.readFile(mess)) ?? nil else { continue }
                var hit = true
                if pattern != nil {
                    bytes.append(0)
                    hit = bytes.withUnsafeBufferPointer { p in
                        p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { regexec(&re, $0, 0, nil, 0) == 0 }
                    }
                }
                if verbose || (dry && hit) { printOut("\(mess): \(hit ? "yes" : "no")\n") }
                if hit { chosen.append(id) }
            }
            matched += chosen.count
            if dry || chosen.isEmpty { continue }
            if let fd = EngineCommand.lockIfIdle(q) {
                defer { close(fd) }
                for id in chosen where removeFiles(id, loc) { printOut("removed \(id)\n"); removed += 1 }
            } else {
                switch ask("remove", chosen, queue: q) {
                case .success(let answers):
                    for id in chosen {
                        let a = answers[id] ?? "unknown"
                        if a == "removed" { removed += 1; printOut("removed \(id)\n") } else {
                            printError("qmail-rm: warn: \(id): \(a == "busy" ? "still being delivered; not removed" : "no such message in \(q)")\n")
                            trouble = true
                        }
                    }
                case .failure(let why):
                    printError("qmail-rm: fatal: \(q): \(why)\n")
                    trouble = true
                }
            }
        }
        printOut("\(matched) message\(matched == 1 ? "" : "s") matched, \(removed) removed\n")
        return trouble ? 111 : 0
    }

    public static let ctlUsage = """
        usage: qmail-qctl [-q queue]... hold|release|now id... | qmail-qctl [-q queue]... now @domain
          hold id     do not deliver the message until released (deliveries in
                      flight end normally); kept across restarts
          release id  deliver it again, at once
          now id      deliver it now (not waiting for its retry time)
          now @domain deliver now every message with a remote recipient at domain
          -q queue    this queue (repeatable); default as qmail-qread(8)
          -h, --help  this text

        """

    public static func ctlMain(_ args: [String]) -> Int32 {
        var queues: [String] = []
        var words: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            if a == "-h" || a == "--help" { printOut(ctlUsage); return 0 }
            if a == "-q" {
                guard i < args.count else { printError("qmail-qctl: fatal: -q needs a queue folder\n" + ctlUsage); return 100 }
                queues.append(args[i]); i += 1
                continue
            }
            words.append(a)
        }
        guard let verb = words.first, ["hold", "release", "now"].contains(verb), words.count >= 2 else {
            printError("qmail-qctl: fatal: usage\n" + ctlUsage); return 100
        }
        let targets = Array(words.dropFirst())
        var domain: String? = nil
        var ids: [UInt64] = []
        if verb == "now", targets.count == 1, targets[0].hasPrefix("@") { domain = String(targets[0].dropFirst()).lowercased() } else {
            for t in targets {
                guard let id = QueueNames.parseID(t.utf8) else { printError("qmail-qctl: fatal: not a message id: \(t)\n"); return 100 }
                ids.append(id)
            }
        }
        if queues.isEmpty { queues = QueueLocation.defaultQueues() }
        var trouble = false
        for q in queues {
            let loc = QueueLocation.detect(q)
            var chosen = ids
            if let domain {
                let scanner = QueueScanner(loc)
                for f in scanner.infoFolders {
                    guard case .success(let list) = scanner.ids(f) else { continue }
                    for id in list {
                        guard let m = scanner.message(id) else { continue }
                        if m.remote.contains(where: { !$0.done && Qshape.domain($0.address, sender: false) == domain }) { chosen.append(id) }
                    }
                }
                if chosen.isEmpty { printOut("\(q): no message waits for \(domain)\n"); continue }
            } else {
                chosen = chosen.filter { Sys.exists(q + "/" + loc.names.path(.info, $0)) || Sys.exists(q + "/" + loc.names.path(.todo, $0)) }
                if chosen.isEmpty { continue }
            }
            if let fd = EngineCommand.lockIfIdle(q) {
                defer { close(fd) }
                // No engine: what it reads when it starts (the held messages, the schedule).
                do {
                    var o = LMDBEnvironment.Options()
                    o.noSubdirectory = true
                    o.mapSize = 4 << 30
                    let env = try LMDBEnvironment(path: ScheduleReader.path(queue: q), options: o)
                    let held = try env.database("held"), schedule = try env.database("schedule")
                    let now = Int64(time(nil))
                    try env.write { txn in
                        for id in chosen {
                            let key = ScheduleSchema.time(Time(bitPattern: id))
                            if verb == "hold" { try txn.put(held, key, [1]) }
                            if verb == "release" { _ = try txn.delete(held, key) }
                            if verb != "hold" {
                                for c in Channel.allCases where Sys.exists(q + "/" + loc.names.path(c == .local ? .local : .remote, id)) {
                                    try txn.put(schedule, ScheduleSchema.jobKey(JobKey(id, c)), ScheduleSchema.time(now))
                                }
                            }
                        }
                    }
                    for id in chosen { printOut("\(id) \(verb == "hold" ? "held" : verb == "release" ? "released" : "due")\n") }
                } catch {
                    printError("qmail-qctl: fatal: \(q): \(error)\n"); trouble = true
                }
            } else {
                switch ask(verb, chosen, queue: q, patience: 0) {
                case .success(let answers):
                    for id in chosen {
                        let a = answers[id] ?? "unknown"
                        printOut("\(id) \(a)\n")
                        if a == "unknown" { trouble = true }
                    }
                case .failure(let why):
                    printError("qmail-qctl: fatal: \(q): \(why)\n"); trouble = true
                }
            }
        }
        return trouble ? 111 : 0
    }
}
