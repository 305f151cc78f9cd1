#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueClient

/// Putting a message into the queue the way the helpers do (`qmail_open`,
/// `qmail_put`, `qmail_from`, `qmail_to`, `qmail_close`), through the
/// queue-client layer: `QMAILQUEUE`, `NULLQUEUE`, `ERROR_FD` and the seed's
/// texts apply. A refusal ends the program: exit 100 for a `D…` text, 111
/// for a `Z…` one, with `<prog>: fatal: <text>`.
public struct Outgoing {
    public let tool: Tool
    public let session: QueueSession

    /// Starts the queue program; failure → 111 `<prog>: fatal: <openFailure><error>`.
    public init(_ tool: Tool, openFailure: String = "unable to fork: ", openFailureCode: Int32 = 111) {
        self.tool = tool
        do throws(QueueSession.StartFailure) {
            session = try QueueSession(program: QueueSession.chooseProgram())
        } catch {
            tool.fatal(openFailureCode, openFailure + errorText(error.cause.errno))
        }
    }

    public func put(_ bytes: some Collection<UInt8>) { session.put(bytes) }
    public func put(_ text: String) { session.put(text) }

    /// Copies descriptor `fd` to its end; a read error aborts the injection and
    /// ends the program with 111 `<prog>: fatal: unable to read message: <err>`.
    public func copy(from fd: Int32, readFailure: String = "unable to read message: ") {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n == 0 { return }
            if n < 0 {
                let e = qs_errno()
                if e == EINTR { continue }
                abort()
                tool.fatal(111, readFailure + errorText(e))
            }
            session.put(buffer[0..<n])
        }
    }

    /// Gives up: the queue program sees no envelope and queues nothing.
    public func abort() {
        session.fail()
        _ = session.close()
    }

    /// Writes the envelope and waits for the queue program. Returns its pid
    /// (the "qp") on success; otherwise ends the program with the queue's text.
    @discardableResult
    public func finish(sender: String, recipients: [String]) -> pid_t {
        let r = finishReporting(sender: sender, recipients: recipients)
        if !r.isQueued { tool.fatal(r.isPermanent ? 100 : 111, r.message) }
        return session.qp
    }

    /// The same, returning the result (for programs with texts of their own).
    public func finishReporting(sender: String, recipients: [String]) -> QueueResult {
        session.from(sender)
        for r in recipients { session.to(r) }
        return session.close()
    }
}
