#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import SystemIO

/// qmail-queue: puts one message into the queue, crash-safely (engine.md §2.2).
///
/// The message arrives on `messageFD` (normally 0), the envelope on `envelopeFD`
/// (normally 1). The states are qmail's: a pid file becomes `mess/` (S2), the
/// envelope is written to `intd/` (S3), and one `link` into `todo/` queues it
/// (S4). Every failure removes what was created, so nothing reaches `todo/`.
public struct Injection {
    public var queueDir: String
    public var names: QueueNames
    public var sync: SyncPolicy
    public var received: ReceivedLine.Invoker
    public var host: String?
    /// QQEH: headers the engine adds at delivery (`e` record).
    public var qqeh: [UInt8]?
    public var pullTrigger = true

    public init(queueDir: String, names: QueueNames, sync: SyncPolicy, received: ReceivedLine.Invoker,
                host: String?, qqeh: [UInt8]? = nil) {
        self.queueDir = queueDir
        self.names = names
        self.sync = sync
        self.received = received
        self.host = host
        self.qqeh = qqeh
    }

    /// A failure with the exit code qmail-queue reports for it.
    public struct Failure: Error, CustomStringConvertible {
        public let code: QueueExitCode
        public let cause: String
        public var description: String { "\(cause) (exit \(code.rawValue))" }
    }

    /// The message id and the bytes written, on success.
    public struct Queued: Sendable { public let id: UInt64; public let messageBytes: Int }

    /// Runs the whole protocol. The working directory becomes the queue.
    public func run(messageFD: Int32 = 0, envelopeFD: Int32 = 1) throws -> Queued {
        do { try Sys.chdir(queueDir) } catch {
            throw Failure(code: .homeDirectory, cause: "\(error)")
        }
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
            if let fd = try? Sys.createExclusive(p, mode: 0o644) { pidPath = p; messFD = fd; break }
        }
        if messFD == -1 { throw Failure(code: .pidFile, cause: SystemError("open", path: "pid/\(pid).\(start).N").description) }
        defer { Sys.close(messFD) }
        let st: stat
        do { st = try Sys.fstat(messFD, path: pidPath) } catch {
            _ = unlink(pidPath)
            throw Failure(code: .messFile, cause: "\(error)")
        }
        let id = UInt64(st.st_ino)
        let messPath = names.path(.mess, id)

        // S2: pid file linked to mess/<split>/<id>.
        do { try Sys.link(pidPath, messPath) } catch {
            _ = unlink(pidPath)
            throw Failure(code: .messLink, cause: "\(error)")
        }
        created.append(messPath)
        if unlink(pidPath) == -1 {
            cleanup()
            throw Failure(code: .unlinkPid, cause: SystemError("unlink", path: pidPath).description)
        }

        // Message: Received line, then descriptor 0 copied.
        var size = 0
        do {
            let line = ReceivedLine(pid: pid, host: host, invoker: received, date: Date822.local(start)).bytes()
            try Sys.write(messFD, line, path: messPath)
            size += line.count
            size += try copy(from: messageFD, to: messFD, path: messPath)
        } catch let f as Failure {
            cleanup(); throw f
        } catch {
            cleanup(); throw Failure(code: .writeErrorOrDiskFull, cause: "\(error)")
        }

        // S3: the envelope into intd/.
        let intdPath = names.path(.intd, id)
        let intdFD: Int32
        do { intdFD = try Sys.createExclusive(intdPath, mode: 0o644) } catch {
            cleanup(); throw Failure(code: .intdCreate, cause: "\(error)")
        }
        created.append(intdPath)
        defer { Sys.close(intdFD) }
        do {
            try writeEnvelope(from: envelopeFD, to: intdFD, path: intdPath, pid: pid)
        } catch let f {
            cleanup(); throw f
        }

        do {
            try sync.sync(messFD, path: messPath)
            try sync.sync(intdFD, path: intdPath)
            // The mess/ entry too (indimail's syncdir does it for every link): once todo/
            // shows the message, a crash must not leave it without its message file.
            if sync.directories { try Sys.syncDirectory(names.directory(.mess, id)) }
        } catch {
            cleanup(); throw Failure(code: .syncMessage, cause: "\(error)")
        }

        // S4: one link makes the message visible to the scheduler.
        let todoPath = names.path(.todo, id)
        do { try Sys.link(intdPath, todoPath) } catch {
            cleanup(); throw Failure(code: .todoLink, cause: "\(error)")
        }
        if sync.directories {
            do { try Sys.syncDirectory(names.directory(.todo, id)) } catch {
                // The message is linked; durability of the link is in doubt.
                // Undo so the client retries rather than trusting it.
                _ = unlink(todoPath)
                cleanup(); throw Failure(code: .syncDirectory, cause: "\(error)")
            }
        }
        if pullTrigger { Injection.pullTrigger() }
        return Queued(id: id, messageBytes: size)
    }

    /// Copies descriptor `from` to `to`; read errors are exit 54, write errors 53.
    func copy(from: Int32, to: Int32, path: String) throws -> Int {
        var total = 0
        let cap = 65536
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: cap, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n: Int
            do { n = try Sys.read(from, into: buf) } catch {
                throw Failure(code: .readError, cause: "reading the message: \(error.systemError.reason)")
            }
            if n == 0 { return total }
            do { try Sys.write(to, UnsafeRawBufferPointer(rebasing: buf[0..<n]), path: path) } catch {
                throw Failure(code: .writeErrorOrDiskFull, cause: "\(error)")
            }
            total += n
        }
    }

    /// Reads the client's envelope and writes the queue file: `u`, `p`, `F`,
    /// `T`…, then `e` (QQEH). First byte not `F` or a recipient not `T`: 79;
    /// an address of 1003 bytes or more: 11; end of input early: 54.
    func writeEnvelope(from input: Int32, to output: Int32, path: String, pid: Int32) throws {
        var reader = BufferedReader(fd: input, path: "envelope")
        var writer = BufferedWriter(fd: output, path: path)
        func put(_ bytes: some Collection<UInt8>) throws {
            do { try writer.write(bytes) } catch { throw Failure(code: .writeErrorOrDiskFull, cause: "\(error)") }
        }
        func next() throws -> UInt8 {
            let b: UInt8?
            do { b = try reader.byte() } catch { throw Failure(code: .readError, cause: "reading the envelope: \(error.systemError.reason)") }
            guard let b else { throw Failure(code: .readError, cause: "envelope ended early") }
            return b
        }
        func address() throws {
            let r: (bytes: [UInt8], terminated: Bool)
            do { r = try reader.read(until: 0, limit: Envelope.addressLimit) } catch {
                throw Failure(code: .readError, cause: "reading the envelope: \(error.systemError.reason)")
            }
            if r.bytes.count >= Envelope.addressLimit {
                throw Failure(code: .addressTooLong, cause: "envelope address longer than \(Envelope.addressLimit - 1) bytes")
            }
            if !r.terminated { throw Failure(code: .readError, cause: "envelope ended early") }
            try put(r.bytes)
            try put(CollectionOfOne(0))
        }
        try put(Array("u\(getuid())\0p\(pid)\0".utf8))
        guard try next() == UInt8(ascii: "F") else {
            throw Failure(code: .envelopeFormat, cause: "envelope does not start with F")
        }
        try put(CollectionOfOne(UInt8(ascii: "F")))
        try address()
        while true {
            let b = try next()
            if b == 0 { break }
            guard b == UInt8(ascii: "T") else {
                throw Failure(code: .envelopeFormat, cause: "envelope recipient does not start with T")
            }
            try put(CollectionOfOne(b))
            try address()
        }
        if let qqeh, !qqeh.isEmpty {
            try put(CollectionOfOne(UInt8(ascii: "e")))
            try put(qqeh)
            if qqeh.last != UInt8(ascii: "\n") { try put(CollectionOfOne(UInt8(ascii: "\n"))) }
            try put(CollectionOfOne(0))
        }
        do { try writer.flush() } catch { throw Failure(code: .writeErrorOrDiskFull, cause: "\(error)") }
    }

    /// Wakes the scheduler through `lock/trigger` (relative to the queue); every error is ignored.
    public static func pullTrigger(queueDir: String? = nil) {
        let path = (queueDir.map { $0 + "/" } ?? "") + "lock/trigger"
        let fd = Glibc.open(path, O_WRONLY | O_NDELAY | O_CLOEXEC)
        if fd == -1 { return }
        var zero: UInt8 = 0
        _ = Glibc.write(fd, &zero, 1)
        Glibc.close(fd)
    }
}
