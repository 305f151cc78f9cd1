#if canImport(Glibc)
import Glibc
#endif
import QueueFormat
import SystemIO

/// Remote delivery over QMTP (qmtp.5) to the destinations `qmtproutes` names
/// (indimail's file, `smtproutes`' syntax, port 209 by default; an empty relay
/// means the domain's MX hosts on that port). One package per message: the
/// message with LF line ends (encoding #2), the sender, the recipients, each a
/// netstring; one answer per recipient. The reports are indimail qmail-remote's
/// for QMTP: per recipient `r`/`h`/`s` + `Remote host said: <text>` (indimail
/// drops the server's text there; we keep it), then
/// `K<ip> accepted message - Protocol QMTP` when a recipient was accepted, else
/// `DGiving up on <ip> - Protocol QMTP`; an answer that is not QMTP gives
/// `Zrecipient did not talk proper QMTP (#4.3.0)`.
extension SMTPClient {
    func deliverQMTP(route: SMTPRoutes.Route, domain: String, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage,
                     settings: SMTPSettings) -> RemoteOutcome {
        let resolution = route.relay.map { addressTargets($0, port: route.port) } ?? exchangers(domain, port: route.port)
        let targets: [Target]
        switch resolution {
        case .failure(let f): return .all(recipients.count, message: f)
        case .targets(let t): targets = t
        }
        let now = Int64(time(nil))
        for target in targets where !hosts.shouldSkip(ip(target), now: now) {
            let (conn, err) = SMTPConnection.connect(address: target.address, port: target.port,
                                                     timeout: settings.timeoutConnect, ioTimeout: settings.timeoutRemote)
            guard let c = conn else {
                if err == ETIMEDOUT { hosts.timedOut(ip(target), now: Int64(time(nil))) }
                continue
            }
            hosts.succeeded(c.ip)
            defer { c.close() }
            return qmtpPackage(c, sender: sender, recipients: recipients, message: message)
        }
        return .all(recipients.count, message: "ZSorry, I wasn't able to establish a QMTP connection. (#4.4.1)\n")
    }

    func qmtpPackage(_ c: SMTPConnection, sender: [UInt8], recipients: [[UInt8]], message: OutgoingMessage) -> RemoteOutcome {
        let died = RemoteOutcome.all(recipients.count, message: "ZConnected to \(c.ip) but connection died. (#4.4.2)\n")
        do throws(SMTPConnection.Failure) {
            var out = Array("\(message.count + 1):\n".utf8) + message.prefix
            do throws(MessageFileFailure<SMTPConnection.Failure>) {
                try message.file.forEachChunk { (chunk: ArraySlice<UInt8>) throws(SMTPConnection.Failure) in
                    out += chunk
                    try c.send(out)
                    out.removeAll(keepingCapacity: true)
                }
            } catch {
                switch error {
                case .body(let f): throw f
                case .read: return .all(recipients.count, message: "ZUnable to read message. (#4.3.0)\n")
                }
            }
            out += [UInt8(ascii: ",")] + Netstring.encode(sender)
            var list: [UInt8] = []
            for r in recipients { list += Netstring.encode(r) }
            out += Netstring.encode(list)
            try c.send(out)
        } catch {
            return died
        }
        // One answer per recipient, in order.
        var buffer: [UInt8] = []
        var reports: [[UInt8]] = []
        var anyAccepted = false
        var chunk = [UInt8](repeating: 0, count: 4096)
        while reports.count < recipients.count {
            switch Netstring.parse(buffer[...], limit: 100_000) {
            case .failed:
                return .all(recipients.count, message: "Zrecipient did not talk proper QMTP (#4.3.0)\n")
            case .complete(let content, let next):
                let answer = buffer[content]
                buffer.removeFirst(next)
                guard let kind = answer.first, [UInt8(ascii: "K"), UInt8(ascii: "Z"), UInt8(ascii: "D")].contains(kind) else {
                    return .all(recipients.count, message: "Zrecipient did not talk proper QMTP (#4.3.0)\n")
                }
                let text = answer.dropFirst().map { $0 < 32 || $0 > 126 ? UInt8(ascii: "?") : $0 }
                let letter: UInt8 = kind == UInt8(ascii: "K") ? UInt8(ascii: "r") : kind == UInt8(ascii: "D") ? UInt8(ascii: "h") : UInt8(ascii: "s")
                if kind == UInt8(ascii: "K") { anyAccepted = true }
                reports.append([letter] + Array("Remote host said: ".utf8) + text + [10])
            case .needMore:
                let n = chunk.withUnsafeMutableBytes { c.rawRead($0.baseAddress!, $0.count) }
                if n <= 0 {
                    // Answers already read stand (an accepted recipient is not sent again);
                    // the rest were never given and stay deferred.
                    if !reports.contains(where: { $0.first == UInt8(ascii: "r") }) { return died }
                    while reports.count < recipients.count {
                        reports.append(Array("sConnected to \(c.ip) but connection died. (#4.4.2)\n".utf8))
                    }
                    anyAccepted = true
                    break
                }
                buffer += chunk[0..<n]
            }
        }
        // One recipient per message (qmail-rspawn's way) gives indimail's reports exactly; for a
        // batch the message report is K when any recipient was accepted, so that each
        // recipient's own r/h/s report decides its fate when the reports are folded.
        let report = anyAccepted ? "K\(c.ip) accepted message - Protocol QMTP\n" : "DGiving up on \(c.ip) - Protocol QMTP\n"
        return RemoteOutcome(recipientReports: reports, messageReport: Array(report.utf8))
    }
}
