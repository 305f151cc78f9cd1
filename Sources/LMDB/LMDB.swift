#if canImport(Glibc)
import Glibc
#endif
import CLMDB

/// An LMDB call that failed, with LMDB's return code and its text.
public struct LMDBError: Error, CustomStringConvertible, Equatable, Sendable {
    public let code: Int32
    public let operation: String
    public var description: String { "\(operation): \(String(cString: mdb_strerror(code)))" }
    public var isMapFull: Bool { code == MDB_MAP_FULL }

    @inline(__always)
    static func check(_ rc: Int32, _ op: @autoclosure () -> String) throws {
        if rc != 0 { throw LMDBError(code: rc, operation: op()) }
    }
}

/// An LMDB environment: one memory-mapped file (or folder) holding named
/// databases. The engine keeps its durable state here (retry schedule, rate
/// ledgers, remote-host failure memory). Transactions are closures so they
/// cannot be held across an `await`.
public final class LMDBEnvironment: @unchecked Sendable {
    let env: OpaquePointer
    public let path: String

    public struct Options: Sendable {
        public var maxDatabases: UInt32 = 16
        public var mapSize: Int = 1 << 30
        /// `path` names a file rather than a folder.
        public var noSubdirectory = false
        /// Skip the fsync at commit (faster, loses the last commits in a crash).
        public var noSync = false
        /// One flush per commit instead of two: the meta page is not synced at
        /// commit (LMDB's `MDB_NOMETASYNC`). The database stays consistent; a
        /// crash may undo the last committed transaction.
        public var noMetaSync = false
        public var mode: mode_t = 0o600
        /// Open for reading only (`MDB_RDONLY`): readers beside the writing engine, such
        /// as qmail-qread. The lock file must still be writable (reader slots live there).
        public var readOnly = false
        public init() {}
    }

    public init(path: String, options: Options = Options()) throws {
        var e: OpaquePointer?
        try LMDBError.check(mdb_env_create(&e), "mdb_env_create")
        env = e!
        do {
            try LMDBError.check(mdb_env_set_maxdbs(env, options.maxDatabases), "mdb_env_set_maxdbs")
            try LMDBError.check(mdb_env_set_mapsize(env, options.mapSize), "mdb_env_set_mapsize")
            var flags = UInt32(MDB_NOTLS)
            if options.noSubdirectory { flags |= UInt32(MDB_NOSUBDIR) }
            if options.noSync { flags |= UInt32(MDB_NOSYNC) }
            if options.noMetaSync { flags |= UInt32(MDB_NOMETASYNC) }
            if options.readOnly { flags |= UInt32(MDB_RDONLY) }
            try LMDBError.check(mdb_env_open(env, path, flags, options.mode), "mdb_env_open \(path)")
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.path = path
    }

    deinit { mdb_env_close(env) }

    /// Flushes to disk (useful with `noSync`).
    public func sync(force: Bool = true) throws {
        try LMDBError.check(mdb_env_sync(env, force ? 1 : 0), "mdb_env_sync")
    }

    /// Opens an existing named database in a read-only transaction (for an environment
    /// opened `readOnly`); nil when it does not exist.
    public func existingDatabase(_ name: String) throws -> LMDBDatabase? {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &t), "mdb_txn_begin (read)")
        var dbi: MDB_dbi = 0
        let rc = mdb_dbi_open(t, name, 0, &dbi)
        if rc == MDB_NOTFOUND { mdb_txn_abort(t); return nil }
        if rc != 0 { mdb_txn_abort(t); try LMDBError.check(rc, "mdb_dbi_open \(name)") }
        // Committed, not aborted: an abort would close the new handle.
        try LMDBError.check(mdb_txn_commit(t), "mdb_txn_commit")
        return LMDBDatabase(dbi: dbi, name: name)
    }

    /// Opens (or with `create`, creates) a named database; nil name = the main one.
    public func database(_ name: String?, create: Bool = true) throws -> LMDBDatabase {
        try write { txn in
            var dbi: MDB_dbi = 0
            let flags = create ? UInt32(MDB_CREATE) : 0
            try LMDBError.check(mdb_dbi_open(txn.txn, name, flags, &dbi), "mdb_dbi_open \(name ?? "(main)")")
            return LMDBDatabase(dbi: dbi, name: name)
        }
    }

    /// Runs `body` in a read-only transaction.
    public func read<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &t), "mdb_txn_begin (read)")
        let txn = LMDBTransaction(txn: t!, writable: false)
        defer { mdb_txn_abort(t) }
        return try body(txn)
    }

    /// Runs `body` in a write transaction, committed when it returns and
    /// aborted when it throws.
    public func write<T>(_ body: (LMDBTransaction) throws -> T) throws -> T {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env, nil, 0, &t), "mdb_txn_begin (write)")
        let txn = LMDBTransaction(txn: t!, writable: true)
        let result: T
        do { result = try body(txn) } catch {
            mdb_txn_abort(t)
            throw error
        }
        try LMDBError.check(mdb_txn_commit(t), "mdb_txn_commit")
        return result
    }

    /// Entries in a database.
    public func count(_ db: LMDBDatabase) throws -> Int {
        try read { txn in
            var st = MDB_stat()
            try LMDBError.check(mdb_stat(txn.txn, db.dbi, &st), "mdb_stat")
            return Int(st.ms_entries)
        }
    }
}

/// A read-only transaction kept open across many look-ups (an operator tool's
/// pass over a whole queue), used by one thread at a time: a look-up pays no
/// transaction begin, and `refresh()` moves it to the newest snapshot (reset and
/// renew, keeping its reader slot) so a long pass does not keep the writer from
/// reusing old pages for its whole run.
public final class LMDBReader {
    let env: LMDBEnvironment
    let txn: OpaquePointer

    public init(_ env: LMDBEnvironment) throws {
        var t: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env.env, nil, UInt32(MDB_RDONLY), &t), "mdb_txn_begin (read)")
        self.env = env
        txn = t!
    }

    deinit { mdb_txn_abort(txn) }

    public func refresh() throws {
        mdb_txn_reset(txn)
        try LMDBError.check(mdb_txn_renew(txn), "mdb_txn_renew")
    }

    public var transaction: LMDBTransaction { LMDBTransaction(txn: txn, writable: false) }
}

/// A named database inside an environment.
public struct LMDBDatabase: Sendable, Equatable {
    let dbi: MDB_dbi
    public let name: String?
}

/// A transaction handed to a `read` or `write` closure.
public struct LMDBTransaction {
    let txn: OpaquePointer
    public let writable: Bool

    static func withVal<R>(_ bytes: some Collection<UInt8>, _ body: (inout MDB_val) throws -> R) rethrows -> R {
        let array = Array(bytes)
        return try array.withUnsafeBytes { raw in
            var v = MDB_val(mv_size: raw.count, mv_data: UnsafeMutableRawPointer(mutating: raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!))
            return try body(&v)
        }
    }

    static func bytes(_ v: MDB_val) -> [UInt8] {
        guard v.mv_size > 0, let p = v.mv_data else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: v.mv_size))
    }

    /// The value for `key`, or nil.
    public func get(_ db: LMDBDatabase, _ key: some Collection<UInt8>) throws -> [UInt8]? {
        try LMDBTransaction.withVal(key) { k in
            var v = MDB_val()
            let rc = mdb_get(txn, db.dbi, &k, &v)
            if rc == MDB_NOTFOUND { return nil }
            try LMDBError.check(rc, "mdb_get")
            return LMDBTransaction.bytes(v)
        }
    }

    public func put(_ db: LMDBDatabase, _ key: some Collection<UInt8>, _ value: some Collection<UInt8>) throws {
        try LMDBTransaction.withVal(key) { k in
            try LMDBTransaction.withVal(value) { v in
                try LMDBError.check(mdb_put(txn, db.dbi, &k, &v, 0), "mdb_put")
            }
        }
    }

    /// Deletes `key`; returns false when it was not there.
    @discardableResult
    public func delete(_ db: LMDBDatabase, _ key: some Collection<UInt8>) throws -> Bool {
        try LMDBTransaction.withVal(key) { k in
            let rc = mdb_del(txn, db.dbi, &k, nil)
            if rc == MDB_NOTFOUND { return false }
            try LMDBError.check(rc, "mdb_del")
            return true
        }
    }

    /// Removes every entry of `db`.
    public func clear(_ db: LMDBDatabase) throws {
        try LMDBError.check(mdb_drop(txn, db.dbi, 0), "mdb_drop")
    }

    /// Visits entries in key order, starting at the first key >= `from`
    /// (or the first key); `body` returns false to stop.
    public func forEach(_ db: LMDBDatabase, from start: [UInt8]? = nil,
                        _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws {
        var c: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &c), "mdb_cursor_open")
        defer { mdb_cursor_close(c) }
        var k = MDB_val(), v = MDB_val()
        var rc: Int32
        if let start {
            rc = try LMDBTransaction.withVal(start) { s in
                k = s
                let r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                return r
            }
        } else {
            rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)
        }
        while rc == 0 {
            if try !body(LMDBTransaction.bytes(k), LMDBTransaction.bytes(v)) { return }
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)
        }
        if rc != MDB_NOTFOUND { try LMDBError.check(rc, "mdb_cursor_get") }
    }
}
