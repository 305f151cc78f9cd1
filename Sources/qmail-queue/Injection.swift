// qmail-queue is built with Embedded Swift (see Package.swift): it starts once per
// message, and without the Swift runtime's start-up and metadata work it costs what
// a C program does. Hence plain Glibc calls, typed throws, and no existentials here.
import CShims

/// A failed system call: qmail's `<operation> <path>: <strerror>`.
struct SysFailure {
    var operation: String
    var path: String?
    var errno: Int32

    init(_ operation: String, path: String? = nil, errno: Int32 = qs_errno()) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    var reason: String { String(cString: strerror(errno)) }

    var description: String {
        if let path { return operation + " " + path + ": " + reason }
        return operation + ": " + reason
    }
}

/// qmail-queue: puts one message into the queue, crash-safely (engine.md §2.2).
///
/// The message arrives on `messageFD` (normally 0), the envelope on `envelopeFD`
/// (normally 1). The states are qmail's: a pid file becomes `mess/` (S2), the
/// envelope is written to `intd/` (S3), and one `link` into `todo/` queues it
/// (S4). Every failure removes what was created, so nothing reaches `todo/`.
struct Injection {
    var queueDir: String
    var names: QueueNames
    var sync: SyncPolicy
    var received: ReceivedLine.Invoker
    var host: String?
    /// QQEH: headers the engine adds at delivery (`e` record).
    var qqeh: [UInt8]?
    var pullTrigger = true

    /// A failure with the exit code qmail-queue reports for it.
    struct Failure: Error {
        let code: QueueExitCode
        let cause: String
        init(_ code: QueueExitCode, _ cause: String) { self.code = code; self.cause = cause }
        init(_ code: QueueExitCode, _ failure: SysFailure) { self.code = code; self.cause = failure.description }
    }

    /// Addresses of 1003 bytes or more are refused (exit 11), as qmail-queue does.
    static let addressLimit = 1003

    /// Runs the whole protocol. The working directory becomes the queue.
    func run(messageFD: Int32 = 0, envelopeFD: Int32 = 1) throws(Failure) {
        if chdir(queueDir) == -1 { throw Failure(.homeDirectory, SysFailure("chdir", path: queueDir)) }
        let pid = getpid()
        var created: [String] = []
        func cleanup() {
            // Truncate first so a crash between the two calls leaves no large file.
            for path in created.reversed() { _ = truncate(path, 0); _ = unlink(path) }
        }

        // S1 -> pid file.
        let start = time(nil)
        var pidPath = ""
        var messFD: Int32 = -1
        for seq in 1...9 {
            let p = "pid/\(pid).\(start).\(seq)"
            let fd = qs_open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 { pidPath = p; messFD = fd; break }
        }
        if messFD == -1 { throw Failure(.pidFile, SysFailure("open", path: "pid/\(pid).\(start).N")) }
        defer { close(messFD) }
        var st = stat()
        if fstat(messFD, &st) == -1 {
            let f = SysFailure("fstat", path: pidPath)
            _ = unlink(pidPath)
            throw Failure(.messFile, f)
        }
        let id = UInt64(st.st_ino)
        let messPath = names.path(.mess, id)

        // S2: pid file linked to mess/<split>/<id>.
        if link(pidPath, messPath) == -1 {
            let f = SysFailure("link", path: pidPath + " to " + messPath)
            _ = unlink(pidPath)
            throw Failure(.messLink, f)
        }
        created.append(messPath)
        if unlink(pidPath) == -1 {
            let f = SysFailure("unlink", path: pidPath)
            cleanup()
            throw Failure(.unlinkPid, f)
        }

        // Message: Received line, then descriptor 0 copied.
        let line = ReceivedLine(pid: pid, host: host, invoker: received, date: Date822.local(start)).bytes()
        let written = line.withUnsafeBytes { writeAll(messFD, $0) }
        if written != 0 { cleanup(); throw Failure(.writeErrorOrDiskFull, SysFailure("write", path: messPath, errno: written)) }
        do throws(Failure) {
            try copy(from: messageFD, to: messFD, path: messPath)
        } catch {
            cleanup(); throw error
        }

        // S3: the envelope into intd/.
        let intdPath = names.path(.intd, id)
        let intdFD = qs_open(intdPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if intdFD == -1 { let f = SysFailure("open", path: intdPath); cleanup(); throw Failure(.intdCreate, f) }
        created.append(intdPath)
        defer { close(intdFD) }
        do throws(Failure) {
            try writeEnvelope(from: envelopeFD, to: intdFD, path: intdPath, pid: pid)
        } catch {
            cleanup(); throw error
        }

        var e = sync.syncFile(messFD)
        if e != 0 { cleanup(); throw Failure(.syncMessage, SysFailure(sync.fileSyncCall, path: messPath, errno: e)) }
        e = sync.syncFile(intdFD)
        if e != 0 { cleanup(); throw Failure(.syncMessage, SysFailure(sync.fileSyncCall, path: intdPath, errno: e)) }
        // The mess/ entry too (indimail's syncdir does it for every link): once todo/
        // shows the message, a crash must not leave it without its message file.
        if sync.directories, let f = syncDirectory(names.directory(.mess, id)) {
            cleanup(); throw Failure(.syncMessage, f)
        }

        // S4: one link makes the message visible to the scheduler.
        let todoPath = names.path(.todo, id)
        if link(intdPath, todoPath) == -1 {
            let f = SysFailure("link", path: intdPath + " to " + todoPath)
            cleanup(); throw Failure(.todoLink, f)
        }
        if sync.directories, let f = syncDirectory(names.directory(.todo, id)) {
            // The message is linked; durability of the link is in doubt.
            // Undo so the client retries rather than trusting it.
            _ = unlink(todoPath)
            cleanup(); throw Failure(.syncDirectory, f)
        }
        if pullTrigger { Injection.pullTrigger() }
    }

    /// Opens a folder and fsyncs it; nil, or what failed.
    func syncDirectory(_ path: String) -> SysFailure? {
        let fd = qs_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if fd == -1 { return SysFailure("open", path: path) }
        defer { close(fd) }
        while fsync(fd) == -1 {
            let e = qs_errno()
            if e != EINTR { return SysFailure("fsync", path: path, errno: e) }
        }
        return nil
    }

    /// Copies descriptor `from` to `to`; read errors are exit 54, write errors 53.
    func copy(from: Int32, to: Int32, path: String) throws(Failure) {
        let cap = 65536
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: cap, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = read(from, buf.baseAddress, cap)
            if n == -1 {
                let e = qs_errno()
                if e == EINTR { continue }
                throw Failure(.readError, "reading the message: " + SysFailure("read", errno: e).reason)
            }
            if n == 0 { return }
            let w = writeAll(to, UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            if w != 0 { throw Failure(.writeErrorOrDiskFull, SysFailure("write", path: path, errno: w)) }
        }
    }

    /// Reads the client's envelope and writes the queue file: `u`, `p`, `F`,
    /// `T`…, then `e` (QQEH). First byte not `F` or a recipient not `T`: 79;
    /// an address of 1003 bytes or more: 11; end of input early: 54.
    func writeEnvelope(from input: Int32, to output: Int32, path: String, pid: Int32) throws(Failure) {
        var reader = EnvelopeReader(fd: input)
        var out: [UInt8] = Array("u\(getuid())\0p\(pid)\0".utf8)
        out.reserveCapacity(512)
        // Written out in blocks of 64 KB, so a long recipient list is never held whole.
        func flush() throws(Failure) {
            let w = out.withUnsafeBytes { writeAll(output, $0) }
            if w != 0 { throw Failure(.writeErrorOrDiskFull, SysFailure("write", path: path, errno: w)) }
            out.removeAll(keepingCapacity: true)
        }
        func next() throws(Failure) -> UInt8 {
            guard let b = try reader.byte() else { throw Failure(.readError, "envelope ended early") }
            return b
        }
        func address() throws(Failure) {
            var count = 0
            while true {
                let b = try next()
                out.append(b)
                if b == 0 { return }
                count += 1
                if count >= Injection.addressLimit {
                    throw Failure(.addressTooLong, "envelope address longer than \(Injection.addressLimit - 1) bytes")
                }
            }
        }
        guard try next() == UInt8(ascii: "F") else { throw Failure(.envelopeFormat, "envelope does not start with F") }
        out.append(UInt8(ascii: "F"))
        try address()
        while true {
            let b = try next()
            if b == 0 { break }
            guard b == UInt8(ascii: "T") else {
                throw Failure(.envelopeFormat, "envelope recipient does not start with T")
            }
            out.append(b)
            try address()
            if out.count >= 65536 { try flush() }
        }
        if let qqeh, !qqeh.isEmpty {
            out.append(UInt8(ascii: "e"))
            out.append(contentsOf: qqeh)
            if qqeh.last != UInt8(ascii: "\n") { out.append(UInt8(ascii: "\n")) }
            out.append(0)
        }
        try flush()
    }

    /// Wakes the scheduler through `lock/trigger` (relative to the queue); every error is ignored.
    static func pullTrigger() {
        let fd = qs_open("lock/trigger", O_WRONLY | O_NDELAY | O_CLOEXEC, 0)
        if fd == -1 { return }
        var zero: UInt8 = 0
        _ = write(fd, &zero, 1)
        close(fd)
    }
}

/// Reads the envelope descriptor a block at a time.
struct EnvelopeReader {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 8192)
    var start = 0
    var end = 0

    init(fd: Int32) { self.fd = fd }

    /// The next byte, or nil at the end of input.
    mutating func byte() throws(Injection.Failure) -> UInt8? {
        if start == end {
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n == -1 {
                    let e = qs_errno()
                    if e == EINTR { continue }
                    throw Injection.Failure(.readError, "reading the envelope: " + SysFailure("read", errno: e).reason)
                }
                if n == 0 { return nil }
                start = 0
                end = n
                break
            }
        }
        let b = buffer[start]
        start += 1
        return b
    }
}

/// Writes everything (EINTR retried): 0, or the errno of the failing write.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
    var off = 0
    while off < bytes.count {
        let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
        if n == -1 {
            let e = qs_errno()
            if e == EINTR { continue }
            return e
        }
        off += n
    }
    return 0
}
