import LMDB
import Scheduler
import RateControl

/// The durable schedule: each queued (message, channel) and its next attempt
/// time, in LMDB beside the queue, so a restart with a huge queue does not
/// stat every file. The queue files stay the truth.
public final class ScheduleStore: @unchecked Sendable {
    public let env: LMDBEnvironment
    let db: LMDBDatabase
    var pending: [JobKey: Time?] = [:]

    public init(path: String) throws {
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        o.mapSize = 4 << 30
        // The queue files are the truth and the schedule a hint (a job missing from it is
        // scheduled now, an entry without files is dropped), so a crash that undoes the last
        // commit costs nothing but an early retry.
        o.noMetaSync = true
        env = try LMDBEnvironment(path: path, options: o)
        db = try env.database("schedule")
        warned = try env.database("warned")
        reportsDB = try env.database("reports")
        try env.read { txn in
            try txn.forEach(reportsDB) { k, _ in
                if let (key, _) = ScheduleSchema.decodeReportKey(k) { reportedJobs.insert(key) }
                return true
            }
        }
    }

    // MARK: messages held by the operator (qmail-qctl hold)

    func heldDB() throws -> LMDBDatabase { try env.database("held") }

    public func loadHeld() -> Set<UInt64> {
        var out = Set<UInt64>()
        guard let db = try? heldDB() else { return out }
        try? env.read { txn in
            try txn.forEach(db) { k, _ in
                if let id = ScheduleSchema.decodeMessageKey(k) { out.insert(id) }
                return true
            }
        }
        return out
    }

    /// Written at once: a hold must survive a restart.
    public func setHeld(_ id: UInt64, _ on: Bool) throws {
        let db = try heldDB()
        let key = ScheduleSchema.messageKey(id)
        try env.write { txn in
            if on { try txn.put(db, key, [1]) } else { _ = try txn.delete(db, key) }
        }
    }

    // MARK: last delivery reports (read by qmail-qread)

    let reportsDB: LMDBDatabase
    /// Jobs with at least one stored report (so finishing a job without any costs no lookup).
    var reportedJobs = Set<JobKey>()
    var pendingReports: [[UInt8]: [UInt8]] = [:]
    var pendingReportClears = Set<JobKey>()

    /// Records a recipient's delivery report: always for a deferral or a failure, for a
    /// success only when an earlier report of the job is stored (it would be stale).
    public func recordReport(_ key: JobKey, offset: Int, at: Time, _ report: DeliveryReport) {
        if report.kind == .success && !reportedJobs.contains(key) { return }
        reportedJobs.insert(key)
        pendingReports[ScheduleSchema.reportKey(key, offset: offset)] = ScheduleSchema.reportValue(at, report)
    }

    /// The job's channel file is gone: its reports go with it.
    public func clearReports(_ key: JobKey) {
        guard reportedJobs.remove(key) != nil else { return }
        let prefix = ScheduleSchema.jobKey(key)
        for k in pendingReports.keys where k.starts(with: prefix) { pendingReports[k] = nil }
        pendingReportClears.insert(key)
    }

    let warned: LMDBDatabase
    var ratesDB: LMDBDatabase? = nil
    var pendingLedgers: [String: DomainLedger] = [:]
    /// The bytes of each ledger as we last read or wrote them: a stored ledger that
    /// differs was changed by someone else (drate -R, --import) since.
    var knownLedgers: [String: [UInt8]] = [:]
    /// Ledgers found changed by someone else at a commit, not overwritten: the
    /// engine takes them instead of its own (`takeForeignLedgers`).
    var foreignLedgers: [(String, DomainLedger)] = []

    func rates() throws -> LMDBDatabase {
        if let r = ratesDB { return r }
        let r = try env.database("rates")
        ratesDB = r
        return r
    }

    /// The rate ledgers (slowq-send), by domain or `.global`.
    public func loadLedgers() -> [(String, DomainLedger)] {
        var out: [(String, DomainLedger)] = []
        guard let db = try? rates() else { return out }
        try? env.read { txn in
            try txn.forEach(db) { k, v in
                if let l = DomainLedger(bytes: v) { out.append((String(decoding: k, as: UTF8.self), l)) }
                return true
            }
        }
        for (k, l) in out { knownLedgers[k] = l.bytes }
        return out
    }

    public func takeForeignLedgers() -> [(String, DomainLedger)] {
        defer { foreignLedgers.removeAll() }
        return foreignLedgers
    }

    public func setLedger(_ key: String, _ l: DomainLedger) { pendingLedgers[key] = l }

    /// Messages whose sender already got a delay warning.
    public func wasWarned(_ id: UInt64) -> Bool {
        (try? env.read { try $0.get(warned, ScheduleSchema.messageKey(id)) }) != nil
    }

    public func markWarned(_ id: UInt64) {
        try? env.write { try $0.put(warned, ScheduleSchema.messageKey(id), [1]) }
    }

    public func clearWarned(_ id: UInt64) {
        try? env.write { _ = try $0.delete(warned, ScheduleSchema.messageKey(id)) }
    }

    // The layout is ScheduleSchema's (shared with qmail-qread).
    static func key(_ k: JobKey) -> [UInt8] { ScheduleSchema.jobKey(k) }
    static func decodeKey(_ b: [UInt8]) -> JobKey? { ScheduleSchema.decodeJobKey(b) }
    static func value(_ t: Time) -> [UInt8] { ScheduleSchema.time(t) }
    static func decodeValue(_ b: [UInt8]) -> Time? { ScheduleSchema.decodeTime(b) }

    /// Every stored job.
    public func loadAll() throws -> [(JobKey, Time)] {
        var out: [(JobKey, Time)] = []
        try env.read { txn in
            try txn.forEach(db) { k, v in
                if let key = ScheduleStore.decodeKey(k), let t = ScheduleStore.decodeValue(v) { out.append((key, t)) }
                return true
            }
        }
        return out
    }

    public func set(_ key: JobKey, _ time: Time) { pending[key] = .some(time) }
    public func remove(_ key: JobKey) { pending[key] = .some(nil) }
    public var hasPending: Bool { !pending.isEmpty || !pendingLedgers.isEmpty || !pendingReports.isEmpty || !pendingReportClears.isEmpty }

    /// Writes the changes of one scheduler step in one transaction.
    public func commit() throws {
        if !hasPending { return }
        let changes = pending
        let ledgers = pendingLedgers
        let reports = pendingReports, clears = pendingReportClears
        pending.removeAll(keepingCapacity: true)
        pendingLedgers.removeAll()
        pendingReports.removeAll(keepingCapacity: true)
        pendingReportClears.removeAll(keepingCapacity: true)
        let ratesDB = ledgers.isEmpty ? nil : try rates()
        try env.write { txn in
            for key in clears {
                let prefix = ScheduleSchema.jobKey(key)
                var doomed: [[UInt8]] = []
                try txn.forEach(reportsDB, from: prefix) { k, _ in
                    guard k.starts(with: prefix) else { return false }
                    doomed.append(k)
                    return true
                }
                for k in doomed { try txn.delete(reportsDB, k) }
            }
            for (k, v) in reports { try txn.put(reportsDB, k, v) }
            for (k, t) in changes {
                if let t { try txn.put(db, ScheduleStore.key(k), ScheduleStore.value(t)) }
                else { try txn.delete(db, ScheduleStore.key(k)) }
            }
            if let ratesDB {
                for (k, l) in ledgers {
                    let key = Array(k.utf8)
                    // A ledger drate reset or imported since we last saw it wins over ours.
                    if let stored = try txn.get(ratesDB, key), stored != knownLedgers[k], let theirs = DomainLedger(bytes: stored) {
                        foreignLedgers.append((k, theirs))
                        knownLedgers[k] = stored
                        continue
                    }
                    try txn.put(ratesDB, key, l.bytes)
                    knownLedgers[k] = l.bytes
                }
            }
        }
    }

    public func count() throws -> Int { try env.count(db) }
}
