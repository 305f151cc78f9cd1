#if canImport(Glibc)
import Glibc
#endif
import CCDB
import SystemIO
import Synchronization

/// A cdb file opened for lookups (Debian's tinycdb, `libcdb-dev`). tinycdb
/// keeps the position of the last value found in its handle, so lookups from
/// the daemon's threads take turns.
public final class CdbReader: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    let turn = Mutex(())

    /// Nil when the file does not exist; an error when it exists but cannot be used.
    public static func open(_ path: String) throws(SystemError) -> CdbReader? {
        guard let h = qs_cdb_open(path) else {
            if errno == ENOENT { return nil }
            throw SystemError("open", path: path)
        }
        return CdbReader(handle: h)
    }

    init(handle: UnsafeMutableRawPointer) { self.handle = handle }
    deinit { qs_cdb_close(handle) }

    /// Whether `key` is present; a read error counts as "not found" and is reported.
    public func contains(_ key: [UInt8]) throws(SystemError) -> Bool {
        let r = turn.withLock { _ in key.withUnsafeBytes { qs_cdb_find(handle, $0.baseAddress, UInt32($0.count), nil, 0, nil) } }
        if r < 0 { throw SystemError("read", path: "cdb") }
        return r == 1
    }

    /// The value stored under `key`, nil when absent.
    public func value(_ key: [UInt8]) throws(SystemError) -> [UInt8]? {
        try turn.withLock { _ throws(SystemError) in try valueLocked(key) }
    }

    func valueLocked(_ key: [UInt8]) throws(SystemError) -> [UInt8]? {
        var len: UInt32 = 0
        let r = key.withUnsafeBytes { qs_cdb_find(handle, $0.baseAddress, UInt32($0.count), nil, 0, &len) }
        if r < 0 { throw SystemError("read", path: "cdb") }
        if r == 0 { return nil }
        let cap = len
        var out = [UInt8](repeating: 0, count: Int(cap))
        var full: UInt32 = 0
        let r2 = key.withUnsafeBytes { k in out.withUnsafeMutableBytes { qs_cdb_find(handle, k.baseAddress, UInt32(k.count), $0.baseAddress, cap, &full) } }
        if r2 != 1 { throw SystemError("read", path: "cdb") }
        return out
    }
}

/// Builds a cdb file the way qmail's `qmail-newmrh` does: into `<path>.tmp`,
/// synced, then renamed over `path` (readers see the old file or the new one).
public enum CdbWriter {
    public static func build(_ path: String, entries: [(key: [UInt8], value: [UInt8])]) throws(SystemError) {
        let tmp = path + ".tmp"
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd == -1 { throw SystemError("open", path: tmp) }
        guard let maker = qs_cdb_make_start(fd) else {
            let e = SystemError("write", path: tmp)
            Glibc.close(fd); unlink(tmp)
            throw e
        }
        for (k, v) in entries {
            let r = k.withUnsafeBytes { kb in v.withUnsafeBytes { vb in
                qs_cdb_make_add(maker, kb.baseAddress, UInt32(kb.count), vb.baseAddress, UInt32(vb.count)) } }
            if r != 0 {
                let e = SystemError("write", path: tmp)
                _ = qs_cdb_make_finish(maker); Glibc.close(fd); unlink(tmp)
                throw e
            }
        }
        if qs_cdb_make_finish(maker) != 0 {
            let e = SystemError("write", path: tmp)
            Glibc.close(fd); unlink(tmp)
            throw e
        }
        if fsync(fd) == -1 {
            let e = SystemError("fsync", path: tmp)
            Glibc.close(fd); unlink(tmp)
            throw e
        }
        Glibc.close(fd)
        if rename(tmp, path) == -1 {
            let e = SystemError("rename", path: tmp)
            unlink(tmp)
            throw e
        }
    }
}
