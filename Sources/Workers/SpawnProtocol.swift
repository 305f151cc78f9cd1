#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueFormat

/// The qmail-send ↔ spawner byte protocol (engine.md §4.3), both sides.
///
/// Command: `delnum_lo delnum_hi "<split>/<id>" \0 sender \0 qqeh \0 envh \0 recipient \0`.
/// Result: `delnum_lo delnum_hi` + `K`/`Z`/`D` + text + `\0`. At start the
/// spawner writes its slot limit as two bytes, low byte first.
public enum SpawnProtocol {
    public static func command(slot: Int, messagePath: String, sender: [UInt8], qqeh: [UInt8], envHeaders: [UInt8], recipient: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [UInt8(slot & 0xff), UInt8(slot >> 8)]
        out += Array(messagePath.utf8); out.append(0)
        out += sender; out.append(0)
        out += qqeh; out.append(0)
        out += envHeaders; out.append(0)
        out += recipient; out.append(0)
        return out
    }

    public struct Command: Equatable, Sendable {
        public var slot: Int
        public var messagePath: String
        public var sender: [UInt8]
        public var qqeh: [UInt8]
        public var envHeaders: [UInt8]
        public var recipient: [UInt8]
    }

    /// Parses as many whole commands as `buffer` holds, removing them from it.
    public static func parseCommands(_ buffer: inout [UInt8]) -> [Command] {
        var out: [Command] = []
        while buffer.count >= 2 {
            var fields: [[UInt8]] = []
            var i = 2
            while fields.count < 5 {
                guard let nul = buffer[i...].firstIndex(of: 0) else { return out }
                fields.append(Array(buffer[i..<nul]))
                i = nul + 1
            }
            out.append(Command(slot: Int(buffer[0]) | Int(buffer[1]) << 8, messagePath: String(decoding: fields[0], as: UTF8.self),
                               sender: fields[1], qqeh: fields[2], envHeaders: fields[3], recipient: fields[4]))
            buffer.removeFirst(i)
        }
        return out
    }

    public static func result(slot: Int, _ report: DeliveryReport) -> [UInt8] {
        var out: [UInt8] = [UInt8(slot & 0xff), UInt8(slot >> 8), report.kind.rawValue]
        out += report.text.prefix { $0 != 0 }
        out.append(0)
        return out
    }

    /// Parses whole results from `buffer` (≥ 3 bytes before the NUL; shorter ones are mangled).
    public static func parseResults(_ buffer: inout [UInt8]) -> [(slot: Int, report: DeliveryReport?)] {
        var out: [(Int, DeliveryReport?)] = []
        // The two slot bytes may themselves be NUL: the record's end is searched after them.
        while buffer.count >= 3, let nul = buffer[2...].firstIndex(of: 0) {
            let rec = Array(buffer[..<nul])
            buffer.removeFirst(nul + 1)
            guard rec.count >= 3 else { continue }
            let slot = Int(rec[0]) | Int(rec[1]) << 8
            out.append((slot, DeliveryReport(bytes: Array(rec.dropFirst(2).prefix(10000)))))
        }
        return out
    }
}

/// The spawner side (`qmail-lspawn`, `qmail-rspawn`): reads commands on
/// descriptor 0, runs each delivery on a worker thread, writes results on
/// descriptor 1. Exits when its command pipe closes and the deliveries finish.
public enum SpawnerMain {
    public static let slotLimit = 500

    public static func run(threads: Int = 32, deliver: @escaping @Sendable (WorkItem, String) -> DeliveryReport) -> Int32 {
        qs_ignore_sigpipe()
        guard let wake = try? Spawn.pipe() else { return 111 }
        _ = fcntl(wake.read, F_SETFL, O_NONBLOCK); _ = fcntl(wake.write, F_SETFL, O_NONBLOCK)
        let pool = WorkerPool<(Int, DeliveryReport)>(threads: threads, wakeFD: wake.read, wakeWrite: wake.write)
        if (try? Sys.write(1, [UInt8(slotLimit & 0xff), UInt8(slotLimit >> 8)])) == nil { return 111 }
        var buffer: [UInt8] = []
        var inputOpen = true
        var inUse = Set<Int>()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while inputOpen || pool.pending > 0 {
            var fds = [pollfd(fd: inputOpen ? 0 : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, 1000)
            if inputOpen && fds[0].revents != 0 {
                let n = read(0, &chunk, chunk.count)
                if n <= 0 { inputOpen = false } else { buffer += chunk[0..<n] }
                for c in SpawnProtocol.parseCommands(&buffer) {
                    var out: [UInt8]? = nil
                    if c.slot >= slotLimit { out = SpawnProtocol.result(slot: c.slot, DeliveryReport(.deferral, "Internal error: delnum too big. (#4.3.5)\n")) }
                    else if inUse.contains(c.slot) { out = SpawnProtocol.result(slot: c.slot, DeliveryReport(.deferral, "Internal error: delnum in use. (#4.3.5)\n")) }
                    let name = c.messagePath.split(separator: "/").last.map(String.init) ?? ""
                    if out == nil, name.isEmpty || !name.allSatisfy({ $0.isNumber }) {
                        out = SpawnProtocol.result(slot: c.slot, DeliveryReport(.failure, "Internal error: messid has nonnumerics. (#5.3.5)\n"))
                    }
                    if let out { _ = try? Sys.write(1, out); continue }
                    inUse.insert(c.slot)
                    let id = UInt64(name) ?? 0
                    let d = WorkItem(number: c.slot, messageID: id, recipient: c.recipient,
                                     sender: c.sender, qqeh: c.qqeh, envHeaders: c.envHeaders)
                    let path = c.messagePath
                    pool.submit { (d.number, deliver(d, path)) }
                }
            }
            for (slot, report) in pool.drain() {
                inUse.remove(slot)
                if (try? Sys.write(1, SpawnProtocol.result(slot: slot, report))) == nil { return 111 }
            }
        }
        return 0
    }
}
