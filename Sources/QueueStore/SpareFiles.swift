#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO

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
/// `limit / 2` others at least: a reader (qmail-qread) that opened a file just
/// before its message finished reads it long before that. Spares are the
/// engine's own (owner qmails, mode 0600), live only in `info/`'s top folder,
/// whose names no tool reads as a split folder (they are not numbers), and a
/// new engine removes those an earlier one left. An engine without work for a
/// second or two, or exiting, unlinks them (`drain`): an idle queue holds no files.
public final class SpareFiles: @unchecked Sendable {
    public let folder: String
    public let limit: Int
    private let lock = ConditionLock()
    private var ring: [String] = []
    private var head = 0
    private var serial = 0

    /// Removes the spares an earlier run left in `<queueDir>/info`.
    public init(queueDir: String, limit: Int = 64) {
        folder = queueDir + "/info"
        self.limit = max(limit, 2)
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
    /// for writing; nil when the pool has fewer than half its limit (a file is
    /// then created as before) or the rename fails.
    func reuse(as path: String) -> Int32? {
        let name: String? = lock.withLock {
            guard ring.count - head > limit / 2 else { return nil }
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
