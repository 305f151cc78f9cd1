#if canImport(Glibc)
import Glibc
#endif
import QueueClient
import QueueFormat
import QueueStore

/// Where a receiver hands a message: started before the message is read,
/// given its bytes as they come, then the envelope; the result is qmail's
/// text (empty = queued) and the queue program's pid for `qp`.
public protocol QueueTransaction: AnyObject {
    var qp: Int32 { get }
    func put(_ bytes: ArraySlice<UInt8>)
    /// Poisons the injection (size or hop overflow): nothing will be queued.
    func fail()
    func finish(sender: [UInt8], recipients: [[UInt8]]) -> [UInt8]
}

public protocol MessageQueue: Sendable {
    /// A new transaction, or the queue-client text of why none could start.
    func begin(environment: [String]) -> Result<QueueTransaction, QueueStartError>
}

public struct QueueStartError: Error {
    public let text: [UInt8]
}

/// The queue-client layer (the seed's path): the queue program chosen from the
/// environment (`NULLQUEUE`, `QMAILQUEUE`, else qmail-queue), fed through pipes.
public struct QueueClientQueue: MessageQueue {
    public init() {}

    public func begin(environment: [String]) -> Result<QueueTransaction, QueueStartError> {
        var env: [String: String] = [:]
        for e in environment { if let eq = e.firstIndex(of: "=") { env[String(e[..<eq])] = String(e[e.index(after: eq)...]) } }
        let program = QueueSession.chooseProgram(environment: { env[$0] })
        do {
            let s = try QueueSession(program: program, environment: environment)
            return .success(QueueClientTransaction(session: s))
        } catch {
            return .failure(QueueStartError(text: error.text))
        }
    }
}

final class QueueClientTransaction: QueueTransaction {
    let session: QueueSession
    init(session: QueueSession) { self.session = session }
    var qp: Int32 { session.qp }
    func put(_ bytes: ArraySlice<UInt8>) { session.put(bytes) }
    func fail() { session.fail() }
    func finish(sender: [UInt8], recipients: [[UInt8]]) -> [UInt8] {
        session.from(sender)
        for r in recipients { session.to(r) }
        return session.close().text
    }
}

/// The daemon's own writer: messages go into the queue from this process with
/// qmail-queue's files and order, sharing their flushes (QueueWriter).
public final class InProcessQueue: MessageQueue, @unchecked Sendable {
    public let writer: QueueWriter
    /// Inflow control: nil when off (`flowwindow` 0).
    public let flow: FlowControl.Gate?

    public init(writer: QueueWriter, flow: FlowControl.Gate? = nil) {
        self.writer = writer
        self.flow = flow
    }

    public func begin(environment: [String]) -> Result<QueueTransaction, QueueStartError> {
        // Before the message is accepted (the session's DATA, QMTP's or QMQP's
        // packet): when the engine is behind, the client waits here, not the
        // message in the queue.
        flow?.pass()
        var ip: String? = nil
        for e in environment where e.hasPrefix("TCPREMOTEIP=") { ip = String(e.dropFirst(12)) }
        do throws(Injection.Failure) {
            let t = try writer.begin(invoker: .uid(getuid(), network: true, ip: (ip?.isEmpty ?? true) ? nil : ip))
            return .success(InProcessTransaction(t))
        } catch {
            return .failure(QueueStartError(text: Array(QueueClientText.text(forExitCode: error.code.rawValue).utf8)))
        }
    }
}

final class InProcessTransaction: QueueTransaction {
    let t: QueueWriter.Transaction
    init(_ t: QueueWriter.Transaction) { self.t = t }
    var qp: Int32 { t.qp }
    func put(_ bytes: ArraySlice<UInt8>) { t.put(bytes) }
    func fail() { t.fail() }
    func finish(sender: [UInt8], recipients: [[UInt8]]) -> [UInt8] {
        guard let f = t.finish(sender: sender, recipients: recipients) else { return [] }
        return Array(QueueClientText.text(forExitCode: f.code.rawValue).utf8)
    }
}
