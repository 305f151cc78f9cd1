import LMDB
import Scheduler
import SystemIO

/// The engine's LMDB schedule (`<queue>/lock/engine.lmdb`), opened read-only beside the
/// running engine (LMDB readers never block its writer). Layout: `ScheduleSchema`.
public final class ScheduleReader {
    let env: LMDBEnvironment
    let schedule: LMDBDatabase?
    let reports: LMDBDatabase?
    let tcpto: LMDBDatabase?
    let held: LMDBDatabase?
    let hasReports: Bool
    /// The held messages, read once (an operator holds few).
    let heldIDs: Set<UInt64>

    public static func path(queue: String) -> String { queue + "/lock/engine.lmdb" }

    /// Nil when the engine never ran on the queue (no schedule file); throws when it
    /// exists but cannot be opened.
    public init?(queue: String) throws {
        let p = ScheduleReader.path(queue: queue)
        guard Sys.exists(p) else { return nil }
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        o.readOnly = true
        o.mapSize = 4 << 30
        let e = try LMDBEnvironment(path: p, options: o)
        env = e
        schedule = try e.existingDatabase("schedule")
        let r = try e.existingDatabase("reports")
        reports = r
        tcpto = try e.existingDatabase("tcpto")
        held = try e.existingDatabase("held")
        hasReports = try r.map { try e.count($0) > 0 } ?? false
        var ids = Set<UInt64>()
        if let held = held {
            try e.read { txn in
                try txn.forEach(held) { k, _ in
                    if let id = ScheduleSchema.decodeMessageKey(k) { ids.insert(id) }
                    return true
                }
            }
        }
        heldIDs = ids
    }

    public struct Report: Sendable {
        public var time: Time
        public var report: DeliveryReport
    }

    /// Look-ups for one thread: they share a read transaction, moved to the newest
    /// snapshot every `refreshEvery` look-ups. Each thread makes its own.
    public func session() -> Session { Session(self) }

    public final class Session {
        let schedule: ScheduleReader
        var reader: LMDBReader? = nil
        var lookups = 0
        static let refreshEvery = 4096

        init(_ s: ScheduleReader) { schedule = s }

        /// Next attempt of each channel of a message, and the stored report of each
        /// recipient (by channel and record offset).
        public func lookup(_ id: MessageID) throws -> (next: [Channel: Time], reports: [Channel: [Int: Report]]) {
            var next: [Channel: Time] = [:]
            var out: [Channel: [Int: Report]] = [:]
            if let r = reader, lookups % Self.refreshEvery == 0 {
                do { try r.refresh() } catch { reader = nil; throw error }
            }
            if reader == nil { reader = try LMDBReader(schedule.env) }
            lookups += 1
            let txn = reader!.transaction
            for c in Channel.allCases {
                let prefix = ScheduleSchema.jobKey(JobKey(id, c))
                if let db = schedule.schedule, let v = try txn.get(db, prefix), let t = ScheduleSchema.decodeTime(v) {
                    next[c] = t
                }
                guard schedule.hasReports, let reports = schedule.reports else { continue }
                try txn.forEach(reports, from: prefix) { k, v in
                    guard k.starts(with: prefix) else { return false }
                    if let (_, offset) = ScheduleSchema.decodeReportKey(k), let (t, r) = ScheduleSchema.decodeReportValue(v) {
                        out[c, default: [:]][offset] = Report(time: t, report: r)
                    }
                    return true
                }
            }
            return (next, out)
        }

        /// The operator holds the message (qmail-qctl hold), as the schedule said when
        /// the reader was opened.
        public func isHeld(_ id: MessageID) -> Bool { schedule.heldIDs.contains(id) }
    }

    /// The in-process SMTP client's host failure memory: (address, failures, last failure).
    public func hostFailures() throws -> [(String, Int, Int64)] {
        guard let tcpto else { return [] }
        var out: [(String, Int, Int64)] = []
        try env.read { txn in
            try txn.forEach(tcpto) { k, v in
                if let (f, t) = ScheduleSchema.decodeHostFailure(v) { out.append((String(decoding: k, as: UTF8.self), f, t)) }
                return true
            }
        }
        return out
    }
}
