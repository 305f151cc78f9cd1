#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import LMDB

/// qmail-tcpto and qmail-tcpok: the remote hosts remembered as failing, in both
/// places this package keeps them: `lock/tcpto` (qmail-remote's file, indimail-mta's
/// 2048-byte format of 64 records of 32 bytes, queue-layout §3.2) and the engine's
/// LMDB (database `tcpto`, the in-process SMTP client's memory).
public enum Tcpto {
    public static let fileSize = 2048

    public struct Entry: Equatable {
        public var address: String
        public var ipv6: Bool
        public var failures: Int
        public var last: Int64
    }

    /// The records of a `lock/tcpto` file with a count and a known address family.
    public static func parse(_ bytes: [UInt8]) -> [Entry] {
        var out: [Entry] = []
        var k = 0
        while k + 32 <= min(bytes.count, fileSize) {
            let r = Array(bytes[k..<(k + 32)])
            k += 32
            let family = Int32(r[0]), count = Int(r[4])
            guard count >= 1, family == AF_INET || family == AF_INET6 else { continue }
            var last: Int64 = 0
            for i in (8..<12).reversed() { last = last << 8 | Int64(r[i]) }
            var text = [CChar](repeating: 0, count: 64)
            let addr = Array(r[16..<32])
            _ = addr.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
            out.append(Entry(address: String(cString: text), ipv6: family == AF_INET6, failures: count, last: last))
        }
        return out
    }

    static func line(_ e: Entry, now: Int64, suffix: String = "") -> String {
        "\(e.address) \(e.ipv6 ? "ipv6" : "ipv4") timed out \(now - e.last) seconds ago; # recent timeouts: \(e.failures)\(suffix)\n"
    }

    static func queues(_ args: [String], program: String, usage: String) -> [String]? {
        var queues: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "-h", "--help": printOut(usage); return nil
            case "-q":
                guard i < args.count else { printError("\(program): fatal: -q needs a queue folder\n" + usage); exit(100) }
                queues.append(args[i]); i += 1
            default:
                printError("\(program): fatal: unknown argument \(a)\n" + usage)
                exit(100)
            }
        }
        return queues.isEmpty ? QueueLocation.defaultQueues() : queues
    }

    public static let listUsage = """
        usage: qmail-tcpto [-q queue]...
          lists the remote hosts remembered as failing: lock/tcpto (qmail-remote's)
          and the engine's memory (the in-process SMTP client's, marked "(engine)")
          -q queue   this queue (repeatable); default as qmail-qread(8)
          -h, --help this text

        """

    public static func listMain(_ args: [String]) -> Int32 {
        guard let list = queues(args, program: "qmail-tcpto", usage: listUsage) else { return 0 }
        let now = Int64(time(nil))
        var trouble = false
        var out = ""
        for q in list {
            if list.count > 1 { out += "processing queue \(q)\n" }
            let path = q + "/lock/tcpto"
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd == -1 {
                if errno != ENOENT { printError("qmail-tcpto: warn: unable to open \(path): \(String(cString: strerror(errno)))\n"); trouble = true }
            } else {
                // A shared lock: qmail-remote's writes (exclusive) are whole.
                _ = flock(fd, LOCK_SH)
                let bytes = (try? Sys.readAll(fd, path: path, limit: fileSize)) ?? []
                close(fd)
                for e in parse(bytes) { out += line(e, now: now) }
            }
            do {
                if let reader = try ScheduleReader(queue: q) {
                    for (ip, failures, last) in try reader.hostFailures().sorted(by: { $0.0 < $1.0 }) {
                        out += line(Entry(address: ip, ipv6: ip.contains(":"), failures: failures, last: last), now: now, suffix: " (engine)")
                    }
                }
            } catch {
                printError("qmail-tcpto: warn: unable to read \(ScheduleReader.path(queue: q)): \(error)\n")
                trouble = true
            }
            if list.count > 1 { out += "\n" }
        }
        printOut(out)
        return trouble ? 111 : 0
    }

    public static let clearUsage = """
        usage: qmail-tcpok [-q queue]...
          forgets every remote host remembered as failing: clears lock/tcpto, and the
          engine's memory (through the running engine, or in LMDB when none runs)
          -q queue   this queue (repeatable); default as qmail-qread(8)
          -h, --help this text

        """

    public static func clearMain(_ args: [String]) -> Int32 {
        guard let list = queues(args, program: "qmail-tcpok", usage: clearUsage) else { return 0 }
        var trouble = false
        for q in list {
            if list.count > 1 { printOut("processing queue \(q)\n") }
            let path = q + "/lock/tcpto"
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            if fd == -1 {
                if errno != ENOENT { printError("qmail-tcpok: fatal: unable to open \(path): \(String(cString: strerror(errno)))\n"); trouble = true }
            } else {
                if flock(fd, LOCK_EX) != 0 {
                    printError("qmail-tcpok: fatal: unable to lock \(path): \(String(cString: strerror(errno)))\n"); trouble = true
                } else if (try? Sys.write(fd, [UInt8](repeating: 0, count: fileSize), path: path)) == nil {
                    printError("qmail-tcpok: fatal: unable to clear \(path): \(String(cString: strerror(errno)))\n"); trouble = true
                }
                close(fd)
            }
            switch EngineCommand.send("tcpok", queue: q) {
            case .answered(let a):
                if !a.hasPrefix("ok") { printError("qmail-tcpok: warn: \(q): the engine answered: \(a)\n"); trouble = true }
            case .noEngine(let lock):
                // No engine runs, and none can start while we hold its mutex: clear LMDB here.
                defer { close(lock) }
                let p = ScheduleReader.path(queue: q)
                if Sys.exists(p) {
                    do {
                        var o = LMDBEnvironment.Options()
                        o.noSubdirectory = true
                        o.mapSize = 4 << 30
                        let env = try LMDBEnvironment(path: p, options: o)
                        if let db = try env.existingDatabase("tcpto") { try env.write { try $0.clear(db) } }
                    } catch {
                        printError("qmail-tcpok: fatal: unable to clear \(p): \(error)\n"); trouble = true
                    }
                }
            case .failed(let why):
                printError("qmail-tcpok: fatal: \(q): \(why)\n"); trouble = true
            }
        }
        return trouble ? 111 : 0
    }
}

/// The tools' end of the engine's command folder (`lock/commands`, Engine+Commands.swift).
public enum EngineCommand {
    public enum Outcome {
        /// The running engine's answer.
        case answered(String)
        /// No engine runs on the queue: the descriptor holds its `lock/sendmutex`
        /// (exclusively), so none starts until it is closed.
        case noEngine(Int32)
        case failed(String)
    }

    /// The descriptor of the queue's `lock/sendmutex`, locked, when no engine runs on
    /// it (none can start until it is closed); nil when one runs (or the mutex cannot
    /// be opened).
    public static func lockIfIdle(_ queue: String) -> Int32? {
        let fd = open(queue + "/lock/sendmutex", O_RDWR | O_CLOEXEC)
        if fd == -1 { return nil }
        if qs_flock_exclusive_nb(fd) == 0 { return fd }
        close(fd)
        return nil
    }

    /// Sends one command to the engine running on `queue` and waits (at most
    /// `timeout` seconds) for its answer.
    public static func send(_ command: String, queue: String, timeout: Int = 30) -> Outcome {
        let mutex = queue + "/lock/sendmutex"
        let fd = open(mutex, O_RDWR | O_CLOEXEC)
        if fd == -1 { return .failed("unable to open \(mutex): \(String(cString: strerror(errno)))") }
        if qs_flock_exclusive_nb(fd) == 0 { return .noEngine(fd) }
        close(fd)
        let dir = queue + "/lock/commands"
        guard Sys.exists(dir) else { return .failed("the running engine has no \(dir) (an older engine?)") }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let base = dir + "/\(getpid()).\(ts.tv_sec).\(ts.tv_nsec)"
        do {
            try Sys.writeFile(base + ".tmp", Array((command + "\n").utf8), mode: 0o644)
            try Sys.rename(base + ".tmp", base + ".cmd")
        } catch {
            return .failed("unable to write the command: \(error)")
        }
        let trigger = open(queue + "/lock/trigger", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        if trigger != -1 { var b: UInt8 = 0; _ = write(trigger, &b, 1); close(trigger) }
        for _ in 0..<(timeout * 100) {
            if let answer = (try? Sys.readFile(base + ".out")) ?? nil {
                _ = try? Sys.unlinkIfPresent(base + ".out")
                var a = String(decoding: answer, as: UTF8.self)
                while a.hasSuffix("\n") { a.removeLast() }
                return .answered(a)
            }
            usleep(10_000)
        }
        // Taken back if the engine has not started on it; else its answer is left behind.
        _ = try? Sys.unlinkIfPresent(base + ".cmd")
        return .failed("no answer from the engine within \(timeout) seconds")
    }
}
