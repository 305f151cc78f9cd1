import ControlFiles

/// `smtproutes`: `domain:relay[:port]`, `.suffix:relay`, `:relay` (catch-all);
/// an empty relay means "use the MX". Relays may be `[1.2.3.4]` literals.
public struct SMTPRoutes: Sendable, Equatable {
    public struct Route: Sendable, Equatable {
        public var relay: String?
        public var port: Int
    }
    var table: [String: Route] = [:]

    public init() {}

    public init(lines: [(line: Int, text: String)], file: String) throws {
        for (n, line) in lines {
            guard let colon = line.firstIndex(of: ":") else {
                throw ControlError(file: file, line: n, message: "expected domain:relay[:port], found \"\(line)\"")
            }
            let key = String(line[..<colon]).lowercased()
            var rest = String(line[line.index(after: colon)...])
            var port = 25
            if let c2 = rest.lastIndex(of: ":"), !rest.hasSuffix("]") || rest.contains("]:") {
                if let p = Int(rest[rest.index(after: c2)...]), p > 0, p < 65536 { port = p; rest = String(rest[..<c2]) }
                else if !rest.hasPrefix("[") {
                    throw ControlError(file: file, line: n, message: "bad port in \"\(line)\"")
                }
            }
            if table[key] == nil { table[key] = Route(relay: rest.isEmpty ? nil : rest, port: port) }
        }
    }

    public static func load(_ control: ControlDirectory) throws -> SMTPRoutes {
        guard let lines = try control.readLinesNumbered("smtproutes") else { return SMTPRoutes() }
        return try SMTPRoutes(lines: lines, file: control.filePath("smtproutes"))
    }

    /// The route for a domain: exact, then `.suffix` longest first, then the catch-all.
    public func route(for domain: String) -> Route? {
        let d = domain.lowercased()
        if let r = table[d] { return r }
        var i = d.startIndex
        while i < d.endIndex {
            if d[i] == ".", let r = table[String(d[i...])] { return r }
            i = d.index(after: i)
        }
        return table[""]
    }
}
