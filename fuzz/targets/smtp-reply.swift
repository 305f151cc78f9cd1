// Fuzz target: SMTP replies as the client reads them (RemoteDelivery):
//   SMTPConnection.readLine / SMTPConnection.reply (multi-line replies, codes,
//   non-SMTP lines, the 1000-line and 1 MB limits), SMTPConnection.hello (EHLO
//   keywords, SIZE), and SMTPClient.transaction (MAIL, RCPT, DATA with and
//   without PIPELINING, 421, 354, the final reply).
// The input is what the server says: it is written into one end of a
// socketpair whose write side is then shut, and the client reads the other
// end (its commands pile up unread in the peer's buffer).
// Input: a mode byte — bit 0 clear: read replies until the stream ends;
// bit 0 set: EHLO then one transaction with 1 + (bits 1–2) recipients.
// Property: a reply's code is 400 or 200–999, and it has at least one line.
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
@testable import RemoteDelivery

nonisolated(unsafe) var client: SMTPClient? = nil

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, size < 100_000, let data else { return 0 }
    if client == nil {
        signal(SIGPIPE, SIG_IGN)
        var s = SMTPSettings()
        s.heloHost = "fuzz.example"
        client = SMTPClient(settings: s, resolver: DNSResolver(servers: []))
    }
    let mode = data[0]
    var fds: [Int32] = [-1, -1]
    check(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0, "socketpair failed")
    var off = 1
    while off < size {
        let n = send(fds[1], data + off, size - off, Int32(MSG_NOSIGNAL))
        check(n > 0, "send to the socketpair failed")
        off += n
    }
    shutdown(fds[1], Int32(SHUT_WR))
    defer { close(fds[1]) }
    let c = SMTPConnection(fd: fds[0], ip: "192.0.2.1", port: 25)
    defer { c.close() }
    func checkReply(_ r: SMTPConnection.Reply) {
        check(!r.lines.isEmpty, "reply without lines")
        check(r.code == 400 || (r.code >= 200 && r.code <= 999), "reply code \(r.code)")
    }
    if mode & 1 == 0 {
        for _ in 0..<2000 {
            guard let r = try? c.reply() else { break }
            checkReply(r)
        }
    } else {
        guard let greeting = try? c.reply() else { return 0 }
        checkReply(greeting)
        guard let h = try? c.hello("fuzz.example") else { return 0 }
        checkReply(h)
        if let limit = c.sizeLimit { check(limit > 0, "SIZE limit \(limit)") }
        let recipients = (0...Int((mode >> 1) & 3)).map { Array("rcpt\($0)@example.com".utf8) }
        let message = OutgoingMessage(prefix: Array("X-QQEH: fuzz\n".utf8), file: MessageFile(bytes: Array("Subject: fuzz\n\n.leading dot\nbody\n".utf8)))
        if let outcome = try? client!.transaction(c, sender: Array("sender@example.org".utf8), recipients: recipients, message: message) {
            check(outcome.recipientReports.count <= recipients.count, "more reports than recipients")
            check(!outcome.messageReport.isEmpty, "empty message report")
        }
    }
    return 0
}
