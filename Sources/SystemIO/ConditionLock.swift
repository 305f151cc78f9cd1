#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable, for the worker pool's wait for jobs
/// (`Synchronization.Mutex` has no condition variable). Both live in memory
/// allocated once, so their addresses never move: a `pthread_mutex_t` stored
/// inline in a Swift object and passed by `&` has no stable address.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let cond: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        cond = .allocate(capacity: 1)
        cond.initialize(to: pthread_cond_t())
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }
    /// Waits for a signal; the lock must be held and is held again on return.
    public func wait() { pthread_cond_wait(cond, mutex) }
    /// Waits for a signal or until `seconds` have passed; false on the timeout.
    public func wait(seconds: Int) -> Bool {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        ts.tv_sec += seconds
        return pthread_cond_timedwait(cond, mutex, &ts) == 0
    }
    public func signal() { pthread_cond_signal(cond) }
    public func broadcast() { pthread_cond_broadcast(cond) }

    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
