// qmail-queue is built with Embedded Swift (see Package.swift): it starts once per
// message, and without the Swift runtime's start-up and metadata work it costs what
// a C program does. Its file calls are SystemIO's `Sys` and buffered I/O, compiled in
// through the symbolic links beside this file.
import CShims

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
        init(_ code: QueueExitCode, _ failure: SystemError) { self.code = code; self.cause = failure.description }
    }

    /// Addresses of 1003 bytes or more are refused (exit 11), as qmail-queue does
    /// (`Envelope.addressLimit` in QueueFormat, which this program does not compile in).
    static let addressLimit = 1003

    /// Runs the whole protocol. The working directory becomes the queue.
    func run(messageFD: Int32 = 0, envelopeFD: Int32 = 1) throws(Failure) {
        do throws(SystemError) { try Sys.chdir(queueDir) } catch { throw Failure(.homeDirectory, error) }
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
        if messFD == -1 { throw Failure(.pidFile, SystemError("open", path: "pid/\(pid).\(start).N")) }
        defer { Sys.close(messFD) }
        let st: stat
        do throws(SystemError) { st = try Sys.fstat(messFD, path: pidPath) } catch {
            _ = unlink(pidPath)
            throw Failure(.messFile, error)
        }
        let id = UInt64(st.st_ino)
        let messPath = names.path(.mess, id)

        // S2: pid file linked to mess/<split>/<id>.
        do throws(SystemError) { try Sys.link(pidPath, messPath) } catch {
            _ = unlink(pidPath)
            throw Failure(.messLink, error)
        }
        created.append(messPath)
        do throws(SystemError) { try Sys.unlink(pidPath) } catch {
            cleanup()
            throw Failure(.unlinkPid, error)
        }

        // Message: Received line, then descriptor 0 copied.
        let line = ReceivedLine(pid: pid, host: host, invoker: received, date: Date822.local(start)).bytes()
        do throws(Failure) {
            do throws(SystemError) { try Sys.write(messFD, line, path: messPath) } catch { throw Failure(.writeErrorOrDiskFull, error) }
            try copy(from: messageFD, to: messFD, path: messPath)
        } catch {
            cleanup(); throw error
        }

        // S3: the envelope into intd/.
        let intdPath = names.path(.intd, id)
        let intdFD: Int32
        do throws(SystemError) { intdFD = try Sys.createExclusive(intdPath, mode: 0o644) } catch {
            cleanup(); throw Failure(.intdCreate, error)
        }
        created.append(intdPath)
        defer { Sys.close(intdFD) }
        do throws(Failure) {
            try writeEnvelope(from: envelopeFD, to: intdFD, path: intdPath, pid: pid)
        } catch {
            cleanup(); throw error
        }

        do throws(SystemError) {
            for (fd, path) in [(messFD, messPath), (intdFD, intdPath)] {
                let e = sync.syncFile(fd)
                if e != 0 { throw SystemError(sync.fileSyncCall, path: path, errno: e) }
            }
            // The mess/ entry too (indimail's syncdir does it for every link): once todo/
            // shows the message, a crash must not leave it without its message file.
            if sync.directories { try Sys.syncDirectory(names.directory(.mess, id)) }
        } catch {
            cleanup(); throw Failure(.syncMessage, error)
        }

        // S4: one link makes the message visible to the scheduler.
        let todoPath = names.path(.todo, id)
        do throws(SystemError) { try Sys.link(intdPath, todoPath) } catch {
            cleanup(); throw Failure(.todoLink, error)
        }
        if sync.directories {
            do throws(SystemError) { try Sys.syncDirectory(names.directory(.todo, id)) } catch {
                // The message is linked; durability of the link is in doubt.
                // Undo so the client retries rather than trusting it.
                _ = unlink(todoPath)
                cleanup(); throw Failure(.syncDirectory, error)
            }
        }
        if pullTrigger { Injection.pullTrigger() }
    }

    /// Copies descriptor `from` to `to`; read errors are exit 54, write errors 53.
    func copy(from: Int32, to: Int32, path: String) throws(Failure) {
        let cap = 65536
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: cap, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n: Int
            do throws(SystemError) { n = try Sys.read(from, into: buf) } catch {
                throw Failure(.readError, "reading the message: " + error.reason)
            }
            if n == 0 { return }
            do throws(SystemError) { try Sys.write(to, UnsafeRawBufferPointer(rebasing: buf[0..<n]), path: path) } catch {
                throw Failure(.writeErrorOrDiskFull, error)
            }
        }
    }

    /// Reads the client's envelope and writes the queue file: `u`, `p`, `F`,
    /// `T`…, then `e` (QQEH). First byte not `F`, a recipient not `T`, or an
    /// address with CR or LF in it: 79;
    /// an address of 1003 bytes or more: 11; end of input early: 54. Written
    /// through a 64 KB buffer, so a long recipient list is never held whole.
    func writeEnvelope(from input: Int32, to output: Int32, path: String, pid: Int32) throws(Failure) {
        var reader = BufferedReader(fd: input, path: "envelope")
        var writer = BufferedWriter(fd: output, path: path)
        func put(_ bytes: some Collection<UInt8>) throws(Failure) {
            do throws(SystemError) { try writer.write(bytes) } catch { throw Failure(.writeErrorOrDiskFull, error) }
        }
        func next() throws(Failure) -> UInt8 {
            let b: UInt8?
            do throws(SystemError) { b = try reader.byte() } catch {
                throw Failure(.readError, "reading the envelope: " + error.reason)
            }
            guard let b else { throw Failure(.readError, "envelope ended early") }
            return b
        }
        func address() throws(Failure) {
            var count = 0
            while true {
                let b = try next()
                // No address may hold a line break: written into an SMTP command it
                // would end the line early and let the rest run as commands (RFC 5321
                // allows neither CR nor LF in a path, quoted or not).
                if b == 10 || b == 13 {
                    throw Failure(.envelopeFormat, "envelope address contains a line break (CR or LF)")
                }
                try put(CollectionOfOne(b))
                if b == 0 { return }
                count += 1
                if count >= Injection.addressLimit {
                    throw Failure(.addressTooLong, "envelope address longer than \(Injection.addressLimit - 1) bytes")
                }
            }
        }
        try put(Array("u\(getuid())\0p\(pid)\0".utf8))
        guard try next() == UInt8(ascii: "F") else { throw Failure(.envelopeFormat, "envelope does not start with F") }
        try put(CollectionOfOne(UInt8(ascii: "F")))
        try address()
        while true {
            let b = try next()
            if b == 0 { break }
            guard b == UInt8(ascii: "T") else {
                throw Failure(.envelopeFormat, "envelope recipient does not start with T")
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
        do throws(SystemError) { try writer.flush() } catch { throw Failure(.writeErrorOrDiskFull, error) }
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
