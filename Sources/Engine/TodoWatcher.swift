#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueFormat
import QueueStore

/// Notices new mail: an inotify watch on `todo/` (each split folder with
/// BIGTODO) reports every link qmail-queue makes, ours or classic; the
/// `lock/trigger` FIFO, which classic clients write, asks for a scan.
public final class TodoWatcher {
    public let inotifyFD: Int32
    public let triggerFD: Int32
    var watches: [Int32: String] = [:]
    let root: String
    let names: QueueNames
    /// Event buffer, kept between turns (the engine reads events every turn).
    var events = [UInt8](repeating: 0, count: 65536)

    /// `useInotify` false: classic mode, only the trigger and the periodic scan
    /// (for file systems without inotify, such as NFS).
    public init(root: String, names: QueueNames, useInotify: Bool = true) throws {
        self.root = root
        self.names = names
        inotifyFD = useInotify ? inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) : -1
        if useInotify && inotifyFD == -1 { throw SystemError("inotify_init1") }
        let dirs = names.bigTodo ? (0..<names.split).map { "todo/\($0)" } : ["todo"]
        for d in dirs where useInotify {
            let wd = inotify_add_watch(inotifyFD, root + "/" + d, UInt32(IN_CREATE | IN_MOVED_TO))
            if wd == -1 { throw SystemError("inotify_add_watch", path: root + "/" + d) }
            watches[wd] = d
        }
        // Opened read-write so that the FIFO never reports end of file when a
        // writer goes away (no busy loop, no reopen needed).
        triggerFD = Glibc.open(root + "/lock/trigger", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        if triggerFD == -1 { throw SystemError("open", path: root + "/lock/trigger") }
    }

    deinit {
        if inotifyFD >= 0 { close(inotifyFD) }
        close(triggerFD)
    }

    /// New todo ids from inotify; `overflow` when the kernel dropped events.
    public func readEvents() -> (ids: [UInt64], overflow: Bool) {
        var ids: [UInt64] = []
        var overflow = false
        if inotifyFD < 0 { return ([], false) }
        while true {
            let n = read(inotifyFD, &events, events.count)
            if n <= 0 { break }
            var off = 0
            while off + 16 <= n {
                let mask = events.withUnsafeBytes { $0.load(fromByteOffset: off + 4, as: UInt32.self) }
                let len = Int(events.withUnsafeBytes { $0.load(fromByteOffset: off + 12, as: UInt32.self) })
                if mask & UInt32(IN_Q_OVERFLOW) != 0 { overflow = true }
                if len > 0 {
                    var end = off + 16
                    while end < off + 16 + len && events[end] != 0 { end += 1 }
                    if let id = QueueNames.parseID(events[(off + 16)..<end]) { ids.append(id) }
                }
                off += 16 + len
            }
        }
        return (ids, overflow)
    }

    /// Empties the trigger FIFO; true when something was written to it.
    public func drainTrigger() -> Bool {
        var buf = [UInt8](repeating: 0, count: 1024)
        var any = false
        while read(triggerFD, &buf, buf.count) > 0 { any = true }
        return any
    }

    /// Every id in todo/ (start-up, overflow, trigger, safety interval).
    public func scan() -> [UInt64] { QueueFiles.ids(root: root, names: names, in: .todo) }
}
