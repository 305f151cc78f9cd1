#if canImport(Glibc)
import Glibc
#endif
import CCDB
import CShims
import SystemIO

/// A cdb file read through Debian's tinycdb (`libcdb`): look keys up, or read
/// every record in order. A file cut short or otherwise broken is an error
/// (EPROTO), never a silently missing key.
public final class ConstantDatabase {
    let handle: UnsafeMutableRawPointer
    public let path: String

    public init(path: String) throws(SystemError) {
        guard let h = qs_cdb_open_checked(path) else { throw SystemError("open", path: path, errno: qs_errno()) }
        handle = h
        self.path = path
    }

    deinit { qs_cdb_close(handle) }

    /// The first value stored under `key`, nil when absent.
    public func find(_ key: [UInt8]) throws(SystemError) -> [UInt8]? {
        var len: UInt32 = 0
        let found = key.withUnsafeBytes { k in qs_cdb_find(handle, k.baseAddress, UInt32(k.count), nil, 0, &len) }
        if found < 0 { throw SystemError("read", path: path, errno: qs_errno() == 0 ? EPROTO : qs_errno()) }
        if found == 0 { return nil }
        var data = [UInt8](repeating: 0, count: Int(len))
        let again = key.withUnsafeBytes { k in
            data.withUnsafeMutableBytes { d in qs_cdb_find(handle, k.baseAddress, UInt32(k.count), d.baseAddress, UInt32(d.count), &len) }
        }
        if again != 1 { throw SystemError("read", path: path, errno: qs_errno() == 0 ? EPROTO : qs_errno()) }
        return data
    }

    public func find(_ key: String) throws(SystemError) -> [UInt8]? { try find(Array(key.utf8)) }

    /// Every record in file order (cdbdump's).
    public func forEach(_ body: (_ key: [UInt8], _ data: [UInt8]) -> Void) throws(SystemError) {
        var cpos: UInt32 = 0
        qs_cdb_seqinit(handle, &cpos)
        var kpos: UInt32 = 0, klen: UInt32 = 0, dpos: UInt32 = 0, dlen: UInt32 = 0
        while true {
            let r = qs_cdb_seqnext(handle, &cpos, &kpos, &klen, &dpos, &dlen)
            if r == 0 { return }
            if r < 0 { throw SystemError("read", path: path, errno: EPROTO) }
            var key = [UInt8](repeating: 0, count: Int(klen))
            var data = [UInt8](repeating: 0, count: Int(dlen))
            let a = key.withUnsafeMutableBytes { qs_cdb_read(handle, $0.baseAddress, klen, kpos) }
            let b = data.withUnsafeMutableBytes { qs_cdb_read(handle, $0.baseAddress, dlen, dpos) }
            if a != 0 || b != 0 { throw SystemError("read", path: path, errno: EPROTO) }
            body(key, data)
        }
    }
}

/// Writes a cdb file the safe way: records into `tmp`, the index, fsync, then
/// rename over `path` — readers see the old file or the new one, never a part.
public final class ConstantDatabaseWriter {
    let fd: Int32
    var maker: UnsafeMutableRawPointer?
    public let path: String
    public let tmp: String

    public init(path: String, tmp: String, mode: mode_t = 0o644) throws(SystemError) {
        self.path = path
        self.tmp = tmp
        fd = try Sys.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: mode)
        guard let m = qs_cdb_make_start(fd) else {
            let e = qs_errno()
            Sys.close(fd)
            throw SystemError("write", path: tmp, errno: e)
        }
        maker = m
    }

    deinit {
        if let m = maker { _ = qs_cdb_make_finish(m); Sys.close(fd) }
    }

    public func add(_ key: [UInt8], _ data: [UInt8]) throws(SystemError) {
        guard let m = maker else { return }
        let r = key.withUnsafeBytes { k in data.withUnsafeBytes { d in qs_cdb_make_add(m, k.baseAddress, UInt32(k.count), d.baseAddress, UInt32(d.count)) } }
        if r != 0 { throw SystemError("write", path: tmp, errno: qs_errno()) }
    }

    /// Finishes the index, syncs and moves the file into place.
    public func commit() throws(SystemError) {
        guard let m = maker else { return }
        maker = nil
        if qs_cdb_make_finish(m) != 0 { let e = qs_errno(); Sys.close(fd); throw SystemError("write", path: tmp, errno: e) }
        do throws(SystemError) { try Sys.fsync(fd, path: tmp) } catch { Sys.close(fd); throw error }
        if close(fd) != 0 { throw SystemError("close", path: tmp, errno: qs_errno()) }
        try Sys.rename(tmp, path)
    }
}
