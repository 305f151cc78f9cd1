#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import SystemIO

/// The engine's operations on an on-disk queue, one function per qmail state
/// transition. Paths are absolute so worker threads can share it.
public struct QueueFiles: Sendable {
    public let root: String
    public let names: QueueNames
    public let sync: SyncPolicy
    /// When the engine runs as qmails: removals in mess/, intd/ and todo/ go
    /// through qmail-clean, running as qmailq (nil: done here).
    public var cleaner: QueueCleaner? = nil
    /// The engine's: info and channel files are written into emptied ones and
    /// retired into the pool instead of created and unlinked (nil: created and unlinked).
    public var spares: SpareFiles? = nil
    /// When set (and files are synced at all), preprocessing makes its info and
    /// channel files durable with one shared `syncfs` instead of an fsync each.
    public var sharedSync: SharedSync? = nil
    /// Removed mess and intd files go into the `pid/spare.<k>` ring for the
    /// daemon's writer (qmail-clean's, and the engine's in one process).
    public var pidSpares: SpareSlots? = nil

    public init(root: String, names: QueueNames, sync: SyncPolicy) {
        self.root = root
        self.names = names
        self.sync = sync
    }

    public func path(_ folder: QueueNames.Folder, _ id: UInt64) -> String {
        root + "/" + names.path(folder, id)
    }

    // MARK: todo processing (S4 → S5)

    /// What preprocessing one message produced, for the log and the scheduler.
    public struct Preprocessed: Sendable {
        public var id: UInt64
        public var size: Int
        public var sender: [UInt8]
        public var qp: [UInt8]
        public var uid: [UInt8]
        public var hasLocal: Bool
        public var hasRemote: Bool
        /// The info file's mtime: the message's birth.
        public var birth: Int64
        /// The info file's `e` (QQEH) and `h` (envheaders) texts, as `info(_:)` reads them.
        public var qqeh: [UInt8] = []
        public var envHeaders: [UInt8] = []
        /// The records written to local/ and remote/, with their offsets (all `T`):
        /// the scheduler's first pass needs not read the files back.
        public var localRecords: [RecipientRecord] = []
        public var remoteRecords: [RecipientRecord] = []
    }

    public enum TodoError: Error, CustomStringConvertible {
        case io(SystemError)
        case unknownRecord(String)
        case messMissing(String)
        public var description: String {
            switch self {
            case .io(let e): return "\(e)"
            case .unknownRecord(let fn): return "unknown record type in \(fn)!"
            case .messMissing(let fn): return "unable to stat \(fn)"
            }
        }
    }

    /// qmail-send's `todo_do`: writes info/, local/ and remote/ from todo/<id>
    /// (after wiping any partial output of an earlier crash), fsyncs them, then
    /// removes intd and todo. A crash at any point leaves todo in place and the
    /// whole step is redone.
    public func preprocess(_ id: UInt64, route: (String) -> (local: Bool, address: String)) throws(TodoError) -> Preprocessed {
        try preprocessMany([id], route: route)[0].1.get()
    }

    /// `preprocess` for several todo entries at once: each one's files written,
    /// then one flush for all (`sharedSync`, or an fsync per file without it),
    /// then every todo removal in one exchange with qmail-clean. An entry that
    /// fails leaves its todo/ in place and nothing beside it; the others go on.
    public func preprocessMany(_ ids: [UInt64], route: (String) -> (local: Bool, address: String)) -> [(UInt64, Result<Preprocessed, TodoError>)] {
        let shared = sync.files == .none ? nil : sharedSync
        var results: [(UInt64, Result<Preprocessed, TodoError>)] = ids.map { id in
            (id, Result { () throws(TodoError) in try write(id, synced: shared == nil, route: route) })
        }
        let written = results.indices.filter { if case .success = results[$0].1 { return true } else { return false } }
        if written.isEmpty { return results }
        func fail(_ i: Int, _ e: SystemError) {
            // Not known to be on disk: nothing is left beside todo/, which stays for a retry.
            let id = results[i].0
            for p in [path(.info, id), path(.local, id), path(.remote, id)] { _ = unlink(p) }
            results[i].1 = .failure(.io(e))
        }
        if let shared {
            do throws(SystemError) { try shared.sync() } catch {
                for i in written { fail(i, error) }
                return results
            }
        }
        // qmail-clean's `todo/<id>`: intd first, then todo.
        if let cleaner {
            do throws(SystemError) {
                let failures = try cleaner.removeTodos(written.map { results[$0].0 })
                for (i, e) in zip(written, failures) { if let e { results[i].1 = .failure(.io(e)) } }
            } catch {
                for i in written { results[i].1 = .failure(.io(error)) }
            }
        } else {
            for i in written {
                do throws(SystemError) { try removeTodoFiles(results[i].0) } catch { results[i].1 = .failure(.io(error)) }
            }
        }
        return results
    }

    /// One todo entry's info and channel files, synced or not (`synced`).
    func write(_ id: UInt64, synced: Bool, route: (String) -> (local: Bool, address: String)) throws(TodoError) -> Preprocessed {
        let todoPath = path(.todo, id)
        let todo: [UInt8]
        do {
            guard let t = try Sys.readFile(todoPath) else { throw TodoError.io(SystemError("open", path: todoPath, errno: ENOENT)) }
            todo = t
        } catch let e as TodoError { throw e } catch { throw .io(error.systemError) }
        let messPath = path(.mess, id)
        guard let mst = try? Sys.stat(messPath) else { throw .messMissing(names.path(.mess, id)) }
        let infoPath = path(.info, id), localPath = path(.local, id), remotePath = path(.remote, id)

        var info: [UInt8] = []
        var local: [UInt8] = []
        var remote: [UInt8] = []
        var result = Preprocessed(id: id, size: Int(mst.st_size), sender: [], qp: [], uid: [], hasLocal: false, hasRemote: false, birth: 0)
        var i = 0
        while i < todo.count {
            var j = i
            while j < todo.count && todo[j] != 0 { j += 1 }
            if j == todo.count { break }   // a final record without NUL is ignored, as getln does
            // An empty record (NUL NUL, zeros after a crash) has no type: qmail's "unknown record type".
            if j == i { throw .unknownRecord(names.path(.todo, id)) }
            let text = todo[(i + 1)..<j]
            switch todo[i] {
            case UInt8(ascii: "u"): result.uid = Array(text)
            case UInt8(ascii: "p"): result.qp = Array(text)
            case UInt8(ascii: "F"):
                result.sender = Array(text)
                info += todo[i...j]
            case UInt8(ascii: "e"):
                result.qqeh = Array(text)
                info += todo[i...j]
            case UInt8(ascii: "h"):
                result.envHeaders = Array(text)
                info += todo[i...j]
            case UInt8(ascii: "T"):
                // Addresses are bytes, as in qmail's rewrite(): valid UTF-8 round-trips as it
                // is; anything else goes through as Latin-1 (one character per byte) and comes
                // back byte for byte instead of as U+FFFD.
                let utf8 = String(validating: text, as: UTF8.self)
                let r = route(utf8 ?? String(String.UnicodeScalarView(text.map { Unicode.Scalar($0) })))
                let address = utf8 != nil ? Array(r.address.utf8)
                    : r.address.unicodeScalars.flatMap { $0.value < 256 ? [UInt8($0.value)] : Array(String($0).utf8) }
                if r.local {
                    result.localRecords.append(RecipientRecord(done: false, address: address, offset: local.count))
                    local.append(UInt8(ascii: "T")); local += address; local.append(0)
                } else {
                    result.remoteRecords.append(RecipientRecord(done: false, address: address, offset: remote.count))
                    remote.append(UInt8(ascii: "T")); remote += address; remote.append(0)
                }
            default:
                throw .unknownRecord(names.path(.todo, id))
            }
            i = j + 1
        }
        do {
            // Whatever an interrupted earlier pass left is replaced (a file in the way of
            // O_EXCL is unlinked first), and a channel this pass does not use is removed,
            // as qmail-send's todo_do unlinks all three before it starts.
            result.birth = try writeNew(infoPath, info, synced: synced)
            if !local.isEmpty { _ = try writeNew(localPath, local, synced: synced); result.hasLocal = true }
            else { try Sys.unlinkIfPresent(localPath) }
            if !remote.isEmpty { _ = try writeNew(remotePath, remote, synced: synced); result.hasRemote = true }
            else { try Sys.unlinkIfPresent(remotePath) }
        } catch { throw .io(error.systemError) }
        return result
    }

    /// A new file written and synced (unless `synced` is false: the caller syncs),
    /// replacing one an interrupted earlier pass left; on failure (a full disk) it
    /// is removed again, so no empty or partial file is left beside todo/.
    /// Returns the file's mtime.
    func writeNew(_ p: String, _ bytes: [UInt8], synced: Bool = true) throws -> Int64 {
        let spare = spares?.reuse(as: p)
        let reused = spare != nil
        let fd = try spare ?? createReplacingLeftover(p)
        defer { Sys.close(fd) }
        do {
            try Sys.write(fd, bytes, path: p)
            // An emptied file keeps its old length until cut to the new one.
            if reused && ftruncate(fd, off_t(bytes.count)) == -1 { throw SystemError("ftruncate", path: p) }
            if synced { try sync.sync(fd, path: p) }
            return Int64(try Sys.fstat(fd, path: p).st_mtim.tv_sec)
        } catch {
            _ = unlink(p)
            throw error
        }
    }

    /// A new file at `p`, unlinking one an interrupted earlier pass left there.
    func createReplacingLeftover(_ p: String) throws(SystemError) -> Int32 {
        do { return try Sys.createExclusive(p, mode: 0o600) } catch where error.errno == EEXIST {
            try Sys.unlinkIfPresent(p)
            return try Sys.createExclusive(p, mode: 0o600)
        }
    }

    // MARK: delivery (S5)

    public struct MessageInfo: Sendable {
        public var sender: [UInt8]
        public var qqeh: [UInt8]
        public var envHeaders: [UInt8]
        public var birth: Int64
    }

    /// The info file: sender, QQEH, envheaders, birth (mtime). Nil when missing.
    public func info(_ id: UInt64) throws -> MessageInfo? {
        let p = path(.info, id)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        if fd == -1 {
            if qs_errno() == ENOENT { return nil }
            throw SystemError("open", path: p)
        }
        defer { close(fd) }
        let st = try Sys.fstat(fd, path: p)
        let bytes = try Sys.readAll(fd, path: p)
        var m = MessageInfo(sender: [], qqeh: [], envHeaders: [], birth: Int64(st.st_mtim.tv_sec))
        // As qmail's getinfo: the first record must be a complete F record; an empty or
        // torn info file is an error (retried), never a message from <>.
        guard bytes.first == UInt8(ascii: "F"), bytes.contains(0) else {
            throw SystemError("read (no sender record)", path: p, errno: EINVAL)
        }
        var i = 0
        while i < bytes.count {
            var j = i
            while j < bytes.count && bytes[j] != 0 { j += 1 }
            let text = Array(bytes[min(i + 1, j)..<j])
            switch bytes[i] {
            case UInt8(ascii: "F"): m.sender = text
            case UInt8(ascii: "e"): m.qqeh = text
            case UInt8(ascii: "h"): m.envHeaders = text
            default: break
            }
            i = j + 1
        }
        return m
    }

    public func channelPath(_ id: UInt64, local: Bool) -> String { path(local ? .local : .remote, id) }

    /// The channel file's records, or nil when it is gone.
    public func channelRecords(_ id: UInt64, local: Bool) throws -> [RecipientRecord]? {
        guard let bytes = try Sys.readFile(channelPath(id, local: local)) else { return nil }
        return try RecipientRecord.parseChannelFile(bytes)
    }

    /// `markdone`: overwrite the record's `T` with `D`, in place.
    public func markDone(_ id: UInt64, local: Bool, offset: Int) throws {
        let p = channelPath(id, local: local)
        let fd = try Sys.open(p, O_WRONLY)
        defer { Sys.close(fd) }
        var d = UInt8(ascii: "D")
        let n = pwrite(fd, &d, 1, off_t(offset))
        if n != 1 { throw SystemError("write", path: p) }
    }

    /// Appends one permanent failure to bounce/<id> (engine.md §1.7).
    public func appendBounce(_ id: UInt64, recipient: [UInt8], report: [UInt8]) throws {
        let record = QueueFiles.bounceRecord(recipient: recipient, report: report)
        let p = path(.bounce, id)
        let fd = try Sys.open(p, O_WRONLY | O_APPEND | O_CREAT, mode: 0o600)
        defer { Sys.close(fd) }
        try Sys.write(fd, record, path: p)
        try sync.sync(fd, path: p)
    }

    /// `"<" R ">:\n" report ["\n"]`, blank lines inside folded to `/`, then one blank line.
    public static func bounceRecord(recipient: [UInt8], report: [UInt8]) -> [UInt8] {
        var t: [UInt8] = [UInt8(ascii: "<")]
        t += recipient.map { $0 == 10 ? UInt8(ascii: "_") : $0 }
        t += Array(">:\n".utf8)
        t += report
        if !report.isEmpty && report.last != 10 { t.append(10) }
        if t.count >= 2 {
            var pos = t.count - 2
            while pos > 0 {
                if t[pos] == 10 && t[pos - 1] == 10 { t[pos] = UInt8(ascii: "/") }
                pos -= 1
            }
        }
        t.append(10)
        return t
    }

    public func removeChannel(_ id: UInt64, local: Bool) throws {
        try retire(channelPath(id, local: local))
    }

    /// An info or channel file leaves its name: into the spare pool, or unlinked.
    func retire(_ p: String) throws {
        if let spares { try spares.retire(p) } else { try Sys.unlinkIfPresent(p) }
    }

    /// A mess or intd file leaves its name: into the `pid/` ring, or unlinked.
    func retireQueued(_ p: String) throws(SystemError) {
        if let pidSpares { try pidSpares.retire(p) } else { try Sys.unlinkIfPresent(p) }
    }

    /// qmail-clean's `todo/<id>`, done by whoever may write intd/ and todo/ (qmail-clean
    /// itself, or the engine in one process): intd, then the todo link.
    public func removeTodoFiles(_ id: UInt64) throws(SystemError) {
        try retireQueued(path(.intd, id))
        try Sys.unlinkIfPresent(path(.todo, id))
    }

    /// qmail-clean's `foop/<id>`, likewise: intd, then mess.
    public func removeMessFiles(_ id: UInt64) throws(SystemError) {
        try retireQueued(path(.intd, id))
        try retireQueued(path(.mess, id))
    }

    /// The last step of a message (S5 → S1): intd, then mess, then info.
    /// (qmail removes info first; we keep it to the end so that a crash in
    /// between leaves a state the next start recognises and finishes, instead
    /// of a bare mess file that waits for OSSIFIED.)
    ///
    /// A mess file newer than the info file is not this message's: its inode
    /// was freed by an earlier, interrupted removal and reused by a new
    /// injection. It is left alone.
    ///
    /// Without an info file there is nothing of this message left to remove (our
    /// removal ends with info): a mess or intd file under the id belongs to a
    /// message still being injected, and is left alone (qmail's messdone returns too).
    ///
    /// `preprocessedHere`: this process preprocessed the message (so intd/ is gone and
    /// the mess file is the message's own) and tries its removal for the first time;
    /// then only mess and info are unlinked, without the checks.
    public func removeMessage(_ id: UInt64, preprocessedHere: Bool = false) throws {
        let infoPath = path(.info, id), messPath = path(.mess, id)
        if preprocessedHere {
            if let cleaner { try cleaner.removeMessage(id) } else { try retireQueued(messPath) }
            try retire(infoPath)
            return
        }
        guard let info = try Sys.stat(infoPath) else { return }
        if let mess = try Sys.stat(messPath),
           (mess.st_mtim.tv_sec, mess.st_mtim.tv_nsec) > (info.st_mtim.tv_sec, info.st_mtim.tv_nsec) {
            try retire(infoPath)
            return
        }
        if let cleaner { try cleaner.removeMessage(id) } else { try removeMessFiles(id) }
        try retire(infoPath)
    }

    /// `removeMessage` for several messages, with one exchange with qmail-clean for
    /// all of them when there is one (the engine removes the messages finished in a
    /// loop turn together). The error of each, nil when removed.
    public func removeMessages(_ batch: [(id: UInt64, preprocessedHere: Bool)]) -> [Error?] {
        guard let cleaner else {
            return batch.map { m -> Error? in
                do { try removeMessage(m.id, preprocessedHere: m.preprocessedHere); return nil } catch { return error }
            }
        }
        var errors = [Error?](repeating: nil, count: batch.count)
        var foop: [Int] = []          // indexes whose mess (and intd) qmail-clean removes
        for (i, m) in batch.enumerated() {
            if m.preprocessedHere { foop.append(i); continue }
            do {
                let infoPath = path(.info, m.id)
                guard let info = try Sys.stat(infoPath) else { continue }
                if let mess = try Sys.stat(path(.mess, m.id)),
                   (mess.st_mtim.tv_sec, mess.st_mtim.tv_nsec) > (info.st_mtim.tv_sec, info.st_mtim.tv_nsec) {
                    try retire(infoPath)
                    continue
                }
                foop.append(i)
            } catch { errors[i] = error }
        }
        if foop.isEmpty { return errors }
        let done: [Bool]
        do { done = try cleaner.removeMessages(foop.map { batch[$0].id }) } catch {
            for i in foop { errors[i] = error }
            return errors
        }
        for (k, i) in foop.enumerated() {
            if !done[k] { errors[i] = SystemError("unlink", path: "foop/\(batch[i].id) (qmail-clean)", errno: EIO); continue }
            do { try retire(path(.info, batch[i].id)) } catch { errors[i] = error }
        }
        return errors
    }

    public func hasBounce(_ id: UInt64) -> Bool { Sys.exists(path(.bounce, id)) }

    // MARK: scanning and cleanup

    /// Ids of files in a split or flat folder.
    public func ids(in folder: QueueNames.Folder) -> [UInt64] { QueueFiles.ids(root: root, names: names, in: folder) }

    /// Ids of files in a split or flat folder of the queue at `root`.
    public static func ids(root: String, names: QueueNames, in folder: QueueNames.Folder) -> [UInt64] {
        let base = root + "/" + folder.rawValue
        if !names.isSplit(folder) { return ids(inDirectory: base) }
        return (0..<names.split).flatMap { ids(inDirectory: base + "/\($0)") }
    }

    /// The message ids named in one directory (names that are not ids are skipped).
    public static func ids(inDirectory path: String) -> [UInt64] {
        ((try? Sys.listDirectory(path)) ?? []).compactMap { QueueNames.parseID($0.utf8) }
    }

    /// Removes S2/S3 leftovers of dead qmail-queue runs: mess files older than
    /// `ossified` seconds (by atime) with neither info nor todo; and stale pid files.
    public func cleanupOssified(now: Int64, ossified: Int64 = 129600) -> [UInt64] {
        var removed: [UInt64] = []
        for i in 0..<names.split { removed += cleanupOssified(splitFolder: i, now: now, ossified: ossified) }
        cleanupStalePidFiles(now: now, ossified: ossified)
        return removed
    }

    /// The same for one split folder of mess/ (the engine walks them one per loop turn).
    public func cleanupOssified(splitFolder: Int, now: Int64, ossified: Int64 = 129600) -> [UInt64] {
        var removed: [UInt64] = []
        for id in QueueFiles.ids(inDirectory: root + "/mess/\(splitFolder)") {
            guard let st = try? Sys.stat(path(.mess, id)) else { continue }
            if now <= Int64(st.st_atim.tv_sec) + ossified { continue }
            if Sys.exists(path(.info, id)) || Sys.exists(path(.todo, id)) { continue }
            if let cleaner { if (try? cleaner.removeMessage(id)) == nil { continue } } else {
                _ = try? Sys.unlinkIfPresent(path(.intd, id))
                _ = try? Sys.unlinkIfPresent(path(.mess, id))
            }
            removed.append(id)
        }
        return removed
    }

    /// pid/ files of qmail-queue runs that died long ago.
    public func cleanupStalePidFiles(now: Int64, ossified: Int64 = 129600) {
        if cleaner != nil { return }   // qmail-clean does it, as qmailq
        for n in (try? Sys.listDirectory(root + "/pid")) ?? [] {
            let p = root + "/pid/" + n
            if let st = try? Sys.stat(p), now > Int64(st.st_atim.tv_sec) + ossified { _ = try? Sys.unlinkIfPresent(p) }
        }
    }
}

extension SyncPolicy {
    /// `syncFile` with qmail's error text (`fsync PATH: reason`).
    public func sync(_ fd: Int32, path: String) throws {
        let e = syncFile(fd)
        if e != 0 { throw SystemError(fileSyncCall, path: path, errno: e) }
    }
}
