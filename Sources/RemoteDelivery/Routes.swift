import ControlFiles

/// `smtproutes`: `domain:relay[:port]` (indimail's further `:penalty:tolerance`
/// fields are accepted and ignored; an empty port is 25), `.suffix:relay`, `:relay` (catch-all);
/// an empty relay means "use the MX". Relays may be `[1.2.3.4]` literals.
public struct SMTPRoutes: Sendable, Equatable {
    public struct Route: Sendable, Equatable {
        public var relay: String?
        public var port: Int
        public init(relay: String?, port: Int) { self.relay = relay; self.port = port }
    }
    var table: [String: Route] = [:]

    public init() {}

    /// `defaultPort`: 25 for smtproutes, 209 for qmtproutes.
    public init(lines: [(line: Int, text: String)], file: String, defaultPort: Int = 25) throws {
        for (n, line) in lines {
            guard let colon = line.firstIndex(of: ":") else {
                throw ControlError(file: file, line: n, message: "expected domain:relay[:port], found \"\(line)\"")
            }
            let key = String(line[..<colon]).lowercased()
            let rest = line[line.index(after: colon)...]
            // The relay: a `[literal]` (IPv6 has colons) or a name up to the next colon.
            var relayEnd = rest.firstIndex(of: ":") ?? rest.endIndex
            if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") { relayEnd = rest.index(after: close) }
            let relay = String(rest[..<relayEnd])
            var port = defaultPort
            if relayEnd < rest.endIndex, rest[relayEnd] == ":" {
                // The port, then indimail's optional `:penalty:tolerance` fields (not used here).
                let field = rest[rest.index(after: relayEnd)...].prefix { $0 != ":" }
                if !field.isEmpty {
                    guard let p = Int(field), p > 0, p < 65536 else {
                        throw ControlError(file: file, line: n, message: "bad port in \"\(line)\"")
                    }
                    port = p
                }
            } else if relayEnd < rest.endIndex {
                throw ControlError(file: file, line: n, message: "expected domain:relay[:port], found \"\(line)\"")
            }
            if table[key] == nil { table[key] = Route(relay: relay.isEmpty ? nil : relay, port: port) }
        }
    }

    public static func load(_ control: ControlDirectory) throws -> SMTPRoutes {
        guard let lines = try control.readLinesNumbered("smtproutes") else { return SMTPRoutes() }
        return try SMTPRoutes(lines: lines, file: control.filePath("smtproutes"))
    }

    /// indimail's `qmtproutes`: the same syntax; the destinations it names get QMTP (port 209 by default).
    public static func loadQMTP(_ control: ControlDirectory) throws -> SMTPRoutes {
        guard let lines = try control.readLinesNumbered("qmtproutes") else { return SMTPRoutes() }
        return try SMTPRoutes(lines: lines, file: control.filePath("qmtproutes"), defaultPort: 209)
    }

    public var isEmpty: Bool { table.isEmpty }

    /// The route for a domain: exact, then `.suffix` longest first, then the catch-all.
    public func route(for domain: String) -> Route? { DomainTable.lookup(domain.lowercased(), in: table) }
}
