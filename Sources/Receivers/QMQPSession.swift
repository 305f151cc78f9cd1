#if canImport(Glibc)
import Glibc
#endif
import QueueFormat

/// Limits and switches the QMTP and QMQP servers share.
public struct NetstringServerSettings: Sendable {
    /// The largest message length prefix (and QMQP package) accepted at all:
    /// qmail's 200,000,000. A larger prefix ends the connection at once.
    public var maxPackage = 200_000_000
    /// The recipient bytes one message may carry (kept in memory until the
    /// envelope is written): a larger list ends the connection.
    public var maxRecipientBytes = 10_000_000
    /// Addresses of this many bytes or more are refused (qmail: 1000).
    public var maxAddress = 1000
    /// The whole session's bound in seconds (qmail's `alarm(3600)`).
    public var sessionSeconds = 3600
    /// `HIDE_HOST` (qmail-qmtpd only; qmail-qmqpd never hides).
    public var hideHost = false
    public init() {}
}

/// How a QMTP or QMQP session ended: qmail's exit codes (0 = the client left
/// or was answered, 100 = it broke the protocol, 111 = a limit or timeout).
public enum NetstringSessionEnd: Int32, Sendable {
    case done = 0
    case protocolViolation = 100
    case temporary = 111
}

extension NetstringInput.Failure {
    var end: NetstringSessionEnd {
        switch self {
        case .eof: return .done
        case .timeout: return .temporary
        case .malformed(.tooLong): return .temporary
        case .malformed, .overBudget: return .protocolViolation
        }
    }

    var why: String {
        switch self {
        case .eof: return "the client closed the connection"
        case .timeout: return "timeout"
        case .malformed(.tooLong): return "length prefix over the limit"
        case .malformed(.badLength): return "malformed length prefix"
        case .malformed(.missingComma): return "missing comma"
        case .overBudget: return "netstring longer than its package"
        }
    }
}

/// One QMQP connection as qmail-qmqpd holds it: one package (netstring of
/// netstring(message), netstring(sender), netstring(recipient)…), one answer,
/// the end. The message is queued as it is (only the Received line is added);
/// no rcpthosts, no RELAYCLIENT: the server is for trusted clients only.
/// `databytes` (our addition) refuses larger messages.
public final class QMQPSession {
    let io: SMTPTransport
    let input: NetstringInput
    let connection: ConnectionInfo
    let queue: MessageQueue
    let environment: [String]
    let settings: NetstringServerSettings
    let dataBytes: Int
    let log: ((String) -> Void)?

    public init(transport: SMTPTransport, connection: ConnectionInfo, queue: MessageQueue, environment: [String],
                dataBytes: Int, settings: NetstringServerSettings = NetstringServerSettings(), log: ((String) -> Void)? = nil) {
        io = transport
        input = NetstringInput(io: transport, deadline: Int(time(nil)) + settings.sessionSeconds)
        self.connection = connection
        self.queue = queue
        self.environment = environment
        self.settings = settings
        self.dataBytes = dataBytes
        self.log = log
    }

    static let badAddress = Array("Dsorry, I can't accept addresses like that (#5.1.3)".utf8)
    static let tooBig = Array("Dsorry, that message size exceeds my databytes limit (#5.3.4)".utf8)

    /// Serves the connection; the answer (if any) is written and flushed.
    public func run() -> NetstringSessionEnd {
        var txn: QueueTransaction? = nil
        var startFailure: [UInt8]? = nil
        do throws(NetstringInput.Failure) {
            let outer = try input.length(limit: settings.maxPackage)
            input.budget = outer
            // Bounded by the package's budget: a longer length is caught as a protocol error.
            let messageLength = try input.length(limit: settings.maxPackage)
            switch queue.begin(environment: environment) {
            case .success(let t): txn = t
            case .failure(let e): startFailure = e.text
            }
            var received = ReceivedLine()
            received.program = "qmqpd"
            received.remoteHost = connection.remoteHost
            received.remoteInfo = connection.remoteInfo
            received.remoteIP = connection.remoteIP == "unknown" ? nil : connection.remoteIP
            received.localHost = connection.localHost ?? connection.localIP
            txn?.put(Array(received.text(protocol: "QMQP", date: ReceivedLine.date()).utf8)[...])
            let oversize = dataBytes > 0 && messageLength > dataBytes
            if oversize { txn?.fail() }
            try input.content(messageLength) { piece in if !oversize { txn?.put(piece) } }
            try input.comma()
            var bad = false
            let sender = try address(&bad)
            var recipients: [[UInt8]] = []
            var recipientBytes = 0
            while input.budget ?? 0 > 0 {
                let r = try address(&bad)
                recipientBytes += r.count + 1
                if recipientBytes > settings.maxRecipientBytes { throw NetstringInput.Failure.malformed(.tooLong) }
                recipients.append(r)
            }
            input.budget = nil
            try input.comma()
            var answer: [UInt8]
            if bad || oversize { txn?.fail() }
            let text = txn?.finish(sender: sender, recipients: recipients) ?? startFailure ?? []
            if bad { answer = QMQPSession.badAddress }
            else if oversize { answer = QMQPSession.tooBig }
            else if text.isEmpty, let t = txn { answer = Array("Kok \(time(nil)) qp \(t.qp)".utf8) }
            else { answer = QMQPSession.lastLine(text) }
            io.send(Netstring.encode(answer))
            io.flush()
            if answer.first == UInt8(ascii: "K") {
                log?("qmail-qmqpd: pid \(getpid()) from \(connection.remoteIP) MAIL from <\(String(decoding: sender, as: UTF8.self))> RCPT <\(recipients.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ","))> Size: \(messageLength) qp \(txn?.qp ?? 0)")
            } else {
                log?("qmail-qmqpd: from \(connection.remoteIP): \(String(decoding: answer, as: UTF8.self))")
            }
            return .done
        } catch {
            if let t = txn { t.fail(); _ = t.finish(sender: [], recipients: []) }
            if error != .eof { log?("qmail-qmqpd: from \(connection.remoteIP): \(error.why), connection dropped") }
            return error.end
        }
    }

    /// One address netstring; `bad` set when it is too long or holds a NUL.
    func address(_ bad: inout Bool) throws(NetstringInput.Failure) -> [UInt8] {
        let n = try input.length(limit: settings.maxPackage)
        var out: [UInt8] = []
        if n >= settings.maxAddress {
            bad = true
            try input.content(n) { _ in }
        } else {
            out = try input.collect(n)
            if out.contains(0) { bad = true }
        }
        try input.comma()
        return out
    }

    /// A queue text as one response: its last line (a custom error text may hold several).
    static func lastLine(_ text: [UInt8]) -> [UInt8] {
        var t = text
        while t.last == 10 { t.removeLast() }
        if let nl = t.lastIndex(of: 10) { t = Array(t[(nl + 1)...]) }
        if t.first != UInt8(ascii: "D") && t.first != UInt8(ascii: "Z") { t = [UInt8(ascii: "Z")] + t }
        return t
    }
}
