#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueFormat
import ControlFiles

/// One queue to read: its folder and its layout.
public struct QueueLocation: Sendable, Equatable {
    public var path: String
    public var names: QueueNames
    public init(path: String, names: QueueNames) { self.path = path; self.names = names }

    /// The queue's name as Postfix's JSON names it: the folder's last component.
    public var name: String { String(path.split(separator: "/").last ?? "queue") }

    /// The layout of the queue at `path`: `CONFSPLIT` and `BIGTODO` when set (every
    /// program on a queue must agree on them); otherwise read from the folders
    /// themselves (the numbered sub-folders of `info/`, a `todo/0` folder), so a
    /// tool run from a shell without the engine's environment still finds every file.
    public static func detect(_ path: String) -> QueueLocation {
        var split: Int? = nil
        if let s = Sys.environment("CONFSPLIT"), let v = Int(s), v > 0 { split = v }
        var big: Bool? = nil
        if let b = Sys.environment("BIGTODO"), let v = Int(b) { big = v != 0 }
        if split == nil, let names = try? Sys.listDirectory(path + "/info") {
            let n = names.filter { QueueNames.parseID($0.utf8) != nil }.count
            if n > 0 { split = n }
        }
        if big == nil, let st = try? Sys.stat(path + "/todo/0") { big = (st.st_mode & S_IFMT) == S_IFDIR }
        return QueueLocation(path: path, names: QueueNames(split: split ?? QueueNames.defaultSplit, bigTodo: big ?? false))
    }

    /// The queues an operator tool reads when none is named (`-q`): with `QUEUE_BASE`
    /// (or control `queue_base`) indimail-mta's set — `<base>/queue<N>` from
    /// `QUEUE_START` (1) for `QUEUE_COUNT` (10) queues, stopping at the first missing
    /// one, then `<base>/nqueue`, `<base>/slowq` and `<base>/qmta` when present;
    /// otherwise `$QUEUEDIR` alone, or `$QMAILHOME/queue` with the slowq-send and
    /// qmta-send queues beside it (`$QMAILHOME/queue/slowq`, `…/qmta`) when present.
    public static func defaultQueues() -> [String] {
        var base = Sys.environment("QUEUE_BASE").flatMap { $0.isEmpty ? nil : $0 }
        if base == nil, let line = try? ControlDirectory.fromEnvironment().readLine("queue_base"), !line.isEmpty { base = line }
        func isQueue(_ p: String) -> Bool { Sys.exists(p + "/lock") || Sys.exists(p + "/mess") }
        if let base {
            var out: [String] = []
            let start = Sys.environment("QUEUE_START").flatMap { Int($0) } ?? 1
            let count = max(1, Sys.environment("QUEUE_COUNT").flatMap { Int($0) } ?? 10)
            for n in start..<(start + count) {
                let p = base + "/queue\(n)"
                if !isQueue(p) { break }
                out.append(p)
            }
            for extra in ["nqueue", "slowq", "qmta"] where isQueue(base + "/" + extra) { out.append(base + "/" + extra) }
            return out
        }
        if let q = Sys.environment("QUEUEDIR"), !q.isEmpty { return [q] }
        let main = Paths.qmailHome + "/queue"
        var out = [main]
        for extra in ["slowq", "qmta"] where isQueue(main + "/" + extra) { out.append(main + "/" + extra) }
        return out
    }
}

/// A message as the queue files show it at the moment they were read.
public struct QueuedMessage: Sendable {
    public var id: UInt64
    /// The split sub-folder (`id % split`).
    public var folder: Int
    /// Birth: the info file's mtime (for a todo entry: the todo file's mtime).
    public var birth: Int64
    /// Size of the mess file; nil when it could not be read.
    public var size: Int64?
    public var sender: [UInt8]
    public var bouncing: Bool
    public var local: [RecipientRecord]
    public var remote: [RecipientRecord]
    /// Recipients of a todo entry (not yet preprocessed).
    public var todo: [[UInt8]]
    public var isTodo: Bool
    /// The info (or todo) file could not be read or parsed: birth and sender are unknown.
    public var infoProblem = false
    /// What was wrong with the message's files, each naming the file.
    public var problems: [String]
}

/// Reads a queue without writing anything and without locks: the engine keeps running.
/// Files are read one message at a time (bounded memory); a message that finishes
/// while it is being read (its info file gone) is skipped, as it has left the queue.
///
/// Built for a million messages: every file is opened relative to a descriptor of
/// its folder (`openat`, `fstatat`: no path is built or resolved from the root), a
/// file is read with one `read` of the size `fstat` gave, and with `prepare(split:)`
/// the channel folders `local/<n>` and `remote/<n>` are listed once per split folder
/// (and `bounce/` once per queue) instead of being probed for every message. Only a
/// message that no listing shows in either channel folder is probed (one just being
/// preprocessed, or a damaged one), so nothing is missed.
public final class QueueScanner {
    public let location: QueueLocation
    let rootFD: Int32
    /// Folder descriptors by `slot(kind, n)`; -2 not opened yet, -1 could not be opened.
    var folderFDs: [Int32]
    var folderErrno: [Int32]
    /// The channel files of the prepared split folder (sorted ids); nil when its
    /// listing failed (then each message is probed).
    var preparedSplit = -1
    var localIDs: [UInt64]? = nil
    var remoteIDs: [UInt64]? = nil
    /// Messages with a bounce file (sorted); nil before the first `prepare`, or
    /// when `bounce/` could not be listed.
    var bounceIDs: [UInt64]? = nil
    var bounceListed = false
    /// The file name being opened: the id in decimal, NUL-terminated.
    var nameBuffer = [CChar](repeating: 0, count: 24)

    enum Kind: Int { case info = 0, local, remote, mess, todo, bounce }

    public init(_ location: QueueLocation) {
        self.location = location
        rootFD = open(location.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        folderFDs = [Int32](repeating: -2, count: 6 * (location.names.split + 1))
        folderErrno = [Int32](repeating: 0, count: 6 * (location.names.split + 1))
    }

    deinit {
        for fd in folderFDs where fd >= 0 { close(fd) }
        if rootFD >= 0 { close(rootFD) }
    }

    var root: String { location.path }
    var names: QueueNames { location.names }

    static func folderName(_ k: Kind) -> QueueNames.Folder {
        switch k {
        case .info: return .info
        case .local: return .local
        case .remote: return .remote
        case .mess: return .mess
        case .todo: return .todo
        case .bounce: return .bounce
        }
    }

    /// The descriptor of the folder that holds `id`'s file of kind `k`; -1 when it
    /// cannot be opened (the callers then use the file's whole path, so the error is
    /// the file's own, as before).
    func folderFD(_ k: Kind, _ id: UInt64) -> Int32 {
        let f = Self.folderName(k)
        let n = names.isSplit(f) ? Int(id % UInt64(names.split)) : names.split
        let slot = k.rawValue * (names.split + 1) + n
        let have = folderFDs[slot]
        if have != -2 { return have }
        var fd: Int32 = -1
        if rootFD >= 0 { fd = openat(rootFD, names.directory(f, id), O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        folderErrno[slot] = fd < 0 ? qs_errno() : 0
        folderFDs[slot] = fd
        return fd
    }

    /// Calls `body` with the folder descriptor and the file name of `id`'s file of kind
    /// `k` (or `AT_FDCWD` and the whole path when the folder could not be opened).
    func at<T>(_ k: Kind, _ id: UInt64, _ body: (Int32, UnsafePointer<CChar>) -> T) -> T {
        let fd = folderFD(k, id)
        if fd < 0 { return (root + "/" + names.path(Self.folderName(k), id)).withCString { body(AT_FDCWD, $0) } }
        // The id in decimal, written from the end of the buffer.
        return nameBuffer.withUnsafeMutableBufferPointer { b -> T in
            var i = b.count - 1
            b[i] = 0
            var v = id
            repeat { i -= 1; b[i] = CChar(48 + Int(v % 10)); v /= 10 } while v > 0
            return body(fd, UnsafePointer(b.baseAddress! + i))
        }
    }

    /// Reads a whole file: (bytes, fstat) or the errno. ENOENT is 0 bytes with errno ENOENT.
    /// One `read` of the size `fstat` gives (more only if the file grew or a read was short).
    func readFile(_ k: Kind, _ id: UInt64) -> (bytes: [UInt8], stat: stat?, errno: Int32) {
        let fd = at(k, id) { dir, name in openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) }
        if fd == -1 { return ([], nil, qs_errno()) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == -1 { return ([], nil, qs_errno()) }
        if (st.st_mode & S_IFMT) != S_IFREG { return ([], st, EISDIR) }
        let size = Int(st.st_size)
        var failure: Int32 = 0
        let out = [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            count = 0
            while count < size {
                let n = read(fd, buf.baseAddress! + count, size - count)
                if n < 0 {
                    if qs_errno() == EINTR { continue }
                    failure = qs_errno()
                    return
                }
                if n == 0 { break }
                count += n
            }
        }
        if failure != 0 { return ([], st, failure) }
        // No read past the size fstat gave: info, channel and todo files are complete
        // when they get their names (a file being written shows what it has, as before).
        return (out, st, 0)
    }

    /// Where channel files are read (grown when one is larger).
    var scratch = [UInt8](repeating: 0, count: 1 << 16)

    /// Reads a whole channel file without `fstat` (its time and size are not needed):
    /// reads into `scratch` until a read returns less than it asked, which for a
    /// regular file is its end. A folder gives EISDIR. ENOENT as `readFile`.
    func readChannel(_ k: Kind, _ id: UInt64) -> (bytes: [UInt8], errno: Int32) {
        let fd = at(k, id) { dir, name in openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) }
        if fd == -1 { return ([], qs_errno()) }
        defer { close(fd) }
        var got = 0
        while true {
            if got == scratch.count { scratch += [UInt8](repeating: 0, count: scratch.count) }
            let want = scratch.count - got
            let n = scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, want) }
            if n < 0 {
                if qs_errno() == EINTR { continue }
                return ([], qs_errno())
            }
            got += n
            if n < want { break }
        }
        return (Array(scratch[0..<got]), 0)
    }

    static func reason(_ e: Int32) -> String { String(cString: strerror(e)) }

    /// The message ids of one folder (`info/5`, `todo`), sorted; or the error text.
    public func ids(_ folder: String) -> Result<[UInt64], ListError> {
        let fd = rootFD >= 0 ? openat(rootFD, folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : open(root + "/" + folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { return .failure(ListError(folder: folder, errno: qs_errno())) }
        let (ids, e) = Self.list(fd)
        if let ids { return .success(ids) }
        return .failure(ListError(folder: folder, errno: e))
    }

    /// The message names of an open folder (which it closes), sorted. Sub-folders (a
    /// split todo/ read as flat) are not messages.
    static func list(_ fd: Int32) -> (ids: [UInt64]?, errno: Int32) {
        guard let dir = fdopendir(fd) else { let e = qs_errno(); close(fd); return (nil, e) }
        defer { closedir(dir) }
        var out: [UInt64] = []
        while true {
            qs_set_errno(0)
            guard let entry = readdir(dir) else {
                let e = qs_errno()
                if e != 0 { return (nil, e) }
                break
            }
            if entry.pointee.d_type == UInt8(DT_DIR) { continue }
            let id: UInt64? = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { p in
                    QueueNames.parseID(UnsafeBufferPointer(start: p, count: strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))))
                }
            }
            if let id { out.append(id) }
        }
        out.sort()
        return (out, 0)
    }

    public struct ListError: Error, CustomStringConvertible {
        public var folder: String
        public var errno: Int32
        public var description: String { "unable to read folder \(folder): \(QueueScanner.reason(errno))" }
    }

    /// The folders that hold preprocessed messages, in order: `info/0` … `info/<split-1>`.
    public var infoFolders: [String] { (0..<names.split).map { "info/\($0)" } }
    /// The folders of todo entries: `todo` (or its split sub-folders with BIGTODO).
    public var todoFolders: [String] { names.bigTodo ? (0..<names.split).map { "todo/\($0)" } : ["todo"] }

    /// Lists the channel folders of split folder `n` (and `bounce/`, once), to be called
    /// after listing `info/<n>` and before reading its messages with `message(_:)`: the
    /// channel files of those messages then cost no probe. A message preprocessed in
    /// between, or finished, is still read right (see `message`).
    public func prepare(split n: Int) {
        preparedSplit = n
        func listing(_ k: Kind) -> [UInt64]? {
            let fd = folderFD(k, UInt64(n))
            if fd < 0 { return nil }
            // A second descriptor of the folder for the listing (readdir moves its offset).
            let dup = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dup < 0 { return nil }
            return Self.list(dup).ids
        }
        localIDs = listing(.local)
        remoteIDs = listing(.remote)
        if !bounceListed {
            bounceListed = true
            bounceIDs = listing(.bounce)
        }
    }

    /// What `prepare(split:)` listed, to hand to another scanner of the same queue
    /// (another thread's): arrays are shared, never changed.
    public struct Listing: Sendable {
        var split: Int
        var local: [UInt64]?
        var remote: [UInt64]?
        var bounce: [UInt64]?
        var bounceListed: Bool
    }

    public var listing: Listing { Listing(split: preparedSplit, local: localIDs, remote: remoteIDs, bounce: bounceIDs, bounceListed: bounceListed) }

    public func use(_ l: Listing) {
        preparedSplit = l.split; localIDs = l.local; remoteIDs = l.remote; bounceIDs = l.bounce; bounceListed = l.bounceListed
    }

    static func contains(_ sorted: [UInt64], _ id: UInt64) -> Bool {
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count && sorted[lo] == id
    }

    /// A preprocessed message (from `info/`); nil when it left the queue meanwhile.
    public func message(_ id: UInt64) -> QueuedMessage? {
        var m = QueuedMessage(id: id, folder: Int(id % UInt64(names.split)), birth: 0, size: nil, sender: [], bouncing: false,
                              local: [], remote: [], todo: [], isTodo: false, problems: [])
        let info = readFile(.info, id)
        if info.errno == ENOENT { return nil }
        if info.errno != 0 {
            m.problems.append("unable to read \(names.path(.info, id)): \(QueueScanner.reason(info.errno))")
            m.infoProblem = true
        } else {
            m.birth = Int64(info.stat!.st_mtim.tv_sec)
            do { m.sender = try InfoFile.parse(info.bytes).sender } catch {
                m.problems.append("\(names.path(.info, id)): \(error)")
                m.infoProblem = true
            }
        }
        // Which channel files to read: from the listings when this split folder was
        // prepared; a message in neither listing (being preprocessed as the folders were
        // listed, or damaged) and any message of an unprepared folder is probed.
        var channels: [Bool] = [true, false]
        if preparedSplit == m.folder, let localIDs, let remoteIDs {
            let l = Self.contains(localIDs, id), r = Self.contains(remoteIDs, id)
            if l || r { channels = (l ? [true] : []) + (r ? [false] : []) }
        }
        var anyChannel = false
        for local in channels {
            let f = readChannel(local ? .local : .remote, id)
            if f.errno == ENOENT { continue }
            anyChannel = true
            let name = names.path(local ? .local : .remote, id)
            if f.errno != 0 { m.problems.append("unable to read \(name): \(QueueScanner.reason(f.errno))"); continue }
            do {
                let records = try RecipientRecord.parseChannelFile(f.bytes)
                if local { m.local = records } else { m.remote = records }
            } catch let RecipientRecord.ParseError.unknownRecordType(b, offset) {
                m.problems.append("\(name): unknown record type \(b) at byte \(offset)")
                // The records before the bad one are still shown.
                let records = (try? RecipientRecord.parseChannelFile(Array(f.bytes[0..<offset]))) ?? []
                if local { m.local = records } else { m.remote = records }
            } catch {
                m.problems.append("\(name): \(error)")
            }
        }
        var st = stat()
        if at(.mess, id, { fstatat($0, $1, &st, 0) }) == 0 {
            m.size = Int64(st.st_size)
        } else {
            let e = qs_errno()
            // No mess file, no channel file and no info file any more: the message was
            // finished while it was read.
            if e == ENOENT && !anyChannel && !exists(.info, id) { return nil }
            let messName = names.path(.mess, id)
            m.problems.append(e == ENOENT ? "missing \(messName)" : "unable to stat \(messName): \(QueueScanner.reason(e))")
        }
        if preparedSplit == m.folder, bounceListed, let bounceIDs {
            m.bouncing = Self.contains(bounceIDs, id)
        } else {
            m.bouncing = exists(.bounce, id)
        }
        return m
    }

    func exists(_ k: Kind, _ id: UInt64) -> Bool {
        var st = stat()
        return at(k, id) { fstatat($0, $1, &st, 0) } == 0
    }

    /// A todo entry (not yet preprocessed); nil when preprocessing took it meanwhile.
    public func todoEntry(_ id: UInt64) -> QueuedMessage? {
        var m = QueuedMessage(id: id, folder: Int(id % UInt64(names.split)), birth: 0, size: nil, sender: [], bouncing: false,
                              local: [], remote: [], todo: [], isTodo: true, problems: [])
        let f = readFile(.todo, id)
        if f.errno == ENOENT { return nil }
        let name = names.path(.todo, id)
        if f.errno != 0 {
            m.problems.append("unable to read \(name): \(QueueScanner.reason(f.errno))")
            m.infoProblem = true
        } else {
            m.birth = Int64(f.stat!.st_mtim.tv_sec)
            do {
                let env = try Envelope.parseQueueFile(f.bytes)
                m.sender = env.sender
                m.todo = env.recipients
            } catch {
                m.problems.append("\(name): \(Self.describe(error))")
                m.infoProblem = true
            }
        }
        var st = stat()
        if at(.mess, id, { fstatat($0, $1, &st, 0) }) == 0 { m.size = Int64(st.st_size) } else {
            let e = qs_errno()
            if e == ENOENT && !exists(.todo, id) { return nil }
            let messName = names.path(.mess, id)
            m.problems.append(e == ENOENT ? "missing \(messName)" : "unable to stat \(messName): \(QueueScanner.reason(e))")
        }
        return m
    }

    static func describe(_ e: Error) -> String {
        switch e as? Envelope.ParseError {
        case .truncated?: return "truncated envelope (a record has no end)"
        case .missingSender?: return "no sender record"
        case let .unknownRecordType(b, o)?: return "unknown record type \(b) at byte \(o)"
        case nil: return "\(e)"
        }
    }
}

/// Reads the messages of one split folder on two threads (the machine's cores: the
/// work is mostly system calls, which run in parallel) and hands them out in the
/// folder's order. The ids are cut into chunks of 512; at most `window` chunks are
/// read ahead of the consumer, so memory stays bounded whatever the queue's size.
public final class ParallelScan: @unchecked Sendable {
    let location: QueueLocation
    let listing: QueueScanner.Listing
    let chunks: [ArraySlice<UInt64>]
    let window = 8
    /// Guards `ready`, `claimed`, `consumed` and `stop`; signalled when any changes.
    let lock = ConditionLock()
    /// Read chunks not yet handed out, by index.
    var ready: [Int: [QueuedMessage?]] = [:]
    var claimed = 0
    var consumed = 0
    var stop = false

    public static let chunkSize = 512

    public init(location: QueueLocation, listing: QueueScanner.Listing, ids: [UInt64]) {
        self.location = location
        self.listing = listing
        chunks = stride(from: 0, to: ids.count, by: Self.chunkSize).map { ids[$0..<min($0 + Self.chunkSize, ids.count)] }
    }

    /// The next chunk to read, if one may be read now (under the lock).
    func claim() -> Int? {
        guard claimed < chunks.count, claimed < consumed + window else { return nil }
        claimed += 1
        return claimed - 1
    }

    static func read(_ chunk: ArraySlice<UInt64>, _ scanner: QueueScanner) -> [QueuedMessage?] {
        chunk.map { scanner.message($0) }
    }

    func worker() {
        let scanner = QueueScanner(location)
        scanner.use(listing)
        lock.lock()
        while !stop {
            guard let i = claim() else {
                if claimed >= chunks.count { break }
                lock.wait()
                continue
            }
            lock.unlock()
            let got = Self.read(chunks[i], scanner)
            lock.lock()
            ready[i] = got
            lock.broadcast()
        }
        lock.unlock()
    }

    /// Calls `body` with each message in order (nil: it left the queue meanwhile).
    /// `scanner` is the caller's, used on this thread for the chunks it reads itself.
    public func forEach(scanner: QueueScanner, _ body: (UInt64, QueuedMessage?) -> Void) {
        if chunks.isEmpty { return }
        scanner.use(listing)
        var thread = pthread_t()
        var started = false
        if chunks.count > 1 {
            // The thread owns a reference until it ends.
            let arg = Unmanaged.passRetained(self).toOpaque()
            started = pthread_create(&thread, nil, { arg in
                Unmanaged<ParallelScan>.fromOpaque(arg!).takeRetainedValue().worker()
                return nil
            }, arg) == 0
            if !started { Unmanaged<ParallelScan>.fromOpaque(arg).release() }
        }
        for i in 0..<chunks.count {
            lock.lock()
            var got: [QueuedMessage?]
            while true {
                if let r = ready.removeValue(forKey: i) { got = r; break }
                // Not read yet: read the next unclaimed chunk here, or wait for the other thread.
                if let j = claim() {
                    lock.unlock()
                    let r = Self.read(chunks[j], scanner)
                    lock.lock()
                    ready[j] = r
                } else {
                    lock.wait()
                }
            }
            consumed = i + 1
            lock.broadcast()
            lock.unlock()
            for (id, m) in zip(chunks[i], got) { body(id, m) }
        }
        if started {
            lock.lock()
            stop = true
            lock.broadcast()
            lock.unlock()
            pthread_join(thread, nil)
        }
    }
}
