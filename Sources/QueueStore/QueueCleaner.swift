#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import SystemIO

/// The engine's side of qmail-clean: the removals in folders only `qmailq` may
/// write (`mess/`, `intd/`, `todo/`), asked of a long-lived `qmail-clean`
/// running as `qmailq` when the engine itself runs as `qmails`.
///
/// The protocol is classic qmail's: `todo/<id>\0` removes intd/<id> and
/// todo/<id>; `foop/<id>\0` removes intd/<id> and mess/<split>/<id>. The answer
/// is one byte: `+` done, `!` a removal failed, `x` a request it refused.
///
/// The pipes are guarded by a plain pthread mutex, not `Synchronization.Mutex`:
/// a request holds the lock while it waits for qmail-clean's answer, and
/// Swift's mutex spins before it sleeps, so the engine's other todo threads
/// burnt CPU waiting their turn (1.7 % of a 16-session SMTP run's CPU).
public final class QueueCleaner: @unchecked Sendable {
    struct Pipes { var command: Int32; var answer: Int32; var pid: pid_t; var alive = true }
    private let lock = ConditionLock()
    private var p: Pipes

    /// Runs `body` with the pipes, holding the lock.
    private func withPipes<T>(_ body: (inout Pipes) throws(SystemError) -> T) throws(SystemError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&p)
    }

    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Starts `program` in `queueDir` as the given user (nil: as we are).
    public init(program: String, queueDir: String, environment: [String]? = nil,
                credentials: Spawn.Credentials?) throws(SystemError) {
        let cmd = try Spawn.pipe(), ans = try Spawn.pipe()
        let pid: pid_t
        do {
            pid = try Spawn.start(program, arguments: ["qmail-clean"], environment: environment,
                                  fds: [.init(cmd.read, at: 0), .init(ans.write, at: 1)], keepStandard: true,
                                  directory: queueDir, credentials: credentials)
        } catch {
            Sys.close(cmd.read); Sys.close(cmd.write); Sys.close(ans.read); Sys.close(ans.write)
            throw error
        }
        Sys.close(cmd.read); Sys.close(ans.write)
        p = Pipes(command: cmd.write, answer: ans.read, pid: pid)
    }

    /// Sends one request and waits for its answer.
    func ask(_ request: String) throws(SystemError) {
        let answer: UInt8 = try withPipes { (p: inout Pipes) throws(SystemError) -> UInt8 in
            do throws(SystemError) { try Sys.write(p.command, Array(request.utf8) + [0], path: "qmail-clean") } catch {
                p.alive = false
                throw error
            }
            var b: UInt8 = 0
            while true {
                let n = read(p.answer, &b, 1)
                if n == 1 { return b }
                if n == -1 && qs_errno() == EINTR { continue }
                p.alive = false
                throw SystemError("read", path: "qmail-clean", errno: n == 0 ? EPIPE : qs_errno())
            }
        }
        if let error = QueueCleaner.failure(answer, to: request) { throw error }
    }

    /// What an answer byte says about its request: nil for `+` (done).
    static func failure(_ answer: UInt8, to request: String) -> SystemError? {
        switch answer {
        case UInt8(ascii: "+"): return nil
        case UInt8(ascii: "!"): return SystemError("unlink", path: request + " (qmail-clean)", errno: EIO)
        default: return SystemError("qmail-clean refused", path: request, errno: EINVAL)
        }
    }

    /// Several requests in one exchange: written together, then their answers read
    /// (at most 1,000 at a time, far below what the pipes hold). One answer byte each.
    func askAll(_ requests: [String]) throws(SystemError) -> [UInt8] {
        var answers: [UInt8] = []
        var start = 0
        while start < requests.count {
            let chunk = requests[start..<min(start + 1000, requests.count)]
            start += chunk.count
            let got: [UInt8] = try withPipes { (p: inout Pipes) throws(SystemError) -> [UInt8] in
                var bytes: [UInt8] = []
                for r in chunk { bytes += Array(r.utf8); bytes.append(0) }
                do throws(SystemError) { try Sys.write(p.command, bytes, path: "qmail-clean") } catch {
                    p.alive = false
                    throw error
                }
                var out = [UInt8](repeating: 0, count: chunk.count)
                var have = 0
                while have < out.count {
                    let n = out.withUnsafeMutableBytes { read(p.answer, $0.baseAddress! + have, $0.count - have) }
                    if n > 0 { have += n; continue }
                    if n == -1 && qs_errno() == EINTR { continue }
                    p.alive = false
                    throw SystemError("read", path: "qmail-clean", errno: n == 0 ? EPIPE : qs_errno())
                }
                return out
            }
            answers += got
        }
        return answers
    }

    /// `foop/<id>` for each id in one exchange: whether each removal was done.
    public func removeMessages(_ ids: [UInt64]) throws(SystemError) -> [Bool] {
        try askAll(ids.map { "foop/\($0)" }).map { $0 == UInt8(ascii: "+") }
    }

    /// Removes the spare files in `pid/` (SpareSlots).
    public func dropSpares() throws(SystemError) { try ask("drop/0") }

    /// False once qmail-clean stopped answering (the engine then dies, as qmail-send does).
    public var alive: Bool { lock.withLock { p.alive } }

    /// `todo/<id>` (intd/<id>, then todo/<id>) for each id in one exchange: nil where
    /// it was done, else what went wrong. Throws when qmail-clean does not answer.
    public func removeTodos(_ ids: [UInt64]) throws(SystemError) -> [SystemError?] {
        let requests = ids.map { "todo/\($0)" }
        return zip(try askAll(requests), requests).map { QueueCleaner.failure($0, to: $1) }
    }
    /// intd/<id>, then mess/<split>/<id>.
    public func removeMessage(_ id: UInt64) throws(SystemError) { try ask("foop/\(id)") }

    /// Closes the command pipe; qmail-clean exits.
    public func finish() {
        let pid = lock.withLock { () -> pid_t in
            Sys.close(p.command); Sys.close(p.answer)
            p.command = -1; p.answer = -1
            return p.pid
        }
        _ = try? Spawn.wait(pid)
    }
}
