#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Scheduler
import QueueFormat
import Workers

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
