/// qmail's quote.c: RFC 821 quoting of a local part, on bytes.
public enum QmailQuote {
    static let atomBytes = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~.".utf8)

    /// quote_need(): empty, a byte outside the atom set (8-bit included), or a
    /// leading, trailing or doubled dot.
    public static func needed(_ s: some Collection<UInt8>) -> Bool {
        if s.isEmpty { return true }
        if s.contains(where: { !atomBytes.contains($0) }) { return true }
        let dot = UInt8(ascii: ".")
        if s.first == dot || s.reversed().first == dot { return true }
        return zip(s, s.dropFirst()).contains { $0 == dot && $1 == dot }
    }

    /// quote(): the text in double quotes, with `\` before CR, LF, `"` and `\`,
    /// when it needs quoting; else unchanged.
    public static func quote(_ s: some Collection<UInt8>) -> [UInt8] {
        guard needed(s) else { return Array(s) }
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for c in s {
            if c == 13 || c == 10 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
            out.append(c)
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// quote2(): the local part (before the last `@`) quoted as needed, then the
    /// rest; a string without `@` is quoted as a whole; an empty one stays empty.
    public static func quote2(_ s: [UInt8]) -> [UInt8] {
        if s.isEmpty { return [] }
        guard let at = s.lastIndex(of: UInt8(ascii: "@")) else { return quote(s) }
        return quote(s[..<at]) + s[at...]
    }
}
