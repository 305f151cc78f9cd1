#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO

/// One SMTP connection: a socket, optionally wrapped in TLS after STARTTLS,
/// with reply parsing (multi-line replies) and timeouts per operation.
public final class SMTPConnection: @unchecked Sendable {
    /// The socket; -1 once closed (closing twice could close another thread's descriptor).
    public private(set) var fd: Int32
    public let ip: String
    public let port: Int
    var tls: UnsafeMutableRawPointer? = nil
    var buffer: [UInt8] = []
    var start = 0
    public private(set) var extensions: Set<String> = []
    public private(set) var sizeLimit: Int? = nil
    public var isTLS: Bool { tls != nil }
    public var messagesSent = 0
    public var lastUsed: Int64 = 0
    public var greetedAs: String = ""
    /// The current transaction got past MAIL FROM (a failure now is not a stale connection).
    public var recipientsSent = false
    /// A transaction was begun and not brought to its end (RSET before the next one).
    public var needsReset = false
    /// The whole message was sent and its reply has not come (qmail-remote's flagcritical).
    public var awaitingFinalReply = false
    /// The server said 421: it closes the connection, which must not be reused.
    public var serverClosing = false
    /// The generation of the client's settings this connection was opened under.
    public var generation = 0

    public struct Reply: Equatable, Sendable {
        public var code: Int
        public var lines: [String]
        /// The reply as qmail quotes it after "Remote host said: ".
        public var text: String { lines.joined(separator: "\n") }
    }

    public enum Failure: Error, Equatable { case died, timeout }

    /// `timeoutremote` in milliseconds: the bound on each whole reply (the
    /// greeting, each command's reply, the reply after the message), however
    /// the server spreads its bytes; and on each write.
    let replyTimeoutMS: Int
    /// The socket's read timeout now: the remaining time of the reply being read.
    var readTimeoutMS: Int
    /// When the reply being read must be complete (CLOCK_MONOTONIC, ms).
    var replyDeadline: Int64 = 0

    init(fd: Int32, ip: String, port: Int, replyTimeoutMS: Int = 1_200_000) {
        self.fd = fd
        self.ip = ip
        self.port = port
        self.replyTimeoutMS = replyTimeoutMS
        self.readTimeoutMS = replyTimeoutMS
    }

    static func monotonicMS() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Where `read` puts bytes before they join `buffer` (one allocation per connection).
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: 16384, alignment: 16)

    deinit {
        close()
        scratch.deallocate()
    }

    public func close() {
        if let t = tls { qs_tls_close(t); tls = nil }
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// Connects within `timeout` seconds; nil plus errno on failure.
    public static func connect(address: [UInt8], port: Int, timeout: Int, ioTimeout: Int) -> (SMTPConnection?, Int32) {
        let fd = address.withUnsafeBufferPointer { qs_connect($0.baseAddress, Int32($0.count), Int32(port), Int32(timeout * 1000)) }
        if fd < 0 { return (nil, -fd) }
        _ = qs_socket_timeout(fd, Int32(ioTimeout * 1000))
        return (SMTPConnection(fd: fd, ip: ipText(address), port: port, replyTimeoutMS: ioTimeout * 1000), 0)
    }

    func rawRead(_ buf: UnsafeMutableRawPointer, _ len: Int) -> Int {
        if let tls { return qs_tls_read(tls, buf, len) }
        while true {
            let n = read(fd, buf, len)
            if n == -1 && errno == EINTR { continue }
            return n
        }
    }

    func rawWrite(_ bytes: [UInt8]) throws(Failure) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { raw -> Int in
                if let tls { return qs_tls_write(tls, raw.baseAddress! + off, raw.count - off) }
                return Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
            }
            if n <= 0 {
                if n == -1 && errno == EINTR { continue }
                throw (errno == EAGAIN || errno == EWOULDBLOCK) ? .timeout : .died
            }
            off += n
        }
    }

    func readLine() throws(Failure) -> [UInt8] {
        while true {
            if let nl = buffer[start...].firstIndex(of: 10) {
                var line = Array(buffer[start..<nl])
                start = nl + 1
                if start > 65536 { buffer.removeFirst(start); start = 0 }
                if line.last == 13 { line.removeLast() }
                return line
            }
            // Each read may wait only for what is left of the reply's time: a server
            // trickling a byte at a time cannot hold the connection past the deadline.
            let remaining = replyDeadline - SMTPConnection.monotonicMS()
            if remaining <= 0 { throw .timeout }
            if remaining < Int64(readTimeoutMS) - 10 || remaining > Int64(readTimeoutMS) {
                readTimeoutMS = Int(remaining)
                _ = qs_socket_read_timeout(fd, Int32(clamping: remaining))
            }
            let n = rawRead(scratch, 16384)
            if n <= 0 { throw (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? .timeout : .died }
            if start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
            buffer.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: n))
            if buffer.count - start > 1_000_000 { throw .died }   // a hostile server sending an endless line
        }
    }

    /// Reads one (possibly multi-line) reply.
    public func reply() throws(Failure) -> Reply {
        replyDeadline = SMTPConnection.monotonicMS() + Int64(replyTimeoutMS)
        var lines: [String] = []
        var code = 0
        while true {
            let line = try readLine()
            let text = String(decoding: line.map { ($0 < 32 && $0 != 9) || $0 > 126 ? UInt8(ascii: "?") : $0 }, as: UTF8.self)
            lines.append(text)
            if lines.count > 1000 { throw .died }
            // A line that is not "ddd", "ddd text" or "ddd-text" is no SMTP reply
            // (an SSH banner, garbage): a temporary failure at once, as qmail's
            // smtpcode() gives, instead of reading on and misaligning pipelined replies.
            let digits = line.count >= 3 && line[0..<3].allSatisfy { $0 >= 48 && $0 <= 57 }
            guard digits, line.count == 3 || line[3] == 32 || line[3] == UInt8(ascii: "-") else { return Reply(code: 400, lines: lines) }
            let c = Int(line[0] - 48) * 100 + Int(line[1] - 48) * 10 + Int(line[2] - 48)
            if c < 200 { return Reply(code: 400, lines: lines) }
            code = c
            if line.count == 3 || line[3] != UInt8(ascii: "-") { break }
        }
        return Reply(code: code, lines: lines)
    }

    public func command(_ line: String) throws(Failure) -> Reply {
        try rawWrite(Array((line + "\r\n").utf8))
        return try reply()
    }

    public func send(_ bytes: [UInt8]) throws(Failure) { try rawWrite(bytes) }

    /// A command given as bytes, CRLF included.
    public func command(bytes: [UInt8]) throws(Failure) -> Reply {
        try rawWrite(bytes)
        return try reply()
    }

    /// QUIT without waiting for the answer, then close: qmail-remote's quit()
    /// does not wait either, and a silent peer must not hold the caller (the
    /// engine's loop reaps idle connections) for the whole `timeoutremote`.
    public func quit() {
        try? rawWrite(Array("QUIT\r\n".utf8))
        close()
    }

    /// EHLO, falling back to HELO; records the extensions offered.
    public func hello(_ name: String) throws(Failure) -> Reply {
        greetedAs = name
        let r = try command("EHLO " + name)
        if r.code == 250 {
            extensions = []
            sizeLimit = nil
            for line in r.lines.dropFirst() where line.count > 4 {
                let words = line.dropFirst(4).split(separator: " ")
                guard let kw = words.first?.uppercased() else { continue }
                extensions.insert(kw)
                if kw == "SIZE", words.count > 1, let n = Int(words[1]), n > 0 { sizeLimit = n }
            }
            return r
        }
        extensions = []
        return try command("HELO " + name)
    }

    /// STARTTLS; nil on success, else the reason.
    public func startTLS(serverName: String, verify: Bool, caFile: String?) throws(Failure) -> String? {
        let r = try command("STARTTLS")
        if r.code != 220 { return "STARTTLS refused: \(r.text)" }
        var err = [CChar](repeating: 0, count: 256)
        guard let t = qs_tls_connect(fd, serverName, verify ? 1 : 0, caFile, &err, 256) else {
            return String(cString: err)
        }
        tls = t
        buffer.removeAll()
        start = 0
        return nil
    }
}
