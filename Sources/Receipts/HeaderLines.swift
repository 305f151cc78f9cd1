/// Line-level RFC 822 helpers as djb's mess822 library and rrt use them: a
/// message is read a line at a time (each line keeps its `\n`), and the header
/// is the run of lines `mess822_ok` accepts.
public enum HeaderLines {
    /// `mess822_ok`: a continuation line (starts with space or tab) or a field
    /// line, whose name (before the colon, trailing blanks allowed) is made of
    /// bytes 33...126. An empty line (or a lone `\n`) is not a header line.
    public static func isHeaderLine(_ line: some Collection<UInt8>) -> Bool {
        let bytes = Array(line)
        var len = bytes.count
        if len > 0 && bytes[len - 1] == 10 { len -= 1 }
        if len == 0 { return false }
        if bytes[0] == 32 || bytes[0] == 9 { return true }
        guard var colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return false }
        while colon > 0 && (bytes[colon - 1] == 32 || bytes[colon - 1] == 9) { colon -= 1 }
        if colon == 0 { return false }
        for i in 0..<colon where bytes[i] < 33 || bytes[i] > 126 { return false }
        return true
    }

    /// The lines of `message`, each with its `\n` (the last may lack it): `getln`.
    public static func lines(_ message: [UInt8]) -> [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var start = 0
        var i = 0
        while i < message.count {
            if message[i] == 10 {
                out.append(message[start...i])
                start = i + 1
            }
            i += 1
        }
        if start < message.count { out.append(message[start...]) }
        return out
    }

    /// The leading lines `mess822_ok` accepts, concatenated (the blank line that
    /// ends a header is not included).
    public static func header(of message: [UInt8]) -> [UInt8] {
        var end = 0
        for line in lines(message) {
            if !isHeaderLine(line) { break }
            end = line.endIndex
        }
        return Array(message[0..<end])
    }
}

/// rrt's `addrparse()`: the address in a header line or argument. Takes the text
/// inside the first `<…>`; without `<`, the first word after the first `:`
/// (leading spaces skipped; with no `:`, or nothing after it, there is no
/// address). A source route (`@a,@b:`) is dropped, double quotes are removed
/// (text inside them is kept, terminators included), `\` escapes the next byte.
public enum ReceiptAddress {
    /// The longest address accepted.
    public static let limit = 900

    /// nil when there is no address or it is longer than 900 bytes.
    public static func parse(_ text: some Collection<UInt8>) -> [UInt8]? {
        let s = Array(text)
        var i: Int
        var terminator = UInt8(ascii: ">")
        if let lt = s.firstIndex(of: UInt8(ascii: "<")) {
            i = lt + 1
        } else {
            terminator = UInt8(ascii: " ")
            i = s.firstIndex(of: UInt8(ascii: ":")) ?? s.count
            if i < s.count { i += 1 }
            if i >= s.count { return nil }
            while i < s.count && s[i] == 32 { i += 1 }
        }
        // Strip a source route.
        if i < s.count && s[i] == UInt8(ascii: "@") {
            while i < s.count {
                let c = s[i]
                i += 1
                if c == UInt8(ascii: ":") { break }
            }
        }
        var addr: [UInt8] = []
        var escaped = false
        var quoted = false
        while i < s.count {
            let c = s[i]
            i += 1
            if c == 0 { break }
            if escaped {
                addr.append(c)
                escaped = false
                continue
            }
            if !quoted && c == terminator { break }
            switch c {
            case UInt8(ascii: "\\"): escaped = true
            case UInt8(ascii: "\""): quoted.toggle()
            default: addr.append(c)
            }
        }
        return addr.count > limit ? nil : addr
    }
}
