// Header fields and address lists as the toolbox's readers need them. No
// imports: pure over bytes.

public enum HeaderScan {
    /// The header fields of a message (name and whole text with continuation
    /// lines and newlines), up to the blank line or the first line that is not
    /// a field; and whether a blank line ended it.
    public static func fields(_ message: [UInt8]) -> [(name: [UInt8], text: [UInt8])] {
        var out: [(name: [UInt8], text: [UInt8])] = []
        var i = 0
        while i < message.count {
            var e = i
            while e < message.count && message[e] != 10 { e += 1 }
            let line = Array(message[i..<min(e + 1, message.count)])
            if line.first == 10 { break }
            if let f = line.first, (f == 32 || f == 9), !out.isEmpty {
                out[out.count - 1].text += line
            } else if let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0,
                      !line[..<colon].contains(where: { $0 <= 32 || $0 >= 127 }) {
                out.append((Array(line[..<colon]), line))
            } else {
                break
            }
            i = e + 1
        }
        return out
    }

    public static func lower(_ b: some Collection<UInt8>) -> [UInt8] { b.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 } }

    public struct ParseError: Error {}

    /// The addr-specs of an RFC 822 address list (the field's value): for each
    /// element the text inside `<>` when there is one, else the element; comments
    /// dropped, quotes and backslashes removed, a source route (`@a,@b:`)
    /// stripped, groups (`name: a, b;`) opened. Unbalanced quotes, brackets or
    /// comments do not parse.
    public static func addresses(_ value: some Collection<UInt8>) throws(ParseError) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var plain: [UInt8] = []      // the element outside <> (comments dropped)
        var angle: [UInt8]? = nil    // the last <...> of the element
        var inAngle: [UInt8]? = nil
        var depth = 0
        var quoted = false
        var it = Array(value).makeIterator()
        func finish() {
            let a = angle ?? plain
            var s = a.drop { $0 == 32 || $0 == 9 || $0 == 10 || $0 == 13 }
            while let l = s.last, l == 32 || l == 9 || l == 10 || l == 13 { s = s.dropLast() }
            var addr = Array(s)
            if addr.first == UInt8(ascii: "@"), let c = addr.firstIndex(of: UInt8(ascii: ":")) { addr = Array(addr[(c + 1)...]) }
            if !addr.isEmpty { out.append(addr) }
            plain = []; angle = nil
        }
        while let b = it.next() {
            if depth > 0 {
                if b == UInt8(ascii: "\\") { _ = it.next() } else if b == UInt8(ascii: "(") { depth += 1 } else if b == UInt8(ascii: ")") { depth -= 1 }
                continue
            }
            if quoted {
                if b == UInt8(ascii: "\\") { if let n = it.next() { inAngle != nil ? inAngle!.append(n) : plain.append(n) } }
                else if b == UInt8(ascii: "\"") { quoted = false }
                else { inAngle != nil ? inAngle!.append(b) : plain.append(b) }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): quoted = true
            case UInt8(ascii: "\\"): if let n = it.next() { inAngle != nil ? inAngle!.append(n) : plain.append(n) }
            case UInt8(ascii: "("): depth = 1
            case UInt8(ascii: ")"): throw ParseError()
            case UInt8(ascii: "<"):
                if inAngle != nil { throw ParseError() }
                inAngle = []
            case UInt8(ascii: ">"):
                guard let a = inAngle else { throw ParseError() }
                angle = a; inAngle = nil
            case UInt8(ascii: ","), UInt8(ascii: ";"):
                if inAngle != nil { inAngle!.append(b) } else { finish() }
            case UInt8(ascii: ":"):
                if inAngle != nil { inAngle!.append(b) } else { plain = [] }    // a group's name
            case 32, 9, 10, 13:
                if inAngle == nil && angle == nil && !plain.isEmpty { plain.append(32) }
            default:
                if inAngle != nil { inAngle!.append(b) } else { plain.append(b) }
            }
        }
        if depth > 0 || quoted || inAngle != nil { throw ParseError() }
        finish()
        return out
    }
}
