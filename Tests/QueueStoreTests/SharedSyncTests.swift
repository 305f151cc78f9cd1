import XCTest
import Dispatch
import QueueStore
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The engine's shared flush (SharedSync): threads that ask while a flush runs
/// share the next one, nobody is answered by a flush that began before it asked,
/// and every thread is answered.
final class SharedSyncTests: QueueTestCase {
    func testEveryThreadIsAnsweredAndFlushesAreShared() throws {
        let shared = try SharedSync(queueDir: queue)
        let threads = 8, rounds = 40
        /// One slot per thread, each written by its own thread only.
        final class Tally: @unchecked Sendable {
            let slots: UnsafeMutablePointer<Int>
            init(_ n: Int) { slots = .allocate(capacity: n); slots.initialize(repeating: 0, count: n) }
            deinit { slots.deallocate() }
        }
        let doneTally = Tally(threads), failTally = Tally(threads)
        let dir = queue
        DispatchQueue.concurrentPerform(iterations: threads) { (t: Int) -> Void in
            let done = doneTally.slots, failures = failTally.slots
            for r in 0..<rounds {
                let p = dir + "/info/\(t % 23)/shared.\(t).\(r)"
                let fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                if fd < 0 { failures[t] += 1; continue }
                _ = "F\u{0}".withCString { write(fd, $0, 2) }
                close(fd)
                do { try shared.sync() } catch { failures[t] += 1 }
                done[t] += 1
            }
        }
        for t in 0..<threads { XCTAssertEqual(doneTally.slots[t], rounds); XCTAssertEqual(failTally.slots[t], 0) }
        XCTAssertGreaterThan(shared.flushes, 0)
        XCTAssertLessThanOrEqual(shared.flushes, threads * rounds)
    }

    /// One thread alone: every call flushes (no ticket is answered by a flush
    /// that began before it was handed out).
    func testAloneEachCallFlushesOnce() throws {
        let shared = try SharedSync(queueDir: queue)
        for _ in 0..<5 { try shared.sync() }
        XCTAssertEqual(shared.flushes, 5)
    }

    func testAQueueThatIsNotThereIsAnError() {
        XCTAssertThrowsError(try SharedSync(queueDir: queue + "/absent"))
    }
}
