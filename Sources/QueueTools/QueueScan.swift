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
public struct QueueScanner {
    public let location: QueueLocation
    var buffer: [UInt8] = []

    public init(_ location: QueueLocation) { self.location = location }

    var root: String { location.path }
    var names: QueueNames { location.names }

    /// Reads a whole file; (bytes, fstat) or the errno. ENOENT is 0 bytes with errno ENOENT.
    func readFile(_ path: String) -> (bytes: [UInt8], stat: stat?, errno: Int32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd == -1 { return ([], nil, qs_errno()) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == -1 { return ([], nil, qs_errno()) }
        if (st.st_mode & S_IFMT) != S_IFREG { return ([], st, EISDIR) }
        var out = [UInt8](repeating: 0, count: Int(st.st_size))
        var got = 0
        while true {
            if got == out.count { out.append(contentsOf: [UInt8](repeating: 0, count: 4096)) }
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, $0.count - got) }
            if n < 0 {
                if qs_errno() == EINTR { continue }
                return ([], st, qs_errno())
            }
            if n == 0 { break }
            got += n
        }
        out.removeLast(out.count - got)
        return (out, st, 0)
    }

    static func reason(_ e: Int32) -> String { String(cString: strerror(e)) }

    /// The message ids of one folder (`info/5`, `todo`), sorted; or the error text.
    public func ids(_ folder: String) -> Result<[UInt64], ListError> {
        guard let dir = opendir(root + "/" + folder) else { return .failure(ListError(folder: folder, errno: qs_errno())) }
        defer { closedir(dir) }
        var out: [UInt64] = []
        while let entry = readdir(dir) {
            // Sub-folders (a split todo/ read as flat) are not messages.
            if entry.pointee.d_type == UInt8(DT_DIR) { continue }
            let id: UInt64? = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { p in
                    let n = strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
                    return QueueNames.parseID(UnsafeBufferPointer(start: p, count: n))
                }
            }
            if let id { out.append(id) }
        }
        out.sort()
        return .success(out)
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

    /// A preprocessed message (from `info/`); nil when it left the queue meanwhile.
    public func message(_ id: UInt64) -> QueuedMessage? {
        var m = QueuedMessage(id: id, folder: Int(id % UInt64(names.split)), birth: 0, size: nil, sender: [], bouncing: false,
                              local: [], remote: [], todo: [], isTodo: false, problems: [])
        let infoName = names.path(.info, id)
        let info = readFile(root + "/" + infoName)
        if info.errno == ENOENT { return nil }
        if info.errno != 0 {
            m.problems.append("unable to read \(infoName): \(QueueScanner.reason(info.errno))")
            m.infoProblem = true
        } else {
            m.birth = Int64(info.stat!.st_mtim.tv_sec)
            do { m.sender = try InfoFile.parse(info.bytes).sender } catch {
                m.problems.append("\(infoName): \(error)")
                m.infoProblem = true
            }
        }
        var anyChannel = false
        for local in [true, false] {
            let name = names.path(local ? .local : .remote, id)
            let f = readFile(root + "/" + name)
            if f.errno == ENOENT { continue }
            anyChannel = true
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
        let messName = names.path(.mess, id)
        var st = stat()
        if stat(root + "/" + messName, &st) == 0 {
            m.size = Int64(st.st_size)
        } else {
            let e = qs_errno()
            // No mess file, no channel file and no info file any more: the message was
            // finished while it was read.
            if e == ENOENT && !anyChannel && !Sys.exists(root + "/" + infoName) { return nil }
            m.problems.append(e == ENOENT ? "missing \(messName)" : "unable to stat \(messName): \(QueueScanner.reason(e))")
        }
        m.bouncing = Sys.exists(root + "/" + names.path(.bounce, id))
        return m
    }

    /// A todo entry (not yet preprocessed); nil when preprocessing took it meanwhile.
    public func todoEntry(_ id: UInt64) -> QueuedMessage? {
        var m = QueuedMessage(id: id, folder: Int(id % UInt64(names.split)), birth: 0, size: nil, sender: [], bouncing: false,
                              local: [], remote: [], todo: [], isTodo: true, problems: [])
        let name = names.path(.todo, id)
        let f = readFile(root + "/" + name)
        if f.errno == ENOENT { return nil }
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
        let messName = names.path(.mess, id)
        var st = stat()
        if stat(root + "/" + messName, &st) == 0 { m.size = Int64(st.st_size) } else {
            let e = qs_errno()
            if e == ENOENT && !Sys.exists(root + "/" + name) { return nil }
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
