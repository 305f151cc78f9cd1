// newaliases' reading of sendmail's /etc/aliases into fastforward records
// (toolbox.md §1.12). No imports: pure over bytes.

public enum Aliases {
    public struct Failure: Error, Equatable {
        public let code: Int32
        public let message: String
    }

    /// Host completion as qmail does it: `@defaulthost` when there is no `@`,
    /// a trailing `+` becomes `.plusdomain`, `.defaultdomain` when the domain has no dot.
    public struct Completion: Sendable {
        public var defaultHost: [UInt8], defaultDomain: [UInt8], plusDomain: [UInt8]
        public init(defaultHost: [UInt8], defaultDomain: [UInt8], plusDomain: [UInt8]) {
            self.defaultHost = defaultHost; self.defaultDomain = defaultDomain; self.plusDomain = plusDomain
        }
        public func complete(_ a: [UInt8]) -> [UInt8] {
            var addr = a
            if !addr.contains(UInt8(ascii: "@")) { addr += [UInt8(ascii: "@")] + defaultHost }
            if addr.last == UInt8(ascii: "+") { addr.removeLast(); addr += [UInt8(ascii: ".")] + plusDomain }
            if let at = addr.lastIndex(of: UInt8(ascii: "@")), !addr[(at + 1)...].contains(UInt8(ascii: ".")) {
                addr += [UInt8(ascii: ".")] + defaultDomain
            }
            return addr
        }
    }

    /// Logical lines: a line and the following lines that start with a space or
    /// tab; blank lines and logical lines starting with `#` are left out.
    public static func logicalLines(_ input: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for raw in input.split(separator: 10, omittingEmptySubsequences: false) {
            if let f = raw.first, (f == 32 || f == 9), !out.isEmpty {
                out[out.count - 1] += [32] + raw
                continue
            }
            out.append(Array(raw))
        }
        return out.filter { l in
            let t = l.drop { $0 == 32 || $0 == 9 || $0 == 13 }
            return !t.isEmpty && t.first != UInt8(ascii: "#")
        }
    }

    static func trim(_ b: some Collection<UInt8>) -> [UInt8] {
        var s = Array(b).drop { $0 == 32 || $0 == 9 || $0 == 13 }
        while let l = s.last, l == 32 || l == 9 || l == 13 { s = s.dropLast() }
        return Array(s)
    }

    /// Splits at commas outside double quotes, `<>` and comments.
    static func elements(_ b: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = [], cur: [UInt8] = []
        var quoted = false, angle = 0, paren = 0, escaped = false
        for c in b {
            if escaped { cur.append(c); escaped = false; continue }
            if c == UInt8(ascii: "\\") { cur.append(c); escaped = true; continue }
            if quoted { if c == UInt8(ascii: "\"") { quoted = false }; cur.append(c); continue }
            switch c {
            case UInt8(ascii: "\""): quoted = true
            case UInt8(ascii: "<"): angle += 1
            case UInt8(ascii: ">"): angle -= 1
            case UInt8(ascii: "("): paren += 1
            case UInt8(ascii: ")"): paren -= 1
            case UInt8(ascii: ",") where angle == 0 && paren == 0:
                out.append(cur); cur = []; continue
            default: break
            }
            cur.append(c)
        }
        out.append(cur)
        return out
    }

    /// The records of the whole file, in order (`:key` → commands, `?key` → owner).
    public static func records(_ input: [UInt8], _ c: Completion) throws(Failure) -> [(key: [UInt8], data: [UInt8])] {
        var out: [(key: [UInt8], data: [UInt8])] = []
        for line in logicalLines(input) {
            let shown = String(decoding: line, as: UTF8.self)
            if line.contains(0) { throw Failure(code: 100, message: "NUL bytes are not permitted") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw Failure(code: 111, message: "unable to parse this line: " + shown) }
            let aliasList: [[UInt8]]
            do throws(HeaderScan.ParseError) { aliasList = try HeaderScan.addresses(line[..<colon]) } catch {
                throw Failure(code: 111, message: "unable to parse this line: " + shown)
            }
            guard aliasList.count == 1, let alias = aliasList.first, !alias.contains(32), !alias.contains(9) else { throw Failure(code: 111, message: "unable to parse this line: " + shown) }
            var commands: [UInt8] = []
            for raw in elements(Array(line[(colon + 1)...])) {
                var e = trim(raw)
                if e.first == UInt8(ascii: "\""), e.count >= 2, e.last == UInt8(ascii: "\""), e[1] == UInt8(ascii: "|") {
                    e = Array(e[1..<(e.count - 1)])
                }
                if e.first == UInt8(ascii: "|") {
                    commands += [UInt8(ascii: "!")] + e.dropFirst() + [0]
                    continue
                }
                let include = Array(":include:".utf8)
                if e.count >= include.count, HeaderScan.lower(e[0..<include.count]) == include {
                    let file = trim(e[include.count...])
                    if file.isEmpty { throw Failure(code: 111, message: "empty :include: filenames not permitted") }
                    commands += (file.first == UInt8(ascii: "/") ? file : Array("./".utf8) + file) + Array(".bin".utf8) + [0]
                    continue
                }
                let parsed: [[UInt8]]
                do throws(HeaderScan.ParseError) { parsed = try HeaderScan.addresses(e) } catch {
                    throw Failure(code: 111, message: "unable to parse this line: " + shown)
                }
                guard let a = parsed.first, parsed.count == 1 else { throw Failure(code: 111, message: "empty recipient addresses not permitted") }
                if a.first == UInt8(ascii: "/") { throw Failure(code: 111, message: "file delivery \(String(decoding: a, as: UTF8.self)) not supported") }
                let full = c.complete(a)
                if full.count > SetForward.maxAddress { throw Failure(code: 100, message: "addresses over 800 bytes are not permitted") }
                commands += [UInt8(ascii: "&")] + full + [0]
            }
            let key = HeaderScan.lower(alias.contains(UInt8(ascii: "@")) ? alias : alias + [UInt8(ascii: "@")])
            out.append(([UInt8(ascii: ":")] + key, commands))
            let owner = Array("owner-".utf8)
            if alias.count > owner.count, HeaderScan.lower(alias[0..<owner.count]) == owner {
                let listKey = Array(key.dropFirst(owner.count))
                out.append(([UInt8(ascii: "?")] + listKey, c.complete(alias)))
            }
        }
        return out
    }
}
