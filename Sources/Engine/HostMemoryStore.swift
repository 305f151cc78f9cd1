#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Workers
import Scheduler
import RemoteDelivery
import LMDB

/// Host failure memory kept in the engine's LMDB environment.
final class LMDBHostMemoryStore: HostMemoryStore, @unchecked Sendable {
    let env: LMDBEnvironment
    let db: LMDBDatabase

    init(env: LMDBEnvironment) throws {
        self.env = env
        db = try env.database("tcpto")
    }

    func load() -> [(String, Int, Int64)] {
        var out: [(String, Int, Int64)] = []
        try? env.read { txn in
            try txn.forEach(db) { k, v in
                if let (f, t) = ScheduleSchema.decodeHostFailure(v) { out.append((String(decoding: k, as: UTF8.self), f, t)) }
                return true
            }
        }
        return out
    }

    func save(_ ip: String, failures: Int, last: Int64) {
        let v = ScheduleSchema.hostFailure(failures: failures, last: last)
        try? env.write { try $0.put(db, Array(ip.utf8), v) }
    }

    func remove(_ ip: String) {
        try? env.write { _ = try $0.delete(db, Array(ip.utf8)) }
    }
}
