// Fuzz target: qmail-qmtpd's and qmail-qmqpd's sessions as the servers read a
// client's bytes (Receivers.QMTPSession, QMQPSession, NetstringInput over
// SMTPTransport). The first byte chooses the server (even: QMTP, odd: QMQP);
// the rest is what the client sends, written into one end of a socketpair
// whose write side is then shut; the responses go to /dev/null. Messages go
// to a queue that keeps nothing but checks what it is given.
// Properties: the session ends without a crash; every message queued has at
// least one recipient (QMTP) and no address of 1000 bytes or more or with a
// NUL; QMTP never queues more message bytes than databytes allows (plus the
// Received line).
#if canImport(Glibc)
import Glibc
#endif
@testable import Receivers

final class CheckingTransaction: QueueTransaction {
    let qmtp: Bool
    var failed = false
    var bytes = 0
    init(qmtp: Bool) { self.qmtp = qmtp }
    var qp: Int32 { 1 }
    func put(_ b: ArraySlice<UInt8>) { bytes += b.count }
    func fail() { failed = true }
    func finish(sender: [UInt8], recipients: [[UInt8]]) -> [UInt8] {
        if failed { return Array("Zfailed".utf8) }
        if qmtp { check(!recipients.isEmpty, "a QMTP message queued without recipients") }
        check(sender.count < 1000 && !sender.contains(0), "sender of \(sender.count) bytes")
        for r in recipients { check(r.count < 1000 + 8 && !r.contains(0), "recipient of \(r.count) bytes") }
        if qmtp { check(bytes <= 300 + 64, "queued \(bytes) bytes over databytes 64") }
        return []
    }
}

struct CheckingQueue: MessageQueue {
    let qmtp: Bool
    func begin(environment: [String]) -> Result<QueueTransaction, QueueStartError> { .success(CheckingTransaction(qmtp: qmtp)) }
}

nonisolated(unsafe) var controls: SMTPDControls? = nil
nonisolated(unsafe) var devnull: Int32 = -1

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 1, size < 60_000, let data else { return 0 }
    if controls == nil {
        signal(SIGPIPE, SIG_IGN)
        devnull = open("/dev/null", O_WRONLY)
        controls = SMTPDControls(me: "fuzz.example", greeting: ["fuzz.example"], localIPHost: "fuzz.example",
                                 rcptHosts: ["fuzz.example", ".sub.example"], moreRcptHosts: nil, dataBytes: 64, timeout: 2,
                                 badMailFrom: [], badRcptTo: [], maxRecipients: 20, maxHops: 100,
                                 maxCommandLength: 512, certificate: nil, localAddresses: ["127.0.0.1"])
    }
    let qmtp = data[0] % 2 == 0
    var fds: [Int32] = [-1, -1]
    check(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0, "socketpair failed")
    var off = 1
    while off < size {
        let n = send(fds[1], data + off, size - off, Int32(MSG_NOSIGNAL))
        check(n > 0, "send to the socketpair failed")
        off += n
    }
    shutdown(fds[1], Int32(SHUT_WR))
    defer { close(fds[0]); close(fds[1]) }
    let io = SMTPTransport(readFD: fds[0], writeFD: devnull, timeout: 2)
    var settings = NetstringServerSettings()
    settings.maxRecipientBytes = 4096
    let info = ConnectionInfo(remoteIP: "192.0.2.1", localIP: "127.0.0.1", relayClient: data[0] % 4 == 2 ? "" : nil)
    if qmtp {
        _ = QMTPSession(transport: io, controls: controls!, connection: info, queue: CheckingQueue(qmtp: true), environment: [],
                        settings: settings).run()
    } else {
        _ = QMQPSession(transport: io, connection: info, queue: CheckingQueue(qmtp: false), environment: [], dataBytes: 64,
                        settings: settings).run()
    }
    return 0
}
