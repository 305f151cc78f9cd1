#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Synchronization

/// Inflow control between the engine and the receivers that write the queue
/// in-process (the daemons). The engine publishes in `lock/flow` how many
/// messages are waiting for their first delivery to start (new in todo/, being
/// preprocessed, or preprocessed and waiting for a slot), with the time it said
/// so. A receiver about to accept a message (before DATA's 354, before taking a
/// QMTP or QMQP packet) waits while that number is at `window` or more, for
/// `delay` at most, and then goes ahead anyway. So when the engine falls
/// behind (the CPU taken by the receivers themselves, a slow disk), the
/// clients wait for the engine instead of piling up a backlog in which every
/// new message waits seconds for its delivery; and when the engine is stopped
/// or stuck, mail still comes in. A figure older than `staleSeconds` (an
/// engine that died) is ignored. The idea of Postfix's `in_flow_delay`, with
/// a count instead of tokens, so nothing can leak.
///
/// The file: 16 bytes, the count and the time (seconds since the epoch), each
/// a little-endian UInt64, rewritten in place with one `pwrite`.
public enum FlowControl {
    public static let fileName = "lock/flow"
    /// The default of the control file `flowdelay` (ms).
    public static let defaultDelayMS = 1000
    /// The default of `flowwindow` (or `concurrencylocal + concurrencyremote`
    /// when that is smaller). Measured with 16 SMTP sessions on two CPUs
    /// (docs/benchmarks.md): no window let 3,000 messages wait and took the
    /// median latency to seconds; 100 gave 55 ms, 30 (one round of qmail's
    /// default slots, the default until 2026-12-08) 28-33 ms, 10 15-17 ms at
    /// the same throughput, 4 and 2 about 11 ms with a CPU idle more often
    /// (9-12 % against 6-7 %: sessions wait while the engine could take more).
    public static let defaultWindow = 10
    public static let staleSeconds: UInt64 = 10

    /// Makes `lock/flow` (mode 0644) if it is missing; `owner` is who it is
    /// given to when running as root (the engine's user).
    public static func prepare(queueDir: String, owner: (uid: uid_t, gid: gid_t)?) throws(SystemError) {
        let p = queueDir + "/" + fileName
        let fd = try Sys.open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, mode: 0o644)
        defer { Sys.close(fd) }
        if let o = owner, fchown(fd, o.uid, o.gid) != 0 { throw SystemError("chown", path: p) }
        // Whatever the umask (the engine runs with qmail-local's 077): the daemons read it.
        if fchmod(fd, 0o644) != 0 { throw SystemError("chmod", path: p) }
    }

    /// The engine's end.
    public final class Publisher {
        let fd: Int32
        var last: UInt64 = .max
        var lastTime: UInt64 = 0

        public init?(queueDir: String) {
            fd = open(queueDir + "/" + FlowControl.fileName, O_WRONLY | O_NOFOLLOW | O_CLOEXEC)
            if fd == -1 { return nil }
        }

        deinit {
            publish(0, force: true)
            close(fd)
        }

        /// Says how many messages wait for their first delivery: written when it
        /// changed, or once a second while it is not 0 (the time says the engine
        /// is alive).
        public func publish(_ waiting: Int, force: Bool = false) {
            let n = UInt64(max(0, waiting))
            let now = UInt64(max(0, time(nil)))
            if !force && n == last && (n == 0 || now == lastTime) { return }
            var rec: (UInt64, UInt64) = (n.littleEndian, now.littleEndian)
            _ = withUnsafeBytes(of: &rec) { pwrite(fd, $0.baseAddress, 16, 0) }
            last = n
            lastTime = now
        }
    }

    /// A receiver's end, shared by its sessions.
    public final class Gate: @unchecked Sendable {
        let path: String
        /// `lock/flow`, opened when it first exists (the engine may start after
        /// the daemon); -1 until then.
        let fd = Mutex<(fd: Int32, lastTry: time_t)>((-1, 0))
        public let window: Int
        public let delayMS: Int
        /// Messages that went ahead after waiting the whole `delay`.
        public let overdrawn = Atomic<Int>(0)

        /// Nil when the window is 0 (flow control off).
        public init?(queueDir: String, window: Int, delayMS: Int) {
            guard window > 0 else { return nil }
            path = queueDir + "/" + FlowControl.fileName
            self.window = window
            self.delayMS = max(0, delayMS)
        }

        deinit { fd.withLock { if $0.fd >= 0 { close($0.fd) } } }

        /// The file, trying to open it at most once a second while it is missing.
        func file() -> Int32 {
            fd.withLock { f in
                if f.fd >= 0 { return f.fd }
                let now = time(nil)
                if now == f.lastTry { return -1 }
                f.lastTry = now
                f.fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
                return f.fd
            }
        }

        /// What the engine said last; 0 when it said nothing, or too long ago.
        public func waiting() -> Int {
            let fd = file()
            if fd < 0 { return 0 }
            var rec: (UInt64, UInt64) = (0, 0)
            let n = withUnsafeMutableBytes(of: &rec) { pread(fd, $0.baseAddress, 16, 0) }
            if n != 16 { return 0 }
            let count = UInt64(littleEndian: rec.0), at = UInt64(littleEndian: rec.1)
            let now = UInt64(max(0, time(nil)))
            if now > at + FlowControl.staleSeconds { return 0 }
            return Int(min(count, UInt64(Int.max)))
        }

        /// Returns at once while the engine keeps up; else waits (in steps of 5
        /// ms) until it does or `delayMS` has passed. Returns the milliseconds waited.
        @discardableResult
        public func pass() -> Int {
            if waiting() < window { return 0 }
            let start = Gate.nowMS()
            while true {
                let waited = Gate.nowMS() - start
                if waited >= delayMS {
                    overdrawn.add(1, ordering: .relaxed)
                    return waited
                }
                usleep(UInt32(min(5, delayMS - waited)) * 1000)
                if waiting() < window { return Gate.nowMS() - start }
            }
        }

        static func nowMS() -> Int {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
        }
    }
}
