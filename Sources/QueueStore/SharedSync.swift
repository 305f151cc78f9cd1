#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO

/// Group commit for the engine's todo threads: instead of one `fsync` per
/// info and channel file (two per message, each a write and a cache flush of
/// its own), a thread that needs its files on disk asks for a `syncfs` of the
/// queue's file system, and every thread that asked while no flush was running
/// shares the next one. A thread is answered only by a flush that began after
/// it asked, so its writes are in it. The daemon's `QueueWriter` flushes each
/// batch of received messages through one too (its committer alone asks).
public final class SharedSync: @unchecked Sendable {
    let fd: Int32
    let path: String
    let lock = ConditionLock()
    var asked = 0       // tickets handed out
    var done = 0        // every ticket up to this one is on disk
    var failedUpTo = 0  // tickets up to this one were in a flush that failed
    var failure: Int32 = 0
    var flushing = false
    /// `syncfs` calls made so far (each answering every ticket handed out before it began).
    public private(set) var flushes = 0

    public init(queueDir: String) throws(SystemError) {
        path = queueDir
        fd = try Sys.open(queueDir, O_RDONLY | O_DIRECTORY)
    }

    deinit { close(fd) }

    /// Returns once everything this thread wrote before the call is on disk.
    public func sync() throws(SystemError) {
        lock.lock()
        asked += 1
        let ticket = asked
        while done < ticket {
            if flushing { lock.wait(); continue }
            flushing = true
            let covers = asked
            lock.unlock()
            var e: Int32 = 0
            while qs_syncfs(fd) != 0 {
                e = qs_errno()
                if e != EINTR { break }
                e = 0
            }
            lock.lock()
            flushing = false
            flushes += 1
            done = covers
            if e != 0 { failedUpTo = covers; failure = e }
            lock.broadcast()
        }
        let failed = ticket <= failedUpTo
        let e = failure
        lock.unlock()
        if failed { throw SystemError("syncfs", path: path, errno: e) }
    }
}
