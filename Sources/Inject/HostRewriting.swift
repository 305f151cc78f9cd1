// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift build of new-inject. Keep it Embedded-clean: typed throws,
// no existentials, no casts.

/// new-inject's host rewriting (toolbox.md §2.1): an ordered list of rules, each
/// applied to the result of the one before.
///
///     =H:R   the host equals H                  -> R
///     *S:R   the host ends with S               -> that suffix replaced by R
///     ?S:R   as `*`, but only when what stays before S has no `.`, `/`, `[` or `]`
///     -S:R   the host ends with S               -> the whole host becomes R
///
/// S and H compare without regard to ASCII case; R is taken as written. A rule
/// of another kind, or without a colon, is ignored (so comment lines cost nothing).
public struct RewriteRules: Equatable, Sendable {
    public var rules: [[UInt8]]

    public init(rules: [[UInt8]]) { self.rules = rules }

    /// Rules from the lines of a file (control/rewrite, `$QMAILREWRITEFILE`).
    public init(lines: [String]) { rules = lines.map { Array($0.utf8) } }

    /// The rules used when neither `$QMAILREWRITEFILE` nor control/rewrite exists:
    /// drop a final dot; an empty host becomes defaulthost; a final `+` becomes
    /// `.plusdomain`; a host without a dot gets `.defaultdomain`.
    public static func builtIn(defaultHost: [UInt8], plusDomain: [UInt8], defaultDomain: [UInt8]) -> RewriteRules {
        RewriteRules(rules: [
            Array("*.:".utf8),
            Array("=:".utf8) + defaultHost,
            Array("*+:.".utf8) + plusDomain,
            Array("?:.".utf8) + defaultDomain,
        ])
    }

    static func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b + 32 : b }

    /// One rule applied to `host`; nil when the rule does not match.
    static func apply(_ rule: [UInt8], to host: [UInt8]) -> [UInt8]? {
        guard let kind = rule.first, kind == UInt8(ascii: "=") || kind == UInt8(ascii: "*")
                || kind == UInt8(ascii: "?") || kind == UInt8(ascii: "-") else { return nil }
        let body = rule[1...]
        guard let colon = body.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let pattern = body[body.startIndex..<colon]
        let replacement = body[(colon + 1)...]
        guard host.count >= pattern.count else { return nil }
        let keep = host.count - pattern.count
        if kind == UInt8(ascii: "=") && keep != 0 { return nil }
        var i = keep
        for p in pattern {
            if lower(p) != lower(host[i]) { return nil }
            i += 1
        }
        if kind == UInt8(ascii: "?") {
            for b in host[0..<keep] where b == UInt8(ascii: ".") || b == UInt8(ascii: "/")
                || b == UInt8(ascii: "[") || b == UInt8(ascii: "]") { return nil }
        }
        if kind == UInt8(ascii: "-") { return Array(replacement) }
        return Array(host[0..<keep]) + replacement
    }

    /// The host after every rule.
    public func host(_ host: [UInt8]) -> [UInt8] {
        var work = host
        for r in rules { if let next = RewriteRules.apply(r, to: work) { work = next } }
        return work
    }

    /// An address: the host is what follows the first `@` (none: an empty host,
    /// which the rules may complete). An empty address, or `@` alone, stays empty.
    public func address(_ address: [UInt8]) -> [UInt8] {
        let at = address.firstIndex(of: UInt8(ascii: "@")) ?? address.count
        if at == 0 && address.count <= 1 { return [] }
        let host = at < address.count ? Array(address[(at + 1)...]) : []
        return Array(address[0..<at]) + [UInt8(ascii: "@")] + self.host(host)
    }
}
