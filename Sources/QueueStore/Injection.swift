// Compiled twice: into QueueStore (qmail-smtpd's in-process queue writer), and
// (through a symbolic link) into qmail-queue, built with Embedded Swift (see
// Package.swift): it starts once per message, and without the Swift runtime's
// start-up and metadata work it costs what a C program does. Keep it
// Embedded-clean: typed throws, no existentials.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
import QueueFormat
import SystemIO
#endif

/// The injection protocol (engine.md §2.2), one implementation for qmail-queue
/// and for the in-process writer of qmail-smtpd's daemon.
///
/// The states are qmail's: a pid file becomes `mess/` (S2), the envelope is
/// written to `intd/` (S3), and one `link` into `todo/` queues it (S4). Every
/// failure removes what was created, so nothing reaches `todo/`. The phases are
/// separate functions so that a writer of many messages can share the syncs of
/// S3→S4 between them; `run` is qmail-queue: the phases one after the other.
public struct Injection {
    /// The queue; paths are made under `root` (empty: relative, after `chdir`).
    public var queueDir: String
    public var root: String
    public var names: QueueNames
    public var sync: SyncPolicy
    public var received: ReceivedLine.Invoker
    public var host: String?
    /// QQEH: headers the engine adds at delivery (`e` record).
    public var qqeh: [UInt8]?
    public var pullTrigger = true
    #if !hasFeature(Embedded)
    /// The daemon's writer: mess and intd files are written into emptied ones
    /// from the `pid/spare.<k>` ring when there are any (SpareSlots).
    public var spares: SpareSlots? = nil
    #endif

    public init(queueDir: String, root: String = "", names: QueueNames, sync: SyncPolicy, received: ReceivedLine.Invoker,
                host: String?, qqeh: [UInt8]?) {
        self.queueDir = queueDir
        self.root = root
        self.names = names
        self.sync = sync
        self.received = received
        self.host = host
        self.qqeh = qqeh
    }

    /// A failure with the exit code qmail-queue reports for it.
    public struct Failure: Error {
        public let code: QueueExitCode
        public let cause: String
        public init(_ code: QueueExitCode, _ cause: String) { self.code = code; self.cause = cause }
        public init(_ code: QueueExitCode, _ failure: SystemError) { self.code = code; self.cause = failure.description }
    }

    /// Addresses of 1003 bytes or more are refused (exit 11), as qmail-queue does
    /// (`Envelope.addressLimit` in QueueFormat, which qmail-queue does not compile in).
    public static let addressLimit = 1003

    func path(_ rel: String) -> String { root.isEmpty ? rel : root + "/" + rel }

    /// A message between S2 and S4: its mess file open for writing, then its intd file.
    public struct Staged {
        public let id: UInt64
        public let messFD: Int32
        public var intdFD: Int32 = -1
        /// Created files (relative names), removed on failure.
        var created: [String]
        /// The mess (intd) file is an emptied one, to be cut to what was written.
        var reusedMess = false
        var reusedIntd = false
    }

    /// A reused file cut to its written length (its write offset).
    func cutAtOffset(_ fd: Int32, path p: String) throws(SystemError) {
        let end = lseek(fd, 0, SEEK_CUR)
        if end == -1 || ftruncate(fd, end) == -1 { throw SystemError("ftruncate", path: p) }
    }

    /// After the message's last byte: a mess file written into a spare is cut to
    /// its length (nothing to do for a new file).
    public func finishMessage(_ s: Staged) throws(Failure) {
        guard s.reusedMess else { return }
        do throws(SystemError) { try cutAtOffset(s.messFD, path: names.path(.mess, s.id)) } catch {
            throw Failure(.writeErrorOrDiskFull, error)
        }
    }

    /// Removes what a failed injection created: truncated first, so a crash
    /// between the two calls leaves no large file.
    public func discard(_ s: Staged) {
        for rel in s.created.reversed() { let p = path(rel); _ = truncate(p, 0); _ = unlink(p) }
        if s.messFD >= 0 { Sys.close(s.messFD) }
        if s.intdFD >= 0 { Sys.close(s.intdFD) }
    }

    /// S1 → S2: a pid file named after `pid`, `start` and a sequence number,
    /// linked into `mess/` under its inode number; the Received line written.
    public func createMessage(pid: Int32, start: time_t, sequence: Int = 0, invoker: ReceivedLine.Invoker? = nil) throws(Failure) -> Staged {
        var pidPath = ""
        var messFD: Int32 = -1
        var reused = false
        func pidName(_ last: String) -> String { "pid/\(pid).\(start).\(sequence > 0 ? "\(sequence)." : "")\(last)" }
        #if !hasFeature(Embedded)
        if let spares {
            let p = pidName("s")
            if let fd = spares.claim(as: path(p)) { pidPath = p; messFD = fd; reused = true }
        }
        #endif
        if messFD == -1 {
            for seq in 1...9 {
                let p = pidName("\(seq)")
                if let fd = try? Sys.createExclusive(path(p), mode: 0o644) { pidPath = p; messFD = fd; break }
            }
        }
        if messFD == -1 { throw Failure(.pidFile, SystemError("open", path: "pid/\(pid).\(start).N")) }
        let st: stat
        do throws(SystemError) { st = try Sys.fstat(messFD, path: pidPath) } catch {
            _ = unlink(path(pidPath)); Sys.close(messFD)
            throw Failure(.messFile, error)
        }
        let id = UInt64(st.st_ino)
        let messPath = names.path(.mess, id)
        do throws(SystemError) { try Sys.link(path(pidPath), path(messPath)) } catch {
            _ = unlink(path(pidPath)); Sys.close(messFD)
            throw Failure(.messLink, error)
        }
        var staged = Staged(id: id, messFD: messFD, created: [messPath])
        staged.reusedMess = reused
        do throws(SystemError) { try Sys.unlink(path(pidPath)) } catch {
            discard(staged)
            throw Failure(.unlinkPid, error)
        }
        let line = ReceivedLine(pid: pid, host: host, invoker: invoker ?? received, date: Date822.local(start)).bytes()
        do throws(SystemError) { try Sys.write(messFD, line, path: messPath) } catch {
            discard(staged)
            throw Failure(.writeErrorOrDiskFull, error)
        }
        return staged
    }

    /// S3: the envelope into `intd/`, from the client's bytes given one at a
    /// time by `next` (nil: the input ended).
    public func writeIntd(_ s: inout Staged, pid: Int32, next: () throws(Failure) -> UInt8?) throws(Failure) {
        let intdPath = names.path(.intd, s.id)
        #if !hasFeature(Embedded)
        if let spares, let fd = spares.claimExclusive(as: path(intdPath)) { s.intdFD = fd; s.reusedIntd = true }
        #endif
        if s.intdFD == -1 {
            do throws(SystemError) { s.intdFD = try Sys.createExclusive(path(intdPath), mode: 0o644) } catch {
                throw Failure(.intdCreate, error)
            }
        }
        s.created.append(intdPath)
        try writeEnvelope(next: next, to: s.intdFD, path: intdPath, pid: pid)
        if s.reusedIntd {
            do throws(SystemError) { try cutAtOffset(s.intdFD, path: intdPath) } catch { throw Failure(.writeErrorOrDiskFull, error) }
        }
    }

    /// The file syncs of one message (mess and intd) and of the mess/ folder entry,
    /// as the policy says.
    public func syncFiles(_ s: Staged) throws(Failure) {
        do throws(SystemError) {
            for (fd, p) in [(s.messFD, names.path(.mess, s.id)), (s.intdFD, names.path(.intd, s.id))] {
                let e = sync.syncFile(fd)
                if e != 0 { throw SystemError(sync.fileSyncCall, path: p, errno: e) }
            }
            // The mess/ entry too (indimail's syncdir does it for every link): once todo/
            // shows the message, a crash must not leave it without its message file.
            if sync.directories { try Sys.syncDirectory(path(names.directory(.mess, s.id))) }
        } catch {
            throw Failure(.syncMessage, error)
        }
    }

    /// S4: one link makes the message visible to the scheduler. The descriptors
    /// are closed; on failure the files are removed.
    public func link(_ s: Staged) throws(Failure) {
        do throws(SystemError) { try Sys.link(path(names.path(.intd, s.id)), path(names.path(.todo, s.id))) } catch {
            discard(s)
            throw Failure(.todoLink, error)
        }
        Sys.close(s.messFD)
        Sys.close(s.intdFD)
    }

    /// After S4: the todo/ entry synced; on failure the message is taken back out.
    public func syncTodo(_ s: Staged) throws(Failure) {
        guard sync.directories else { return }
        do throws(SystemError) { try Sys.syncDirectory(path(names.directory(.todo, s.id))) } catch {
            // The message is linked; durability of the link is in doubt.
            // Undo so the client retries rather than trusting it.
            _ = unlink(path(names.path(.todo, s.id)))
            for rel in s.created.reversed() { let p = path(rel); _ = truncate(p, 0); _ = unlink(p) }
            throw Failure(.syncDirectory, error)
        }
    }

    /// qmail-queue: the message on `messageFD` (normally 0), the envelope on
    /// `envelopeFD` (normally 1). The working directory becomes the queue.
    public func run(messageFD: Int32 = 0, envelopeFD: Int32 = 1) throws(Failure) {
        do throws(SystemError) { try Sys.chdir(queueDir) } catch { throw Failure(.homeDirectory, error) }
        let pid = getpid()
        var s = try createMessage(pid: pid, start: time(nil))
        do throws(Failure) {
            try copy(from: messageFD, to: s.messFD, path: names.path(.mess, s.id))
            var reader = BufferedReader(fd: envelopeFD, path: "envelope")
            try writeIntd(&s, pid: pid) { () throws(Failure) -> UInt8? in
                do throws(SystemError) { return try reader.byte() } catch {
                    throw Failure(.readError, "reading the envelope: " + error.reason)
                }
            }
            try syncFiles(s)
        } catch {
            discard(s); throw error
        }
        try link(s)
        try syncTodo(s)
        if pullTrigger { Injection.pullTrigger(at: "") }
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
    /// address with CR or LF in it: 79; an address of 1003 bytes or more: 11;
    /// end of input early: 54. Written through a 64 KB buffer, so a long
    /// recipient list is never held whole.
    func writeEnvelope(next nextByte: () throws(Failure) -> UInt8?, to output: Int32, path: String, pid: Int32) throws(Failure) {
        var writer = BufferedWriter(fd: output, path: path)
        func put(_ bytes: some Collection<UInt8>) throws(Failure) {
            do throws(SystemError) { try writer.write(bytes) } catch { throw Failure(.writeErrorOrDiskFull, error) }
        }
        func next() throws(Failure) -> UInt8 {
            guard let b = try nextByte() else { throw Failure(.readError, "envelope ended early") }
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

    /// Wakes the scheduler through `lock/trigger` under `root` ("" = relative to
    /// the working directory); every error is ignored.
    public static func pullTrigger(at root: String) {
        let fd = qs_open(root.isEmpty ? "lock/trigger" : root + "/lock/trigger", O_WRONLY | O_NDELAY | O_CLOEXEC, 0)
        if fd == -1 { return }
        var zero: UInt8 = 0
        _ = write(fd, &zero, 1)
        close(fd)
    }
}
