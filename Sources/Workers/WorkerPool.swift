#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO

/// A fixed set of threads running blocking jobs (deliveries, todo
/// processing). Results come back through `drain()`; `wakeFD` becomes
/// readable when there is something to drain, so the engine can poll it.
public final class WorkerPool<Result>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var jobs: [() -> Result] = []
    private var jobHead = 0
    private var results: [Result] = []
    private var stopping = false
    private var threads: [pthread_t] = []
    public let wakeFD: Int32
    private let wakeWrite: Int32
    public private(set) var busy = 0

    public init(threads count: Int, wakeFD: Int32, wakeWrite: Int32) {
        self.wakeFD = wakeFD
        self.wakeWrite = wakeWrite
        for _ in 0..<max(1, count) { startThread() }
    }

    private func startThread() {
        var tid = pthread_t()
        // A C thread entry cannot name the generic pool: it runs a non-generic box.
        let box = Unmanaged.passRetained(ThreadBody { [self] in self.work() })
        pthread_create(&tid, nil, { arg in
            Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        threads.append(tid)
    }

    /// Grows the pool (concurrency raised by HUP); threads never shrink.
    public func ensure(threads count: Int) {
        lock.lock()
        let missing = count - threads.count
        lock.unlock()
        if missing > 0 { for _ in 0..<missing { startThread() } }
    }

    public func submit(_ job: @escaping () -> Result) {
        lock.lock()
        jobs.append(job)
        busy += 1
        lock.signal()
        lock.unlock()
    }

    private func work() {
        while true {
            lock.lock()
            while jobHead >= jobs.count && !stopping { lock.wait() }
            if jobHead >= jobs.count && stopping { lock.unlock(); return }
            let job = jobs[jobHead]
            jobHead += 1
            if jobHead > 1024 && jobHead * 2 > jobs.count { jobs.removeFirst(jobHead); jobHead = 0 }
            lock.unlock()
            let r = job()
            lock.lock()
            // Only the first result since the last drain wakes the loop: the loop
            // reads the wake pipe before it takes the results, so later ones are
            // collected by the same drain (or a stale byte wakes it once more).
            let wake = results.isEmpty
            results.append(r)
            busy -= 1
            lock.unlock()
            if wake {
                var one: UInt8 = 1
                _ = write(wakeWrite, &one, 1)
            }
        }
    }

    /// Results finished so far.
    public func drain() -> [Result] {
        var sink = [UInt8](repeating: 0, count: 256)
        while read(wakeFD, &sink, sink.count) > 0 {}
        lock.lock()
        let r = results
        results.removeAll(keepingCapacity: true)
        lock.unlock()
        return r
    }

    /// Jobs submitted and not yet collected by `drain`: a result that finished after
    /// the last drain still counts, so an exit check never drops it.
    public var pending: Int {
        lock.lock()
        defer { lock.unlock() }
        return busy + results.count
    }
}

/// What a pool thread runs.
final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
