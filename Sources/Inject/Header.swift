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
            return LosslessText.decode(v.map { $0 == 10 || $0 == 13 ? 32 : $0 })
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
        self = HeaderBlock.split(message, final: true)!
    }

    /// The split of the start of a message that is still being read: nil while
    /// more input could still change where the header ends (the deciding line,
    /// blank or not a field, has not arrived whole). With `final`, never nil.
    public static func split(_ message: [UInt8], final: Bool) -> HeaderBlock? {
        var block = HeaderBlock(fields: [], body: [], hadSeparator: false)
        var i = 0
        let n = message.count
        // A leading "From " line (mbox) is dropped, as qmail-inject does.
        if message.starts(with: Array("From ".utf8)) {
            while i < n && message[i] != 10 { i += 1 }
            if i < n { i += 1 } else if !final { return nil }
        }
        while i < n {
            var e = i
            while e < n && message[e] != 10 { e += 1 }
            // A line without its newline yet decides nothing, unless its bytes so far
            // already rule out a field (a hostile first line of megabytes without a
            // newline then ends the header at once instead of being held whole).
            if e == n && !final {
                if !HeaderBlock.cannotBeField(message[i..<n], afterFields: !block.fields.isEmpty) { return nil }
                break
            }
            let lineEnd = e < n ? e + 1 : e
            let line = message[i..<e]
            let content = line.last == 13 ? line.dropLast() : line
            if content.isEmpty {
                block.hadSeparator = true
                i = lineEnd
                break
            }
            if (content.first == 32 || content.first == 9), !block.fields.isEmpty {
                // A continuation; the field may go on in the next line.
                block.fields[block.fields.count - 1].raw.append(contentsOf: message[i..<lineEnd])
                if e == n { block.fields[block.fields.count - 1].raw.append(10) }
                i = lineEnd
                continue
            }
            guard let colon = HeaderBlock.isFieldName(content) else { break }
            var raw = Array(message[i..<lineEnd])
            if e == n { raw.append(10) }
            block.fields.append(Field(raw: raw, name: String(decoding: message[i..<colon], as: UTF8.self)))
            i = lineEnd
        }
        // Input ran out inside the header: the next line could be another field.
        if i == n && !block.hadSeparator && !final { return nil }
        block.body = Array(message[i...])
        return block
    }

    /// Whether the start of a line, its newline not yet read, can no longer become a
    /// field, a continuation or the blank line: a byte that `isFieldName` refuses
    /// comes before any colon.
    static func cannotBeField(_ partial: ArraySlice<UInt8>, afterFields: Bool) -> Bool {
        guard let first = partial.first else { return false }
        if first == 13 && partial.count == 1 { return false }        // "\r" may become the blank line
        if (first == 32 || first == 9) && afterFields { return false } // a continuation may go on
        var blanks = false
        for c in partial {
            if c == UInt8(ascii: ":") { return false }
            if c == 32 || c == 9 { blanks = true }
            else if c < 33 || c > 126 || blanks { return true }
        }
        return false
    }

    init(fields: [Field], body: [UInt8], hadSeparator: Bool) {
        self.fields = fields
        self.body = body
        self.hadSeparator = hadSeparator
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

/// Header bytes as text and back without loss, for addresses that go into the
/// envelope byte for byte: valid UTF-8 decodes as usual, and each byte that is not
/// part of valid UTF-8 (a Latin-1 `ü`, say) becomes the private-use scalar
/// U+F700 + byte, which `encode` turns back into that byte.
public enum LosslessText {
    public static func decode(_ bytes: [UInt8]) -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        while i < bytes.count {
            var parser = Unicode.UTF8.ForwardParser()
            var it = bytes[i...].makeIterator()
            switch parser.parseScalar(from: &it) {
            case .valid(let encoded):
                out.append(Unicode.UTF8.decode(encoded))
                i += encoded.count
            case .error(let length):
                for b in bytes[i..<(i + length)] { out.append(Unicode.Scalar(0xF700 + UInt32(b))!) }
                i += length
            case .emptyInput:
                i = bytes.count
            }
        }
        return String(out)
    }

    public static func encode(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            if (0xF780...0xF7FF).contains(s.value) { out.append(UInt8(s.value - 0xF700)) }
            else { out.append(contentsOf: String(s).utf8) }
        }
        return out
    }
}

extension HeaderBlock {
    /// Reads the start of a message through `read` (which fills the buffer and
    /// returns the count, 0 at the end of input) until where the
    /// header ends is decided, or to the end of input. The split is tried again
    /// only once the input has doubled, so a long header costs linear time however
    /// it arrives. Shared by qmail-inject and new-inject.
    public static func read<E: Error>(into chunk: UnsafeMutableRawBufferPointer,
                                      _ read: (UnsafeMutableRawBufferPointer) throws(E) -> Int) throws(E) -> (header: HeaderBlock, atEnd: Bool) {
        var start: [UInt8] = []
        var atEnd = false
        var nextTry = 0
        while true {
            let n = try read(chunk)
            if n == 0 { atEnd = true } else { start.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n])) }
            if atEnd || start.count >= nextTry {
                if let h = HeaderBlock.split(start, final: atEnd) { return (h, atEnd) }
                nextTry = 2 * start.count
            }
        }
    }
}
