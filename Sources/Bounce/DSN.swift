import QueueFormat

/// One failed (or delayed) recipient as read from a bounce file record.
public struct BounceRecord: Equatable, Sendable {
    public var recipient: String
    public var report: String

    public init(recipient: String, report: String) {
        self.recipient = recipient
        self.report = report
    }

    /// Parses a bounce file: records `<addr>:\nreport…\n\n`.
    public static func parse(_ file: [UInt8]) -> [BounceRecord] {
        var out: [BounceRecord] = []
        // Records never contain a blank line (addbounce folds them), so blank lines separate them.
        var chunks: [String] = []
        var current: [UInt8] = []
        var i = 0
        while i < file.count {
            if file[i] == 10 && i + 1 < file.count && file[i + 1] == 10 {
                chunks.append(String(decoding: current, as: UTF8.self)); current = []; i += 2; continue
            }
            current.append(file[i]); i += 1
        }
        if !current.isEmpty { chunks.append(String(decoding: current, as: UTF8.self)) }
        for chunk in chunks where chunk.hasPrefix("<") {
            guard let close = chunk.firstIndex(of: ">") else { continue }
            let rcpt = String(chunk[chunk.index(after: chunk.startIndex)..<close])
            var rest = chunk[chunk.index(after: close)...]
            if rest.hasPrefix(":\n") { rest = rest.dropFirst(2) } else if rest.hasPrefix(":") { rest = rest.dropFirst() }
            out.append(BounceRecord(recipient: rcpt, report: String(rest)))
        }
        return out
    }

    /// The enhanced status code: from the remote reply (`550 5.1.1 …`), else
    /// qmail's `(#5.1.1)`, else a generic one for the class.
    public func status(permanent: Bool) -> String {
        for line in report.split(separator: "\n") {
            if let r = line.range(ofText: "Remote host said: ") {
                let words = line[r.upperBound...].split(separator: " ")
                if words.count > 1, DSNMessage.isEnhanced(words[1]) { return String(words[1]) }
            }
        }
        if let r = report.range(ofText: "(#"), let e = report[r.upperBound...].firstIndex(of: ")") {
            let code = String(report[r.upperBound..<e])
            if DSNMessage.isEnhanced(Substring(code)) { return code }
        }
        return permanent ? "5.0.0" : "4.0.0"
    }

    /// `Remote-MTA` and `Diagnostic-Code` values when an SMTP server answered.
    public var remote: (mta: String, diagnostic: String)? {
        var mta: String? = nil
        var said: String? = nil
        for line in report.split(separator: "\n") {
            for marker in [" does not like recipient.", " failed after I sent the message.", " failed on DATA command.", " accepted message"] {
                if let r = line.range(ofText: marker) {
                    let before = line[..<r.lowerBound]
                    mta = String(before.split(separator: " ").last ?? "")
                }
            }
            if line.hasPrefix("Connected to "), let b = line.range(ofText: " but ") {
                mta = String(line[line.index(line.startIndex, offsetBy: 13)..<b.lowerBound])
            }
            if let r = line.range(ofText: "Remote host said: ") { said = String(line[r.upperBound...]) }
        }
        guard let said else { return nil }
        return (mta ?? "unknown", said)
    }
}

/// RFC 3464 delivery status notifications whose first part is still QSBMF
/// text, so qmail-aware bounce parsers keep working.
public enum DSNMessage {
    static func isEnhanced(_ s: Substring) -> Bool {
        let p = s.split(separator: ".")
        return p.count == 3 && (p[0] == "2" || p[0] == "4" || p[0] == "5") && p.allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) }
    }

    public enum Kind: Sendable { case failure, delay }

    /// The report: `text` (the QSBMF part, already composed), the records,
    /// and the original message (headers only when `headersOnly`).
    public static func compose(kind: Kind, id: UInt64, sender: [UInt8], recipient: [UInt8], birth: Int64,
                               arrivalDate: String, date: String, records: [BounceRecord], message: [UInt8],
                               settings: BounceSettings, headersOnly: Bool = false) -> [UInt8] {
        let boundary = "\(birth)\(settings.bounceHost)\(id)\(kind == .delay ? "d" : "")"
        var out: [UInt8] = []
        func put(_ s: String) { out += Array(s.utf8) }
        put("Date: \(date)\n")
        if let first = records.first { put("X-Bounced-Address: <\(first.recipient)>\n") }
        put("From: "); out += AddressQuoting.quote(Array(settings.bounceFrom.utf8)); put("@\(settings.bounceHost)\n")
        put("To: "); out += AddressQuoting.quote2(recipient); put("\n")
        put("MIME-Version: 1.0\n")
        put("Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"\(boundary)\"\n")
        put("Subject: \(kind == .delay ? "Delayed Mail (still being retried)" : (sender.isEmpty ? settings.doubleSubject : settings.subject))\n")
        put("\n--\(boundary)\n")
        put("Content-Type: text/plain; charset=us-ascii\n\n")
        put("Hi. This is the \(settings.program) program at \(settings.bounceHost).\n")
        switch kind {
        case .failure:
            put("I'm afraid I wasn't able to deliver your message to the following addresses.\n")
            put("This is a permanent error; I've given up. Sorry it didn't work out.\n\n")
        case .delay:
            put("Your message has not been delivered yet to the following addresses.\n")
            put("This is only a warning: I'm still trying; you don't need to send it again.\n\n")
        }
        for r in records {
            put("<\(r.recipient)>:\n\(r.report)")
            if !r.report.hasSuffix("\n") { put("\n") }
            put("\n")
        }
        put("--- Enclosed are the original headers of the message.\n" )
        put("\n--\(boundary)\n")
        put("Content-Type: message/delivery-status\n\n")
        put("Reporting-MTA: dns; \(settings.bounceHost)\n")
        put("Arrival-Date: \(arrivalDate)\n")
        for r in records {
            put("\nFinal-Recipient: rfc822; \(r.recipient)\n")
            put("Action: \(kind == .delay ? "delayed" : "failed")\n")
            put("Status: \(r.status(permanent: kind == .failure))\n")
            if let remote = r.remote {
                put("Remote-MTA: dns; \(remote.mta)\n")
                put("Diagnostic-Code: smtp; \(remote.diagnostic)\n")
            } else {
                let first = r.report.split(separator: "\n").first.map(String.init) ?? ""
                put("Diagnostic-Code: x-qmail; \(first)\n")
            }
        }
        put("\n--\(boundary)\n")
        let original = Array("Return-Path: <".utf8) + AddressQuoting.quote2(sender) + Array(">\n".utf8) + message
        if headersOnly {
            put("Content-Type: text/rfc822-headers\n\n")
            var end = original.count
            var i = 0
            while i + 1 < original.count { if original[i] == 10 && original[i + 1] == 10 { end = i + 1; break }; i += 1 }
            out += original[..<end]
        } else {
            put("Content-Type: message/rfc822\n\n")
            // As the QSBMF layout: the Return-Path line, then at most bouncemaxbytes of the
            // message; one of exactly that size is marked stripped too (qmail's loop).
            out += original[..<(original.count - message.count)]
            if message.count >= settings.maxBytes {
                out += message.prefix(settings.maxBytes)
                put("\n\n--- End of message stripped.\n")
            } else {
                out += message
            }
        }
        put("\n--\(boundary)--\n")
        return out
    }
}

