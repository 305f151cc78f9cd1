#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import RemoteDelivery

/// Remote deliveries in process: the recipients of one message for one
/// domain go in one SMTP transaction, over a reused connection when one is
/// idle; each recipient gets qmail-rspawn's folded report.
public struct SMTPWorker: Sendable {
    public let client: SMTPClient

    public init(client: SMTPClient) { self.client = client }

    public func deliver(_ batch: [WorkItem], messagePath: String) -> [(Int, DeliveryReport)] {
        guard let first = batch.first else { return [] }
        let fd = open(messagePath, O_RDONLY | O_CLOEXEC)
        if fd == -1 { return batch.map { ($0.number, DeliveryReport(.deferral, "qmail-spawn unable to open message. (#4.3.0)\n")) } }
        defer { close(fd) }
        // Read in chunks as it is sent: the worker's memory does not grow with the message.
        guard let file = try? MessageFile(fd: fd, path: messagePath) else {
            return batch.map { ($0.number, DeliveryReport(.deferral, "Unable to read message. (#4.3.0)\n")) }
        }
        // QQEH headers go in front of the message, as indimail's qmail-remote writes them.
        let message = OutgoingMessage(prefix: first.qqeh, file: file)
        let rcpt = String(decoding: first.recipient, as: UTF8.self)
        let domain = rcpt.lastIndex(of: "@").map { String(rcpt[rcpt.index(after: $0)...]) } ?? rcpt
        let outcome = client.deliver(domain: domain, sender: first.sender, recipients: batch.map { $0.recipient }, message: message)
        return batch.enumerated().map { i, d in
            (d.number, ExternalRemoteWorker.fold(output: outcome.output(forRecipient: i), status: .exited(0)))
        }
    }
}
