#if canImport(Glibc)
import Glibc
#endif
import QueueFormat
import SystemIO

/// Creates a qmail queue or repairs one (`queue-fix`): the folders, split
/// sub-folders, `lock/sendmutex`, `lock/tcpto`, the `lock/trigger` FIFO, with
/// qmail's modes and, when running as root and the users exist, its owners.
/// A second run on a sound queue changes nothing.
public struct QueueFix {
    public var queueDir: String
    public var names: QueueNames
    public var dryRun: Bool

    public init(queueDir: String, names: QueueNames, dryRun: Bool = false) {
        self.queueDir = queueDir
        self.names = names
        self.dryRun = dryRun
    }

    public struct Refusal: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// The owners qmail gives queue entries.
    enum Owner { case qmailq, qmails, qmailr }

    struct Entry {
        enum Kind { case directory, file(size: Int), fifo }
        let path: String
        let kind: Kind
        let mode: mode_t
        let owner: Owner
    }

    /// tcpto size: indimail-mta's 64 records of 32 bytes.
    public static let tcptoSize = 2048

    func entries() -> [Entry] {
        var e: [Entry] = [Entry(path: "", kind: .directory, mode: 0o750, owner: .qmailq)]
        let folders: [(QueueNames.Folder, mode_t, Owner)] = [
            (.mess, 0o750, .qmailq), (.intd, 0o700, .qmailq), (.todo, 0o750, .qmailq),
            (.info, 0o700, .qmails), (.local, 0o700, .qmails), (.remote, 0o700, .qmails),
            (.bounce, 0o700, .qmails), (.pid, 0o700, .qmailq), (.lock, 0o750, .qmailq),
        ]
        for (folder, mode, owner) in folders {
            e.append(Entry(path: folder.rawValue, kind: .directory, mode: mode, owner: owner))
            if names.isSplit(folder) {
                for i in 0..<names.split {
                    e.append(Entry(path: "\(folder.rawValue)/\(i)", kind: .directory, mode: mode, owner: owner))
                }
            }
        }
        e.append(Entry(path: "lock/sendmutex", kind: .file(size: 0), mode: 0o600, owner: .qmails))
        e.append(Entry(path: "lock/tcpto", kind: .file(size: QueueFix.tcptoSize), mode: 0o644, owner: .qmailr))
        e.append(Entry(path: "lock/trigger", kind: .fifo, mode: 0o622, owner: .qmails))
        return e
    }

    func lookupOwners() -> [Owner: (uid_t, gid_t)] {
        guard geteuid() == 0 else { return [:] }
        var out: [Owner: (uid_t, gid_t)] = [:]
        let gid = UserDatabase.groupID(named: "qmail")
        for (o, name) in [(Owner.qmailq, "qmailq"), (.qmails, "qmails"), (.qmailr, "qmailr")] {
            if let pw = UserDatabase.user(named: name) { out[o] = (pw.uid, gid ?? pw.gid) }
        }
        if out[.qmailr] == nil, let q = out[.qmailq] { out[.qmailr] = q }
        return out
    }

    /// Checks that `queueDir` is a queue, an empty folder, or absent.
    func checkIsQueue() throws {
        let st: stat?
        do { st = try Sys.stat(queueDir) } catch { throw Refusal(message: "queue-fix: fatal: \(error)") }
        guard let st else { return }
        if (st.st_mode & S_IFMT) != S_IFDIR {
            throw Refusal(message: "queue-fix: fatal: \(queueDir) is not a directory; refusing to touch it")
        }
        let contents: [String]
        do { contents = try Sys.listDirectory(queueDir) } catch { throw Refusal(message: "queue-fix: fatal: \(error)") }
        if contents.isEmpty { return }
        let known = Set(QueueNames.Folder.allCases.map(\.rawValue))
        if !contents.contains(where: { known.contains($0) }) || !(contents.contains("mess") || contents.contains("lock")) {
            throw Refusal(message: "queue-fix: fatal: \(queueDir) does not look like a qmail queue (no mess/ or lock/, but other files); refusing to touch it")
        }
    }

    /// Makes the queue sound; returns one line per change made (empty when it already was).
    public func run() throws -> [String] {
        try checkIsQueue()
        let fresh = !Sys.exists(queueDir) || ((try? Sys.listDirectory(queueDir))?.isEmpty ?? false)
        var changes: [String] = []
        let owners = lookupOwners()
        for entry in entries() {
            let full = entry.path.isEmpty ? queueDir : queueDir + "/" + entry.path
            let st: stat?
            // The queue folder itself may be a symbolic link (a queue on another disk).
            do { st = entry.path.isEmpty ? try Sys.stat(full) : try Sys.lstat(full) } catch { throw Refusal(message: "queue-fix: fatal: \(error)") }
            do {
                if let st {
                    let type = st.st_mode & S_IFMT
                    let want: mode_t
                    switch entry.kind {
                    case .directory: want = S_IFDIR
                    case .file: want = S_IFREG
                    case .fifo: want = S_IFIFO
                    }
                    if type != want {
                        if case .directory = entry.kind {
                            throw Refusal(message: "queue-fix: fatal: \(full) exists but is not a directory; remove it by hand")
                        }
                        changes.append("replaced \(full): wrong file type")
                        if !dryRun { try Sys.unlink(full); try create(entry, at: full) }
                    } else {
                        if case let .file(size) = entry.kind, size > 0, Int(st.st_size) != size {
                            changes.append("resized \(full) to \(size) bytes")
                            if !dryRun { if truncate(full, off_t(size)) == -1 { throw SystemError("truncate", path: full) } }
                        }
                        if st.st_mode & 0o7777 != entry.mode {
                            changes.append("changed mode of \(full) from \(octal(st.st_mode & 0o7777)) to \(octal(entry.mode))")
                            if !dryRun { try Sys.chmod(full, entry.mode) }
                        }
                    }
                } else {
                    changes.append("created \(full)")
                    if !dryRun { try create(entry, at: full) }
                }
                // The queue folder is checked through its symbolic link (chown follows it too).
                if let (uid, gid) = owners[entry.owner], !dryRun,
                   let now = entry.path.isEmpty ? try Sys.stat(full) : try Sys.lstat(full),
                   now.st_uid != uid || now.st_gid != gid {
                    changes.append("changed owner of \(full) to \(uid):\(gid)")
                    try Sys.chown(full, uid: uid, gid: gid)
                }
            } catch let r as Refusal {
                throw r
            } catch {
                throw Refusal(message: "queue-fix: fatal: \(error)")
            }
        }
        if fresh && !changes.isEmpty {
            return ["created queue \(queueDir) (split \(names.split), todo/intd \(names.bigTodo ? "split" : "flat"))"]
        }
        return changes
    }

    func create(_ entry: Entry, at path: String) throws {
        switch entry.kind {
        case .directory:
            try Sys.mkdir(path, mode: entry.mode)
        case let .file(size):
            let fd = try Sys.open(path, O_WRONLY | O_CREAT | O_EXCL, mode: entry.mode)
            defer { Sys.close(fd) }
            if size > 0 { try Sys.write(fd, [UInt8](repeating: 0, count: size), path: path) }
        case .fifo:
            if mkfifo(path, entry.mode) == -1 { throw SystemError("mkfifo", path: path) }
        }
        // umask may have narrowed the mode.
        try Sys.chmod(path, entry.mode)
    }

    func octal(_ m: mode_t) -> String { "0" + String(m, radix: 8) }

    /// The split an existing queue was made with: the numbered folders in mess/.
    public static func existingSplit(_ queueDir: String) -> Int? {
        guard let names = try? Sys.listDirectory(queueDir + "/mess") else { return nil }
        let numbers = names.compactMap { Int($0) }
        guard !numbers.isEmpty, numbers.count == names.count else { return nil }
        let n = numbers.count
        return Set(numbers) == Set(0..<n) ? n : nil
    }
}
