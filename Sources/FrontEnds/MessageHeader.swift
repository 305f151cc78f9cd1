/// The header of a message as the queue front ends see it: fields (a field's
/// continuation lines belong to it), then the body after the empty line.
/// Line ends are LF (qmail's form); a CR before an LF is kept as part of the line.
public struct MessageHeader: Sendable {
    public struct Field: Sendable, Equatable {
        /// The name as written (before the colon, trailing blanks removed).
        public var name: String
        /// The whole field, name to the end of its last line, without the final LF.
        public var range: Range<Int>
    }
    public var fields: [Field]
    /// Where the body starts (after the empty line), or the message's end.
    public var bodyOffset: Int
    /// True when an empty line ends the header (false: the message ended first, or
    /// a line that is not a header field started the body).
    public var hasSeparator: Bool

    /// Splits `message`. A line that neither starts with a blank nor has a colon
    /// after a non-empty name ends the header and begins the body.
    public static func parse(_ message: [UInt8]) -> MessageHeader {
        var fields: [Field] = []
        var i = 0
        let n = message.count
        while i < n {
            var end = i
            while end < n && message[end] != 0x0A { end += 1 }
            var lineEnd = end
            if lineEnd > i && message[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if lineEnd == i {   // empty line
                return MessageHeader(fields: fields, bodyOffset: min(end + 1, n), hasSeparator: true)
            }
            let first = message[i]
            if first == 0x20 || first == 0x09 {
                if !fields.isEmpty {
                    fields[fields.count - 1].range = fields[fields.count - 1].range.lowerBound..<end
                    i = end + 1
                    continue
                }
                return MessageHeader(fields: fields, bodyOffset: i, hasSeparator: false)
            }
            var colon = i
            while colon < lineEnd && message[colon] != UInt8(ascii: ":") && message[colon] > 0x20 && message[colon] < 0x7f { colon += 1 }
            var nameEnd = colon
            // "Name :" (blanks before the colon) is obsolete syntax but still a field.
            var c = colon
            while c < lineEnd && (message[c] == 0x20 || message[c] == 0x09) { c += 1 }
            if colon == i || c >= lineEnd || message[c] != UInt8(ascii: ":") {
                return MessageHeader(fields: fields, bodyOffset: i, hasSeparator: false)
            }
            while nameEnd > i && (message[nameEnd - 1] == 0x20 || message[nameEnd - 1] == 0x09) { nameEnd -= 1 }
            fields.append(Field(name: String(decoding: message[i..<nameEnd], as: UTF8.self), range: i..<end))
            i = end + 1
        }
        return MessageHeader(fields: fields, bodyOffset: n, hasSeparator: false)
    }

    /// The value of a field: the text after the colon, unfolded lines joined as written.
    public static func value(of field: Field, in message: [UInt8]) -> [UInt8] {
        var k = field.range.lowerBound
        while k < field.range.upperBound && message[k] != UInt8(ascii: ":") { k += 1 }
        return k < field.range.upperBound ? Array(message[(k + 1)..<field.range.upperBound]) : []
    }

    /// The first field named `name` (case-insensitive).
    public func first(_ name: String, in message: [UInt8]) -> [UInt8]? {
        let lower = name.lowercased()
        for f in fields where f.name.lowercased() == lower { return MessageHeader.value(of: f, in: message) }
        return nil
    }

    /// The domain of the first address in a header value (`Name <a@b.c>`, `a@b.c`),
    /// lower-cased; nil when there is none.
    public static func addressDomain(_ value: [UInt8]) -> String? {
        var text = value
        if let open = text.firstIndex(of: UInt8(ascii: "<")) {
            let rest = text[(open + 1)...]
            if let close = rest.firstIndex(of: UInt8(ascii: ">")) { text = Array(text[(open + 1)..<close]) } else { text = Array(rest) }
        }
        guard let at = text.lastIndex(of: UInt8(ascii: "@")) else { return nil }
        var domain: [UInt8] = []
        for b in text[(at + 1)...] {
            if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == UInt8(ascii: ">") || b == UInt8(ascii: ",")
                || b == UInt8(ascii: ";") || b == UInt8(ascii: "(") || b == UInt8(ascii: ")") {
                if domain.isEmpty { continue } else { break }
            }
            domain.append(b)
        }
        guard !domain.isEmpty, domain.allSatisfy({ isDomainByte($0) }) else { return nil }
        return String(decoding: domain, as: UTF8.self).lowercased()
    }

    static func isDomainByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: ".")
            || b == UInt8(ascii: "_") || b == UInt8(ascii: "[") || b == UInt8(ascii: "]") || b == UInt8(ascii: ":")
    }
}
