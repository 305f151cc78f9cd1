#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles

/// The rate definitions in `RATELIMIT_DIR` (default `<queue>/ratelimit`),
/// looked up the way the manual documents (engine.md §5): a file per domain
/// in drate's format (aliases are symbolic links), else the first matching
/// `ratecontrol` line `pattern:expr` (exact, wildmat, or a regular expression
/// with `QREGEX`) — which creates the domain's file — else `.global`, shared
/// by all remaining domains. Our addition, `.options`, chooses the limiter per
/// domain: `domain:mode=smooth|average,burst=N,concurrency=N` (`*` = default).
public struct RateDirectory: Sendable {
    public let path: String
    public var useRegex: Bool
    /// The folder's files held in memory, by name (`.options`, `ratecontrol`,
    /// `.global`, a domain), instead of read from `path` (the fuzz target uses it):
    /// nil (the default) reads the folder. In memory there are no aliases, and a
    /// `ratecontrol` match creates no domain file.
    public var memoryFiles: [String: [UInt8]]? = nil

    public init(path: String, useRegex: Bool = Sys.environment("QREGEX").map { !$0.isEmpty && $0 != "0" } ?? false) {
        self.path = path
        self.useRegex = useRegex
    }

    public struct Failure: Error, CustomStringConvertible {
        public let file: String
        public let message: String
        public var description: String { "\(file): \(message)" }
    }

    /// `RATELIMIT_DIR` if set (empty = rate control off → nil), else `<queue>/ratelimit`.
    public static func forQueue(_ queueDir: String) -> RateDirectory? {
        if let env = Sys.environment("RATELIMIT_DIR") { return env.isEmpty ? nil : RateDirectory(path: env) }
        return RateDirectory(path: queueDir + "/ratelimit")
    }

    /// A file of the folder, nil when missing or unreadable.
    func read(_ name: String) -> [UInt8]? {
        if let memoryFiles { return memoryFiles[name] }
        return try? Sys.readFile(path + "/" + name)
    }

    struct Options { var mode: LimiterMode = .smooth; var burst: Double = 1; var concurrency: Int? = nil }

    func options(for domain: String) throws -> Options {
        guard let bytes = read(".options") else { return Options() }
        var star = Options(), exact: Options? = nil
        for (n, line) in ControlDirectory.splitLines(bytes) {
            let t = line.trimmingCharacters(" \t\r")
            if t.isEmpty || t.hasPrefix("#") { continue }
            guard let colon = t.firstIndex(of: ":") else { throw Failure(file: path + "/.options", message: "line \(n): expected domain:key=value,…") }
            let name = String(t[..<colon]).lowercased()
            guard name == "*" || name == domain else { continue }
            var o = name == "*" ? star : (exact ?? star)
            for kv in t[t.index(after: colon)...].split(separator: ",") {
                let parts = kv.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters(" ") }
                guard parts.count == 2 else { throw Failure(file: path + "/.options", message: "line \(n): expected key=value, found \"\(kv)\"") }
                switch parts[0] {
                case "mode":
                    guard let m = LimiterMode(rawValue: parts[1]) else { throw Failure(file: path + "/.options", message: "line \(n): mode must be smooth or average") }
                    o.mode = m
                case "burst":
                    guard let b = Double(parts[1]), b >= 1, b <= 1_000_000 else { throw Failure(file: path + "/.options", message: "line \(n): burst must be a number from 1 to 1000000") }
                    o.burst = b
                case "concurrency":
                    guard let c = Int(parts[1]), c > 0 else { throw Failure(file: path + "/.options", message: "line \(n): concurrency must be a positive number") }
                    o.concurrency = c
                default: throw Failure(file: path + "/.options", message: "line \(n): unknown key \(parts[0])")
                }
            }
            if name == "*" { star = o } else { exact = o }
        }
        return exact ?? star
    }

    /// The policy for a domain, or nil when it is not rate controlled.
    /// `channel` ("local" or "remote") selects the `ratecontrol` lines written
    /// `pattern:local:expr` / `pattern:remote:expr`; nil matches unqualified lines only.
    public func policy(for rawDomain: String, channel: String? = nil) throws -> DomainPolicy? {
        let domain = rawDomain.lowercased()
        var interval: Int64 = 86400
        if let e = Sys.environment("RATELIMIT_INTERVAL"), let v = Int64(e), v > 0 { interval = v }
        let o = try options(for: domain)
        func make(_ key: String, _ def: RateDefinition, file: String) throws -> DomainPolicy {
            do { _ = try RateExpression(def.expression).evaluate() } catch {
                throw Failure(file: file, message: "rate expression \"\(def.expression)\": \(error)")
            }
            return DomainPolicy(key: key, expression: def.expression, mode: o.mode, burst: o.burst, concurrency: o.concurrency, interval: interval)
        }
        let file = path + "/" + domain
        if !domain.isEmpty, !domain.contains("/"), !domain.hasPrefix("."), let bytes = read(domain) {
            let def: RateDefinition
            do { def = try RateDefinition.parse(bytes) } catch { throw Failure(file: file, message: "\(error)") }
            // An alias (symbolic link) shares its target's ledger.
            var buf = [CChar](repeating: 0, count: 4096)
            let key = memoryFiles == nil && realpath(file, &buf) != nil ? String(String(cString: buf).split(separator: "/").last ?? Substring(domain)) : domain
            return try make(key, def, file: file)
        }
        if let lines = read("ratecontrol") {
            for (n, raw) in ControlDirectory.splitLines(lines) {
                let line = raw.trimmingCharacters(" \t\r")
                if line.isEmpty || line.hasPrefix("#") { continue }
                let f = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard f.count >= 2 else { throw Failure(file: path + "/ratecontrol", message: "line \(n): expected pattern:expression") }
                // pattern:expr, pattern:local:expr, pattern:remote:expr; a further
                // `:ENV=val,…` field (indimail's environment settings) is accepted and ignored.
                let qualifier = (f[1] == "local" || f[1] == "remote") && f.count >= 3 ? f[1] : nil
                let expr = qualifier == nil ? f[1] : f[2]
                if qualifier != nil && qualifier != channel { continue }
                if matches(pattern: f[0].lowercased(), domain) {
                    let def = RateDefinition(expression: expr)
                    if let qualifier {
                        // For one channel only: a ledger of its own, and no domain file
                        // (a file would apply to both channels).
                        return try make(qualifier + ":" + domain, def, file: path + "/ratecontrol (line \(n))")
                    }
                    // As documented: a match creates the domain's definition.
                    let p = try make(domain, def, file: path + "/ratecontrol (line \(n))")
                    if memoryFiles == nil { try? Sys.writeFile(file, def.bytes(), mode: 0o640) }
                    return p
                }
            }
        }
        if let bytes = read(".global") {
            let def: RateDefinition
            do { def = try RateDefinition.parse(bytes) } catch { throw Failure(file: path + "/.global", message: "\(error)") }
            return try make(".global", def, file: path + "/.global")
        }
        return nil
    }

    /// At most 1,024 bytes, and no repetition operator (`*` `+` `?` `{n}`)
    /// straight after another.
    public static func reasonableRegex(_ pattern: String) -> Bool {
        let b = Array(pattern.utf8)
        if b.count > 1024 { return false }
        var prevRepeat = false
        var i = 0
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\") { i += 2; prevRepeat = false; continue }
            if c == UInt8(ascii: "[") {
                // A bracket expression is one atom: its `*`, `+` … are literal ("[]…]" and "[^]…]" too).
                var j = i + 1
                if j < b.count && b[j] == UInt8(ascii: "^") { j += 1 }
                if j < b.count && b[j] == UInt8(ascii: "]") { j += 1 }
                while j < b.count && b[j] != UInt8(ascii: "]") { j += 1 }
                i = j + 1
                prevRepeat = false
                continue
            }
            // A repetition starts with * + ? or {, and ends with * + ? or the bound's }.
            let starts = c == UInt8(ascii: "*") || c == UInt8(ascii: "+") || c == UInt8(ascii: "?") || c == UInt8(ascii: "{")
            if starts && prevRepeat { return false }
            prevRepeat = c == UInt8(ascii: "*") || c == UInt8(ascii: "+") || c == UInt8(ascii: "?") || c == UInt8(ascii: "}")
            i += 1
        }
        return true
    }

    func matches(pattern: String, _ domain: String) -> Bool {
        if pattern == domain { return true }
        if useRegex {
            // glibc's regcomp copies the pattern's tree for each stacked repetition
            // (`a++++…`), so a short hostile line could take gigabytes (found by
            // fuzzing): such a pattern, or one over 1 KB, matches nothing, as an
            // invalid one does.
            guard RateDirectory.reasonableRegex(pattern) else { return false }
            var re = regex_t()
            guard regcomp(&re, pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB) == 0 else { return false }
            defer { regfree(&re) }
            return regexec(&re, domain, 0, nil, 0) == 0
        }
        return fnmatch(pattern, domain, 0) == 0
    }
}

extension Substring {
    func trimmingCharacters(_ set: String) -> String {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

extension String {
    func trimmingCharacters(_ set: String) -> String { Substring(self).trimmingCharacters(set) }
}
