#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO

/// indimail-mta's `lock/tcpto` (engine.md §1.3), the host memory of a qmail-remote
/// that runs once per delivery: 64 records of 32 bytes — `[0]` the address family,
/// `[4]` the error count (1–10), `[8..11]` the time of the last error (32 bits,
/// little-endian), `[16..]` the IPv4 (4 bytes) or IPv6 (16 bytes) address. A record
/// with count 0 is free. Every change is a locked read, modify and write of one
/// record, so concurrent qmail-remotes do not lose each other's updates. A missing
/// or unwritable file means no memory, as for qmail-remote.
public struct TcptoFile: HostMemoryStore {
    public let path: String
    static let recordSize = 32
    static let records = 64

    public init(path: String) { self.path = path }

    struct Record {
        var family: UInt8
        var count: Int
        var when: Int64
        var address: [UInt8]

        var ip: String { ipText(address) }
    }

    static func parse(_ bytes: [UInt8], at offset: Int) -> Record? {
        guard offset + recordSize <= bytes.count else { return nil }
        let r = bytes[offset..<(offset + recordSize)]
        let family = r[offset]
        let length = family == UInt8(AF_INET) ? 4 : family == UInt8(AF_INET6) ? 16 : 0
        guard length > 0 else { return nil }
        var when: Int64 = 0
        for i in (8..<12).reversed() { when = when << 8 | Int64(r[offset + i]) }
        return Record(family: family, count: Int(r[offset + 4]), when: when, address: Array(r[(offset + 16)..<(offset + 16 + length)]))
    }

    static func encode(_ r: Record) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: recordSize)
        out[0] = r.family
        out[4] = UInt8(clamping: r.count)
        let w = UInt32(truncatingIfNeeded: r.when)
        for i in 0..<4 { out[8 + i] = UInt8(truncatingIfNeeded: w >> (8 * UInt32(i))) }
        for (i, b) in r.address.enumerated() { out[16 + i] = b }
        return out
    }

    public func load() -> [(String, Int, Int64)] {
        guard let bytes = try? Sys.readFile(path) else { return [] }
        var out: [(String, Int, Int64)] = []
        for n in 0..<TcptoFile.records {
            if let r = TcptoFile.parse(bytes, at: n * TcptoFile.recordSize), r.count > 0 { out.append((r.ip, r.count, r.when)) }
        }
        return out
    }

    public func save(_ ip: String, failures: Int, last: Int64) {
        update(ip) { $0.count = failures; $0.when = last }
    }

    public func remove(_ ip: String) {
        update(ip) { $0.count = 0 }
    }

    /// Finds the record of `ip` (else a free one, else the one with the oldest error),
    /// changes it and writes it back, under an exclusive lock on the file.
    func update(_ ip: String, _ change: (inout Record) -> Void) {
        guard let address = ipAddress(ip) else { return }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd == -1 { return }
        defer { close(fd) }
        if flock(fd, LOCK_EX) == -1 { return }
        guard let bytes = try? Sys.readAll(fd, limit: TcptoFile.records * TcptoFile.recordSize) else { return }
        let slots = bytes.count / TcptoFile.recordSize
        guard slots > 0 else { return }
        var chosen: Int? = nil, free: Int? = nil, oldest = 0, oldestWhen = Int64.max
        for n in 0..<slots {
            let r = TcptoFile.parse(bytes, at: n * TcptoFile.recordSize)
            if let r, r.count > 0, r.address == address { chosen = n; break }
            if r == nil || r!.count == 0 { if free == nil { free = n }; continue }
            if r!.when < oldestWhen { oldestWhen = r!.when; oldest = n }
        }
        let slot = chosen ?? free ?? oldest
        var record = chosen.flatMap { TcptoFile.parse(bytes, at: $0 * TcptoFile.recordSize) }
            ?? Record(family: UInt8(address.count == 4 ? AF_INET : AF_INET6), count: 0, when: 0, address: address)
        if chosen == nil {
            // A host not on file: removing it changes nothing.
            var probe = record
            change(&probe)
            if probe.count == 0 { return }
        }
        change(&record)
        let out = TcptoFile.encode(record)
        _ = out.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(slot * TcptoFile.recordSize)) }
    }
}
