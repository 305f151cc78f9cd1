#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Scheduler
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

/// An external qmail-lspawn / qmail-rspawn-compatible spawner driven by the
/// engine (`qmta-send -l` / `-r`), so indimail's own spawners can be plugged in.
public final class ExternalSpawner: @unchecked Sendable {
    let pid: pid_t
    let commandFD: Int32
    let resultFD: Int32
    public let limit: Int
    var freeSlots: [Int]
    var bySlot: [Int: Int] = [:]     // slot -> delivery number
    var pendingBytes: [UInt8] = []
    let names: QueueNames

    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Starts `program args…` with the queue's `mess/` as working directory.
    public init(program: String, arguments: [String], queueDir: String, names: QueueNames,
                credentials: Spawn.Credentials? = nil) throws {
        self.names = names
        let cmd = try Spawn.pipe(), res = try Spawn.pipe()
        do {
            pid = try Spawn.start(program, arguments: [program] + arguments,
                                  fds: [.init(cmd.read, at: 0), .init(res.write, at: 1)], keepStandard: true,
                                  directory: queueDir + "/mess", credentials: credentials)
        } catch {
            throw Failure(message: "alert: cannot start: unable to run \(program): \(error)")
        }
        Sys.close(cmd.read); Sys.close(res.write)
        commandFD = cmd.write
        resultFD = res.read
        var two = [UInt8](repeating: 0, count: 2)
        var got = 0
        while got < 2 {
            let n = two.withUnsafeMutableBytes { read(res.read, $0.baseAddress! + got, 2 - got) }
            if n <= 0 { throw Failure(message: "alert: cannot start: hath the daemon spawn no fire?") }
            got += n
        }
        limit = Int(two[0]) | Int(two[1]) << 8
        freeSlots = Array((0..<limit).reversed())
        _ = fcntl(resultFD, F_SETFL, O_NONBLOCK)
    }

    public var resultsFD: Int32 { alive ? resultFD : -1 }
    /// False once the spawner's output reached end of file, or a command could not be written.
    public private(set) var alive = true
    public var hasFreeSlot: Bool { !freeSlots.isEmpty }

    /// Sends one delivery; false when every slot is busy or the spawner is gone.
    public func send(_ d: Delivery) -> Bool {
        guard let slot = freeSlots.popLast() else { return false }
        let path = "\(d.key.id % UInt64(names.split))/\(d.key.id)"
        let bytes = SpawnProtocol.command(slot: slot, messagePath: path, sender: d.sender, qqeh: d.qqeh,
                                          envHeaders: d.envHeaders, recipient: d.recipient.address)
        if (try? Sys.write(commandFD, bytes)) == nil { freeSlots.append(slot); alive = false; return false }
        bySlot[slot] = d.number
        return true
    }

    /// Reports that have arrived, as (delivery number, report); a mangled
    /// report is a deferral, as qmail-send treats it.
    public func collect() -> [(Int, DeliveryReport)] {
        var buf = [UInt8](repeating: 0, count: 65536)
        while alive {
            let n = read(resultFD, &buf, buf.count)
            if n == 0 { alive = false }
            if n <= 0 { break }
            pendingBytes += buf[0..<n]
        }
        var out: [(Int, DeliveryReport)] = []
        for (slot, report) in SpawnProtocol.parseResults(&pendingBytes) {
            guard let number = bySlot.removeValue(forKey: slot) else { continue }
            freeSlots.append(slot)
            out.append((number, report ?? DeliveryReport(.deferral, "report mangled, will defer")))
        }
        return out
    }

    /// Closes the command pipe: the spawner finishes its children and exits.
    public func finish() {
        Sys.close(commandFD)
        _ = try? Spawn.wait(pid)
    }
}

/// The spawner side (`qmail-lspawn`, `qmail-rspawn`): reads commands on
/// descriptor 0, runs each delivery on a worker thread, writes results on
/// descriptor 1. Exits when its command pipe closes and the deliveries finish.
public enum SpawnerMain {
    public static let slotLimit = 500

    public static func run(threads: Int = 32, deliver: @escaping @Sendable (Delivery, String) -> DeliveryReport) -> Int32 {
        qs_ignore_sigpipe()
        guard let wake = try? Spawn.pipe() else { return 111 }
        _ = fcntl(wake.read, F_SETFL, O_NONBLOCK); _ = fcntl(wake.write, F_SETFL, O_NONBLOCK)
        let pool = WorkerPool(threads: threads, wakeFD: wake.read, wakeWrite: wake.write)
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
                    let d = Delivery(number: c.slot, key: JobKey(id, .local), recipient: .init(offset: 0, address: c.recipient),
                                     sender: c.sender, qqeh: c.qqeh, envHeaders: c.envHeaders)
                    let path = c.messagePath
                    pool.submit { .delivered(number: d.number, report: deliver(d, path)) }
                }
            }
            for event in pool.drain() {
                if case let .delivered(slot, report) = event {
                    inUse.remove(slot)
                    if (try? Sys.write(1, SpawnProtocol.result(slot: slot, report))) == nil { return 111 }
                }
            }
        }
        return 0
    }
}
