import QueueFormat

/// The settings that shape a bounce (control files of engine.md §10).
public struct BounceSettings: Sendable {
    public var program: String = "qmail-send"
    public var bounceFrom: String = "MAILER-DAEMON"
    public var bounceHost: String = "localhost"
    public var doubleBounceHost: String = "localhost"
    public var doubleBounceTo: String = "postmaster"
    public var maxBytes: Int = 50000
    public var subject: String = "failure notice"
    public var doubleSubject: String = "failure notice"
    /// Raw `bouncemessage` / `doublebouncemessage` contents, replacing the intro.
    public var message: [UInt8]? = nil
    public var doubleMessage: [UInt8]? = nil
    /// `bounceformat`: qmail's QSBMF (default) or an RFC 3464 report.
    public var format: Format = .qsbmf
    /// `delaywarning`: seconds after which a still-deferred message gets one
    /// `Action: delayed` warning (0 = never).
    public var delayWarning: Int64 = 0

    public enum Format: String, Sendable { case qsbmf, dsn }

    public init() {}
}

/// What to do with a message's bounce file.
public enum BounceDecision: Equatable, Sendable {
    /// Queue this message from `sender` to `recipient`.
    case send(sender: [UInt8], recipient: [UInt8], message: [UInt8])
    /// Drop the bounce file, logging this line (`triple bounce: …`, `double bounce: …`).
    case discard(logLine: String)
}

/// Builds the bounce message qmail-send sends when a message's recipients have
/// failed for good: QSBMF text in indimail-mta's MIME layout (engine.md §6.4).
public enum BounceMessage {
    /// Who a bounce goes to: the sender; for an empty sender (a bounce that
    /// bounced) `doublebounceto@doublebouncehost` from `#@[]`; nobody for a
    /// triple bounce or a blank `doublebounceto`.
    public enum Route: Equatable, Sendable {
        case send(envelopeSender: [UInt8], recipient: [UInt8], sender: [UInt8], double: Bool)
        case discard(logLine: String)
    }

    public static func route(id: UInt64, sender rawSender: [UInt8], settings: BounceSettings) -> Route {
        var sender = rawSender
        // VERP: owner-@host-@[] → owner-@host
        if sender.count >= 4 && Array(sender.suffix(4)) == Array("-@[]".utf8) { sender = Array(sender.dropLast(4)) }
        // BATV: sb*-foo → foo (indimail's injectbounce).
        if sender.count >= 4 && sender.starts(with: Array("sb*-".utf8)) { sender = Array(sender.dropFirst(4)) }
        if sender == Array("#@[]".utf8) {
            return .discard(logLine: "triple bounce: discarding bounce/\(id)")
        }
        if sender.isEmpty {
            let to = settings.doubleBounceTo
            if to.isEmpty { return .discard(logLine: "double bounce: discarding bounce/\(id)") }
            return .send(envelopeSender: Array("#@[]".utf8), recipient: Array((to + "@" + settings.doubleBounceHost).utf8), sender: sender, double: true)
        }
        return .send(envelopeSender: [], recipient: sender, sender: sender, double: false)
    }

    public static func compose(id: UInt64, sender rawSender: [UInt8], birth: Int64, bounceFile: [UInt8],
                               message: [UInt8], settings: BounceSettings, date: String) -> BounceDecision {
        let sender: [UInt8], envSender: [UInt8], recipient: [UInt8], double: Bool
        switch route(id: id, sender: rawSender, settings: settings) {
        case .discard(let line): return .discard(logLine: line)
        case let .send(e, r, s, d): envSender = e; recipient = r; sender = s; double = d
        }
        let boundary = "\(birth)\(settings.bounceHost)\(id)"
        var out: [UInt8] = []
        func put(_ s: String) { out += Array(s.utf8) }
        put("Date: \(date)\n")
        if let first = firstRecipient(bounceFile) { put("X-Bounced-Address: "); out += first; put("\n") }
        put("From: "); out += AddressQuoting.quote(Array(settings.bounceFrom.utf8)); put("@\(settings.bounceHost)\n")
        put("To: "); out += AddressQuoting.quote2(recipient); put("\n")
        put("MIME-Version: 1.0\n")
        put("Content-Type: multipart/mixed; boundary=\"\(boundary)\"\n")
        put("Subject: \(double ? settings.doubleSubject : settings.subject)\n")
        put("\n--\(boundary)\n\n")
        if let custom = double ? settings.doubleMessage : settings.message {
            out += custom
            put("\n")
        } else if double {
            put("Hi. This is the \(settings.program) program at \(settings.bounceHost).\n")
            put("I tried to deliver a bounce message to this address, but the bounce bounced!\n\n")
        } else {
            put("Hi. This is the \(settings.program) program at \(settings.bounceHost).\n")
            put("I'm afraid I wasn't able to deliver your message to the following addresses.\n")
            put("This is a permanent error; I've given up. Sorry it didn't work out.\n\n")
        }
        out += bounceFile
        put(double ? "--- Enclosed is the original bounce.\n" : "--- Enclosed is a copy of the message.\n")
        put("\n--\(boundary)\n")
        put("Content-Type: message/rfc822\n\n")
        put("Return-Path: <"); out += AddressQuoting.quote2(rawSender == Array("#@[]".utf8) ? [] : sender); put(">\n")
        if message.count >= settings.maxBytes {
            out += message.prefix(settings.maxBytes)
            put("\n\n--- End of message stripped.\n")
        } else {
            out += message
        }
        put("\n--\(boundary)--\n")
        return .send(sender: envSender, recipient: recipient, message: out)
    }

    /// `<addr>` of the first record of a bounce file, brackets included.
    public static func firstRecipient(_ bounceFile: [UInt8]) -> [UInt8]? {
        guard bounceFile.first == UInt8(ascii: "<"), let end = bounceFile.firstIndex(of: UInt8(ascii: ">")) else { return nil }
        return Array(bounceFile[...end])
    }
}
