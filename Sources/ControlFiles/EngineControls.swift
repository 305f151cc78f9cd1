import SystemIO

/// The control files the delivery engine reads, with qmail's defaults
/// (engine.md §10). A present but malformed file is an error naming the file
/// and line: the engine refuses to start rather than guess.
public struct EngineControls: Sendable, Equatable {
    public var me: String
    public var locals: Set<String>
    public var percentHack: Set<String>
    public var virtualDomains: [String: String]
    public var envNoAtHost: String
    public var concurrencyLocal: Int
    public var concurrencyRemote: Int
    /// `concurrencyremotedomain`: remote slots one destination domain may use (0 = no limit).
    public var concurrencyRemoteDomain: Int
    public var holdLocal: Bool
    public var holdRemote: Bool
    public var queueLifetime: Int
    public var bounceLifetime: Int
    public var bounceFrom: String
    public var bounceHost: String
    public var doubleBounceHost: String
    public var doubleBounceTo: String
    public var bounceMaxBytes: Int
    public var bounceSubject: String
    public var doubleBounceSubject: String
    public var todoInterval: Int
    /// `bounceformat` (or `bounceformat.<queue>`): `qsbmf` or `dsn`.
    public var bounceFormat: String
    /// `delaywarning`: seconds before a still-deferred message's sender is warned (0 = never).
    public var delayWarning: Int

    /// The spawner slot limit (indimail's `conf-spawn`).
    public static let concurrencyLimit = 500

    public init(me: String = "localhost") {
        self.me = me
        locals = [me.lowercased()]
        percentHack = []
        virtualDomains = [:]
        envNoAtHost = me
        concurrencyLocal = 10
        concurrencyRemote = 20
        concurrencyRemoteDomain = 10
        holdLocal = false
        holdRemote = false
        queueLifetime = 604800
        bounceLifetime = 604800
        bounceFrom = "MAILER-DAEMON"
        bounceHost = me
        doubleBounceHost = me
        doubleBounceTo = "postmaster"
        bounceMaxBytes = 50000
        bounceSubject = "failure notice"
        doubleBounceSubject = "failure notice"
        todoInterval = 1500
        bounceFormat = "qsbmf"
        delayWarning = 0
    }

    /// Reads every control the engine uses. `queueName` selects the per-queue
    /// overrides `concurrencyl.<q>` / `concurrencyr.<q>`.
    public static func load(from control: ControlDirectory, queueName: String? = nil) throws -> EngineControls {
        guard let me = try control.readLine("me"), !me.isEmpty else {
            throw ControlError(file: control.filePath("me"), line: 1,
                               message: "missing or empty: the engine needs this host's name in control/me")
        }
        var c = EngineControls(me: me)
        if let l = try control.readLines("locals") { c.locals = Set(l.map { $0.lowercased() }) }
        if let p = try control.readLines("percenthack") { c.percentHack = Set(p.map { $0.lowercased() }) }
        if let v = try control.readLinesNumbered("virtualdomains") {
            c.virtualDomains = try virtualDomains(v, file: control.filePath("virtualdomains"))
        }
        c.envNoAtHost = try nonEmpty(control.readLine("envnoathost")) ?? me
        c.concurrencyLocal = try control.readInt("concurrencylocal", default: 10)
        c.concurrencyRemote = try control.readInt("concurrencyremote", default: 20)
        if let q = queueName {
            c.concurrencyLocal = try control.readInt("concurrencyl.\(q)", default: c.concurrencyLocal)
            c.concurrencyRemote = try control.readInt("concurrencyr.\(q)", default: c.concurrencyRemote)
        }
        for (name, v) in [("concurrencylocal", c.concurrencyLocal), ("concurrencyremote", c.concurrencyRemote)] where v < 0 {
            throw ControlError(file: control.filePath(name), line: 1, message: "concurrency must not be negative")
        }
        c.concurrencyLocal = min(c.concurrencyLocal, concurrencyLimit)
        c.concurrencyRemote = min(c.concurrencyRemote, concurrencyLimit)
        c.concurrencyRemoteDomain = try control.readInt("concurrencyremotedomain", default: 10)
        if c.concurrencyRemoteDomain < 0 {
            throw ControlError(file: control.filePath("concurrencyremotedomain"), line: 1, message: "must not be negative (0 = no limit)")
        }
        c.holdLocal = try control.readInt("holdlocal", default: 0) != 0
        c.holdRemote = try control.readInt("holdremote", default: 0) != 0
        c.queueLifetime = try control.readInt("queuelifetime", default: 604800)
        c.bounceLifetime = min(try control.readInt("bouncelifetime", default: 604800), c.queueLifetime)
        c.bounceFrom = try nonEmpty(control.readLine("bouncefrom")) ?? "MAILER-DAEMON"
        c.bounceHost = try nonEmpty(control.readLine("bouncehost")) ?? me
        c.doubleBounceHost = try nonEmpty(control.readLine("doublebouncehost")) ?? me
        c.doubleBounceTo = try control.readLine("doublebounceto") ?? "postmaster"
        c.bounceMaxBytes = try control.readInt("bouncemaxbytes", default: 50000)
        c.bounceSubject = try nonEmpty(control.readLine("bouncesubject")) ?? "failure notice"
        c.doubleBounceSubject = try nonEmpty(control.readLine("doublebouncesubject")) ?? "failure notice"
        c.todoInterval = try control.readInt("todointerval", default: 1500)
        var format = try control.readLine("bounceformat") ?? "qsbmf"
        if let q = queueName, let f = try control.readLine("bounceformat.\(q)") { format = f }
        format = format.lowercased()
        guard format == "qsbmf" || format == "dsn" else {
            throw ControlError(file: control.filePath("bounceformat"), line: 1, message: "expected qsbmf or dsn, found \"\(format)\"")
        }
        c.bounceFormat = format
        c.delayWarning = try control.readInt("delaywarning", default: 0)
        return c
    }

    static func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }

    /// `virtualdomains` lines (as `readLinesNumbered` gives them) as `load` reads
    /// them: `domain:prepend`, the key lowercased, the first line for a key wins;
    /// a line without a colon is an error naming `file` and the line.
    public static func virtualDomains(_ lines: [(line: Int, text: String)], file: String) throws(ControlError) -> [String: String] {
        var out: [String: String] = [:]
        for (n, line) in lines {
            guard let colon = line.firstIndex(of: ":") else {
                throw ControlError(file: file, line: n, message: "expected domain:prepend, found \"\(line)\"")
            }
            let key = String(line[..<colon]).lowercased()
            if out[key] == nil { out[key] = String(line[line.index(after: colon)...]) }
        }
        return out
    }
}

/// Where a recipient goes after qmail's rewrite rules (todo processing).
public enum Route: Equatable, Sendable {
    case local(String)
    case remote(String)
}

/// qmail-send's `rewrite()`: envnoathost, percenthack, locals, virtualdomains
/// (keys tried: the whole address, the domain, each `.suffix` longest first,
/// then the empty key; an empty prepend is an exception → remote).
public struct AddressRewriter: Sendable {
    public let controls: EngineControls

    public init(controls: EngineControls) { self.controls = controls }

    public func route(_ recipient: String) -> Route {
        // On bytes, as qmail does: "@" or "-" followed by a combining mark is one
        // Swift Character, which a Character search would not find.
        func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
        var addr = Array(recipient.utf8)
        if !addr.contains(UInt8(ascii: "@")) { addr += [UInt8(ascii: "@")] + Array(controls.envNoAtHost.utf8) }
        // percenthack
        while true {
            guard let at = addr.lastIndex(of: UInt8(ascii: "@")) else { break }
            let domain = text(Array(addr[(at + 1)...])).lowercased()
            guard controls.percentHack.contains(domain) else { break }
            guard let pct = addr[..<at].lastIndex(of: UInt8(ascii: "%")) else { break }
            addr = Array(addr[..<pct]) + [UInt8(ascii: "@")] + Array(addr[(pct + 1)..<at])
        }
        let whole = text(addr)
        guard let at = addr.lastIndex(of: UInt8(ascii: "@")) else { return .remote(whole) }
        let domain = text(Array(addr[(at + 1)...])).lowercased()
        if controls.locals.contains(domain) { return .local(whole) }
        let prepend = controls.virtualDomains[whole.lowercased()] ?? domainPrepend(domain)
        if let p = prepend, !p.isEmpty { return .local(p + "-" + whole) }
        return .remote(whole)
    }

    /// The virtualdomains entry of a (lower-cased) domain.
    func domainPrepend(_ domain: String) -> String? { DomainTable.lookup(domain, in: controls.virtualDomains) }

    /// Undoes a virtualdomains prepend for the bounce text, as qmail-send's
    /// `stripvdomprepend`: the prepend of the recipient's domain (exact, then
    /// `.suffix` longest first, then the catch-all; address keys are not used) is
    /// removed when the address starts with exactly `prepend-`.
    public func stripPrepend(_ address: String) -> String {
        let a = Array(address.utf8)
        guard let at = a.lastIndex(of: UInt8(ascii: "@")) else { return address }
        let domain = String(decoding: a[(at + 1)...], as: UTF8.self).lowercased()
        guard let p = domainPrepend(domain), !p.isEmpty else { return address }
        let prefix = Array((p + "-").utf8)
        guard a.starts(with: prefix) else { return address }
        return String(decoding: a[prefix.count...], as: UTF8.self)
    }
}

/// qmail's lookup order for domain-keyed control files (virtualdomains,
/// smtproutes): the domain itself, then each `.suffix` longest first, then
/// the empty catch-all key. The domain is given lower-cased.
public enum DomainTable {
    public static func lookup<T>(_ domain: String, in table: [String: T]) -> T? {
        if let v = table[domain] { return v }
        var i = domain.startIndex
        while i < domain.endIndex {
            if domain[i] == ".", let v = table[String(domain[i...])] { return v }
            i = domain.index(after: i)
        }
        return table[""]
    }
}
