#if canImport(Glibc)
import Glibc
#endif
import QueueFormat

/// One QMTP connection as qmail-qmtpd holds it (qmtp.5): packages of
/// netstring(encoded message), netstring(sender), netstring(netstring(recipient)…),
/// one after the other, each answered with one response per recipient in order.
/// The responses are sent when the server next waits for input (so a client
/// that sends several packages at once gets them together). Recipients are
/// checked against rcpthosts and morercpthosts.cdb unless RELAYCLIENT is set,
/// whose value is then appended to each; databytes bounds the message.
public final class QMTPSession {
    let io: SMTPTransport
    let input: NetstringInput
    let controls: SMTPDControls
    let connection: ConnectionInfo
    let queue: MessageQueue
    let environment: [String]
    let settings: NetstringServerSettings
    let log: ((String) -> Void)?

    public init(transport: SMTPTransport, controls: SMTPDControls, connection: ConnectionInfo, queue: MessageQueue,
                environment: [String], settings: NetstringServerSettings = NetstringServerSettings(),
                log: ((String) -> Void)? = nil) {
        io = transport
        input = NetstringInput(io: transport, deadline: Int(time(nil)) + settings.sessionSeconds)
        self.controls = controls
        self.connection = connection
        self.queue = queue
        self.environment = environment
        self.settings = settings
        self.log = log
    }

    static let relayRefused = Array("Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)".utf8)
    static let badRecipient = Array("Dsorry, I can't handle that recipient (#5.1.3)".utf8)
    static let badSender = Array("Dunacceptable sender (#5.1.7)".utf8)

    /// Serves packages until the client closes the connection.
    public func run() -> NetstringSessionEnd {
        while true {
            do throws(NetstringInput.Failure) {
                if try input.atEnd() { return .done }
            } catch {
                return error.end
            }
            let end = package()
            if let end {
                io.flush()
                return end
            }
        }
    }

    enum Refusal { case relay, unhandled }

    /// One package; nil when it was answered and the session goes on.
    func package() -> NetstringSessionEnd? {
        var txn: QueueTransaction? = nil
        var startFailure: [UInt8]? = nil
        do throws(NetstringInput.Failure) {
            let length = try input.length(limit: settings.maxPackage)
            if length == 0 { throw NetstringInput.Failure.malformed(.badLength) }
            switch queue.begin(environment: environment) {
            case .success(let t): txn = t
            case .failure(let e): startFailure = e.text
            }
            let encoding = try input.byte()
            let crlf: Bool
            switch encoding {
            case 10: crlf = false
            case 13: crlf = true
            default: throw NetstringInput.Failure.malformed(.badLength)
            }
            var received = ReceivedLine()
            received.program = "qmtpd"
            received.remoteHost = connection.remoteHost
            received.remoteInfo = connection.remoteInfo
            received.remoteIP = connection.remoteIP == "unknown" ? nil : connection.remoteIP
            received.localHost = connection.localHost ?? connection.localIP
            received.hide = settings.hideHost
            txn?.put(Array(received.text(protocol: "QMTP", date: ReceivedLine.date()).utf8)[...])
            let limit = controls.dataBytes
            var oversize = false
            var size = 0
            if crlf {
                // CR LF becomes LF; other CRs stay. A CR at the end of one piece waits for the next.
                var pendingCR = false
                var out: [UInt8] = []
                out.reserveCapacity(65536)
                try input.content(length - 1) { piece in
                    for c in piece {
                        if pendingCR {
                            pendingCR = false
                            if c != 10 { out.append(13); size += 1 }
                        }
                        if c == 13 { pendingCR = true; continue }
                        out.append(c)
                        size += 1
                    }
                    if limit > 0 && size > limit { oversize = true; out.removeAll(keepingCapacity: true) }
                    if !oversize && out.count >= 65536 { txn?.put(out[...]); out.removeAll(keepingCapacity: true) }
                }
                if pendingCR { out.append(13); size += 1 }
                if limit > 0 && size > limit { oversize = true }
                if !oversize && !out.isEmpty { txn?.put(out[...]) }
            } else {
                size = length - 1
                oversize = limit > 0 && size > limit
                try input.content(length - 1) { piece in if !oversize { txn?.put(piece) } }
            }
            try input.comma()
            // The sender.
            let senderLength = try input.length(limit: settings.maxPackage)
            var badSender = false
            var sender: [UInt8] = []
            if senderLength >= settings.maxAddress {
                badSender = true
                try input.content(senderLength) { _ in }
            } else {
                sender = try input.collect(senderLength)
                if sender.contains(0) { badSender = true }
            }
            try input.comma()
            // The recipients: one netstring of netstrings.
            let listLength = try input.length(limit: settings.maxRecipientBytes)
            input.budget = listLength
            var refusals: [Refusal?] = []
            var recipients: [[UInt8]] = []
            let relay = connection.relayClient.map { Array($0.utf8) }
            while input.budget ?? 0 > 0 {
                let n = try input.length(limit: settings.maxPackage)
                if n >= input.budget ?? 0 { throw NetstringInput.Failure.overBudget }
                var addr = try input.collect(n)
                try input.comma()
                if n + (relay?.count ?? 0) >= settings.maxAddress || addr.contains(0) {
                    refusals.append(.unhandled)
                    continue
                }
                if let relay { addr += relay }
                else if !controls.rcptHostAllowed(addr) { refusals.append(.relay); continue }
                refusals.append(nil)
                recipients.append(addr)
            }
            input.budget = nil
            try input.comma()
            if recipients.isEmpty || oversize || badSender { txn?.fail() }
            let text = txn?.finish(sender: sender, recipients: recipients) ?? startFailure ?? []
            var result: [UInt8]
            if oversize { result = QMQPSession.tooBig }
            else if badSender { result = QMTPSession.badSender }
            else if text.isEmpty, let t = txn { result = Array("Kok \(time(nil)) qp \(t.qp)".utf8) }
            else { result = QMQPSession.lastLine(text) }
            let qp = txn?.qp ?? 0
            txn = nil
            for r in refusals {
                switch r {
                case nil: io.send(Netstring.encode(result))
                case .relay: io.send(Netstring.encode(QMTPSession.relayRefused))
                case .unhandled: io.send(Netstring.encode(QMTPSession.badRecipient))
                }
            }
            if !recipients.isEmpty {
                if result.first == UInt8(ascii: "K") {
                    log?("qmail-qmtpd: pid \(getpid()) from \(connection.remoteIP) MAIL from <\(String(decoding: sender, as: UTF8.self))> RCPT <\(recipients.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ","))> Size: \(size) qp \(qp)")
                } else {
                    log?("qmail-qmtpd: from \(connection.remoteIP): \(String(decoding: result, as: UTF8.self))")
                }
            }
            return nil
        } catch {
            if let t = txn { t.fail(); _ = t.finish(sender: [], recipients: []) }
            if error != .eof { log?("qmail-qmtpd: from \(connection.remoteIP): \(error.why), connection dropped") }
            return error.end
        }
    }
}
