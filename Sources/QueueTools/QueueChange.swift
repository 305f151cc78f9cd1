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
        usage: qmail-rm [-n] [-v] [-i] [-e] [-r | -d | -X secs | -x timespec [-f fmt]]
                        [-y trash] [-s split] [-p regex] [-q queue]... [id]...
          removes messages from the queue (or moves them to a trash folder, or
          changes their arrival time); with an engine running, through it (a
          message being delivered is changed when its delivery ends)
          id          a message id (as qmail-qread shows it after #)
          -p regex    every message whose mess file matches (POSIX regex, basic)
          -e          extended regex; -i  ignore case
          -d          remove the messages (the default)
          -r          move them to the trash folder instead: each file to
                      <trash>/<id>.<folder> (mess, info, local, remote, bounce,
                      todo, intd); never delivered, kept to be looked at
          -y trash    the trash folder (default trash; relative to each queue)
          -X secs     make the messages secs seconds older (0: 604800), so the
                      engine bounces them when their queue lifetime is over;
                      negative: younger
          -x timespec set their arrival time to timespec, read with -f's format
          -f fmt      strptime(3) format of -x (default "%a %b %d %H:%M:%S %Z %Y")
          -s split    the queue's split (default: as the queue shows it)
          -n          only list what matches; change nothing
          -v          also list the messages that do not match
          -q queue    this queue (repeatable); default as qmail-qread(8)
          -h, --help  this text

        """

    enum RmAction: Equatable { case remove, yank, restamp }

    /// The trash folder of a queue: `-y`'s folder, relative to the queue unless absolute.
    static func trashFolder(_ queue: String, _ y: String) -> String { y.hasPrefix("/") ? y : queue + "/" + y }

    /// The files of a message in the order qmail-rm -r moves them: first what makes it
    /// a message the engine delivers (todo, info), then the rest, the mess file last.
    static let yankOrder: [QueueNames.Folder] = [.todo, .intd, .info, .local, .remote, .bounce, .mess]

    /// Moves a message's files into the trash folder, as `<id>.<folder>` (or, when an
    /// earlier message of the same id left files there, `<id>-<k>.<folder>`). Returns
    /// whether every file left the queue.
    static func moveToTrash(_ id: UInt64, _ loc: QueueLocation, trash: String) -> Bool {
        let n = loc.names
        var present: [(QueueNames.Folder, String)] = []
        for f in yankOrder {
            let p = loc.path + "/" + n.path(f, id)
            var st = stat()
            if lstat(p, &st) == 0 { present.append((f, p)) }
        }
        var stem = "\(id)"
        var k = 0
        func taken(_ stem: String) -> Bool {
            yankOrder.contains { f in var st = stat(); return lstat(trash + "/" + stem + "." + f.rawValue, &st) == 0 }
        }
        while taken(stem) { k += 1; stem = "\(id)-\(k)" }
        var ok = true
        for (f, p) in present {
            let target = trash + "/" + stem + "." + f.rawValue
            if rename(p, target) == 0 {
                printOut("moved \(p) to \(target)\n")
            } else if errno != ENOENT {
                printError("qmail-rm: warn: unable to move \(p) to \(target): \(String(cString: strerror(errno)))\n")
                ok = false
            }
        }
        return ok
    }

    /// Sets the time of a message's info file (no engine running).
    static func restampFile(_ id: UInt64, _ loc: QueueLocation, to t: Int64) -> Bool {
        let p = loc.path + "/" + loc.names.path(.info, id)
        var times = [timespec(tv_sec: time_t(t), tv_nsec: 0), timespec(tv_sec: time_t(t), tv_nsec: 0)]
        if utimensat(AT_FDCWD, p, &times, 0) == 0 { printError("Set timestamp on \(p)\n"); return true }
        printError("qmail-rm: warn: \(id): " + (errno == ENOENT ? "not preprocessed yet (no info file); not restamped\n"
                                                   : "unable to restamp \(p): \(String(cString: strerror(errno)))\n"))
        return false
    }

    /// `-x timespec` with `-f fmt`: local time, as date(1) prints it by default.
    static func parseTimespec(_ spec: String, format: String) -> (time: Int64?, error: String) {
        var tm = tm()
        let rest: Int? = spec.withCString { s in
            guard let end = qs_strptime(s, format, &tm) else { return nil }
            return UnsafePointer(end) - s
        }
        let bytes = Array(spec.utf8)
        guard let rest else { return (nil, "Error parsing the date specified at: [\(spec)] col 0 [\(spec)]") }
        if rest < bytes.count {
            let tail = String(decoding: bytes[rest...], as: UTF8.self)
            return (nil, "Error parsing the date specified at: [\(tail)] col \(rest) [\(spec)]")
        }
        tm.tm_isdst = -1
        let t = mktime(&tm)
        if t < 0 { return (nil, "Error parsing the date specified at: [\(spec)] col \(rest) [\(spec)]") }
        return (Int64(t), "")
    }

    public static func rmMain(_ args: [String]) -> Int32 {
        var queues: [String] = []
        var pattern: String? = nil
        var flags: Int32 = 0
        var dry = false, verbose = false
        var yank = false, delete = false
        var trashName = "trash"
        var offset: Int64? = nil, timespecArg: String? = nil, format = "%a %b %d %H:%M:%S %Z %Y"
        var split: Int? = nil
        var ids: [UInt64] = []
        var i = 0
        func usage(_ why: String) -> Int32 { printError("qmail-rm: fatal: \(why)\n" + rmUsage); return 100 }
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "-h", "--help": printOut(rmUsage); return 0
            case "-n": dry = true
            case "-v": verbose = true
            case "-i": flags |= REG_ICASE
            case "-e": flags |= REG_EXTENDED
            case "-r": yank = true
            case "-d": delete = true
            case "-p", "-q", "-y", "-X", "-x", "-f", "-s":
                guard i < args.count else { return usage("\(a) needs a value") }
                let v = args[i]
                i += 1
                switch a {
                case "-p": pattern = v
                case "-q": queues.append(v)
                case "-y":
                    guard !v.isEmpty else { return usage("-y needs a folder") }
                    trashName = v
                case "-X":
                    guard let n = Int64(v) else { return usage("-X needs a number of seconds, not \(v)") }
                    offset = n
                case "-x": timespecArg = v
                case "-f": format = v
                default:
                    guard let n = Int(v), n > 0 else { return usage("-s needs a positive split, not \(v)") }
                    split = n
                }
            default:
                guard let id = QueueNames.parseID(a.utf8) else { return usage("unknown argument \(a)") }
                ids.append(id)
            }
        }
        if pattern == nil && ids.isEmpty { return usage("name the messages: ids or -p regex") }
        if offset != nil && timespecArg != nil { return usage("-x and -X exclude each other") }
        // As indimail-mta's: -r before -d before -X/-x.
        let action: RmAction = yank ? .yank : delete ? .remove : (offset != nil || timespecArg != nil) ? .restamp : .remove
        var stampTo: Int64? = nil
        if action == .restamp {
            if var o = offset {
                if o == 0 { o = 604800 }
                offset = o
                printOut("Offsetting timestamps by \(o) seconds\n")
            } else if let spec = timespecArg {
                let (t, why) = parseTimespec(spec, format: format)
                guard let t else { printOut(why + "\n"); return 111 }
                stampTo = t
                printOut("time in seconds: \(t) [\(spec)]\n")
            }
        }
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
        var changed = 0, matched = 0
        for q in queues {
            var loc = QueueLocation.detect(q)
            if let split { loc.names = QueueNames(split: split, bigTodo: loc.names.bigTodo) }
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
            // The time each message gets with -X: its own arrival moved by the offset.
            func target(_ id: UInt64) -> Int64? {
                if let stampTo { return stampTo }
                guard let o = offset, let st = try? Sys.stat(q + "/" + loc.names.path(.info, id)) else { return nil }
                return Int64(st.st_mtim.tv_sec) - o
            }
            let trash = trashFolder(q, trashName)
            if action == .yank {
                var st = stat()
                if stat(trash, &st) != 0 {
                    if errno != ENOENT || mkdir(trash, 0o700) != 0 {
                        printError("qmail-rm: fatal: \(q): unable to make the trash folder \(trash): \(String(cString: strerror(errno)))\n")
                        trouble = true
                        continue
                    }
                } else if (st.st_mode & S_IFMT) != S_IFDIR {
                    printError("qmail-rm: fatal: \(q): the trash \(trash) is not a folder\n"); trouble = true; continue
                }
            }
            if let fd = EngineCommand.lockIfIdle(q) {
                defer { close(fd) }
                for id in chosen {
                    switch action {
                    case .remove: if removeFiles(id, loc) { printOut("removed \(id)\n"); changed += 1 }
                    case .yank: if moveToTrash(id, loc, trash: trash) { changed += 1 } else { trouble = true }
                    case .restamp:
                        if let t = target(id), restampFile(id, loc, to: t) { changed += 1 } else {
                            if target(id) == nil { printError("qmail-rm: warn: \(id): not preprocessed yet (no info file); not restamped\n") }
                            trouble = true
                        }
                    }
                }
                continue
            }
            func failed(_ why: Failure) { printError("qmail-rm: fatal: \(q): \(why)\n"); trouble = true }
            func warn(_ id: UInt64, _ a: String, _ what: String) {
                printError("qmail-rm: warn: \(id): \(a == "busy" ? "still being delivered; not \(what)" : a == "failed" ? "the engine could not change it" : "no such message in \(q)")\n")
                trouble = true
            }
            switch action {
            case .remove:
                switch ask("remove", chosen, queue: q) {
                case .success(let answers):
                    for id in chosen {
                        let a = answers[id] ?? "unknown"
                        if a == "removed" { changed += 1; printOut("removed \(id)\n") } else { warn(id, a, "removed") }
                    }
                case .failure(let why): failed(why)
                }
            case .yank:
                // The engine holds each message (once no delivery of it is in flight),
                // the files move, then the engine lets it go.
                switch ask("yank", chosen, queue: q) {
                case .success(let answers):
                    var moved: [UInt64] = []
                    for id in chosen {
                        let a = answers[id] ?? "unknown"
                        guard a == "yanking" else { warn(id, a, "moved"); continue }
                        if moveToTrash(id, loc, trash: trash) { moved.append(id) } else { trouble = true }
                    }
                    if case .success(let done) = ask("yanked", moved, queue: q, patience: 0) {
                        for id in moved {
                            if done[id] == "moved" { changed += 1 } else {
                                printError("qmail-rm: warn: \(id): the engine answered \(done[id] ?? "nothing") after the move\n"); trouble = true
                            }
                        }
                    } else if !moved.isEmpty {
                        printError("qmail-rm: warn: \(q): the engine did not confirm the moves; the messages stay held until it restarts\n")
                        trouble = true
                    }
                case .failure(let why): failed(why)
                }
            case .restamp:
                // One command per arrival time (with -X each message keeps its own offset).
                var byTime: [Int64: [UInt64]] = [:]
                var order: [Int64] = []
                for id in chosen {
                    guard let t = target(id) else {
                        printError("qmail-rm: warn: \(id): not preprocessed yet (no info file); not restamped\n"); trouble = true; continue
                    }
                    if byTime[t] == nil { order.append(t) }
                    byTime[t, default: []].append(id)
                }
                for t in order {
                    switch ask("restamp \(t)", byTime[t]!, queue: q, patience: 10) {
                    case .success(let answers):
                        for id in byTime[t]! {
                            let a = answers[id] ?? "unknown"
                            if a == "restamped" { changed += 1; printError("Set timestamp on \(q)/\(loc.names.path(.info, id))\n") } else { warn(id, a, "restamped") }
                        }
                    case .failure(let why): failed(why)
                    }
                }
            }
        }
        let verb = action == .remove ? "removed" : action == .yank ? "moved to the trash" : "restamped"
        printOut("\(matched) message\(matched == 1 ? "" : "s") matched, \(changed) \(verb)\n")
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
                for (n, f) in scanner.infoFolders.enumerated() {
                    guard case .success(let list) = scanner.ids(f) else { continue }
                    scanner.prepare(split: n)
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
                            let key = ScheduleSchema.messageKey(id)
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
