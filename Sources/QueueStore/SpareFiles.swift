#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Synchronization

/// The engine's emptied `info/`, `local/` and `remote/` files, kept to be
/// written again for the next messages instead of unlinked and created anew.
///
/// Every message makes an info file and a channel file and, once delivered,
/// removes them. On ext4 without a journal (this project's benchmark machine)
/// each new inode is found by walking past every inode of its block group freed
/// in the last one to six minutes; under a steady load that walk was 14.5 % of
/// the busy CPU of an SMTP run (docs/benchmarks.md). A retired file is renamed
/// to `info/spare.<n>` (for anyone who looks under its old name it is gone,
/// exactly as after an unlink) and a new file takes the oldest spare by renaming
/// it over its new name, then is written from offset 0 and cut to its length.
///
/// The pool is first in, first out, so a file is written again only after
/// `reserve` others at least (32, or half the limit if that is less): a reader
/// (qmail-qread) that opened a file just before its message finished would have
/// to stall that long between its open and its read to see other contents.
/// Between the reserve and the limit (128) the pool absorbs the engine's bursts:
/// a group of 16 messages preprocessed at once takes up to 32 files, and the
/// deliveries' removals come back in batches; with a limit of 64 (and a reserve
/// of 32) 42 % of a 16-session SMTP run's files were still created and unlinked. Spares are the
/// engine's own (owner qmails, mode 0600), live only in `info/`'s top folder,
/// whose names no tool reads as a split folder (they are not numbers), and a
/// new engine removes those an earlier one left. An engine without work for a
/// second or two, or exiting, unlinks them (`drain`): an idle queue holds no files.
public final class SpareFiles: @unchecked Sendable {
    public let folder: String
    public let limit: Int
    /// Spares always kept back (see above).
    public let reserve: Int
    private let lock = ConditionLock()
    private var ring: [String] = []
    private var head = 0
    private var serial = 0

    /// Removes the spares an earlier run left in `<queueDir>/info`.
    public init(queueDir: String, limit: Int = 128) {
        folder = queueDir + "/info"
        self.limit = max(limit, 2)
        reserve = min(self.limit / 2, 32)
        for n in (try? Sys.listDirectory(folder)) ?? [] where n.hasPrefix("spare.") {
            _ = try? Sys.unlinkIfPresent(folder + "/" + n)
        }
    }

    public var count: Int { lock.withLock { ring.count - head } }

    /// `path` leaves its name: into the pool, or unlinked when the pool is full.
    /// False when there was no such file.
    @discardableResult
    public func retire(_ path: String) throws(SystemError) -> Bool {
        let name: String? = lock.withLock {
            guard ring.count - head < limit else { return nil }
            serial += 1
            return folder + "/spare.\(serial)"
        }
        guard let name else { return try Sys.unlinkIfPresent(path) }
        if rename(path, name) == -1 {
            if qs_errno() == ENOENT { return false }
            throw SystemError("rename", path: "\(path) to \(name)")
        }
        lock.withLock { ring.append(name) }
        return true
    }

    /// Unlinks every spare: the engine does this when it has been without work
    /// for a while and when it exits, so an idle queue holds no files at all.
    public func drain() {
        let names: ArraySlice<String> = lock.withLock {
            let n = ring[head...]
            ring = []
            head = 0
            return n
        }
        for n in names { _ = unlink(n) }
    }

    /// The oldest spare renamed to `path` (replacing whatever is there), opened
    /// for writing; nil when the pool holds no more than its reserve (a file is
    /// then created as before) or the rename fails.
    func reuse(as path: String) -> Int32? {
        let name: String? = lock.withLock {
            guard ring.count - head > reserve else { return nil }
            let n = ring[head]
            head += 1
            if head > 1024 && head * 2 > ring.count { ring.removeFirst(head); head = 0 }
            return n
        }
        guard let name else { return nil }
        guard rename(name, path) == 0 else { _ = unlink(name); return nil }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd == -1 { _ = unlink(path); return nil }
        return fd
    }
}

/// Emptied `mess/` and `intd/` files handed from the process that removes them
/// (qmail-clean, or the engine when it runs in one process) to the daemon's
/// in-process queue writer, which writes the next messages into them: the same
/// saving as `SpareFiles`, across two processes. They pass through 64 fixed
/// names, `pid/spare.0` … `pid/spare.63`, used as a ring: the remover renames a
/// file into the next free name (never over one that is taken), the writer
/// renames the next taken one to its own name. Each looks at most four names
/// ahead; the writer moves on only past a name it took, the remover also past
/// four taken ones (it then unlinks), so two sides that lost step (one
/// restarted, or the ring emptied) find each other again within a turn.
///
/// A claimed file is used only when it has no other name left (`st_nlink` 1:
/// an intd file is renamed into the ring before its todo link goes, and a
/// crash in between must leave that todo entry as it was). Its atime and mtime
/// are set to now (the ossified cleanup reads the atime of a mess file without
/// todo, the engine's removal the mtime), and the writer cuts it to the length
/// it wrote before the message reaches `todo/`. The files keep the mode the
/// writers gave them (0644) and the owner (qmailq). Spares left in the ring
/// are removed with the other stale `pid/` files, and by `drop()`.
public final class SpareSlots: @unchecked Sendable {
    public static let count = 64
    /// The queue folder ("" or "." for the working folder).
    public let root: String
    private let retirePosition = Atomic<Int>(0)
    private let claimPosition = Atomic<Int>(0)

    /// `pid/spare.` under the root, made once.
    private let prefix: String

    public init(root: String) {
        self.root = root
        prefix = (root.isEmpty || root == "." ? "" : root + "/") + "pid/spare."
    }

    func slot(_ k: Int) -> String { prefix + "\(k % SpareSlots.count)" }

    /// `path` leaves its name: into the ring, or unlinked when the next names are
    /// taken (the position then moves on past them, so a writer waiting at free
    /// names further on is reached). False when there was no such file.
    @discardableResult
    public func retire(_ path: String) throws(SystemError) -> Bool {
        let start = retirePosition.load(ordering: .relaxed)
        for i in 0..<4 {
            if qs_rename_noreplace(path, slot(start + i)) == 0 {
                advance(retirePosition, from: start, to: start + i + 1)
                return true
            }
            let e = qs_errno()
            if e == ENOENT { return false }
            if e != EEXIST { return try Sys.unlinkIfPresent(path) }
        }
        advance(retirePosition, from: start, to: start + 4)
        return try Sys.unlinkIfPresent(path)
    }

    /// Moves a position on only if no other thread moved it since `from` was read:
    /// a thread that read an old position must not move it back.
    private func advance(_ position: borrowing Atomic<Int>, from: Int, to: Int) {
        _ = position.compareExchange(expected: from, desired: to % SpareSlots.count, ordering: .relaxed)
    }

    /// The next spare in the ring renamed to `path` and opened for writing, or nil
    /// (none there, or one that still has another name: it is dropped).
    public func claim(as path: String) -> Int32? {
        take(as: path) { rename($0, path) == 0 ? .taken : .empty }
    }

    /// The next spare renamed to `path` only if nothing is there (an intd file:
    /// `O_EXCL`'s rule), opened for writing; nil when there is none, or `path`
    /// exists (the caller's create then fails as it would have).
    public func claimExclusive(as path: String) -> Int32? {
        take(as: path) { qs_rename_noreplace($0, path) == 0 ? .taken : (qs_errno() == EEXIST ? .stop : .empty) }
    }

    private enum Move { case taken, empty, stop }

    /// Tries the next four names with `move` (renaming one to `path`); the first
    /// taken one is opened if it may be written, else dropped.
    private func take(as path: String, _ move: (String) -> Move) -> Int32? {
        let start = claimPosition.load(ordering: .relaxed)
        for i in 0..<4 {
            switch move(slot(start + i)) {
            case .empty: continue
            case .stop: return nil
            case .taken:
                advance(claimPosition, from: start, to: start + i + 1)
                if let fd = openSole(path) { return fd }
                _ = unlink(path)
                return nil
            }
        }
        return nil
    }

    /// Opens a claimed file for writing if it is a regular file with no other name,
    /// and marks it new (atime and mtime now).
    private func openSole(_ path: String) -> Int32? {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        if fd == -1 { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1, futimens(fd, nil) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Unlinks every spare in the ring (an idle or exiting engine).
    public func drop() {
        for k in 0..<SpareSlots.count { _ = unlink(slot(k)) }
    }
}
