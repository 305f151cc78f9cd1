/// The delivery report indimail-mta's `rrt` sends when qmail-remote runs it as
/// an `ONSUCCESS_REMOTE` / `ONFAILURE_REMOTE` / `ONTEMPORARY_REMOTE` hook for a
/// message carrying `Return-Receipt-To:` (engine.md §7.1). Pure: the caller
/// supplies the message, the environment values, the date and the pid.
public enum ReturnReceipt {
    /// Which hook ran rrt.
    public enum Kind: Sendable, Equatable {
        case success, failure, temporary

        /// `ONSUCCESS_REMOTE`, else `ONFAILURE_REMOTE`, else `ONTEMPORARY_REMOTE`;
        /// nil when none is set (rrt then has nothing to do).
        public static func fromEnvironment(_ environment: (String) -> String?) -> Kind? {
            if environment("ONSUCCESS_REMOTE") != nil { return .success }
            if environment("ONFAILURE_REMOTE") != nil { return .failure }
            if environment("ONTEMPORARY_REMOTE") != nil { return .temporary }
            return nil
        }

        var subjectPrefix: String {
            switch self {
            case .success: return "Successful Mail Delivery Report: "
            case .failure: return "Permanent Failure: Mail Delivery Report: "
            case .temporary: return "Temporary Failure: Mail Delivery Report: "
            }
        }
    }

    /// The header fields rrt looks at, taken from the first occurrence of each.
    public struct OriginalHeaders: Sendable, Equatable {
        /// Address of the first `From: ` (case-sensitive).
        public var from: [UInt8]?
        /// Text after the first `Message-ID: ` (any case), newline included.
        public var messageID: [UInt8]?
        /// Text after the first `Subject: ` (case-sensitive), newline included.
        public var subject: [UInt8]?
        /// Address of the first `Return-Receipt-To: ` (any case).
        public var returnReceiptTo: [UInt8]?

        public init(from: [UInt8]? = nil, messageID: [UInt8]? = nil, subject: [UInt8]? = nil, returnReceiptTo: [UInt8]? = nil) {
            self.from = from
            self.messageID = messageID
            self.subject = subject
            self.returnReceiptTo = returnReceiptTo
        }

        /// A receipt is wanted only when both Return-Receipt-To and Message-ID are present
        /// (and, unlike indimail-mta, which would queue to an empty recipient, the
        /// Return-Receipt-To address is not empty).
        public var wantsReceipt: Bool { !(returnReceiptTo ?? []).isEmpty && messageID != nil }
    }

    /// A `From:` or `Return-Receipt-To:` line without a usable address (rrt exit 8).
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        public let field: String
        public init(field: String) { self.field = field }
        public var description: String { "unable to parse the address in \(field)" }
    }

    static func hasPrefix(_ line: ArraySlice<UInt8>, _ prefix: String, ignoringCase: Bool) -> Bool {
        let p = Array(prefix.utf8)
        if line.count < p.count { return false }
        for (a, b) in zip(line.prefix(p.count), p) {
            let same = ignoringCase ? (lower(a) == lower(b)) : (a == b)
            if !same { return false }
        }
        return true
    }

    static func lower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c + 32 : c }

    static func withoutNewline(_ line: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        line.last == 10 ? line.dropLast() : line
    }

    /// rrt's `parse_email`: scans the header lines (`mess822_ok`) for the four fields.
    /// Throws when a From: or Return-Receipt-To: line holds no address (or one over 900 bytes).
    public static func extractHeaders(_ message: [UInt8]) throws -> OriginalHeaders {
        var h = OriginalHeaders()
        for line in HeaderLines.lines(message) {
            if !HeaderLines.isHeaderLine(line) { break }
            if h.from == nil && hasPrefix(line, "From: ", ignoringCase: false) {
                guard let a = ReceiptAddress.parse(withoutNewline(line)) else { throw ParseError(field: "From:") }
                h.from = a
            } else if h.messageID == nil && hasPrefix(line, "Message-ID: ", ignoringCase: true) {
                h.messageID = Array(line.dropFirst(12))
            } else if h.subject == nil && hasPrefix(line, "Subject: ", ignoringCase: false) {
                h.subject = Array(line.dropFirst(9))
            } else if h.returnReceiptTo == nil && hasPrefix(line, "Return-Receipt-To: ", ignoringCase: true) {
                guard let a = ReceiptAddress.parse(withoutNewline(line)) else { throw ParseError(field: "Return-Receipt-To:") }
                h.returnReceiptTo = a
            }
            if h.from != nil && h.messageID != nil && h.subject != nil && h.returnReceiptTo != nil { break }
        }
        return h
    }

    /// What qmail-remote told the hook (its environment), for the report text.
    public struct Delivery: Sendable, Equatable {
        /// The envelope sender operand, written as given.
        public var returnPath: [UInt8]
        /// The recipient operand.
        public var recipient: [UInt8]
        /// `$SMTPTEXT`, `$QMTPTEXT`, `$SMTPCODE`, `$QMTPCODE` as set (nil = unset).
        public var smtpText: [UInt8]?
        public var qmtpText: [UInt8]?
        public var smtpCode: [UInt8]?
        public var qmtpCode: [UInt8]?

        public init(returnPath: [UInt8], recipient: [UInt8], smtpText: [UInt8]? = nil, qmtpText: [UInt8]? = nil,
                    smtpCode: [UInt8]? = nil, qmtpCode: [UInt8]? = nil) {
            self.returnPath = returnPath
            self.recipient = recipient
            self.smtpText = smtpText
            self.qmtpText = qmtpText
            self.smtpCode = smtpCode
            self.qmtpCode = qmtpCode
        }

        /// Reads the four variables from `environment`.
        public static func from(environment: (String) -> String?, returnPath: [UInt8], recipient: [UInt8]) -> Delivery {
            func v(_ name: String) -> [UInt8]? { environment(name).map { Array($0.utf8) } }
            return Delivery(returnPath: returnPath, recipient: recipient, smtpText: v("SMTPTEXT"), qmtpText: v("QMTPTEXT"),
                            smtpCode: v("SMTPCODE"), qmtpCode: v("QMTPCODE"))
        }

        /// The reply text as rrt prints it: from its second byte (qmail-remote's text
        /// starts with a status letter).
        var replyText: [UInt8]? { (smtpText ?? qmtpText).map { Array($0.dropFirst()) } }
    }

    /// The envelope sender operand as rrt compares it with the receipt address:
    /// the address parsed out of it when it has one, else the operand as given.
    /// (indimail-mta keeps an empty string when parsing succeeds — a slip; the
    /// operands qmail-remote passes never parse, so both agree in practice.)
    public static func returnPathAddress(_ operand: [UInt8]) -> [UInt8] {
        ReceiptAddress.parse(operand) ?? operand
    }

    /// Whether a report is sent at all: for a permanent failure whose return path
    /// is the receipt address, the bounce already tells the sender.
    public static func shouldReport(kind: Kind, returnPath: [UInt8], receiptTo: [UInt8]) -> Bool {
        !(kind == .failure && returnPathAddress(returnPath) == receiptTo)
    }

    /// `_----------=_<unix time><pid>`.
    public static func boundary(unixTime: Int64, pid: Int32) -> String {
        "_----------=_\(unixTime)\(pid)"
    }

    /// The report settings: controls `bouncefrom` (MAILER-DAEMON) and `bouncehost`
    /// (`me`, else the literal `bouncehost`).
    public struct Settings: Sendable, Equatable {
        public var bounceFrom: String
        public var bounceHost: String
        public init(bounceFrom: String = "MAILER-DAEMON", bounceHost: String = "bouncehost") {
            self.bounceFrom = bounceFrom
            self.bounceHost = bounceHost
        }
    }

    /// The report bytes (engine.md §7.1).
    /// - `date`: date822 text without its newline (`Date822.local`).
    /// - `encloseWholeMessage`: rrt's `-b`; otherwise only the header lines are enclosed.
    /// - A message without `Subject:` gets the prefix alone on the Subject line
    ///   (indimail-mta lets the `To:` text run onto it instead).
    public static func compose(kind: Kind, headers: OriginalHeaders, delivery: Delivery, original: [UInt8],
                               encloseWholeMessage: Bool, settings: Settings, date: String,
                               unixTime: Int64, pid: Int32) -> [UInt8] {
        var out: [UInt8] = []
        func put(_ s: String) { out += Array(s.utf8) }
        let d = date + "\n"
        let b = boundary(unixTime: unixTime, pid: pid)
        put("From: <\(settings.bounceFrom)@\(settings.bounceHost)>\n")
        put("Date: \(d)")
        put("Subject: \(kind.subjectPrefix)")
        if let subject = headers.subject { out += subject } else { put("\n") }
        put("To: "); out += headers.returnReceiptTo ?? []; put("\n")
        put("MIME-Version: 1.0\nContent-Type: multipart/report;  report-type=delivery-status;\n boundary=\"\(b)\"\n")
        // First part: the human-readable report.
        put("\n--\(b)\n")
        put("Content-Type: message/delivery-status\n\n")
        put("This is the indimail rrt generator at host \(settings.bounceHost).\n\n")
        put("This message was received for a delivery attempt at \(d)from ")
        out += delivery.returnPath
        put("\n\n")
        switch kind {
        case .success:
            put("Your message was successfully delivered to the destination(s)\n"
                + "listed below. If the message was delivered to mailbox you will\n"
                + "receive no further notifications. Otherwise you may still receive\n"
                + "notifications of mail delivery errors from other systems.\n\n")
        case .temporary:
            put("Your message has not been delivered to the destination(s)\n"
                + "listed below. You may receive further notifications until the\n"
                + "message gets delivered\n\n")
        case .failure:
            break
        }
        out += delivery.recipient
        put("\n\n")
        if let text = delivery.replyText {
            put(delivery.smtpText != nil ? "SMTP Text: " : "QMTP Text: ")
            out += text
        }
        put("\n\n")
        switch kind {
        case .success: put("There is no guarantee that the message has been read or understood.\n")
        case .temporary: put("There is no guarantee that the message will be deliverd.\n")
        case .failure: break
        }
        // Second part: the machine-readable status.
        put("\n--\(b)\n")
        put("Content-Type: message/delivery-status\n\n")
        put("Reporting-MTA: \(settings.bounceHost)\n")
        put("Arrival-Date: \(d)")
        put("Original-Recipient: rfc822; "); out += delivery.recipient; put("\n")
        put("Final-Recipient: rfc822; "); out += delivery.recipient; put("\n")
        put("Action: ")
        put(kind == .success ? "relayed\n" : "failed\n")
        if let code = delivery.smtpCode ?? delivery.qmtpCode {
            put("Status: "); out += code
            put("\nDiagnostic code: smtp; "); out += delivery.replyText ?? []
        }
        // Third part: the original header (or message).
        put("\n--\(b)\n")
        put("Content-Transfer-Encoding: 8bit\n")
        put("Content-Disposition: attachment\n")
        put(encloseWholeMessage ? "Content-Type: message/rfc822\n\n" : "Content-Type: text/rfc822-headers\n\n")
        out += encloseWholeMessage ? original : HeaderLines.header(of: original)
        put("--\(b)--\n\n")
        return out
    }
}
