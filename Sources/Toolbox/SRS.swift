// The Sender Rewriting Scheme as libsrs2 (indimail-mta's) does it (toolbox.md §3).
// No imports: the HMAC comes in as a function, so the fuzz target can compile
// this file in as source.

public struct SRSConfig: Equatable, Sendable {
    /// The alias domain rewritten addresses get (`srs_domain`).
    public var domain: [UInt8]
    /// The first signs; all are tried when checking (`srs_secrets`).
    public var secrets: [[UInt8]]
    public var maxAge = 21
    public var hashLength = 4
    public var hashMin = 4
    public var separator = UInt8(ascii: "=")
    public var alwaysRewrite = false

    public init(domain: [UInt8], secrets: [[UInt8]]) {
        self.domain = domain
        self.secrets = secrets
    }
}

public struct SRSError: Error, Equatable, CustomStringConvertible {
    public let text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }
}

public struct SRS {
    public let config: SRSConfig
    /// HMAC-SHA1(key, message) → 20 bytes.
    public let hmac: ([UInt8], [UInt8]) -> [UInt8]
    /// Seconds since the epoch.
    public let now: Int

    public init(config: SRSConfig, now: Int, hmac: @escaping ([UInt8], [UInt8]) -> [UInt8]) {
        self.config = config
        self.now = now
        self.hmac = hmac
    }

    static let base32 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)
    static let base64 = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let equals = UInt8(ascii: "=")

    static func lower(_ b: some Collection<UInt8>) -> [UInt8] { b.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 } }

    /// Two base32 characters: the day number modulo 1024.
    public var timestamp: [UInt8] {
        let d = now / 86400
        return [SRS.base32[(d >> 5) & 31], SRS.base32[d & 31]]
    }

    static func encode64(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            let b0 = Int(bytes[i]), b1 = i + 1 < bytes.count ? Int(bytes[i + 1]) : 0, b2 = i + 2 < bytes.count ? Int(bytes[i + 2]) : 0
            let n = (b0 << 16) | (b1 << 8) | b2
            out.append(base64[(n >> 18) & 63])
            out.append(base64[(n >> 12) & 63])
            if i + 1 < bytes.count { out.append(base64[(n >> 6) & 63]) }
            if i + 2 < bytes.count { out.append(base64[n & 63]) }
            i += 3
        }
        return out
    }

    /// The hash of the parts (lower-cased, concatenated) with a secret: the first
    /// hashLength characters of the base64 HMAC-SHA1.
    func hash(_ parts: [[UInt8]], secret: [UInt8]) -> [UInt8] {
        var msg: [UInt8] = []
        for p in parts { msg += SRS.lower(p) }
        return Array(SRS.encode64(hmac(secret, msg)).prefix(config.hashLength))
    }

    static func isTag(_ user: ArraySlice<UInt8>, _ digit: UInt8) -> Bool {
        guard user.count >= 5 else { return false }
        let s = user.startIndex
        let sep = user[s + 4]
        return SRS.lower(user[s..<(s + 3)]) == Array("srs".utf8) && user[s + 3] == digit
            && (sep == UInt8(ascii: "-") || sep == UInt8(ascii: "+") || sep == UInt8(ascii: "="))
    }

    /// libsrs2's `srs_forward`: the address to use as envelope sender when
    /// forwarding mail from `sender`.
    public func forward(_ sender: [UInt8]) throws(SRSError) -> [UInt8] {
        guard let first = config.secrets.first else { throw SRSError("No secrets in SRS configuration.") }
        guard let at = sender.firstIndex(of: UInt8(ascii: "@")) else { throw SRSError("No at sign in sender address") }
        let user = sender[..<at], host = sender[(at + 1)...]
        if !config.alwaysRewrite && SRS.lower(host) == SRS.lower(config.domain) { return sender }
        let sep = config.separator
        var out: [UInt8]
        if SRS.isTag(user, UInt8(ascii: "1")) {
            let body = user.dropFirst(5)
            if body.isEmpty { throw SRSError("No hash in SRS1 address.") }
            guard let e1 = body.firstIndex(of: SRS.equals) else { throw SRSError("No host in SRS1 address.") }
            let rest = body[(e1 + 1)...]
            guard let e2 = rest.firstIndex(of: SRS.equals) else { throw SRSError("No user in SRS1 address.") }
            let h1 = Array(rest[..<e2]), u1 = Array(rest[(e2 + 1)...])
            out = Array("SRS1".utf8) + [sep] + hash([h1, u1], secret: first) + [SRS.equals] + h1 + [SRS.equals] + u1
        } else if SRS.isTag(user, UInt8(ascii: "0")) {
            let tail = Array(user.dropFirst(4))
            out = Array("SRS1".utf8) + [sep] + hash([Array(host), tail], secret: first) + [SRS.equals] + host + [SRS.equals] + tail
        } else {
            let tt = timestamp
            out = Array("SRS0".utf8) + [sep] + hash([tt, Array(host), Array(user)], secret: first) + [SRS.equals] + tt
                + [SRS.equals] + host + [SRS.equals] + user
        }
        out += [UInt8(ascii: "@")] + config.domain
        if out.count >= 1000 { throw SRSError("Buffer too small.") }
        return out
    }

    func checkHash(_ given: [UInt8], _ parts: [[UInt8]]) throws(SRSError) {
        if given.count < config.hashMin { throw SRSError("Hash too short in SRS address.") }
        let g = SRS.lower(given)
        for s in config.secrets where SRS.lower(hash(parts, secret: s)) == g { return }
        throw SRSError("Hash invalid in SRS address.")
    }

    func checkTimestamp(_ tt: [UInt8]) throws(SRSError) {
        guard tt.count == 2 else { throw SRSError("Time stamp out of date.") }
        var then = 0
        for c in tt {
            let u = (c >= 97 && c <= 122) ? c - 32 : c
            guard let v = SRS.base32.firstIndex(of: u) else { throw SRSError("Bad base32 character in timestamp.") }
            then = (then << 5) | v
        }
        var today = (now / 86400) % 1024
        while today < then { today += 1024 }
        if today > then + config.maxAge { throw SRSError("Time stamp out of date.") }
    }

    /// libsrs2's `srs_reverse`: the address an SRS address stands for (SRS1 →
    /// the SRS0 address at the first forwarder's domain; SRS0 → the original).
    public func reverse(_ address: [UInt8]) throws(SRSError) -> [UInt8] {
        if config.secrets.isEmpty { throw SRSError("No secrets in SRS configuration.") }
        let user = address[..<(address.firstIndex(of: UInt8(ascii: "@")) ?? address.endIndex)]
        if SRS.isTag(user, UInt8(ascii: "1")) {
            let body = user.dropFirst(5)
            guard let e1 = body.firstIndex(of: SRS.equals), e1 > body.startIndex else { throw SRSError("No hash in SRS1 address.") }
            let rest = body[(e1 + 1)...]
            guard let e2 = rest.firstIndex(of: SRS.equals), e2 > rest.startIndex else { throw SRSError("No host in SRS1 address.") }
            let host = Array(rest[..<e2]), u = Array(rest[(e2 + 1)...])
            if u.isEmpty { throw SRSError("No user in SRS1 address.") }
            try checkHash(Array(body[..<e1]), [host, u])
            return Array("SRS0".utf8) + u + [UInt8(ascii: "@")] + host
        }
        if SRS.isTag(user, UInt8(ascii: "0")) {
            let body = user.dropFirst(5)
            guard let e1 = body.firstIndex(of: SRS.equals), e1 > body.startIndex else { throw SRSError("No hash in SRS0 address.") }
            let r1 = body[(e1 + 1)...]
            guard let e2 = r1.firstIndex(of: SRS.equals), e2 > r1.startIndex else { throw SRSError("No timestamp in SRS0 address.") }
            let r2 = r1[(e2 + 1)...]
            guard let e3 = r2.firstIndex(of: SRS.equals), e3 > r2.startIndex else { throw SRSError("No host in SRS0 address.") }
            let tt = Array(r1[..<e2]), host = Array(r2[..<e3]), u = Array(r2[(e3 + 1)...])
            if u.isEmpty { throw SRSError("No user in SRS0 address.") }
            try checkTimestamp(tt)
            try checkHash(Array(body[..<e1]), [tt, host, u])
            return u + [UInt8(ascii: "@")] + host
        }
        throw SRSError("Not an SRS address.")
    }
}
