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
}
