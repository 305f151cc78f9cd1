// Compiled twice: into SystemIO, and (through a symbolic link) into the Embedded
// Swift builds of qmail-inject and sendmail. Keep it Embedded-clean: typed throws,
// no existentials; C calls go through the c_ functions below.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
#endif

// The C calls under names that `Sys`'s own methods do not shadow (the C functions
// live in Glibc, or in CShims for Embedded Swift, which has no Glibc module).
@inline(__always) private func c_open(_ p: String, _ f: Int32, _ m: mode_t) -> Int32 { qs_open(p, f, m) }
@inline(__always) private func c_close(_ fd: Int32) -> Int32 { close(fd) }
@inline(__always) private func c_write(_ fd: Int32, _ b: UnsafeRawPointer, _ n: Int) -> Int { write(fd, b, n) }
@inline(__always) private func c_read(_ fd: Int32, _ b: UnsafeMutableRawPointer, _ n: Int) -> Int { read(fd, b, n) }
@inline(__always) private func c_fsync(_ fd: Int32) -> Int32 { fsync(fd) }
@inline(__always) private func c_fdatasync(_ fd: Int32) -> Int32 { fdatasync(fd) }
@inline(__always) private func c_link(_ a: String, _ b: String) -> Int32 { link(a, b) }
@inline(__always) private func c_unlink(_ p: String) -> Int32 { unlink(p) }
@inline(__always) private func c_rename(_ a: String, _ b: String) -> Int32 { rename(a, b) }
@inline(__always) private func c_mkdir(_ p: String, _ m: mode_t) -> Int32 { mkdir(p, m) }
@inline(__always) private func c_chmod(_ p: String, _ m: mode_t) -> Int32 { chmod(p, m) }
@inline(__always) private func c_lchown(_ p: String, _ u: uid_t, _ g: gid_t) -> Int32 { lchown(p, u, g) }
@inline(__always) private func c_chdir(_ p: String) -> Int32 { chdir(p) }
@inline(__always) private func c_lstat(_ p: String, _ st: inout stat) -> Int32 { lstat(p, &st) }
@inline(__always) private func c_fstat(_ fd: Int32, _ st: inout stat) -> Int32 { fstat(fd, &st) }

/// Thin, errno-preserving wrappers over the Glibc file calls the queue uses.
/// Every call retries on EINTR and throws `SystemError` otherwise.
public enum Sys {
    @inline(__always)
    static func retry<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let r = body()
            if r == -1 && qs_errno() == EINTR { continue }
            return r
        }
    }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> Int32 {
        let fd = retry { c_open(path, flags | O_CLOEXEC, mode) }
        if fd == -1 { throw SystemError("open", path: path) }
        return fd
    }

    /// `open_excl`: O_WRONLY|O_CREAT|O_EXCL.
    public static func createExclusive(_ path: String, mode: mode_t = 0o644) throws(SystemError) -> Int32 {
        try open(path, O_WRONLY | O_CREAT | O_EXCL, mode: mode)
    }

    public static func close(_ fd: Int32) {
        _ = c_close(fd)
    }

    public static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String? = nil) throws(SystemError) {
        var offset = 0
        while offset < buffer.count {
            let n = retry { c_write(fd, buffer.baseAddress! + offset, buffer.count - offset) }
            if n == -1 { throw SystemError("write", path: path) }
            offset += n
        }
    }

    public static func write(_ fd: Int32, _ bytes: [UInt8], path: String? = nil) throws(SystemError) {
        let failure = bytes.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> SystemError? in
            do throws(SystemError) { try write(fd, raw, path: path); return nil } catch { return error }
        }
        if let failure { throw failure }
    }

    public static func write(_ fd: Int32, _ string: String, path: String? = nil) throws(SystemError) {
        try write(fd, Array(string.utf8), path: path)
    }

    /// Reads up to `count` bytes; 0 means end of file.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String? = nil) throws(SystemError) -> Int {
        let n = retry { c_read(fd, buffer.baseAddress!, buffer.count) }
        if n == -1 { throw SystemError("read", path: path) }
        return n
    }

    /// Reads a descriptor to its end.
    public static func readAll(_ fd: Int32, path: String? = nil, limit: Int = Int.max) throws(SystemError) -> [UInt8] {
        // Read through an uninitialised chunk: no zero-filling, and only the
        // pages `read` really writes are touched (a short control file costs one).
        let chunkSize = 65536
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { chunk.deallocate() }
        var out: [UInt8] = []
        while out.count < limit {
            let n = retry { c_read(fd, chunk, chunkSize) }
            if n == -1 { throw SystemError("read", path: path) }
            if n == 0 { break }
            out.append(contentsOf: UnsafeRawBufferPointer(start: chunk, count: min(n, limit - out.count)))
        }
        return out
    }

    /// Reads a (blocking) descriptor to its end and throws the bytes away: the
    /// writer on the other side of a pipe is never left blocked or hit by SIGPIPE.
    public static func discardToEnd(_ fd: Int32) {
        var sink = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = sink.withUnsafeMutableBytes { c_read(fd, $0.baseAddress!, $0.count) }
            if n > 0 || (n == -1 && qs_errno() == EINTR) { continue }
            return
        }
    }

    /// The whole file, or nil when it does not exist.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8]? {
        let fd = c_open(path, O_RDONLY | O_CLOEXEC, 0)
        if fd == -1 {
            if qs_errno() == ENOENT { return nil }
            throw SystemError("open", path: path)
        }
        defer { close(fd) }
        return try readAll(fd, path: path)
    }

    public static func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws(SystemError) {
        let fd = try open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: mode)
        defer { close(fd) }
        try write(fd, bytes, path: path)
    }

    public static func fsync(_ fd: Int32, path: String? = nil) throws(SystemError) {
        if retry({ c_fsync(fd) }) == -1 { throw SystemError("fsync", path: path) }
    }

    public static func fdatasync(_ fd: Int32, path: String? = nil) throws(SystemError) {
        if retry({ c_fdatasync(fd) }) == -1 { throw SystemError("fdatasync", path: path) }
    }

    /// fsync a directory so that links and unlinks in it are durable.
    public static func syncDirectory(_ path: String) throws(SystemError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    public static func link(_ from: String, _ to: String) throws(SystemError) {
        if c_link(from, to) == -1 { throw SystemError("link", path: "\(from) to \(to)") }
    }

    public static func unlink(_ path: String) throws(SystemError) {
        if c_unlink(path) == -1 { throw SystemError("unlink", path: path) }
    }

    /// Unlinks and treats a missing file as done.
    @discardableResult
    public static func unlinkIfPresent(_ path: String) throws(SystemError) -> Bool {
        if c_unlink(path) == 0 { return true }
        if qs_errno() == ENOENT { return false }
        throw SystemError("unlink", path: path)
    }

    public static func rename(_ from: String, _ to: String) throws(SystemError) {
        if c_rename(from, to) == -1 { throw SystemError("rename", path: "\(from) to \(to)") }
    }

    public static func mkdir(_ path: String, mode: mode_t) throws(SystemError) {
        if c_mkdir(path, mode) == -1 { throw SystemError("mkdir", path: path) }
    }

    public static func chmod(_ path: String, _ mode: mode_t) throws(SystemError) {
        if c_chmod(path, mode) == -1 { throw SystemError("chmod", path: path) }
    }

    public static func chown(_ path: String, uid: uid_t, gid: gid_t) throws(SystemError) {
        if c_lchown(path, uid, gid) == -1 { throw SystemError("chown", path: path) }
    }

    public static func chdir(_ path: String) throws(SystemError) {
        if c_chdir(path) == -1 { throw SystemError("chdir", path: path) }
    }

    /// stat(2) with its errno: (the status, 0) or (nil, errno).
    public static func statWithErrno(_ path: String) -> (stat?, Int32) {
        var st = emptyStat()
        if fstatat(AT_FDCWD, path, &st, 0) == -1 { return (nil, qs_errno()) }
        return (st, 0)
    }

    /// stat, or nil when the path does not exist.
    public static func stat(_ path: String) throws(SystemError) -> stat? {
        let (st, err) = statWithErrno(path)
        if let st { return st }
        if err == ENOENT || err == ENOTDIR { return nil }
        throw SystemError("stat", path: path, errno: err)
    }

    public static func lstat(_ path: String) throws(SystemError) -> stat? {
        var st = emptyStat()
        if c_lstat(path, &st) == -1 {
            if qs_errno() == ENOENT || qs_errno() == ENOTDIR { return nil }
            throw SystemError("lstat", path: path)
        }
        return st
    }

    public static func fstat(_ fd: Int32, path: String? = nil) throws(SystemError) -> stat {
        var st = emptyStat()
        if c_fstat(fd, &st) == -1 { throw SystemError("fstat", path: path) }
        return st
    }

    public static func exists(_ path: String) -> Bool {
        var st = emptyStat()
        return c_lstat(path, &st) == 0
    }

    /// Names in a directory, without `.` and `..`.
    public static func listDirectory(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError("opendir", path: path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }

    /// argv, argv[0] included: `CommandLine.arguments`, or in the Embedded Swift
    /// programs (which have no `CommandLine`) what CShims' constructor saved.
    public static func arguments() -> [String] {
        #if hasFeature(Embedded)
        var out: [String] = []
        guard let argv = qs_argv() else { return out }
        for i in 0..<Int(qs_argc()) { if let a = argv[i] { out.append(String(cString: a)) } }
        return out
        #else
        return CommandLine.arguments
        #endif
    }

    public static func environment(_ name: String) -> String? {
        guard let v = getenv(name) else { return nil }
        return String(cString: v)
    }

    /// The directory holding the running executable (so programs find their siblings).
    public static func executableDirectory() -> String? {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = qs_self_exe(&buf, buf.count)
        if n <= 0 { return nil }
        let path = String(cString: buf)
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func isExecutable(_ path: String) -> Bool {
        access(path, X_OK) == 0
    }
}

func emptyStat() -> stat { stat() }

/// Writes a line to standard error.
public func printError(_ text: String) {
    var line = text
    if !line.hasSuffix("\n") { line += "\n" }
    try? Sys.write(2, line)
}

/// Writes text to standard output unbuffered.
public func printOut(_ text: String) {
    try? Sys.write(1, text)
}
