#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import RemoteDelivery

/// The control files qmail-smtpd reads (`$CONTROLDIR`), with its defaults.
/// Read once at start (and again for each connection under tcpserver, since
/// that is a new process); the daemon reads them again on SIGHUP.
public struct SMTPDControls: @unchecked Sendable {
    public var me: String
    /// `smtpgreeting` (every line; default `me`).
    public var greeting: [String]
    /// `localiphost` (default `me`): replaces `[this host's IP]` in addresses.
    public var localIPHost: String
    /// `rcpthosts`: nil = the file is absent (every recipient is accepted: an open relay).
    public var rcptHosts: Set<String>?
    /// `morercpthosts.cdb`, opened once.
    public var moreRcptHosts: CdbReader?
    /// `databytes` (0 = no limit); `$DATABYTES` overrides.
    public var dataBytes: Int
    /// `timeoutsmtpd` seconds (≤ 0 becomes 1).
    public var timeout: Int
    /// `badmailfrom`: addresses and `@domain` entries, lower-cased.
    public var badMailFrom: Set<String>
    /// `badrcptto`: the same for recipients.
    public var badRcptTo: Set<String>
    /// `maxrecipients` (`$MAXRECIPIENTS`): recipients per message; default 1000.
    public var maxRecipients: Int
    /// `maxhops`: Received/Delivered header lines before a message is a loop; default 100.
    public var maxHops: Int
    /// `maxcmdlen`: the longest command line; default 4096 bytes.
    public var maxCommandLength: Int
    /// `servercert.pem` (or `$CERTDIR/$SERVERCERT`): STARTTLS is offered when it exists.
    public var certificate: String?
    /// This host's IPv4 addresses (for localiphost), as text.
    public var localAddresses: Set<String>

    public static let defaultMaxRecipients = 1000
    public static let defaultMaxCommandLength = 4096

    public static func load(_ control: ControlDirectory, environment env: (String) -> String? = Sys.environment) throws -> SMTPDControls {
        guard let me = try control.readLine("me"), !me.isEmpty else {
            throw ControlError(file: control.filePath("me"), line: 1, message: "missing or empty: qmail-smtpd needs this host's name")
        }
        var greeting = (try control.readLines("smtpgreeting")) ?? []
        if greeting.isEmpty { greeting = [me] }
        let localIPHost = try control.readLine("localiphost").flatMap { $0.isEmpty ? nil : $0 } ?? me
        let rcpt = try control.readLines("rcpthosts").map { Set($0.map { $0.lowercased() }) }
        let more: CdbReader?
        do throws(SystemError) { more = try CdbReader.open(control.filePath("morercpthosts.cdb")) } catch {
            throw ControlError(file: control.filePath("morercpthosts.cdb"), line: 0, message: "unable to read: \(error.reason)")
        }
        var dataBytes = try control.readInt("databytes", default: 0)
        if let d = env("DATABYTES"), let v = Int(d) { dataBytes = v }
        var timeout = try control.readInt("timeoutsmtpd", default: 1200)
        if timeout <= 0 { timeout = 1 }
        let bad = Set((try control.readLines("badmailfrom") ?? []).map { $0.lowercased() })
        let badRcpt = Set((try control.readLines("badrcptto") ?? []).map { $0.lowercased() })
        var maxRcpt = try control.readInt("maxrecipients", default: defaultMaxRecipients)
        if let m = env("MAXRECIPIENTS"), let v = Int(m) { maxRcpt = v }
        if maxRcpt <= 0 { maxRcpt = defaultMaxRecipients }
        var maxHops = try control.readInt("maxhops", default: 100)
        if maxHops <= 0 { maxHops = 100 }
        var maxCmd = try control.readInt("maxcmdlen", default: defaultMaxCommandLength)
        if maxCmd <= 0 { maxCmd = defaultMaxCommandLength }
        let certDir = env("CERTDIR").flatMap { $0.isEmpty ? nil : $0 } ?? control.path
        let certName = env("SERVERCERT").flatMap { $0.isEmpty ? nil : $0 } ?? "servercert.pem"
        let certPath = certName.hasPrefix("/") ? certName : certDir + "/" + certName
        let cert = Sys.exists(certPath) ? certPath : nil
        var ips = Set(SMTPSettings.interfaceAddresses().filter { $0.count == 4 }.map { ipText($0) })
        for l in (try control.readLines("moreipme") ?? []) { ips.insert(l) }
        for l in (try control.readLines("notipme") ?? []) { ips.remove(l) }
        return SMTPDControls(me: me, greeting: greeting, localIPHost: localIPHost, rcptHosts: rcpt, moreRcptHosts: more,
                             dataBytes: dataBytes, timeout: timeout, badMailFrom: bad, badRcptTo: badRcpt,
                             maxRecipients: maxRcpt, maxHops: maxHops, maxCommandLength: maxCmd, certificate: cert,
                             localAddresses: ips)
    }

    /// qmail's rcpthosts rule: no file → allowed; no `@` → allowed; else the
    /// host after the last `@`, lower-cased, and each of its suffixes that
    /// starts at a dot, looked up in `rcpthosts` and then `morercpthosts.cdb`.
    public func rcptHostAllowed(_ address: [UInt8]) -> Bool {
        guard let hosts = rcptHosts else { return true }
        guard let at = address.lastIndex(of: UInt8(ascii: "@")) else { return true }
        let host = Array(address[(at + 1)...]).map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        var candidates: [[UInt8]] = [host]
        for (i, c) in host.enumerated() where c == UInt8(ascii: ".") { candidates.append(Array(host[i...])) }
        for c in candidates where hosts.contains(String(decoding: c, as: UTF8.self)) { return true }
        if let more = moreRcptHosts {
            for c in candidates where (try? more.contains(c)) == true { return true }
        }
        return false
    }

    /// `badmailfrom`/`badrcptto`: the whole address, or `@domain` from the last `@`, case-insensitive.
    public static func listed(_ address: [UInt8], in set: Set<String>) -> Bool {
        if set.isEmpty { return false }
        let a = String(decoding: address, as: UTF8.self).lowercased()
        if set.contains(a) { return true }
        if let at = a.lastIndex(of: "@"), set.contains(String(a[at...])) { return true }
        return false
    }
}
