// Fuzz target: qmail-smtpd's conversation as the server reads it (Receivers):
//   SMTPTransport.readLine (line limit, NUL, CR), SMTPSession's command parser
//   and every command (HELO, EHLO, MAIL/RCPT with SMTPAddress.parse and SIZE,
//   DATA with SMTPDataParser, RSET, NOOP, VRFY, HELP, AUTH PLAIN/LOGIN with
//   base64, STARTTLS without a certificate, QUIT, unknown commands).
// The input is what a client sends: it is written into one end of a
// socketpair whose write side is then shut; the session reads the other end
// and writes its replies to /dev/null. Messages go to a queue that keeps
// nothing but checks what it is given.
// AUTH: the checkpassword program is a real process only for one input in 8
// (chosen by the input's size: (size / 2) % 8 == 0), alternately /bin/false
// (535) and /bin/true (235, then the session relays); the other inputs name a
// program that does not exist (posix_spawn fails at once: 451), so the whole
// AUTH exchange (PLAIN, LOGIN, base64, cancel) is still parsed for every input
// without the cost of starting a process (it was most of this target's time).
// Property: the session ends (EOF, QUIT or a refusal) without a crash; every
// message handed to the queue has a sender and 1..maxRecipients recipients,
// none longer than 899 bytes.
#if canImport(Glibc)
import Glibc
#endif
@testable import Receivers
import ControlFiles

final class CheckingTransaction: QueueTransaction {
    var qp: Int32 { 1 }
    var bytes = 0
    func put(_ b: ArraySlice<UInt8>) { bytes += b.count }
    func fail() {}
    func finish(sender: [UInt8], recipients: [[UInt8]]) -> [UInt8] {
        check(!recipients.isEmpty && recipients.count <= 20, "recipients: \(recipients.count)")
        check(sender.count <= SMTPAddress.maxLength, "sender of \(sender.count) bytes")
        for r in recipients { check(r.count <= SMTPAddress.maxLength + 10, "recipient of \(r.count) bytes") }
        return []
    }
}

struct CheckingQueue: MessageQueue {
    func begin(environment: [String]) -> Result<QueueTransaction, QueueStartError> { .success(CheckingTransaction()) }
}

nonisolated(unsafe) var controls: SMTPDControls? = nil
nonisolated(unsafe) var devnull: Int32 = -1

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, size < 60_000, let data else { return 0 }
    if controls == nil {
        signal(SIGPIPE, SIG_IGN)
        devnull = open("/dev/null", O_WRONLY)
        controls = SMTPDControls(me: "fuzz.example", greeting: ["fuzz.example"], localIPHost: "fuzz.example",
                                 rcptHosts: ["fuzz.example", ".sub.example"], moreRcptHosts: nil, dataBytes: 5000, timeout: 2,
                                 badMailFrom: ["@bad.example"], badRcptTo: ["no@fuzz.example"], maxRecipients: 20, maxHops: 100,
                                 maxCommandLength: 512, certificate: nil, localAddresses: ["127.0.0.1"])
    }
    var fds: [Int32] = [-1, -1]
    check(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0, "socketpair failed")
    var off = 0
    while off < size {
        let n = send(fds[1], data + off, size - off, Int32(MSG_NOSIGNAL))
        check(n > 0, "send to the socketpair failed")
        off += n
    }
    shutdown(fds[1], Int32(SHUT_WR))
    defer { close(fds[0]); close(fds[1]) }
    var options = SMTPDOptions()
    let bucket = size / 2
    options.checkProgram = bucket % 8 != 0 ? ["/nonexistent/swiftqmail-fuzz-checkpassword"]
        : bucket % 16 == 0 ? ["/bin/false"] : ["/bin/true"]
    options.allowInsecureAuth = true
    options.penalty = 0
    options.allowBareLF = size % 2 == 0
    let io = SMTPTransport(readFD: fds[0], writeFD: devnull, timeout: 2)
    let session = SMTPSession(transport: io, controls: controls!, connection: ConnectionInfo(remoteIP: "192.0.2.1", localIP: "127.0.0.1"),
                              options: options, queue: CheckingQueue(), environment: [])
    session.run()
    return 0
}
