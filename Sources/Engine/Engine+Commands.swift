#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import Scheduler

/// Commands from the operators' tools, carried out inside the loop so that they never
/// race a delivery (docs/running.md, "Operating the queue").
///
/// A tool writes one command line to `lock/commands/<name>.tmp`, renames it to
/// `<name>.cmd` and writes a byte to `lock/trigger`. The engine looks at the folder
/// whenever the trigger fires (and at each periodic todo scan), carries each command
/// out, writes its answer to `<name>.out` (through `<name>.tmp-out` and a rename)
/// and removes the `.cmd` file. The folder is the engine's (0700), made at start.
///
/// | command | does | answer |
/// |---|---|---|
/// | `tcpok` | forgets every remote host the in-process SMTP client remembered as failing (memory and LMDB) | `ok <n>`: how many it forgot |
/// | `remove <id>…` | qmail-rm: the message's remaining recipients are marked done, its bounce file removed, and it is finished at once (removed as a delivered message is); a message not yet preprocessed is condemned and treated so when preprocessing ends | one word per id: `removed`, `busy` (a delivery of it is in flight: ask again), `unknown` |
/// | `hold <id>…` / `release <id>…` | qmail-qctl: a held message is not started (deliveries in flight finish); kept in LMDB (`held`) across restarts | `held`/`released`/`unknown` per id |
/// | `now <id>…` | qmail-qctl: the message's jobs are due now | `due`/`held`/`unknown` per id |
/// | `yank <id>…` | qmail-rm -r, before it moves the message's files to the trash: the message is held (memory and LMDB) so nothing of it starts while its files move | `yanking`, `busy` (a delivery or its preprocessing is in flight: ask again), `unknown` |
/// | `yanked <id>…` | qmail-rm -r, after the move: the hold is dropped and the engine forgets the message (its jobs find no files and end); a message whose files are still in the queue stays held | `moved`, `held`, `unknown` |
/// | `restamp <time> <id>…` | qmail-rm -X/-x: the info file's time (the message's arrival, from which its queue lifetime counts) is set to `time`; the next attempt reads it | `restamped`, `busy` (not preprocessed yet), `unknown`, `failed` |
///
/// Anything else is answered `error unknown command` and logged.
extension Engine {
    public static let commandFolder = "lock/commands"

    func prepareCommandFolder() {
        _ = mkdir(options.queueDir + "/" + Engine.commandFolder, 0o700)
    }

    func processCommands() {
        let dir = options.queueDir + "/" + Engine.commandFolder
        guard let names = try? Sys.listDirectory(dir) else { return }
        for name in names.sorted() where name.hasSuffix(".cmd") {
            let path = dir + "/" + name
            guard let bytes = (try? Sys.readFile(path)) ?? nil else { continue }
            var text = String(decoding: bytes.prefix(65536), as: UTF8.self)
            while text.hasSuffix("\n") { text.removeLast() }
            let answer = command(text)
            let base = dir + "/" + String(name.dropLast(4))
            do {
                try Sys.writeFile(base + ".tmp-out", Array((answer + "\n").utf8), mode: 0o644)
                try Sys.rename(base + ".tmp-out", base + ".out")
            } catch {
                log.line("warning: unable to answer the command \(name): \(error)")
            }
            _ = try? Sys.unlinkIfPresent(path)
        }
    }

    func command(_ line: String) -> String {
        let words = line.split(separator: " ")
        switch words.first {
        case "tcpok":
            let n = smtp?.client.hosts.forgetAll() ?? 0
            log.line("info: qmail-tcpok: forgot \(n) remote host\(n == 1 ? "" : "s")")
            return "ok \(n)"
        case "restamp":
            guard words.count >= 2, let t = Int64(words[1]) else { return "error restamp needs a time" }
            return words.dropFirst(2).map { w -> String in
                guard let id = QueueNames.parseID(w.utf8) else { return "unknown" }
                return operatorRestamp(id, to: t)
            }.joined(separator: " ")
        case "yank", "yanked":
            let now = clock()
            return words.dropFirst().map { w -> String in
                guard let id = QueueNames.parseID(w.utf8) else { return "unknown" }
                return words[0] == "yank" ? operatorYank(id) : operatorYanked(id, now: now)
            }.joined(separator: " ")
        case "remove", "hold", "release", "now":
            let now = clock()
            var answers: [String] = []
            for w in words.dropFirst() {
                guard let id = QueueNames.parseID(w.utf8) else { answers.append("unknown"); continue }
                switch words[0] {
                case "remove": answers.append(operatorRemove(id, now: now))
                case "hold", "release": answers.append(operatorHold(id, words[0] == "hold", now: now))
                default: answers.append(operatorNow(id, now: now))
                }
            }
            return answers.joined(separator: " ")
        default:
            log.line("warning: unknown command from lock/commands: \(EngineLog.lineSafe(String(line.prefix(200))))")
            return "error unknown command"
        }
    }
}

extension Engine {
    /// The channels whose files exist.
    func channelsOnDisk(_ id: UInt64) -> [Channel] {
        Channel.allCases.filter { Sys.exists(files.channelPath(id, local: $0 == .local)) }
    }

    func operatorRemove(_ id: UInt64, now: Time) -> String {
        if scheduler.isOpen(id) || bounceInFlight.contains(id) { return "busy" }
        if todoWanted.contains(id) || Sys.exists(files.path(.todo, id)) {
            // Not preprocessed yet: it is condemned when preprocessing ends (before anything
            // of it can be scheduled).
            doomed.insert(id)
            // Held as well, on disk: an engine restarted before preprocessing forgets the
            // removal but keeps the hold, so the message is not delivered.
            held.insert(id)
            try? store.setHeld(id, true)
            wantTodo(id)
            log.line("info: msg \(id) removed by the operator (before preprocessing)")
            return "removed"
        }
        guard Sys.exists(files.path(.info, id)) else { return "unknown" }
        var records: [Channel: [RecipientRecord]] = [:]
        for c in Channel.allCases {
            do { records[c] = try files.channelRecords(id, local: c == .local) ?? [] } catch {
                log.line("warning: qmail-rm: unable to read \(files.names.path(c == .local ? .local : .remote, id)): \(error)")
                return "busy"
            }
        }
        condemn(id, records: records)
        let channels = channelsOnDisk(id)
        for c in channels { preloaded[JobKey(id, c)] = nil; store.set(JobKey(id, c), now) }
        if channels.isEmpty { messageDone(id, now: now) } else {
            execute(scheduler.add(id, channels: Dictionary(uniqueKeysWithValues: channels.map { ($0, now) })), now: now)
        }
        return "removed"
    }

    /// Marks every remaining recipient done and drops the bounce file: nothing more
    /// of the message is delivered and no bounce is sent; the scheduler then finishes
    /// it as a delivered message (channel files, then the message, `end msg`).
    func condemn(_ id: UInt64, records: [Channel: [RecipientRecord]]) {
        var marked = 0
        for (c, rs) in records {
            for r in rs where !r.done {
                markDone(JobKey(id, c), r.offset)
                marked += 1
            }
        }
        _ = try? Sys.unlinkIfPresent(files.path(.bounce, id))
        if held.remove(id) != nil { try? store.setHeld(id, false) }
        log.line("info: msg \(id) removed by the operator: \(marked) recipient\(marked == 1 ? "" : "s") not delivered")
    }

    func operatorHold(_ id: UInt64, _ on: Bool, now: Time) -> String {
        guard Sys.exists(files.path(.info, id)) || Sys.exists(files.path(.todo, id)) || held.contains(id) else { return "unknown" }
        do { try store.setHeld(id, on) } catch {
            log.line("warning: unable to record the hold of msg \(id): \(error)")
        }
        if on {
            held.insert(id)
            log.line("info: msg \(id) held by the operator")
            return "held"
        }
        held.remove(id)
        log.line("info: msg \(id) released by the operator")
        _ = operatorNow(id, now: now)
        return "released"
    }

    func operatorNow(_ id: UInt64, now: Time) -> String {
        if held.contains(id) { return "held" }
        let channels = channelsOnDisk(id)
        if channels.isEmpty { return Sys.exists(files.path(.todo, id)) ? "due" : "unknown" }
        var due: [Channel: Time] = [:]
        for c in channels where !scheduler.isOpen(id) || scheduler.isQueued(JobKey(id, c)) {
            due[c] = now
            store.set(JobKey(id, c), now)
        }
        execute(scheduler.add(id, channels: due), now: now)
        return "due"
    }

    /// qmail-rm -r, first step: hold the message so that nothing of it starts while
    /// qmail-rm moves its files (a delivery in flight, a bounce being injected, or its
    /// preprocessing not done yet: `busy`, asked again).
    func operatorYank(_ id: UInt64) -> String {
        if scheduler.isOpen(id) || bounceInFlight.contains(id) { return "busy" }
        if todoWanted.contains(id) || Sys.exists(files.path(.todo, id)) { return Sys.exists(files.path(.mess, id)) ? "busy" : "unknown" }
        guard Sys.exists(files.path(.info, id)) else { return "unknown" }
        held.insert(id)
        // On disk too: an engine restarted while the files move does not deliver what is left.
        do { try store.setHeld(id, true) } catch { log.line("warning: unable to record the hold of msg \(id): \(error)") }
        for c in Channel.allCases { preloaded[JobKey(id, c)] = nil }
        log.line("info: msg \(id) held by the operator: to be moved to the trash")
        return "yanking"
    }

    /// qmail-rm -r, second step: the files have left the queue. The hold goes, and the
    /// message's jobs are made due so the scheduler finds no channel file and forgets
    /// them (no delivery, no bounce, nothing removed: the files are in the trash).
    func operatorYanked(_ id: UInt64, now: Time) -> String {
        guard held.contains(id) else { return "unknown" }
        if Sys.exists(files.path(.info, id)) || Sys.exists(files.path(.mess, id)) || !channelsOnDisk(id).isEmpty {
            log.line("warning: msg \(id) was to be moved to the trash but is still in the queue; it stays held")
            return "held"
        }
        held.remove(id)
        do { try store.setHeld(id, false) } catch { log.line("warning: unable to drop the hold of msg \(id): \(error)") }
        fresh.remove(id)
        doneRetry[id] = nil
        var due: [Channel: Time] = [:]
        for c in Channel.allCases where scheduler.isQueued(JobKey(id, c)) { due[c] = now }
        if !due.isEmpty { execute(scheduler.add(id, channels: due), now: now) }
        for c in Channel.allCases where !scheduler.knows(JobKey(id, c)) { store.remove(JobKey(id, c)); store.clearReports(JobKey(id, c)) }
        log.line("info: msg \(id) moved to the trash by the operator")
        return "moved"
    }

    /// qmail-rm -X/-x: the message's arrival time (its info file's time) is set to `t`,
    /// so its queue lifetime counts from there at its next attempt.
    func operatorRestamp(_ id: UInt64, to t: Int64) -> String {
        let info = files.path(.info, id)
        guard Sys.exists(info) else { return Sys.exists(files.path(.todo, id)) ? "busy" : "unknown" }
        var times = [timespec(tv_sec: time_t(t), tv_nsec: 0), timespec(tv_sec: time_t(t), tv_nsec: 0)]
        if utimensat(AT_FDCWD, info, &times, 0) != 0 {
            log.line("warning: unable to restamp \(files.names.path(.info, id)): \(String(cString: strerror(errno)))")
            return "failed"
        }
        // A job loaded before keeps the old time: load it again.
        for c in Channel.allCases { preloaded[JobKey(id, c)] = nil }
        log.line("info: msg \(id) restamped by the operator: arrival \(t)")
        return "restamped"
    }
}
