#if canImport(Glibc)
import Glibc
#endif
import CHMAC
import SystemIO
import ControlFiles

/// indimail-mta's `srs.c` over the SRS core: the configuration from control
/// files, and `srsforward` / `srsreverse` with their outcomes (toolbox.md §3.1–3.5).
public enum SRSControl {
    public enum Outcome: Equatable {
        /// SRS is not configured (no `srs_domain` or no secrets), or nothing to rewrite.
        case unchanged
        case rewritten([UInt8])
        /// A control file could not be read.
        case controls
        /// libsrs2's refusal, its text.
        case error(String)
    }

    public static func hmacSHA1(_ key: [UInt8], _ msg: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        _ = key.withUnsafeBytes { k in msg.withUnsafeBytes { m in out.withUnsafeMutableBytes { o in
            qs_hmac_sha1(k.baseAddress, k.count, m.baseAddress, m.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self))
        } } }
        return out
    }

    /// `SRS_<NAME>`, when set and not empty, names the file to read instead of
    /// `srs_<name>` (relative to the control folder unless it starts with `/` or `.`).
    static func file(_ env: String, _ name: String, _ control: ControlDirectory) -> String {
        guard let v = Sys.environment(env), !v.isEmpty else { return control.filePath(name) }
        if v.hasPrefix("/") || v.hasPrefix(".") { return v }
        return control.filePath(v)
    }

    static func lines(_ path: String) throws(SystemError) -> [String] {
        guard let raw = try Sys.readFile(path) else { return [] }
        return ControlDirectory.splitLines(raw).map { $0.text }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    static func int(_ path: String) throws(SystemError) -> Int {
        Int(try lines(path).first?.trimmingPrefix(" ") ?? "") ?? 0
    }

    /// The configuration, nil when SRS is off; throws when a file cannot be read.
    public static func load(_ control: ControlDirectory = .fromEnvironment()) throws(SystemError) -> SRSConfig? {
        guard let domain = try lines(file("SRS_DOMAIN", "srs_domain", control)).first, !domain.isEmpty else { return nil }
        let secrets = try lines(file("SRS_SECRETS", "srs_secrets", control)).map { Array($0.utf8) }
        if secrets.isEmpty { return nil }
        var c = SRSConfig(domain: Array(domain.utf8), secrets: secrets)
        let maxAge = try int(file("SRS_MAXAGE", "srs_maxage", control))
        if maxAge > 0 { c.maxAge = maxAge }
        let hashLength = try int(file("SRS_HASHLENGTH", "srs_hashlength", control))
        if hashLength > 0 { c.hashLength = hashLength }
        let hashMin = try int(file("SRS_HASHMIN", "srs_hashmin", control))
        c.hashMin = hashMin > 0 ? min(hashMin, c.hashLength) : c.hashLength
        if let s = try lines(file("SRS_SEPARATOR", "srs_separator", control)).first?.utf8.first,
           s == UInt8(ascii: "-") || s == UInt8(ascii: "+") || s == UInt8(ascii: "=") { c.separator = s }
        c.alwaysRewrite = try int(file("SRS_ALWAYSREWRITE", "srs_alwaysrewrite", control)) != 0
        return c
    }

    /// Is the domain one this host accepts mail for (rcpthosts, morercpthosts.cdb)?
    static func isLocal(_ domain: [UInt8], _ control: ControlDirectory) throws(SystemError) -> Bool {
        let d = SRS.lower(domain)
        for line in try lines(control.filePath("rcpthosts")) {
            let e = SRS.lower(Array(line.utf8))
            if e == d { return true }
            if e.first == UInt8(ascii: "."), d.count > e.count, Array(d.suffix(e.count)) == e { return true }
        }
        let more = control.filePath("morercpthosts.cdb")
        if Sys.exists(more) {
            let db = try ConstantDatabase(path: more)
            if try db.find(d) != nil { return true }
            var i = 0
            while let dot = d[i...].firstIndex(of: UInt8(ascii: ".")) {
                if try db.find(Array(d[dot...])) != nil { return true }
                i = dot + 1
            }
        }
        return false
    }

    /// srsforward(sender).
    public static func forward(_ sender: [UInt8], control: ControlDirectory = .fromEnvironment(), now: Int = Int(time(nil))) -> Outcome {
        let config: SRSConfig
        do throws(SystemError) {
            guard let c = try load(control) else { return .unchanged }
            config = c
            if sender.count <= 1 { return .unchanged }
            if !config.alwaysRewrite, let at = sender.lastIndex(of: UInt8(ascii: "@")),
               try isLocal(Array(sender[(at + 1)...]), control) { return .unchanged }
        } catch { return .controls }
        do throws(SRSError) {
            return .rewritten(try SRS(config: config, now: now, hmac: hmacSHA1).forward(sender))
        } catch { return .error(error.text) }
    }

    /// srsreverse(address).
    public static func reverse(_ address: [UInt8], control: ControlDirectory = .fromEnvironment(), now: Int = Int(time(nil))) -> Outcome {
        let config: SRSConfig
        do throws(SystemError) {
            guard let c = try load(control) else { return .unchanged }
            config = c
        } catch { return .controls }
        if address.count <= 1 { return .error("Not an SRS address.") }
        do throws(SRSError) {
            return .rewritten(try SRS(config: config, now: now, hmac: hmacSHA1).reverse(address))
        } catch { return .error(error.text) }
    }
}

extension String {
    func trimmingPrefix(_ c: Character) -> String { String(drop { $0 == c }) }
}

extension Tool {
    /// forward's (and condredirect's) SRS step: the sender rewritten when the SRS
    /// controls say so; `SRS: <text>` (100) or `unable to read controls` (111) otherwise.
    public func srsSender(_ sender: String) -> String {
        if sender.isEmpty { return sender }
        switch SRSControl.forward(Array(sender.utf8)) {
        case .unchanged: return sender
        case .rewritten(let b): return String(decoding: b, as: UTF8.self)
        case .controls: fatal(111, "unable to read controls")
        case .error(let t): fatal(100, "SRS: " + t)
        }
    }
}
