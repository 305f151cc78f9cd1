/// A message split into header fields and body, as qmail-inject sees it.
/// Fields keep their raw bytes (continuation lines included) so untouched
/// headers pass through byte for byte.
public struct HeaderBlock: Sendable {
    public struct Field: Sendable {
        public var raw: [UInt8]
        /// The field name as written (before the colon).
        public var name: String
        /// Lower-cased name without the blanks qmail allows before the colon, for comparisons.
        public var key: String {
            var k = Substring(name)
            while k.last == " " || k.last == "\t" { k = k.dropLast() }
            return k.lowercased()
        }
        /// The value with continuation lines unfolded into spaces.
        public var value: String {
            guard let colon = raw.firstIndex(of: UInt8(ascii: ":")) else { return "" }
            var v = Array(raw[(colon + 1)...])
            while let last = v.last, last == 10 || last == 13 { v.removeLast() }
            return String(decoding: v.map { $0 == 10 || $0 == 13 ? 32 : $0 }, as: UTF8.self)
        }
    }

    public var fields: [Field]
    public var body: [UInt8]
    /// Whether a blank line separated header and body in the input.
    public var hadSeparator: Bool

    /// qmail's hfield_valid: a name of printable bytes, then optional spaces or
    /// tabs, then the colon (`Bcc :` is a Bcc field). The colon's index, or nil.
    static func isFieldName(_ line: ArraySlice<UInt8>) -> Int? {
        var i = line.startIndex
        var blanks = false
        while i < line.endIndex {
            let c = line[i]
            if c == UInt8(ascii: ":") { return i == line.startIndex || line[line.startIndex] == 32 || line[line.startIndex] == 9 ? nil : i }
            if c == 32 || c == 9 { blanks = true }
            else if c < 33 || c > 126 || blanks { return nil }
            i += 1
        }
        return nil
    }

    /// Splits `message`. Header lines end at the first empty line or the first
    /// line that is neither a field nor a continuation (that line starts the body).
    public init(parsing message: [UInt8]) {
        fields = []
        body = []
        hadSeparator = false
        var i = 0
        let n = message.count
        // A leading "From " line (mbox) is dropped, as qmail-inject does.
        if message.starts(with: Array("From ".utf8)) {
            while i < n && message[i] != 10 { i += 1 }
            if i < n { i += 1 }
        }
        while i < n {
            var e = i
            while e < n && message[e] != 10 { e += 1 }
            let lineEnd = e < n ? e + 1 : e
            let line = message[i..<e]
            let content = line.last == 13 ? line.dropLast() : line
            if content.isEmpty {
                hadSeparator = true
                i = lineEnd
                break
            }
            if (content.first == 32 || content.first == 9), !fields.isEmpty {
                fields[fields.count - 1].raw.append(contentsOf: message[i..<lineEnd])
                if e == n { fields[fields.count - 1].raw.append(10) }
                i = lineEnd
                continue
            }
            guard let colon = HeaderBlock.isFieldName(content) else { break }
            var raw = Array(message[i..<lineEnd])
            if e == n { raw.append(10) }
            fields.append(Field(raw: raw, name: String(decoding: message[i..<colon], as: UTF8.self)))
            i = lineEnd
        }
        body = Array(message[i...])
    }

    public func first(_ name: String) -> Field? {
        let k = name.lowercased()
        return fields.first { $0.key == k }
    }

    public func all(_ names: Set<String>) -> [Field] {
        fields.filter { names.contains($0.key) }
    }

    public mutating func remove(_ names: Set<String>) {
        fields.removeAll { names.contains($0.key) }
    }
}
