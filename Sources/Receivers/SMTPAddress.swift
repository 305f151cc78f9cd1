/// qmail-smtpd's `addrparse`, with qmail's tolerance: `<>` is the null address;
/// without angle brackets the address follows the first `:` and ends at a
/// space; a source route (`<@a,@b:user@host>`) is dropped; a backslash makes the
/// next byte literal and double quotes are dropped (`<"john doe"@d>` is
/// `john doe@d`); a missing `>` takes the rest of the line. Nothing else is
/// checked: spaces, 8-bit bytes and a missing domain pass, as in qmail.
public enum SMTPAddress {
    /// The longest address accepted (qmail: 899 bytes).
    public static let maxLength = 899

    public struct Parsed: Equatable, Sendable {
        public var address: [UInt8]
        /// The words after `>` (ESMTP parameters such as `SIZE=1234`), upper-cased keys kept as sent.
        public var parameters: [[UInt8]]
    }

    /// Nil for a syntax error: no address after `:` without brackets, or an
    /// address longer than `maxLength` (checked after the local-IP rewrite).
    public static func parse(_ arg: [UInt8], localIPHost: [UInt8]? = nil, isLocalIP: ([UInt8]) -> Bool = { _ in false }) -> Parsed? {
        var i: Int
        let terminator: UInt8
        var bracketed = false
        if let lt = arg.firstIndex(of: UInt8(ascii: "<")) {
            i = lt + 1
            terminator = UInt8(ascii: ">")
            bracketed = true
        } else {
            if let colon = arg.firstIndex(of: UInt8(ascii: ":")) { i = colon + 1 } else { i = arg.count }
            while i < arg.count && arg[i] == UInt8(ascii: " ") { i += 1 }
            terminator = UInt8(ascii: " ")
            if i >= arg.count { return nil }
        }
        // A source route: everything through the first ':'.
        if i < arg.count && arg[i] == UInt8(ascii: "@") {
            if let colon = arg[i...].firstIndex(of: UInt8(ascii: ":")) { i = colon + 1 } else { i = arg.count }
        }
        var out: [UInt8] = []
        var quoted = false
        while i < arg.count {
            let c = arg[i]
            if c == UInt8(ascii: "\\") {
                i += 1
                if i < arg.count { out.append(arg[i]); i += 1 }
                continue
            }
            if c == UInt8(ascii: "\"") { quoted.toggle(); i += 1; continue }
            if !quoted && c == terminator { break }
            out.append(c)
            i += 1
            if out.count > maxLength + 64 { return nil }   // bounded before the exact check below
        }
        var params: [[UInt8]] = []
        if bracketed, i < arg.count, arg[i] == terminator {
            params = arg[(i + 1)...].split(separator: UInt8(ascii: " ")).map(Array.init)
        } else if !bracketed, i < arg.count {
            params = arg[(i + 1)...].split(separator: UInt8(ascii: " ")).map(Array.init)
        }
        // localiphost: user@[a.b.c.d] naming one of this host's addresses.
        if let host = localIPHost, out.last == UInt8(ascii: "]"),
           let at = out.lastIndex(of: UInt8(ascii: "@")), at + 1 < out.count, out[at + 1] == UInt8(ascii: "["),
           isLocalIP(Array(out[(at + 2)..<(out.count - 1)])) {
            out = Array(out[...at]) + host
        }
        if out.count > maxLength { return nil }
        return Parsed(address: out, parameters: params)
    }

    /// The value of `SIZE=` among the parameters, if any.
    public static func sizeParameter(_ params: [[UInt8]]) -> Int? {
        for p in params where p.count > 5 {
            let key = p[0..<5].map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }
            if key == Array("SIZE=".utf8) { return Int(String(decoding: p[5...], as: UTF8.self)) }
        }
        return nil
    }
}
