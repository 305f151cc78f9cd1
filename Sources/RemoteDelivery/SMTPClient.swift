#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO
import ControlFiles
import QueueFormat
import Synchronization

/// What one SMTP attempt produced, in qmail-remote's report format: one
/// report per recipient (`r` accepted, `h` refused for good, `s` refused for
/// now) and one message report (`K`, `Z`, `D`), each the letter and text.
public struct RemoteOutcome: Equatable, Sendable {
    public var recipientReports: [[UInt8]]
    public var messageReport: [UInt8]

    /// qmail-remote's standard output: every report NUL-terminated.
    public var outputBytes: [UInt8] {
        var out: [UInt8] = []
        for r in recipientReports { out += r; out.append(0) }
        out += messageReport; out.append(0)
        return out
    }

    /// Bytes qmail-rspawn would fold for recipient `i` (its report, then the message report).
    public func output(forRecipient i: Int) -> [UInt8] {
        var out: [UInt8] = []
        if i < recipientReports.count { out += recipientReports[i]; out.append(0) }
        out += messageReport; out.append(0)
        return out
    }

    static func all(_ n: Int, message: String) -> RemoteOutcome {
        RemoteOutcome(recipientReports: [], messageReport: Array(message.utf8))
    }
}

/// Settings from the control files qmail-remote reads.
public struct SMTPSettings: Sendable {
    public var heloHost: String = "localhost"
    public var timeoutConnect: Int = 60
    public var timeoutRemote: Int = 1200
    public var routes = SMTPRoutes()
    /// `qmtproutes`: destinations delivered to over QMTP (QMTPClient.swift).
    public var qmtpRoutes = SMTPRoutes()
    /// Destinations (domains, `.suffix`, or `*`) that require TLS with a verified certificate.
    public var tlsRequired: [String] = []
    public var caFile: String? = nil
    /// Opportunistic STARTTLS when offered (on unless `notls` says otherwise).
    public var startTLS = true
    public var idleTimeout: Int64 = 30
    public var maxMessagesPerConnection = 100

    public init() {}

    /// `helohost` (default `me`), `timeoutconnect`, `timeoutremote`, `smtproutes`,
    /// `tlsdestinations`, `tlsca` (or `$TLS_CA_FILE`), `notls`.
    /// This host's addresses (qmail's ipme: the interfaces, 0.0.0.0, `moreipme`, less
    /// `notipme`). Empty: no check (settings built by hand, as in tests).
    public var localAddresses: [[UInt8]] = []

    public static func load(_ control: ControlDirectory) throws -> SMTPSettings {
        var s = SMTPSettings()
        var me = SMTPSettings.interfaceAddresses() + [[0, 0, 0, 0]]
        me += (try control.readLines("moreipme") ?? []).compactMap(ipAddress)
        let not = (try control.readLines("notipme") ?? []).compactMap(ipAddress)
        s.localAddresses = me.filter { !not.contains($0) }
        s.heloHost = try control.readLine("helohost").flatMap { $0.isEmpty ? nil : $0 } ?? control.readLine("me") ?? "localhost"
        s.timeoutConnect = try control.readInt("timeoutconnect", default: 60)
        s.timeoutRemote = try control.readInt("timeoutremote", default: 1200)
        s.routes = try SMTPRoutes.load(control)
        s.qmtpRoutes = try SMTPRoutes.loadQMTP(control)
        s.tlsRequired = try control.readLines("tlsdestinations")?.map { $0.lowercased() } ?? []
        if let ca = Sys.environment("TLS_CA_FILE") { s.caFile = ca } else { s.caFile = try control.readLine("tlsca") }
        s.startTLS = try control.readInt("notls", default: 0) == 0
        return s
    }

    /// The addresses of this host's interfaces (IPv4 4 bytes, IPv6 16 bytes).
    public static func interfaceAddresses() -> [[UInt8]] {
        var out: [[UInt8]] = []
        var list: UnsafeMutablePointer<ifaddrs>? = nil
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var p = list
        while let ifa = p {
            if let sa = ifa.pointee.ifa_addr {
                if sa.pointee.sa_family == sa_family_t(AF_INET) {
                    sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                        withUnsafeBytes(of: sin.pointee.sin_addr) { out.append(Array($0)) }
                    }
                } else if sa.pointee.sa_family == sa_family_t(AF_INET6) {
                    sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { s6 in
                        withUnsafeBytes(of: s6.pointee.sin6_addr) { out.append(Array($0)) }
                    }
                }
            }
            p = ifa.pointee.ifa_next
        }
        return out
    }

    public func requiresTLS(_ domain: String) -> Bool {
        let d = domain.lowercased()
        for t in tlsRequired {
            if t == "*" || t == d { return true }
            if t.hasPrefix(".") && d.hasSuffix(t) { return true }
        }
        return false
    }
}

/// Idle connections kept for the next message to the same destination.
public final class ConnectionPool: Sendable {
    private let idle = Mutex<[String: [SMTPConnection]]>([:])
    public let maxIdle: Int

    public init(maxIdle: Int = 64) {
        self.maxIdle = maxIdle
    }

    static func now() -> Int64 { Int64(time(nil)) }

    public func checkout(_ key: String, idleTimeout: Int64) -> SMTPConnection? {
        idle.withLock { idle in
            while var list = idle[key], let c = list.popLast() {
                idle[key] = list.isEmpty ? nil : list
                if ConnectionPool.now() - c.lastUsed <= idleTimeout { return c }
                c.close()
            }
            return nil
        }
    }

    public func checkin(_ key: String, _ c: SMTPConnection) {
        c.lastUsed = ConnectionPool.now()
        let kept = idle.withLock { idle in
            let total = idle.values.reduce(0) { $0 + $1.count }
            if total >= maxIdle { return false }
            idle[key, default: []].append(c)
            return true
        }
        if !kept { c.close() }
    }

    /// Closes idle connections older than `idleTimeout` (QUIT sent first).
    public func reap(idleTimeout: Int64) {
        let now = ConnectionPool.now()
        let stale = idle.withLock { idle in
            var stale: [SMTPConnection] = []
            for (k, list) in idle {
                let keep = list.filter { now - $0.lastUsed <= idleTimeout }
                stale += list.filter { now - $0.lastUsed > idleTimeout }
                idle[k] = keep.isEmpty ? nil : keep
            }
            return stale
        }
        for c in stale { c.quit() }
    }

    /// Closes every idle connection (QUIT sent first).
    public func closeAll() {
        let all = idle.withLock { idle in
            let all = idle.values.flatMap { $0 }
            idle.removeAll()
            return all
        }
        for c in all { c.quit() }
    }

    public var idleCount: Int {
        idle.withLock { $0.values.reduce(0) { $0 + $1.count } }
    }
}

/// Remembers hosts whose connections time out (qmail's `lock/tcpto`), so a
/// dead MX does not cost every message a connect timeout: after two timeouts
/// within the tolerance window a host is skipped for `backoff` seconds.
public final class HostMemory: @unchecked Sendable {
    struct Entry { var failures: Int; var last: Int64 }
    private let table = Mutex<[String: Entry]>([:])
    // Set once by the owner before deliveries start.
    public var backoff: Int64 = 3600
    public var tolerance: Int64 = 120
    let store: HostMemoryStore?

    public init(store: HostMemoryStore? = nil) {
        self.store = store
        if let store {
            let loaded = store.load()
            table.withLock { t in for (ip, f, last) in loaded { t[ip] = Entry(failures: f, last: last) } }
        }
    }

    public func shouldSkip(_ ip: String, now: Int64) -> Bool {
        table.withLock { t in
            guard let e = t[ip] else { return false }
            return e.failures >= 2 && now - e.last < backoff
        }
    }

    public func timedOut(_ ip: String, now: Int64) {
        let tolerance = self.tolerance
        let e = table.withLock { t in
            var e = t[ip] ?? Entry(failures: 0, last: 0)
            if now - e.last > tolerance || e.failures == 0 { e.failures = min(e.failures + 1, 10) }
            e.last = now
            t[ip] = e
            return e
        }
        store?.save(ip, failures: e.failures, last: now)
    }

    public func succeeded(_ ip: String) {
        let had = table.withLock { $0.removeValue(forKey: ip) != nil }
        if had { store?.remove(ip) }
    }

    /// Forgets every host (qmail-tcpok); returns how many were remembered.
    @discardableResult
    public func forgetAll() -> Int {
        let ips = table.withLock { t -> [String] in
            let k = Array(t.keys)
            t.removeAll()
            return k
        }
        for ip in ips { store?.remove(ip) }
        return ips.count
    }
}

/// Where host failure memory persists (the engine keeps it in LMDB).
public protocol HostMemoryStore: Sendable {
    func load() -> [(String, Int, Int64)]
    func save(_ ip: String, failures: Int, last: Int64)
    func remove(_ ip: String)
}

/// The SMTP client: routes and MX lookup, every MX in turn on temporary
/// failures, EHLO/HELO, STARTTLS, SIZE, 8BITMIME, one transaction with every
/// recipient for the host, dot-stuffing and CRLF, connection reuse.
public final class SMTPClient: @unchecked Sendable {
    /// Settings may be replaced (the engine's HUP) while deliveries run: each
    /// read takes a consistent copy.
    private let settingsBox: Mutex<(settings: SMTPSettings, generation: Int)>
    public var settings: SMTPSettings {
        get { settingsBox.withLock { $0.settings } }
        set { settingsBox.withLock { $0 = (newValue, $0.generation + 1) } }
    }
    /// Incremented by each change of `settings`.
    public var settingsGeneration: Int { settingsBox.withLock { $0.generation } }
    /// The settings and their generation, read together (one delivery uses one snapshot).
    func snapshot() -> (settings: SMTPSettings, generation: Int) { settingsBox.withLock { $0 } }
    public let resolver: DNSResolver
    public let pool: ConnectionPool
    public let hosts: HostMemory

    public init(settings: SMTPSettings, resolver: DNSResolver = .system(), pool: ConnectionPool = ConnectionPool(), hosts: HostMemory = HostMemory()) {
        self.settingsBox = Mutex((settings, 0))
        self.resolver = resolver
        self.pool = pool
        self.hosts = hosts
    }

    struct Target { var name: String; var address: [UInt8]; var port: Int; var pref = 0 }

    enum Resolution { case targets([Target]), failure(String) }

    static func literal(_ s: String) -> [UInt8]? {
        guard s.hasPrefix("["), s.hasSuffix("]") else { return nil }
        var inner = String(s.dropFirst().dropLast())
        if inner.lowercased().hasPrefix("ipv6:") { inner = String(inner.dropFirst(5)) }
        return ipAddress(inner)
    }

    func addressTargets(_ name: String, port: Int) -> Resolution {
        if let lit = SMTPClient.literal(name) { return .targets([Target(name: name, address: lit, port: port)]) }
        if let address = ipAddress(name) { return .targets([Target(name: name, address: address, port: port)]) }
        switch resolver.addresses(of: name) {
        case .records(let r):
            let t = r.compactMap { rec -> Target? in
                if case .a(let a) = rec { return Target(name: name, address: a, port: port) }
                if case .aaaa(let a) = rec { return Target(name: name, address: a, port: port) }
                return nil
            }
            return t.isEmpty ? .failure("DSorry, I couldn't find any host named \(name). (#5.1.2)\n") : .targets(t)
        case .nxdomain: return .failure("DSorry, I couldn't find any host named \(name). (#5.1.2)\n")
        case .temporaryFailure: return .failure("ZSorry, I couldn't find any host by that name. (#4.1.2)\n")
        }
    }

    /// The hosts to try for `domain`, in order.
    func resolve(_ domain: String, _ settings: SMTPSettings) -> Resolution {
        if let route = settings.routes.route(for: domain), let relay = route.relay {
            return addressTargets(relay, port: route.port)
        }
        let port = settings.routes.route(for: domain)?.port ?? 25
        let found = SMTPClient.literal(domain) != nil ? addressTargets(domain, port: port) : exchangers(domain, port: port)
        guard case .targets(let targets) = found else { return found }
        // qmail-remote's prefme: never deliver to ourselves or to an MX no better than us
        // (a backup MX would loop the message back to itself).
        if settings.localAddresses.isEmpty { return .targets(targets) }
        let prefme = targets.filter { settings.localAddresses.contains($0.address) }.map(\.pref).min() ?? Int.max
        let usable = targets.filter { $0.pref < prefme }
        if usable.isEmpty {
            return .failure("DSorry. Although I'm listed as a best-preference MX or A for that host,\nit isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")
        }
        return .targets(usable)
    }

    /// The MX hosts' addresses in preference order (random among equals), or the
    /// domain's own addresses when it has no MX.
    func exchangers(_ domain: String, port: Int) -> Resolution {
        switch resolver.query(domain, .mx) {
        case .nxdomain: return .failure("DSorry, I couldn't find any host named \(domain). (#5.1.2)\n")
        case .temporaryFailure: return .failure("ZSorry, I couldn't find any host by that name. (#4.1.2)\n")
        case .records(let records):
            var mxs = records.compactMap { r -> (Int, String)? in if case let .mx(p, e) = r { return (p, e) }; return nil }
            if mxs.isEmpty { return addressTargets(domain, port: port) }
            mxs.shuffle()
            mxs.sort { $0.0 < $1.0 }
            var found: [Target] = []
            var temporary: String? = nil
            for (pref, name) in mxs where !name.isEmpty && name != "." {   // "0 ." is a null MX (RFC 7505)
                switch addressTargets(name, port: port) {
                case .targets(let t): found += t.map { var x = $0; x.pref = pref; return x }
                case .failure(let f): if f.hasPrefix("Z") { temporary = f }
                }
            }
            // qmail-remote: a soft DNS error defers; MX hosts without any address (or a
            // null MX) fail for good (perm_nomx).
            if found.isEmpty { return .failure(temporary ?? "DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n") }
            return .targets(found)
        }
    }

    /// Message bytes for DATA: bare LF → CRLF, leading dots doubled, ".\r\n" at the end.
    public static func dataBytes(_ message: [UInt8]) -> [UInt8] {
        var stuffer = DotStuffer()
        var out: [UInt8] = []
        stuffer.add(message[...], into: &out)
        stuffer.finish(into: &out)
        return out
    }

    static func said(_ r: SMTPConnection.Reply) -> String { "Remote host said: " + r.text + "\n" }

    /// An address as it goes into MAIL FROM / RCPT TO, as qmail-remote's addrmangle:
    /// without an `@` as it is; else the local part quoted if it needs it (qmail's
    /// quote()), then `@` and the domain. Bytes throughout: nothing is re-encoded.
    static func path(_ address: [UInt8]) -> [UInt8] {
        guard let at = address.lastIndex(of: UInt8(ascii: "@")) else { return address }
        return AddressQuoting.quoteLocal(address[..<at]) + address[at...]
    }

    /// A byte an SMTP command line cannot carry: a control character (CR and LF
    /// among them, which would end the command early) or DEL.
    static func holdsControl(_ address: [UInt8]) -> Bool {
        address.contains { $0 < 32 || $0 == 127 }
    }

    /// Delivers one message to `recipients` at `domain`. An address with a
    /// control character never reaches the conversation: the sender fails the
    /// message, a recipient fails alone (qmail-queue refuses such envelopes, but
    /// a queue written by another program may hold them).
    public func deliver(domain: String, sender: [UInt8], recipients: [[UInt8]], message: [UInt8]) -> RemoteOutcome {
        deliver(domain: domain, sender: sender, recipients: recipients, message: OutgoingMessage(file: MessageFile(bytes: message)))
    }

    /// Delivers one message read from its file in chunks (memory does not grow with its size).
    public func deliver(domain: String, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage) -> RemoteOutcome {
        if SMTPClient.holdsControl(sender) {
            return .all(recipients.count, message: "DSorry, the envelope sender holds a control character (CR, LF or another), which SMTP cannot carry. (#5.1.7)\n")
        }
        let bad = recipients.map(SMTPClient.holdsControl)
        guard bad.contains(true) else { return deliverClean(domain: domain, sender: sender, recipients: recipients, message: message) }
        let good = zip(recipients, bad).filter { !$0.1 }.map(\.0)
        let sub = good.isEmpty ? RemoteOutcome(recipientReports: [], messageReport: Array("DGiving up: no recipient could be sent.\n".utf8))
                               : deliverClean(domain: domain, sender: sender, recipients: good, message: message)
        var reports: [[UInt8]] = []
        var g = 0
        for isBad in bad {
            if isBad {
                reports.append(Array("hSorry, the recipient address holds a control character (CR, LF or another), which SMTP cannot carry. (#5.1.3)\n".utf8))
            } else {
                // An outcome for all (no reports of its own): the message report decides.
                reports.append(g < sub.recipientReports.count ? sub.recipientReports[g] : [UInt8(ascii: "r")])
                g += 1
            }
        }
        return RemoteOutcome(recipientReports: reports, messageReport: sub.messageReport)
    }

    func deliverClean(domain: String, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage) -> RemoteOutcome {
        if let route = snapshot().settings.qmtpRoutes.route(for: domain) {
            return deliverQMTP(route: route, domain: domain, sender: sender, recipients: recipients, message: message,
                               settings: snapshot().settings)
        }
        // qmail-remote's blast() refuses a final line without its newline (perm_partialline).
        // Both this and the 8-bit scan read the file before any connection is made.
        var message = message
        do throws(SystemError) {
            if let last = try message.lastByte(), last != 10 {
                return .all(recipients.count, message: "DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n")
            }
            message.eightBit = try message.file.hasEightBitBytes() || message.prefix.contains { $0 >= 128 }
        } catch {
            return .all(recipients.count, message: "ZUnable to read message. (#4.3.0)\n")
        }
        let targets: [Target]
        let (settings, generation) = snapshot()
        switch resolve(domain, settings) {
        case .failure(let f): return .all(recipients.count, message: f)
        case .targets(let t): targets = t
        }
        let requireTLS = settings.requiresTLS(domain)
        var lastTemporary: String? = nil
        let now = Int64(time(nil))
        // Hosts with two recent connect timeouts are not tried at all, as qmail-remote's
        // tcpto: a dead MX then costs a message nothing, not a connect timeout each.
        let usable = targets.filter { !hosts.shouldSkip(ip($0), now: now) }
        for target in usable {
            switch attempt(target, domain: domain, sender: sender, recipients: recipients, message: message, requireTLS: requireTLS,
                           settings: settings, generation: generation) {
            case .done(let outcome): return outcome
            case .tryNext(let why): if let why { lastTemporary = why }
            }
        }
        return .all(recipients.count, message: lastTemporary ?? "ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n")
    }

    func ip(_ t: Target) -> String { ipText(t.address) }

    enum Attempt { case done(RemoteOutcome), tryNext(String?) }

    func attempt(_ target: Target, domain: String, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage, requireTLS: Bool,
                 settings: SMTPSettings, generation: Int) -> Attempt {
        // A destination that requires verified TLS only reuses connections opened that way.
        let key = "\(ip(target)):\(target.port)\(requireTLS ? ":verified-tls:\(domain.lowercased())" : "")"
        var conn = pool.checkout(key, idleTimeout: settings.idleTimeout)
        var reused = conn != nil
        var allowTLS = settings.startTLS || requireTLS
        var tries = 0
        while tries < 3 {
            tries += 1
            if conn == nil {
                let (c, err) = SMTPConnection.connect(address: target.address, port: target.port,
                                                      timeout: settings.timeoutConnect, ioTimeout: settings.timeoutRemote)
                guard let c else {
                    if err == ETIMEDOUT { hosts.timedOut(ip(target), now: Int64(time(nil))) }
                    return .tryNext(nil)
                }
                hosts.succeeded(c.ip)
                c.generation = generation
                conn = c
                reused = false
                switch open(c, target: target, domain: domain, requireTLS: requireTLS, allowTLS: allowTLS, settings: settings) {
                case .ok: break
                case .retryWithoutTLS:
                    c.close(); conn = nil; allowTLS = false
                    continue
                case .fail(let a):
                    c.close()
                    return a
                }
            }
            let c = conn!
            do {
                c.recipientsSent = false
                // After a completed transaction the server is ready for the next MAIL;
                // only an aborted one needs RSET.
                if c.needsReset {
                    let r = try c.command("RSET")
                    if r.code != 250 { throw SMTPConnection.Failure.died }
                    c.needsReset = false
                }
                let outcome = try transaction(c, sender: sender, recipients: recipients, message: message)
                c.messagesSent += 1
                if c.serverClosing { c.close() }
                // A connection opened under older settings (before a HUP) is not pooled again.
                else if c.messagesSent < settings.maxMessagesPerConnection && c.generation == settingsGeneration { pool.checkin(key, c) }
                else { c.quit() }
                return .done(outcome)
            } catch {
                c.close()
                conn = nil
                // An idle connection the server had closed fails at RSET or at the reply to MAIL: reconnect.
                if reused && !c.recipientsSent { continue }
                let duplicate = c.awaitingFinalReply ? "Possible duplicate! " : ""
                return .done(.all(recipients.count, message: "ZConnected to \(c.ip) but connection died. \(duplicate)(#4.4.2)\n"))
            }
        }
        return .tryNext(nil)
    }

    enum Open { case ok, retryWithoutTLS, fail(Attempt) }

    func open(_ c: SMTPConnection, target: Target, domain: String, requireTLS: Bool, allowTLS: Bool, settings: SMTPSettings) -> Open {
        do {
            let greeting = try c.reply()
            if greeting.code < 200 || greeting.code >= 300 {
                let letter = greeting.code >= 500 ? "D" : "Z"
                if letter == "Z" { return .fail(.tryNext("ZConnected to \(c.ip) but greeting failed.\n" + SMTPClient.said(greeting))) }
                return .fail(.done(.all(0, message: "DConnected to \(c.ip) but greeting failed.\n" + SMTPClient.said(greeting))))
            }
            let hello = try c.hello(settings.heloHost)
            if hello.code < 200 || hello.code >= 300 {
                return .fail(.done(.all(0, message: (hello.code >= 500 ? "D" : "Z") + "Connected to \(c.ip) but my name was rejected.\n" + SMTPClient.said(hello))))
            }
            if allowTLS && c.extensions.contains("STARTTLS") {
                let name = SMTPClient.literal(target.name) == nil ? target.name : domain
                if let why = try c.startTLS(serverName: name, verify: requireTLS, caFile: settings.caFile) {
                    if requireTLS { return .fail(.tryNext("ZTLS negotiation with \(c.ip) failed: \(why). (#4.7.5)\n")) }
                    return .retryWithoutTLS
                }
                let again = try c.hello(settings.heloHost)
                if again.code != 250 {
                    return .fail(.done(.all(0, message: "ZConnected to \(c.ip) but my name was rejected after STARTTLS.\n" + SMTPClient.said(again))))
                }
            } else if requireTLS {
                return .fail(.tryNext("Z\(c.ip) does not offer STARTTLS, which \(domain) requires. (#4.7.5)\n"))
            }
            return .ok
        } catch {
            return .fail(.tryNext("ZConnected to \(c.ip) but connection died. (#4.4.2)\n"))
        }
    }

    func transaction(_ c: SMTPConnection, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage) throws(SMTPConnection.Failure) -> RemoteOutcome {
        let s = String(decoding: sender, as: UTF8.self)
        // Addresses go out as bytes, local parts quoted where needed (qmail-remote's addrmangle).
        var mail = Array("MAIL FROM:<".utf8) + SMTPClient.path(sender) + Array(">".utf8)
        if c.extensions.contains("SIZE") { mail += Array(" SIZE=\(message.count)".utf8) }
        if c.extensions.contains("8BITMIME") && message.eightBit { mail += Array(" BODY=8BITMIME".utf8) }
        if let limit = c.sizeLimit, message.count > limit {
            return .all(recipients.count, message: "DConnected to \(c.ip) but the message is larger than the \(limit) bytes it accepts. (#5.3.4)\n")
        }
        // From here until the reply to the message the server holds a transaction.
        c.needsReset = true
        let rcptLines = recipients.map { Array("RCPT TO:<".utf8) + SMTPClient.path($0) + Array(">\r\n".utf8) }
        let m: SMTPConnection.Reply
        var replies: [SMTPConnection.Reply] = []
        var dataReply: SMTPConnection.Reply? = nil
        let pipelining = c.extensions.contains("PIPELINING")
        if pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write, then the replies in order.
            try c.send(mail + [13, 10] + rcptLines.joined() + Array("DATA\r\n".utf8))
            m = try c.reply()
        } else {
            m = try c.command(bytes: mail + [13, 10])
        }
        if m.code == 421 {
            // The server is closing: a reused connection is stale (reconnect), a new one reports
            // the refusal below; the replies to the rest of a pipelined batch never come.
            c.serverClosing = true
            if c.messagesSent > 0 { throw .died }
        }
        c.recipientsSent = true
        if pipelining && m.code != 421 {
            for _ in recipients { replies.append(try c.reply()) }
            dataReply = try c.reply()
        } else if !pipelining && m.code < 400 {
            for line in rcptLines { replies.append(try c.command(bytes: line)) }
        }
        if m.code >= 400 {   // as qmail-remote: 5xx refuses, 4xx defers, anything else goes on
            if dataReply?.code == 354 { _ = try c.command(".") }
            let letter = m.code >= 500 ? "D" : "Z"
            return .all(recipients.count, message: letter + "Connected to \(c.ip) but sender was rejected.\n" + SMTPClient.said(m))
        }
        var reports: [[UInt8]] = []
        var accepted = 0
        for (r, reply) in zip(recipients, replies) {
            let head = "From: <\(s)> RCPT: <\(String(decoding: r, as: UTF8.self))> "
            if reply.code >= 200 && reply.code < 300 {
                reports.append(Array(("r" + head).utf8)); accepted += 1
            } else {
                let letter = reply.code >= 500 ? "h" : "s"
                reports.append(Array((letter + head + "\(c.ip) does not like recipient.\n" + SMTPClient.said(reply)).utf8))
            }
        }
        if accepted == 0 {
            // A pipelining server may still have said 354 to DATA: end that empty message.
            if dataReply?.code == 354 { _ = try c.command(".") }
            return RemoteOutcome(recipientReports: reports, messageReport: Array("DGiving up on \(c.ip).\n".utf8))
        }
        let d: SMTPConnection.Reply
        if let dataReply { d = dataReply } else { d = try c.command("DATA") }
        if d.code != 354 {
            let letter = d.code >= 500 ? "D" : "Z"
            return RemoteOutcome(recipientReports: reports, messageReport: Array((letter + "\(c.ip) failed on DATA command.\n" + SMTPClient.said(d)).utf8))
        }
        // The message goes out a chunk at a time, dot-stuffed on the way.
        var stuffer = DotStuffer()
        var out: [UInt8] = []
        out.reserveCapacity(MessageFile.chunkSize + MessageFile.chunkSize / 8 + 8)
        stuffer.add(message.prefix[...], into: &out)
        do throws(MessageFileFailure<SMTPConnection.Failure>) {
            try message.file.forEachChunk { (chunk: ArraySlice<UInt8>) throws(SMTPConnection.Failure) in
                stuffer.add(chunk, into: &out)
                try c.send(out)
                out.removeAll(keepingCapacity: true)
            }
        } catch {
            switch error {
            case .body(let f): throw f
            case .read:
                // Never end a message that could not be read whole: drop the connection,
                // so the server discards what it has, and try again later.
                c.serverClosing = true
                c.close()
                return .all(recipients.count, message: "ZUnable to read message. (#4.3.0)\n")
            }
        }
        stuffer.finish(into: &out)
        try c.send(out)
        // Sent but unconfirmed from here: a retry may deliver twice, as qmail accepts
        // (its flagcritical; the report then says "Possible duplicate!").
        c.awaitingFinalReply = true
        let final = try c.reply()
        c.awaitingFinalReply = false
        c.needsReset = false
        let text: String
        if final.code >= 200 && final.code < 300 { text = "K\(c.ip) accepted message - Protocol SMTP.\n" + SMTPClient.said(final) }
        else if final.code >= 500 { text = "D\(c.ip) failed after I sent the message.\n" + SMTPClient.said(final) }
        else { text = "Z\(c.ip) failed after I sent the message.\n" + SMTPClient.said(final) }
        return RemoteOutcome(recipientReports: reports, messageReport: Array(text.utf8))
    }
}

/// A message for the SMTP client: the QQEH header lines that go in front of
/// it (indimail's blast()), then the queue file, read in chunks.
public struct OutgoingMessage: Sendable {
    public var prefix: [UInt8]
    public var file: MessageFile
    /// Whether a byte has its high bit set (BODY=8BITMIME); found before connecting.
    var eightBit = false

    public init(prefix: [UInt8] = [], file: MessageFile) {
        self.prefix = prefix.isEmpty || prefix.last == 10 ? prefix : prefix + [10]
        self.file = file
    }

    public var count: Int { prefix.count + file.count }

    func lastByte() throws(SystemError) -> UInt8? {
        if let b = try file.lastByte() { return b }
        return prefix.last
    }
}

/// SMTP's DATA transparency over a message given in pieces: a bare LF becomes
/// CRLF, a dot at the start of a line is doubled, and the end adds CRLF if the
/// last line lacks it, then ".\r\n". The state carries across pieces.
public struct DotStuffer: Sendable {
    var atLineStart = true
    var prev: UInt8 = 0

    public init() {}

    public mutating func add(_ bytes: ArraySlice<UInt8>, into out: inout [UInt8]) {
        for b in bytes {
            if atLineStart && b == UInt8(ascii: ".") { out.append(UInt8(ascii: ".")) }
            if b == 10 && prev != 13 { out.append(13) }
            out.append(b)
            atLineStart = b == 10
            prev = b
        }
    }

    public mutating func finish(into out: inout [UInt8]) {
        if !atLineStart { out += [13, 10] }
        out += Array(".\r\n".utf8)
    }
}
