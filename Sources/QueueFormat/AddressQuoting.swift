/// qmail's address quoting (`quote.c`), for headers and SMTP paths: the local part goes into
/// double quotes, with `\` before CR, LF, `"` and `\`, when it is empty, has a
/// byte ≥ 128 or outside the atom set, or starts/ends with `.` or has `..`.
public enum AddressQuoting {
    static let atomSpecials = Set("!#$%&'*+-/=?^_`{|}~".utf8)

    static func needsQuotes(_ s: ArraySlice<UInt8>) -> Bool {
        if s.isEmpty { return true }
        if s.first == UInt8(ascii: ".") || s.last == UInt8(ascii: ".") { return true }
        var prevDot = false
        for c in s {
            if c == UInt8(ascii: ".") {
                if prevDot { return true }
                prevDot = true
                continue
            }
            prevDot = false
            if c >= 128 { return true }
            let alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)
            if !alnum && !atomSpecials.contains(c) { return true }
        }
        return false
    }

    /// The local part (or any text) quoted as needed.
    public static func quoteLocal(_ s: ArraySlice<UInt8>) -> [UInt8] {
        guard needsQuotes(s) else { return Array(s) }
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for c in s {
            if c == 13 || c == 10 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
            out.append(c)
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// `quote()`: the whole string is a local part.
    public static func quote(_ s: [UInt8]) -> [UInt8] { quoteLocal(s[...]) }

    /// `quote2()`: only what precedes the last `@` is quoted. Empty stays empty.
    public static func quote2(_ s: [UInt8]) -> [UInt8] {
        if s.isEmpty { return [] }
        guard let at = s.lastIndex(of: UInt8(ascii: "@")) else { return quoteLocal(s[...]) }
        return quoteLocal(s[..<at]) + s[at...]
    }
}
