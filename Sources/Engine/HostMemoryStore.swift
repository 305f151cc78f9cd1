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
                if v.count == 16 {
                    var f: Int64 = 0, t: Int64 = 0
                    for i in 0..<8 { f = f << 8 | Int64(v[i]); t = t << 8 | Int64(v[8 + i]) }
                    out.append((String(decoding: k, as: UTF8.self), Int(f), t))
                }
                return true
            }
        }
        return out
    }

    func save(_ ip: String, failures: Int, last: Int64) {
        var v: [UInt8] = []
        for x in [Int64(failures), last] { for s in stride(from: 56, through: 0, by: -8) { v.append(UInt8(truncatingIfNeeded: x >> Int64(s))) } }
        try? env.write { try $0.put(db, Array(ip.utf8), v) }
    }

    func remove(_ ip: String) {
        try? env.write { _ = try $0.delete(db, Array(ip.utf8)) }
    }
}
