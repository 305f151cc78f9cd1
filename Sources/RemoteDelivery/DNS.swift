#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO
import ControlFiles

/// A small DNS stub client over UDP (and the servers of /etc/resolv.conf):
/// MX, A and AAAA lookups are all the SMTP client needs. `$DNS_SERVER`
/// (`ip[:port]`) overrides the servers, which is how tests point it at a
/// loopback resolver.
public struct DNSResolver: Sendable {
    public struct Server: Sendable, Equatable {
        public var address: [UInt8]
        public var port: Int
        public init(address: [UInt8], port: Int) { self.address = address; self.port = port }
    }
    public var servers: [Server]
    public var timeoutMS: Int32 = 3000
    public var attempts = 2

    public enum Answer: Equatable, Sendable {
        case records([Record])
        case nxdomain
        case temporaryFailure(String)
    }

    public enum Record: Equatable, Sendable {
        case mx(preference: Int, exchange: String)
        case a([UInt8])
        case aaaa([UInt8])
        case cname(String)
    }

    public enum RecordType: UInt16, Sendable { case a = 1, cname = 5, mx = 15, aaaa = 28 }

    public init(servers: [Server]) { self.servers = servers }

    public static func parseServer(_ text: String) -> Server? {
        var host = text, port = 53
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":"), let p = Int(rest.dropFirst()) { port = p }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            port = Int(text[text.index(after: colon)...]) ?? 53
        }
        guard let address = ipAddress(host) else { return nil }
        return Server(address: address, port: port)
    }

    /// `$DNS_SERVER`, else the `nameserver` lines of /etc/resolv.conf, else 127.0.0.1.
    public static func system() -> DNSResolver {
        if let env = Sys.environment("DNS_SERVER"), !env.isEmpty {
            return DNSResolver(servers: env.split(separator: ",").compactMap { parseServer(String($0)) })
        }
        var servers: [Server] = []
        if let conf = try? Sys.readFile("/etc/resolv.conf") {
            for (_, line) in ControlDirectory.splitLines(conf) {
                let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                if f.count >= 2, f[0] == "nameserver", let s = parseServer(String(f[1])) { servers.append(s) }
            }
        }
        if servers.isEmpty { servers = [Server(address: [127, 0, 0, 1], port: 53)] }
        return DNSResolver(servers: servers)
    }

    static func encodeName(_ name: String) -> [UInt8]? {
        var out: [UInt8] = []
        for label in name.split(separator: ".") {
            let b = Array(label.utf8)
            if b.isEmpty || b.count > 63 { return nil }
            out.append(UInt8(b.count)); out += b
        }
        out.append(0)
        return out
    }

    public func query(_ name: String, _ type: RecordType) -> Answer {
        guard let qname = DNSResolver.encodeName(name) else { return .nxdomain }
        let id = UInt16.random(in: 0...UInt16.max)
        var q: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        q += qname
        q += [UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xff), 0, 1]
        var lastError = "no name servers"
        for _ in 0..<attempts {
            for s in servers {
                var result = exchange(q, id: id, server: s)
                // A truncated UDP answer is asked again over TCP, as res_query does
                // (big MX or address sets do not fit in 512 bytes).
                if case .success(let reply) = result, reply[2] & 0x02 != 0 { result = exchangeTCP(q, id: id, server: s) }
                switch result {
                case .success(let reply):
                    if let a = DNSResolver.parse(reply, type: type) { return a }
                    lastError = "malformed reply"
                case .failure(let why):
                    lastError = why.text
                }
            }
        }
        return .temporaryFailure(lastError)
    }

    enum ExchangeError: Error { case e(String) }

    func exchange(_ q: [UInt8], id: UInt16, server: Server) -> Result<[UInt8], ExchangeErrorText> {
        let family = server.address.count == 4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd == -1 { return .failure(ExchangeErrorText("socket: \(SystemError("socket").reason)")) }
        defer { close(fd) }
        // Connect so that only the server's replies are received.
        let cfd = server.address.withUnsafeBufferPointer { qs_connect_udp(fd, $0.baseAddress, Int32($0.count), Int32(server.port)) }
        if cfd != 0 { return .failure(ExchangeErrorText("connect: \(SystemError("connect", errno: -cfd).reason)")) }
        _ = q.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let deadline = DNSResolver.nowMS() + Int64(timeoutMS)
        while true {
            let left = deadline - DNSResolver.nowMS()
            if left <= 0 { return .failure(ExchangeErrorText("timeout")) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(left)) <= 0 { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n < 12 { if n < 0 { return .failure(ExchangeErrorText("recv: \(SystemError("recv").reason)")) }; continue }
            if UInt16(buf[0]) << 8 | UInt16(buf[1]) != id { continue }
            return .success(Array(buf[0..<n]))
        }
    }

    /// The query over TCP: a two-byte length before the message, both ways.
    func exchangeTCP(_ q: [UInt8], id: UInt16, server: Server) -> Result<[UInt8], ExchangeErrorText> {
        let fd = server.address.withUnsafeBufferPointer { qs_connect($0.baseAddress, Int32($0.count), Int32(server.port), timeoutMS) }
        if fd < 0 { return .failure(ExchangeErrorText("tcp connect: \(SystemError("connect", errno: -fd).reason)")) }
        defer { close(fd) }
        _ = qs_socket_timeout(fd, timeoutMS)
        let message = [UInt8(q.count >> 8), UInt8(q.count & 0xff)] + q
        var off = 0
        while off < message.count {
            let n = message.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return .failure(ExchangeErrorText("tcp send: \(SystemError("send").reason)")) }
            off += n
        }
        func readExactly(_ count: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: count)
            var got = 0
            while got < count {
                let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, count - got, 0) }
                if n <= 0 { return nil }
                got += n
            }
            return out
        }
        guard let len = readExactly(2), let reply = readExactly(Int(len[0]) << 8 | Int(len[1])), reply.count >= 12,
              UInt16(reply[0]) << 8 | UInt16(reply[1]) == id else {
            return .failure(ExchangeErrorText("tcp: no complete reply"))
        }
        return .success(reply)
    }

    public struct ExchangeErrorText: Error { let text: String; init(_ t: String) { text = t } }

    static func nowMS() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Reads a possibly compressed name at `offset`; returns it and the offset after it.
    static func readName(_ m: [UInt8], _ offset: Int) -> (String, Int)? {
        var labels: [String] = []
        var i = offset
        var end: Int? = nil
        var jumps = 0
        while true {
            guard i < m.count else { return nil }
            let len = Int(m[i])
            if len == 0 { i += 1; break }
            if len & 0xc0 == 0xc0 {
                guard i + 1 < m.count, jumps < 32 else { return nil }
                if end == nil { end = i + 2 }
                i = (len & 0x3f) << 8 | Int(m[i + 1])
                jumps += 1
                continue
            }
            guard i + 1 + len <= m.count else { return nil }
            labels.append(String(decoding: m[(i + 1)...(i + len)], as: UTF8.self))
            i += 1 + len
        }
        return (labels.joined(separator: "."), end ?? i)
    }

    static func parse(_ m: [UInt8], type: RecordType) -> Answer? {
        guard m.count >= 12 else { return nil }
        let rcode = m[3] & 0x0f
        if rcode == 3 { return .nxdomain }
        if rcode != 0 { return .temporaryFailure("server failure (rcode \(rcode))") }
        if m[2] & 0x02 != 0 { return .temporaryFailure("truncated reply") }
        let qd = Int(m[4]) << 8 | Int(m[5]), an = Int(m[6]) << 8 | Int(m[7])
        var i = 12
        for _ in 0..<qd {
            guard let (_, next) = readName(m, i) else { return nil }
            i = next + 4
        }
        var records: [Record] = []
        for _ in 0..<an {
            guard let (_, next) = readName(m, i), next + 10 <= m.count else { return nil }
            let rtype = UInt16(m[next]) << 8 | UInt16(m[next + 1])
            let rdlen = Int(m[next + 8]) << 8 | Int(m[next + 9])
            let rdata = next + 10
            guard rdata + rdlen <= m.count else { return nil }
            switch rtype {
            case RecordType.a.rawValue where rdlen == 4: records.append(.a(Array(m[rdata..<(rdata + 4)])))
            case RecordType.aaaa.rawValue where rdlen == 16: records.append(.aaaa(Array(m[rdata..<(rdata + 16)])))
            case RecordType.mx.rawValue where rdlen >= 3:
                let pref = Int(m[rdata]) << 8 | Int(m[rdata + 1])
                if let (name, _) = readName(m, rdata + 2) { records.append(.mx(preference: pref, exchange: name)) }
            case RecordType.cname.rawValue:
                if let (name, _) = readName(m, rdata) { records.append(.cname(name)) }
            default: break
            }
            i = rdata + rdlen
        }
        return .records(records)
    }

    /// Addresses of a host (A, then AAAA), or an error answer.
    public func addresses(of host: String) -> Answer {
        var out: [Record] = []
        var nx = 0
        var temp: String? = nil
        for t in [RecordType.a, .aaaa] {
            switch query(host, t) {
            case .records(let r): out += r.filter { if case .a = $0 { return true }; if case .aaaa = $0 { return true }; return false }
            case .nxdomain: nx += 1
            case .temporaryFailure(let why): temp = why
            }
        }
        if !out.isEmpty { return .records(out) }
        if nx == 2 { return .nxdomain }
        if let temp { return .temporaryFailure(temp) }
        return .records([])
    }
}

/// An IPv4 or IPv6 address in text as its bytes (4 or 16), or nil.
public func ipAddress(_ text: String) -> [UInt8]? {
    var buf = [UInt8](repeating: 0, count: 16)
    let n = qs_parse_ip(text, &buf)
    return n > 0 ? Array(buf[0..<Int(n)]) : nil
}

/// The text of an address given as its bytes (4 or 16): `ipAddress` the other way.
public func ipText(_ address: [UInt8]) -> String {
    var name = [CChar](repeating: 0, count: 64)
    _ = address.withUnsafeBufferPointer { qs_format_ip($0.baseAddress, Int32($0.count), &name, 64) }
    return String(cString: name)
}
