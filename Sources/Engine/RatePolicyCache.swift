#if canImport(Glibc)
import Glibc
#endif
import RateControl
import Scheduler

/// Rate policies looked up once per domain (the files are read again after HUP).
/// Lookup errors are remembered for the log and the domain is not limited,
/// as indimail-mta "proceeds to deliver".
final class RatePolicyCache: @unchecked Sendable {
    private var cache: [String: DomainPolicy?] = [:]
    private var errors: [String] = []
    private var lock = pthread_mutex_t()

    init() { pthread_mutex_init(&lock, nil) }

    func lookup(_ dir: RateDirectory) -> @Sendable (String, Channel) -> DomainPolicy? {
        return { [self] domain, channel in
            pthread_mutex_lock(&lock)
            defer { pthread_mutex_unlock(&lock) }
            let key = channel.name + " " + domain
            if let hit = cache[key] { return hit }
            var p: DomainPolicy? = nil
            do { p = try dir.policy(for: domain, channel: channel.name) } catch { errors.append("failed to get delivery rate for \(domain): \(error)") }
            cache[key] = .some(p)
            return p
        }
    }

    func clear() {
        pthread_mutex_lock(&lock)
        cache.removeAll()
        pthread_mutex_unlock(&lock)
    }

    func takeErrors() -> [String] {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        let e = errors
        errors.removeAll()
        return e
    }
}
