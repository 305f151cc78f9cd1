#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Scheduler
import RemoteDelivery
import LMDB

/// Remote deliveries in process: the recipients of one message for one
/// domain go in one SMTP transaction, over a reused connection when one is
/// idle; each recipient gets qmail-rspawn's folded report.
public struct SMTPWorker: Sendable {
    public let client: SMTPClient

    public init(client: SMTPClient) { self.client = client }

    public func deliver(_ batch: [Delivery], messagePath: String) -> [(Int, DeliveryReport)] {
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
        let rcpt = String(decoding: first.recipient.address, as: UTF8.self)
        let domain = rcpt.lastIndex(of: "@").map { String(rcpt[rcpt.index(after: $0)...]) } ?? rcpt
        let outcome = client.deliver(domain: domain, sender: first.sender, recipients: batch.map { $0.recipient.address }, message: message)
        return batch.enumerated().map { i, d in
            (d.number, ExternalRemoteWorker.fold(output: outcome.output(forRecipient: i), status: .exited(0)))
        }
    }
}

/// Host failure memory kept in the engine's LMDB environment.
final class LMDBHostMemoryStore: HostMemoryStore, @unchecked Sendable {
    let env: LMDBEnvironment
    let db: LMDBDatabase

    init(env: LMDBEnvironment) throws {
        self.env = env
        db = try env.database("tcpto")
    }

    func load() -> [(String, Int, Int64)] {
        var out: [(String, Int, Int64)] = []
        try? env.read { txn in
            try txn.forEach(db) { k, v in
                if v.count == 16 {
                    var f: Int64 = 0, t: Int64 = 0
                    for i in 0..<8 { f = f << 8 | Int64(v[i]); t = t << 8 | Int64(v[8 + i]) }
                    out.append((String(decoding: k, as: UTF8.self), Int(f), t))
                }
                return true
            }
        }
        return out
    }

    func save(_ ip: String, failures: Int, last: Int64) {
        var v: [UInt8] = []
        for x in [Int64(failures), last] { for s in stride(from: 56, through: 0, by: -8) { v.append(UInt8(truncatingIfNeeded: x >> Int64(s))) } }
        try? env.write { try $0.put(db, Array(ip.utf8), v) }
    }

    func remove(_ ip: String) {
        try? env.write { _ = try $0.delete(db, Array(ip.utf8)) }
    }
}
