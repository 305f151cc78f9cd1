// qmail-qmqpc: a queue program with qmail-queue's interface (the message on
// descriptor 0, the envelope on descriptor 1, qmail-queue's exit codes) that
// hands the message to a QMQP server instead of a local queue: the first of
// control/qmqpservers (or of the arguments) that answers. docs/man/qmail-qmqpc.8.md.
#if canImport(Glibc)
import Glibc
#endif
import CNet
import SystemIO
import ControlFiles
import QueueFormat

let usage = """
    usage: qmail-qmqpc [server ...]
    Hands one message to a QMQP server (qmail-qmqpd) with qmail-queue's interface: the message
    on descriptor 0, the envelope (F<sender>\\0 T<recipient>\\0 ... \\0) on descriptor 1, and
    qmail-queue's exit codes. Servers (IPv4 or IPv6 addresses) are tried in the order of
    control/qmqpservers, or of the arguments, until one answers (docs/man/qmail-qmqpc.8.md).
    environment: CONTROLDIR QMAILHOME PORT_QMQP
    control files: qmqpservers timeoutconnect timeoutremote
    exit codes: 0 queued; 31 the server refused the message; 71 the server failed temporarily;
      72 connecting timed out; 73 connection refused; 74 the conversation failed;
      55 no usable server; 54 read error; 79 envelope format error
    """

func quit(_ code: QueueExitCode, _ why: String? = nil) -> Never {
    if let why { _ = try? Sys.write(2, "qmail-qmqpc: \(why)\n") }
    exit(code.rawValue)
}

let args = Array(CommandLine.arguments.dropFirst())
if args.first == "--help" || args.first == "-h" {
    _ = try? Sys.write(1, usage + "\n")
    exit(0)
}
signal(SIGPIPE, SIG_IGN)

// The message, read completely first (as qmail's qmqpc does), then the envelope.
let message: [UInt8]
do { message = try Sys.readAll(0) } catch { quit(.readError, "reading the message: \(error)") }
let envelope: [UInt8]
do { envelope = try Sys.readAll(1) } catch { quit(.readError, "reading the envelope: \(error)") }

/// `F<sender>\0`, `T<recipient>\0`…, then `\0`; anything else is a format error.
func parseEnvelope(_ e: [UInt8]) -> (sender: ArraySlice<UInt8>, recipients: [ArraySlice<UInt8>])? {
    var i = 0
    func record() -> ArraySlice<UInt8>? {
        guard let nul = e[i...].firstIndex(of: 0) else { return nil }
        let r = e[i..<nul]
        i = nul + 1
        return r
    }
    guard let f = record(), f.first == UInt8(ascii: "F") else { return nil }
    var recipients: [ArraySlice<UInt8>] = []
    while true {
        guard let r = record() else { return nil }
        if r.isEmpty { break }
        guard r.first == UInt8(ascii: "T") else { return nil }
        recipients.append(r.dropFirst())
    }
    return (f.dropFirst(), recipients)
}
guard let (sender, recipients) = parseEnvelope(envelope) else { quit(.envelopeFormat, "envelope format error") }

// The servers: the arguments, else control/qmqpservers (which must exist either way).
let control = ControlDirectory.fromEnvironment()
let serversPath = control.filePath("qmqpservers")
let (serversStat, serversErrno) = Sys.statWithErrno(serversPath)
guard let serversStat else {
    quit(.configuration, "unable to read \(serversPath): \(String(cString: strerror(serversErrno)))")
}
var serverLines: [String]
if !args.isEmpty { serverLines = args } else {
    do { serverLines = try control.readLines("qmqpservers") ?? [] } catch { quit(.configuration, "\(error)") }
}
func parseIP(_ s: String) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: 16)
    let n = Int(qs_parse_ip(s, &out))
    return n == 4 || n == 16 ? Array(out[0..<n]) : nil
}
var servers: [(text: String, address: [UInt8])] = serverLines.compactMap { l in
    let t = l.hasPrefix("[") && l.hasSuffix("]") ? String(l.dropFirst().dropLast()) : l
    return parseIP(t).map { (l, $0) }
}
if servers.isEmpty { quit(.configuration, "no usable server address in \(args.isEmpty ? serversPath : "the arguments")") }
// The sticky bit on qmqpservers spreads clients: the first try goes to server `now % count`.
if serversStat.st_mode & 0o1000 != 0 && servers.count > 1 {
    let first = Int(time(nil)) % servers.count
    servers = [servers[first]] + servers
}
var port = 628
if let p = Sys.environment("PORT_QMQP"), let v = Int(p), v > 0, v < 65536 { port = v }
let connectTimeout: Int
let ioTimeout: Int
do {
    connectTimeout = max(1, try control.readInt("timeoutconnect", default: 10))
    ioTimeout = max(1, try control.readInt("timeoutremote", default: 60))
} catch { quit(.configuration, "\(error)") }

// The package: netstring(netstring(message) netstring(sender) netstring(recipient)…).
var inner: [UInt8] = Array("\(message.count):".utf8)
let afterMessage: [UInt8] = {
    var s: [UInt8] = [UInt8(ascii: ",")]
    s += Netstring.encode(sender)
    for r in recipients { s += Netstring.encode(r) }
    return s
}()
let innerLength = inner.count + message.count + afterMessage.count
let head = Array("\(innerLength):".utf8) + inner
let tail = afterMessage + [UInt8(ascii: ",")]

func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return false }
        off += n
    }
    return true
}

/// The server's answer: the first `K`, `Z` or `D` after the length prefix; nil
/// when the conversation failed (the text itself is not used).
func answer(_ fd: Int32) -> UInt8? {
    var buf = [UInt8](repeating: 0, count: 512)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return nil }
        for c in buf[0..<n] {
            if c == UInt8(ascii: "K") || c == UInt8(ascii: "Z") || c == UInt8(ascii: "D") { return c }
            if !(c >= 48 && c <= 57) && c != UInt8(ascii: ":") { return nil }
        }
    }
}

var last = QueueExitCode.connectionRejected
for s in servers {
    let fd = s.address.withUnsafeBufferPointer { qs_connect($0.baseAddress, Int32($0.count), Int32(port), Int32(connectTimeout * 1000)) }
    if fd < 0 {
        last = -fd == ETIMEDOUT ? .connectionTimedOut : .connectionRejected
        _ = try? Sys.write(2, "qmail-qmqpc: \(s.text): \(String(cString: strerror(-fd)))\n")
        continue
    }
    _ = qs_socket_timeout(fd, Int32(ioTimeout * 1000))
    // A server answers only after the package's last byte: when sending fails, this
    // one cannot have queued the message, and the next is tried.
    guard sendAll(fd, head), sendAll(fd, message), sendAll(fd, tail) else {
        _ = try? Sys.write(2, "qmail-qmqpc: \(s.text): sending failed: \(String(cString: strerror(errno)))\n")
        close(fd)
        last = .communication
        continue
    }
    // Sent in full: this server decides. Without its answer the message may be
    // queued there already, so no other is tried (a temporary failure: the sender retries).
    let a = answer(fd)
    close(fd)
    switch a {
    case UInt8(ascii: "K"): exit(0)
    case UInt8(ascii: "D"): quit(.permanentlyRejected)
    case UInt8(ascii: "Z"): quit(.temporarilyRejected)
    default: quit(.communication, "\(s.text): no answer")
    }
}
quit(last)
