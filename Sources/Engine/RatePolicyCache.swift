import RateControl
import Scheduler
import Synchronization

/// Rate policies looked up once per domain (the files are read again after HUP).
/// Lookup errors are remembered for the log and the domain is not limited,
/// as indimail-mta "proceeds to deliver".
final class RatePolicyCache: Sendable {
    private struct State {
        var cache: [String: DomainPolicy?] = [:]
        var errors: [String] = []
    }
    private let state = Mutex(State())

    init() {}

    func lookup(_ dir: RateDirectory) -> @Sendable (String, Channel) -> DomainPolicy? {
        return { [self] domain, channel in
            state.withLock { s in
                let key = channel.name + " " + domain
                if let hit = s.cache[key] { return hit }
                var p: DomainPolicy? = nil
                do { p = try dir.policy(for: domain, channel: channel.name) } catch { s.errors.append("failed to get delivery rate for \(domain): \(error)") }
                s.cache[key] = .some(p)
                return p
            }
        }
    }

    func clear() {
        state.withLock { $0.cache.removeAll() }
    }

    func takeErrors() -> [String] {
        state.withLock { s in
            let e = s.errors
            s.errors.removeAll()
            return e
        }
    }
}
