#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Workers
import Scheduler
import QueueStore
import QueueClient
import LocalDelivery
import Bounce
import ControlFiles
import QueueFormat

/// Sends one `Action: delayed` warning for a message still being retried.
public struct DelayWarningWorker: Sendable {
    public var settings: BounceSettings

    public func warn(_ id: UInt64, recipient: [UInt8], report: [UInt8], files: QueueFiles) -> BounceOutcome {
        guard let info = try? files.info(id) else { return .failed("trouble opening info/\(id)") }
        guard case let .send(envSender, to, sender, double) = BounceMessage.route(id: id, sender: info.sender, settings: settings), !double else {
            return .none
        }
        let messFD = open(files.path(.mess, id), O_RDONLY | O_CLOEXEC)
        if messFD == -1 { return .failed("trouble opening mess/\(id)") }
        let message = (try? Sys.readAll(messFD, limit: 65536)) ?? []
        close(messFD)
        let record = BounceRecord(recipient: String(decoding: recipient, as: UTF8.self), report: String(decoding: report, as: UTF8.self))
        let bytes = DSNMessage.compose(kind: .delay, id: id, sender: sender, recipient: to, birth: info.birth,
                                       arrivalDate: Date822.local(time_t(info.birth)), date: Date822.local(time(nil)),
                                       records: [record], message: message, settings: settings, headersOnly: true)
        guard let session = try? QueueSession(forBounce: true) else { return .failed("unable to start qmail-queue") }
        session.put(bytes)
        session.from(envSender)
        session.to(to)
        let r = session.close()
        return r.isQueued ? .queued(qp: session.qp) : .failed("trouble injecting delay warning: \(r.message)")
    }
}

/// Composes and injects one message's bounce through the queue-client layer.
public struct BounceWorker: Sendable {
    public var settings: BounceSettings

    public init(settings: BounceSettings) { self.settings = settings }

    public func inject(_ id: UInt64, files: QueueFiles) -> BounceOutcome {
        let bouncePath = files.path(.bounce, id)
        let read: [UInt8]?
        do { read = try Sys.readFile(bouncePath) } catch { return .failed("unable to read \(bouncePath)") }
        guard let bounceFile = read else { return .none }
        guard let info = try? files.info(id) else { return .failed("trouble opening info/\(id); will try again later") }
        let messFD = open(files.path(.mess, id), O_RDONLY | O_CLOEXEC)
        if messFD == -1 { return .failed("trouble opening mess/\(id); will try again later") }
        let message = (try? Sys.readAll(messFD, limit: settings.maxBytes + 1)) ?? []
        close(messFD)
        let decision: BounceDecision
        if settings.format == .dsn {
            switch BounceMessage.route(id: id, sender: info.sender, settings: settings) {
            case .discard(let line): decision = .discard(logLine: line)
            case let .send(envSender, recipient, sender, _):
                let bytes = DSNMessage.compose(kind: .failure, id: id, sender: sender, recipient: recipient, birth: info.birth,
                                               arrivalDate: Date822.local(time_t(info.birth)), date: Date822.local(time(nil)),
                                               records: BounceRecord.parse(bounceFile), message: message, settings: settings)
                decision = .send(sender: envSender, recipient: recipient, message: bytes)
            }
        } else {
            decision = BounceMessage.compose(id: id, sender: info.sender, birth: info.birth, bounceFile: bounceFile,
                                             message: message, settings: settings, date: Date822.local(time(nil)))
        }
        switch decision {
        case .discard(let line):
            return .discarded(line)
        case let .send(sender, recipient, bytes):
            let session: QueueSession
            do { session = try QueueSession(forBounce: true) } catch {
                return .failed("unable to start qmail-queue, will try later")
            }
            session.put(bytes)
            session.from(sender)
            session.to(recipient)
            let r = session.close()
            if r.isQueued { return .queued(qp: session.qp) }
            return .failed("trouble injecting bounce message, will try later: \(r.message)")
        }
    }
}
