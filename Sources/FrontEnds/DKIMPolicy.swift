/// qmail-dkim's choices that do not need the DKIM library: which headers to
/// sign, where the key is, what a verification outcome is called.
public enum DKIMPolicy {
    /// indimail-mta's SignThisHeader: never sign `X-*` (but `X-Mailer`), `Received`,
    /// `Authentication-Results`, `ARC-Authentication-Results`, `DKIM-Signature`,
    /// `DomainKey-Signature`, `Return-Path`, nor names starting with one of the
    /// colon-separated prefixes of `EXCLUDE_DKIMSIGN` (case-insensitive).
    public static func shouldSign(_ name: String, excludePrefixes: [String]) -> Bool {
        let n = name.lowercased()
        if n.hasPrefix("x-") && n != "x-mailer" { return false }
        if ["received", "authentication-results", "arc-authentication-results", "dkim-signature",
            "domainkey-signature", "return-path", "dkim-status"].contains(n) { return false }
        for p in excludePrefixes where !p.isEmpty && n.hasPrefix(p.lowercased()) { return false }
        return true
    }

    /// The distinct names to sign, in first-seen order, escaped for the regular
    /// expression libopendkim builds from them (`^(a|b|…)$`).
    public static func signedHeaderNames(_ header: MessageHeader, excludePrefixes: [String]) -> [String] {
        var seen = Set<String>()
        var out: [String] = []
        for f in header.fields where shouldSign(f.name, excludePrefixes: excludePrefixes) {
            let lower = f.name.lowercased()
            if lower.isEmpty || seen.contains(lower) { continue }
            seen.insert(lower)
            out.append(regexEscaped(lower))
        }
        return out
    }

    static func regexEscaped(_ s: String) -> String {
        var out = ""
        for ch in s.unicodeScalars {
            let c = Character(ch)
            if c.isLetter || c.isNumber || c == "-" || c == "_" { out.append(c) } else { out += "\\" + String(c) }
        }
        return out
    }

    /// The key file for `domain`: `template` relative to the control directory unless
    /// absolute, every `%` replaced by the domain. When `template` has a `%`, the
    /// second path is the one with the `%` removed (tried when the first is absent).
    public static func keyPaths(template: String, domain: String, controlDirectory: String) -> (first: String, withoutDomain: String?) {
        let full = template.hasPrefix("/") ? template : controlDirectory + "/" + template
        guard full.contains("%") else { return (full, nil) }
        let replaced = full.replacingAll("%", with: domain)
        var removed = full.replacingAll("/%/", with: "/").replacingAll("%", with: "")
        while removed.contains("//") { removed = removed.replacingAll("//", with: "/") }
        return (replaced, removed)
    }

    /// The selector: the key file's base name.
    public static func selector(ofKeyPath path: String) -> String {
        var p = Substring(path)
        while p.hasSuffix("/") { p = p.dropLast() }
        if let slash = p.lastIndex(of: "/") { return String(p[p.index(after: slash)...]) }
        return String(p)
    }

    /// A verification outcome in indimail-mta's terms: the letter DKIMVERIFY lists,
    /// the `DKIM-Status:` text and the status code (X. replaced by 4. or 5.).
    public struct Verdict: Equatable, Sendable {
        /// indimail-mta's libdkim result: 0 … 5 good/neutral kinds, −1 … −19 failures.
        public let code: Int
        public var letter: Character {
            let base: UInt8 = code >= 0 ? UInt8(ascii: "A") : UInt8(ascii: "F")
            return Character(Unicode.Scalar(code >= 0 ? base + UInt8(code) : base + UInt8(-code)))
        }
        public init(code: Int) { self.code = code }

        public var text: String {
            switch code {
            case 0: return "good        "
            case 1: return "process result: no more message body is needed"
            case 2: return "verify result: at least none but not all signatures verified"
            case 3: return "verify result: no signatures verified but message is not suspicious"
            case 4: return "signature result: signature verified but it did not include all of the body"
            case 5: return "signature result: 3rd party signature"
            case -1: return "DKIM Signature verification failed"
            case -2: return "signature error: DKIM-Signature could not parse or has bad tags/values"
            case -3: return "signature error: RSA/ED25519 verify failed"
            case -4: return "signature error: RSA/ED25519 verify failed but testing"
            case -5: return "signature error: x= is old"
            case -6: return "signature error: selector doesn't parse or contains invalid values"
            case -7: return "signature error: selector g= doesn't match i="
            case -8: return "signature error: selector p= empty"
            case -9: return "signature error: selector domain name too long to request"
            case -10: return "signature error: temporary dns failure requesting selector"
            case -11: return "signature error: permanent dns failure requesting selector"
            case -12: return "signature error: selector p= value invalid or wrong format"
            case -13: return "no signatures"
            case -14: return "no valid signatures"
            case -15: return "signature verify error: message body does not hash to bh value"
            case -16: return "signature error: selector h= doesn't match signature a="
            case -17: return "signature error: incompatible v="
            case -18: return "signature error: not all message's From headers in signature"
            case -19: return "signature error: invalid identify in signature"
            default: return "error"
            }
        }

        /// `X.7.0` and the like.
        public var statusCode: String {
            switch code {
            case 0...5, -1, -9, -10, -11: return "X.7.0"
            case -2, -3, -4, -5, -6, -7, -8, -12, -13, -14: return "X.7.5"
            case -15, -16, -18, -19: return "X.7.7"
            case -17: return "X.7.6"
            default: return "X.3.0"
            }
        }

        /// What DKIMVERIFY asks for this verdict: `D` (refuse for good) when the
        /// letter is listed in upper case, `Z` (try later) when in lower case.
        public func action(dkimverify: String) -> Character? {
            let upper = letter
            let lower = Character(upper.lowercased())
            if dkimverify.contains(upper) { return "D" }
            if dkimverify.contains(lower) { return "Z" }
            return nil
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        if target.isEmpty { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[rest.startIndex..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

extension Substring {
    func range(of target: String) -> Range<Substring.Index>? {
        let t = Array(target.utf8)
        let u = Array(self.utf8)
        if t.isEmpty || t.count > u.count { return nil }
        var i = 0
        while i + t.count <= u.count {
            if Array(u[i..<(i + t.count)]) == t {
                let lo = self.utf8.index(self.startIndex, offsetBy: i)
                let hi = self.utf8.index(lo, offsetBy: t.count)
                return lo..<hi
            }
            i += 1
        }
        return nil
    }
}

extension DKIMPolicy {
    /// libopendkim's per-signature error (DKIM_SIGERROR_*) in indimail-mta's result
    /// codes (see `Verdict`).
    public static func verdictCode(sigError: Int, bodyHashMismatch: Bool, testKey: Bool) -> Int {
        // A changed body: the signature over the header may still hold, or fail too;
        // the body hash is what tells.
        if bodyHashMismatch && (sigError == 0 || sigError == 28) { return -15 }
        if sigError == 0 { return 0 }
        switch sigError {
        case 1, 44, 45: return -17            // v= missing, empty or unsupported
        case 2: return -19                    // d=/i= invalid
        case 3: return -5                     // expired
        case 22: return -11                   // no key in DNS
        case 23, 30, 35, 38: return -6        // key record unusable
        case 24: return -10                   // DNS query failed
        case 28: return testKey ? -4 : -3     // signature mismatch
        case 29: return -7                    // unauthorised subdomain
        case 32: return -18                   // h= lacks From
        case 36, 37: return -16               // key h= does not allow a=
        case 40, 41, 43, 46: return -12       // key p= unusable
        case 42: return -8                    // key revoked (p= empty)
        case 4, 5, 7...21, 25...27, 31, 33: return -2   // tags missing, empty or malformed
        default: return -1
        }
    }

    /// The RFC 8601 result word for a verdict code.
    public static func authenticationResult(code: Int) -> String {
        switch code {
        case 0...5: return "pass"
        case -13: return "none"
        case -10: return "temperror"
        case -3, -4, -5, -15, -1: return "fail"
        case -2, -7, -17, -18, -19: return "neutral"
        default: return "permerror"
        }
    }
}
