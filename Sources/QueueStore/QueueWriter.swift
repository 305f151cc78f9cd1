#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import SystemIO
import Synchronization

/// Puts messages into the queue from inside a long-running process (the
/// qmail-smtpd daemon), with qmail-queue's files, bytes and crash-safe order
/// (`Injection`, the same code), and one flush shared by every message that is
/// ready at the same moment: each session writes its mess and intd files, then
/// hands them to one committer thread, which makes the whole batch durable with
/// one `syncfs` of the queue's file system, links each into `todo/`, makes the
/// links durable with an fsync of the `todo/` folder, and wakes the sessions. A session is
/// told "queued" only after that. So throughput grows with the number of
/// sessions instead of waiting on one fsync after another.
///
/// The hand-off wakes exactly who has something to do: a session wakes the
/// committer only when it is idle, and the committer wakes each session of a
/// batch on its own semaphore. (One condition variable broadcast both ways
/// woke every waiting session for every message; with 16 sessions that was
/// most of the daemon's context switches and futex calls.)
public final class QueueWriter: @unchecked Sendable {
    public let queueDir: String
    let injection: Injection
    /// The batch's flush (only the committer asks, so every call is a `syncfs` of its own).
    let flusher: SharedSync
    /// Guards `pending` and `committerIdle`; its condition is the committer's alone.
    let lock = ConditionLock()
    var pending: [Pending] = []
    var committerIdle = false
    let sequence = Atomic<Int>(0)

    /// One message handed to the committer, and the semaphore its session waits on.
    final class Pending {
        let staged: Injection.Staged
        var failure: Injection.Failure? = nil
        private let done: UnsafeMutablePointer<sem_t>
        init(_ s: Injection.Staged) {
            staged = s
            done = .allocate(capacity: 1)
            sem_init(done, 0, 0)
        }
        deinit {
            sem_destroy(done)
            done.deallocate()
        }
        /// Called once by the committer, after `failure` is set.
        func post() { sem_post(done) }
        func wait() { while sem_wait(done) != 0 && errno == EINTR {} }
    }

    /// `queueDir` must exist and be writable by this process's user.
    public init(queueDir: String, names: QueueNames, sync: SyncPolicy, host: String?, qqeh: [UInt8]?) throws(SystemError) {
        self.queueDir = queueDir
        var inj = Injection(queueDir: queueDir, root: queueDir, names: names, sync: sync,
                            received: .uid(getuid(), network: true, ip: nil), host: host, qqeh: qqeh)
        inj.spares = SpareSlots(root: queueDir)
        injection = inj
        flusher = try SharedSync(queueDir: queueDir)
        var tid = pthread_t()
        let box = Unmanaged.passRetained(self)
        pthread_create(&tid, nil, { arg in
            let w = Unmanaged<QueueWriter>.fromOpaque(arg!).takeRetainedValue()
            w.commitLoop()
            return nil
        }, box.toOpaque())
        pthread_detach(tid)
    }

    /// Whether this process can write `queueDir` as the injection needs.
    public static func canWrite(_ queueDir: String) -> Bool {
        ["pid", "mess", "intd", "todo"].allSatisfy { access(queueDir + "/" + $0, W_OK | X_OK) == 0 }
    }

    /// One message being written.
    public final class Transaction {
        let writer: QueueWriter
        var staged: Injection.Staged
        var output: BufferedWriter
        var failure: Injection.Failure? = nil
        public let qp: Int32

        init(writer: QueueWriter, staged: Injection.Staged) {
            self.writer = writer
            self.staged = staged
            output = BufferedWriter(fd: staged.messFD, path: "mess", capacity: 65536)
            qp = getpid()
        }

        public func put(_ bytes: ArraySlice<UInt8>) {
            if failure != nil { return }
            do throws(SystemError) { try output.write(bytes) } catch { failure = Injection.Failure(.writeErrorOrDiskFull, error) }
        }

        /// Poisons the message: `finish` will queue nothing.
        public func fail() { if failure == nil { failure = Injection.Failure(.readError, "the message was refused") } }

        /// Writes the envelope and waits for the batch commit; nil when queued.
        public func finish(sender: [UInt8], recipients: [[UInt8]]) -> Injection.Failure? {
            let inj = writer.injection
            if failure == nil {
                do throws(SystemError) { try output.flush() } catch { failure = Injection.Failure(.writeErrorOrDiskFull, error) }
            }
            if failure == nil {
                do throws(Injection.Failure) { try inj.finishMessage(staged) } catch { failure = error }
            }
            if let f = failure { inj.discard(staged); return f }
            var env: [UInt8] = [UInt8(ascii: "F")] + sender.prefix { $0 != 0 } + [0]
            for r in recipients { env.append(UInt8(ascii: "T")); env += r.prefix { $0 != 0 }; env.append(0) }
            env.append(0)
            var i = 0
            do throws(Injection.Failure) {
                try inj.writeIntd(&staged, pid: qp) { () throws(Injection.Failure) -> UInt8? in
                    guard i < env.count else { return nil }
                    i += 1
                    return env[i - 1]
                }
            } catch {
                inj.discard(staged)
                return error
            }
            return writer.commit(staged)
        }
    }

    /// Starts a message: its file in `mess/`, with qmail-queue's Received line.
    public func begin(invoker: ReceivedLine.Invoker) throws(Injection.Failure) -> Transaction {
        let seq = sequence.add(1, ordering: .relaxed).newValue
        let s = try injection.createMessage(pid: getpid(), start: time(nil), sequence: seq, invoker: invoker)
        return Transaction(writer: self, staged: s)
    }

    func commit(_ s: Injection.Staged) -> Injection.Failure? {
        let p = Pending(s)
        lock.lock()
        pending.append(p)
        if committerIdle { lock.signal() }
        lock.unlock()
        p.wait()
        return p.failure
    }

    func commitLoop() {
        let syncing = injection.sync.files != .none || injection.sync.directories
        while true {
            lock.lock()
            while pending.isEmpty {
                committerIdle = true
                lock.wait()
            }
            committerIdle = false
            let batch = pending
            pending = []
            lock.unlock()
            // S3 for all: the message and envelope files and the mess/ entries on disk.
            var flushError: SystemError? = nil
            if syncing { do throws(SystemError) { try flusher.sync() } catch { flushError = error } }
            var linked: [Pending] = []
            for p in batch {
                if let flushError {
                    injection.discard(p.staged)
                    p.failure = Injection.Failure(.syncMessage, flushError)
                    continue
                }
                do throws(Injection.Failure) {
                    try injection.link(p.staged)
                    linked.append(p)
                } catch {
                    p.failure = error
                }
            }
            // S4 for all: the todo/ links on disk, by an fsync of each todo folder the
            // batch linked into (one, or a few with BIGTODO) rather than a second
            // syncfs, which writes every block dirtied since the first one (the
            // engine's and the deliveries' folders too) where one folder is needed.
            if injection.sync.directories && !linked.isEmpty {
                var folders: [String] = []
                for p in linked {
                    let d = injection.names.directory(.todo, p.staged.id)
                    if !folders.contains(d) { folders.append(d) }
                }
                var failure: SystemError? = nil
                for d in folders {
                    do throws(SystemError) { try Sys.syncDirectory(injection.path(d)) } catch { failure = error; break }
                }
                if let failure {
                    for p in linked {
                        _ = unlink(injection.path(injection.names.path(.todo, p.staged.id)))
                        for rel in p.staged.created.reversed() { let f = injection.path(rel); _ = truncate(f, 0); _ = unlink(f) }
                        p.failure = Injection.Failure(.syncDirectory, failure)
                    }
                    linked = []
                }
            }
            if !linked.isEmpty && injection.pullTrigger { Injection.pullTrigger(at: queueDir) }
            for p in batch { p.post() }
        }
    }
}
