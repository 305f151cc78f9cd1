// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift builds of qmail-inject and sendmail. Keep it Embedded-clean:
// typed throws, no existentials, no casts.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
import QueueFormat
import SystemIO
import ControlFiles
#endif

/// The queue-client layer (qmail's `qmail.c`): the one way a program puts mail
/// into the queue. It starts the queue program, writes the message on the
/// program's descriptor 0 and the envelope on its descriptor 1, collects custom
/// error text from `ERROR_FD`, and maps the exit status to qmail's `D…`/`Z…` text.
///
/// Program choice: `NULLQUEUE` set (even empty) → qmail-nullqueue; else, for
/// bounces, `BOUNCEQUEUE`; else `QMAILQUEUE` (split into arguments at spaces);
/// else qmail-queue next to this executable (or in `$QMAILHOME/bin`).
public final class QueueSession {
    /// The queue program's pid: qmail's "qp".
    public let qp: pid_t
    private var messageFD: Int32
    private var envelopeFD: Int32
    private var errorFD: Int32
    private var message: BufferedWriter
    private var envelope: BufferedWriter
    private var writeError = false
    private var closed = false

    /// What the client layer decided to run.
    public struct Program: Equatable, Sendable {
        public var arguments: [String]
        /// Descriptor number for custom error text in the child; nil = disabled (`ERROR_FD=-1`).
        public var errorFD: Int32?
        public init(arguments: [String], errorFD: Int32?) {
            self.arguments = arguments
            self.errorFD = errorFD
        }
    }

    /// Decides the program the way `qmail_open` does, from the environment.
    public static func chooseProgram(forBounce: Bool = false,
                                     environment: (String) -> String? = Sys.environment) -> Program {
        var errorFD: Int32? = 2
        if let e = environment("ERROR_FD"), let v = Int32(e.trimmingCharacters(" ")) {
            errorFD = v < 0 ? nil : v
        }
        if environment("NULLQUEUE") != nil {
            return Program(arguments: [Paths.program("qmail-nullqueue")], errorFD: errorFD)
        }
        var spec = environment("QMAILQUEUE")
        if forBounce, let b = environment("BOUNCEQUEUE"), !b.isEmpty { spec = b }
        if let spec, !spec.isEmpty {
            // makeargs: split at spaces only when something follows the last space.
            if let lastSpace = spec.lastIndex(of: " "), spec.index(after: lastSpace) < spec.endIndex {
                let parts = spec.split(separator: " ").map(String.init)
                return Program(arguments: parts, errorFD: errorFD)
            }
            return Program(arguments: [spec], errorFD: errorFD)
        }
        return Program(arguments: [Paths.program("qmail-queue")], errorFD: errorFD)
    }

    /// A queue program that could not even be started.
    public struct StartFailure: Error, CustomStringConvertible {
        public let text: [UInt8]
        public let cause: SystemError
        public var description: String { String(decoding: text, as: UTF8.self) }
    }

    /// Starts the queue program. `environment` nil = inherit ours.
    public init(program: Program, environment: [String]? = nil) throws(StartFailure) {
        qs_ignore_sigpipe()
        let msg: (read: Int32, write: Int32)
        let env: (read: Int32, write: Int32)
        var err: (read: Int32, write: Int32)? = nil
        do throws(SystemError) {
            msg = try Spawn.pipe()
            env = try Spawn.pipe()
        } catch {
            throw StartFailure(text: Array(QueueClientText.text(forExitCode: 60).utf8), cause: error)
        }
        if program.errorFD != nil {
            do throws(SystemError) { err = try Spawn.pipe() } catch {
                Sys.close(msg.read); Sys.close(msg.write); Sys.close(env.read); Sys.close(env.write)
                throw StartFailure(text: Array(QueueClientText.text(forExitCode: 60).utf8), cause: error)
            }
        }
        var maps = [Spawn.FDMap(msg.read, at: 0), Spawn.FDMap(env.read, at: 1)]
        if let e = err, let target = program.errorFD { maps.append(Spawn.FDMap(e.write, at: target)) }
        let pid: pid_t
        do throws(SystemError) {
            pid = try Spawn.start(program.arguments[0], arguments: program.arguments, environment: environment,
                                  fds: maps, keepStandard: true, directory: "/")
        } catch {
            for fd in [msg.read, msg.write, env.read, env.write, err?.read ?? -1, err?.write ?? -1] where fd >= 0 { Sys.close(fd) }
            // qmail_open: a failed fork is "unable to fork" (121); anything that failed the
            // exec in the child is the child's exit 120, "unable to exec qq".
            let e = error.errno
            let code: Int32 = (e == EAGAIN || e == ENOMEM) ? 121 : 120
            throw StartFailure(text: Array(QueueClientText.text(forExitCode: code).utf8), cause: error)
        }
        Sys.close(msg.read)
        Sys.close(env.read)
        if let e = err { Sys.close(e.write) }
        qp = pid
        messageFD = msg.write
        envelopeFD = env.write
        errorFD = err?.read ?? -1
        message = BufferedWriter(fd: msg.write, path: "message pipe")
        envelope = BufferedWriter(fd: env.write, path: "envelope pipe")
    }

    /// Convenience: choose from the environment and start.
    public convenience init(forBounce: Bool = false) throws(StartFailure) {
        try self.init(program: QueueSession.chooseProgram(forBounce: forBounce))
    }

    /// Appends message bytes (`qmail_put`). Errors are remembered, not thrown.
    public func put(_ bytes: some Collection<UInt8>) {
        if writeError || messageFD < 0 { return }
        do { try message.write(bytes) } catch { writeError = true }
    }

    public func put(_ text: String) { put(Array(text.utf8)) }

    /// Marks the injection as failed on purpose (`qmail_fail`).
    public func fail() { writeError = true }

    /// Copies the rest of descriptor `fd` (the message's body, after the header
    /// the caller put) through `chunk`, keeping the last byte copied in `last`. On
    /// a read error the injection is poisoned (`fail`) and the error returned.
    public func putRest(of fd: Int32, chunk: UnsafeMutableRawBufferPointer, last: inout UInt8?) -> SystemError? {
        while true {
            let n: Int
            do throws(SystemError) { n = try Sys.read(fd, into: chunk, path: "standard input") } catch {
                fail()
                return error
            }
            if n == 0 { return nil }
            put(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            last = chunk[n - 1]
        }
    }

    private func endMessage() {
        if messageFD < 0 { return }
        if !writeError { do { try message.flush() } catch { writeError = true } }
        Sys.close(messageFD)
        messageFD = -1
    }

    /// Ends the message and writes the sender (`qmail_from`).
    public func from(_ sender: some Collection<UInt8>) {
        endMessage()
        putEnvelope(UInt8(ascii: "F"), sender)
    }

    /// Adds a recipient (`qmail_to`).
    public func to(_ recipient: some Collection<UInt8>) {
        putEnvelope(UInt8(ascii: "T"), recipient)
    }

    public func from(_ sender: String) { from(Array(sender.utf8)) }
    public func to(_ recipient: String) { to(Array(recipient.utf8)) }

    private func putEnvelope(_ type: UInt8, _ text: some Collection<UInt8>) {
        if writeError { return }
        do {
            try envelope.write(byte: type)
            // qmail_puts stops at a NUL: an address never splits into two records.
            try envelope.write(text.prefix { $0 != 0 })
            try envelope.write(byte: 0)
        } catch { writeError = true }
    }

    /// Finishes the envelope, waits for the queue program and returns the
    /// client text: empty = queued; otherwise `D…` or `Z…` (`qmail_close`).
    public func close() -> QueueResult {
        precondition(!closed, "QueueSession.close called twice")
        closed = true
        endMessage()
        if !writeError {
            do { try envelope.write(byte: 0); try envelope.flush() } catch { writeError = true }
        }
        Sys.close(envelopeFD)
        var custom: [UInt8]? = nil
        if errorFD >= 0 {
            custom = (try? Sys.readAll(errorFD, limit: 1023)) ?? []
            // Read the rest to its end rather than close early: a queue program (a
            // filter in front of qmail-queue) writing more would die of SIGPIPE and
            // its real exit code would be lost.
            Sys.discardToEnd(errorFD)
            Sys.close(errorFD)
        }
        let outcome: QueueProgramOutcome
        switch try? Spawn.wait(qp) {
        case .exited(let code)?: outcome = .exited(code: code, customText: custom)
        case .signaled(let sig)?: outcome = .signaled(sig)
        case nil: outcome = .waitSurprise
        }
        return QueueResult(text: QueueClientText.text(for: outcome, clientWriteError: writeError), outcome: outcome)
    }

    deinit {
        if !closed {
            if messageFD >= 0 { Sys.close(messageFD) }
            Sys.close(envelopeFD)
            if errorFD >= 0 { Sys.close(errorFD) }
            _ = try? Spawn.wait(qp)
        }
    }
}

/// The result of one injection: the client text (empty on success).
public struct QueueResult: Equatable, Sendable {
    public let text: [UInt8]
    public let outcome: QueueProgramOutcome

    public init(text: [UInt8], outcome: QueueProgramOutcome) {
        self.text = text
        self.outcome = outcome
    }

    public var isQueued: Bool { text.isEmpty }
    /// `D…`: the message was refused for good.
    public var isPermanent: Bool { text.first == UInt8(ascii: "D") }
    /// The text after the D/Z letter, as programs print it (`qqx+1`).
    public var message: String { String(decoding: text.dropFirst(), as: UTF8.self) }
    public var string: String { String(decoding: text, as: UTF8.self) }
}

extension String {
    func trimmingCharacters(_ c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s = s.dropFirst() }
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}

/// Queues a whole message in one call; returns the client result.
public func queueMessage(_ message: some Collection<UInt8>, sender: some Collection<UInt8>,
                         recipients: [[UInt8]], forBounce: Bool = false) -> (result: QueueResult, qp: pid_t?) {
    let session: QueueSession
    do throws(QueueSession.StartFailure) { session = try QueueSession(forBounce: forBounce) } catch {
        return (QueueResult(text: error.text, outcome: .exited(code: 120, customText: nil)), nil)
    }
    session.put(message)
    session.from(sender)
    for r in recipients { session.to(r) }
    return (session.close(), session.qp)
}
