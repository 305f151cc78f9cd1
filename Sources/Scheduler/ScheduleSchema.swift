/// The byte layout of the engine's LMDB schedule (`<queue>/lock/engine.lmdb`), shared
/// by the engine, which writes it, and the operator tools (qmail-qread), which read it.
///
/// | database | key | value |
/// |---|---|---|
/// | `schedule` | message id (8 bytes big-endian) + channel (1 byte: 0 local, 1 remote) | next attempt, Unix seconds (8 bytes big-endian, signed) |
/// | `reports` | message id (8) + channel (1) + record offset in the channel file (4, big-endian) | time of the report (8) + kind (`K`, `Z` or `D`) + report text (at most `reportLimit` bytes) |
/// | `tcpto` | host address as text | failures (8 bytes big-endian) + time of the last failure (8) |
/// | `warned` | message id (8) | `1`: the sender got a delay warning |
/// | `held` | message id (8) | `1`: the operator holds the message (qmail-qctl hold, qmail-rm -r) |
///
/// `reports` holds the last delivery report of each recipient that was deferred or
/// failed at least once (a success is recorded only after such a report); the
/// entries of a job go when its channel file is removed.
public enum ScheduleSchema {
    public static let reportLimit = 1000

    public static func jobKey(_ k: JobKey) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 9)
        for i in 0..<8 { out[i] = UInt8(truncatingIfNeeded: k.id >> UInt64(56 - 8 * i)) }
        out[8] = UInt8(k.channel.rawValue)
        return out
    }

    public static func decodeJobKey(_ b: [UInt8]) -> JobKey? {
        guard b.count == 9, let c = Channel(rawValue: Int(b[8])) else { return nil }
        var id: UInt64 = 0
        for i in 0..<8 { id = id << 8 | UInt64(b[i]) }
        return JobKey(id, c)
    }

    public static func time(_ t: Time) -> [UInt8] {
        let v = UInt64(bitPattern: t)
        return (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * $0)) }
    }

    /// A `held` or `warned` key: the message id (8 bytes big-endian).
    public static func messageKey(_ id: UInt64) -> [UInt8] { time(Time(bitPattern: id)) }

    /// The message id of a `held` or `warned` key; nil when it is not 8 bytes.
    public static func decodeMessageKey(_ b: [UInt8]) -> UInt64? { decodeTime(b).map { UInt64(bitPattern: $0) } }

    /// A `tcpto` value: failures, then the time of the last failure.
    public static func hostFailure(failures: Int, last: Int64) -> [UInt8] { time(Int64(failures)) + time(last) }

    /// A `tcpto` value: (failures, time of the last failure); nil when it is not 16 bytes.
    public static func decodeHostFailure(_ v: [UInt8]) -> (failures: Int, last: Int64)? {
        guard v.count == 16, let f = decodeTime(v[0..<8]), let t = decodeTime(v[8..<16]) else { return nil }
        return (Int(f), t)
    }

    public static func decodeTime(_ b: some Collection<UInt8>) -> Time? {
        guard b.count == 8 else { return nil }
        var v: UInt64 = 0
        for x in b { v = v << 8 | UInt64(x) }
        return Time(bitPattern: v)
    }

    public static func reportKey(_ k: JobKey, offset: Int) -> [UInt8] {
        var out = jobKey(k)
        let o = UInt32(clamping: offset)
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: o >> UInt32(24 - 8 * i))) }
        return out
    }

    public static func decodeReportKey(_ b: [UInt8]) -> (JobKey, Int)? {
        guard b.count == 13, let k = decodeJobKey(Array(b[0..<9])) else { return nil }
        var o: UInt32 = 0
        for i in 9..<13 { o = o << 8 | UInt32(b[i]) }
        return (k, Int(o))
    }

    public static func reportValue(_ at: Time, _ r: DeliveryReport) -> [UInt8] {
        time(at) + [r.kind.rawValue] + r.text.prefix(reportLimit)
    }

    public static func decodeReportValue(_ b: [UInt8]) -> (Time, DeliveryReport)? {
        guard b.count >= 9, let t = decodeTime(b[0..<8]), let kind = DeliveryReport.Kind(rawValue: b[8]) else { return nil }
        return (t, DeliveryReport(kind, Array(b[9...])))
    }
}
