// This file is compiled twice: into QueueStore, and (through a symbolic link)
// into the Embedded Swift build of qmail-queue. It must stay Embedded-clean:
// no untyped throws, no existentials, no Foundation.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
import QueueFormat
import SystemIO
import ControlFiles
#endif

/// How durable queue writes are. qmail always fsyncs; indimail-mta only when
/// `USE_FSYNC` is set. Our default is safe: fsync the message and envelope, and
/// the `todo/` directory after the link, so exit 0 means the message survives
/// a power cut. See queue-layout/README.md, "Durability".
public struct SyncPolicy: Equatable, Sendable {
    public enum FileSync: Sendable { case none, fsync, fdatasync }
    public var files: FileSync
    public var directories: Bool

    public init(files: FileSync, directories: Bool) {
        self.files = files
        self.directories = directories
    }

    public static let safe = SyncPolicy(files: .fsync, directories: true)

    static func flag(_ name: String) -> Bool? {
        guard let v = Sys.environment(name) else { return nil }
        return !(v.isEmpty || v == "0")
    }

    /// `USE_FSYNC` (unset = on; empty or `0` = off), `USE_FDATASYNC` (set = use
    /// fdatasync for files), `USE_SYNCDIR` (unset = on; empty or `0` = off).
    public static func fromEnvironment() -> SyncPolicy {
        var p = SyncPolicy.safe
        if flag("USE_FSYNC") == false { p.files = .none }
        if flag("USE_FDATASYNC") == true { p.files = .fdatasync }
        if flag("USE_SYNCDIR") == false { p.directories = false }
        return p
    }

    /// The system call `syncFile` makes (for error texts).
    public var fileSyncCall: String { files == .fdatasync ? "fdatasync" : "fsync" }

    /// Syncs a written file as the policy says (EINTR retried): 0, or the errno.
    public func syncFile(_ fd: Int32) -> Int32 {
        while true {
            let r: Int32
            switch files {
            case .none: return 0
            case .fsync: r = fsync(fd)
            case .fdatasync: r = fdatasync(fd)
            }
            if r == 0 { return 0 }
            let e = qs_errno()
            if e != EINTR { return e }
        }
    }
}

public enum QueueEnvironment {
    /// `CONFSPLIT` (default 23) and `BIGTODO` (default 0: flat `todo/` and `intd/`,
    /// the classic layout). Every program on a queue must agree on both.
    public static func names() -> QueueNames {
        var split = QueueNames.defaultSplit
        if let s = Sys.environment("CONFSPLIT"), let v = Int(s), v > 0 { split = v }
        var big = false
        if let b = Sys.environment("BIGTODO"), let v = Int(b) { big = v != 0 }
        return QueueNames(split: split, bigTodo: big)
    }

    /// The queue qmail-queue writes into: `$QUEUEDIR`; else, with `QUEUE_BASE`
    /// set, `<base>/queue<N>` with N = QUEUE_START + random % QUEUE_COUNT
    /// (indimail-mta's multi-queue selection); else `$QMAILHOME/queue`.
    public static func injectionQueue() -> String {
        if let q = Sys.environment("QUEUEDIR"), !q.isEmpty { return q }
        if let base = Sys.environment("QUEUE_BASE"), !base.isEmpty {
            let start = Sys.environment("QUEUE_START").flatMap { Int($0) } ?? 1
            let count = max(1, Sys.environment("QUEUE_COUNT").flatMap { Int($0) } ?? 10)
            let n = start + Int(qs_random_below(UInt32(clamping: count)))
            return base + "/queue\(n)"
        }
        return Paths.qmailHome + "/queue"
    }
}
