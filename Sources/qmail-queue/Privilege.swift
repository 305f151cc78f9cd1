// What qmail-queue trusts when it runs setuid (installed mode 4711, owner qmailq).
// Embedded Swift: no Foundation, typed throws only.
import CShims

/// qmail-queue is installed setuid `qmailq` so that any user can queue mail into
/// a queue only `qmailq` may write. Run that way by anyone but root, it is
/// *restricted*: every input that could steer where it writes, or what the
/// queue's owner decided, comes from the installation, not from the caller.
///
/// | variable | restricted mode | why it is safe |
/// |---|---|---|
/// | `QMAILHOME` | ignored | the queue is the one installed beside this program |
/// | `QUEUEDIR`, `QUEUE_BASE`/`QUEUE_START`/`QUEUE_COUNT` | honoured only if the folder, all symbolic links resolved, is the installed queue or inside it (`queue/slowq`, `queue/qmta`); otherwise exit 61 and nothing is written | the resolved path is used, and every folder on it below the prefix belongs to root or qmailq, so the caller cannot redirect it after the check |
/// | `CONFSPLIT`, `BIGTODO` | ignored: the layout is read from the queue (`mess/0`…`mess/N-1`, `todo/0`) | a wrong split would put a message where the engine never looks |
/// | `USE_FSYNC`, `USE_FDATASYNC`, `USE_SYNCDIR` | ignored: always durable | durability is the administrator's decision |
/// | `HOSTNAME` | ignored (gethostname) | the `by` part of the Received line is the host's own |
/// | `TCPREMOTEIP` | honoured only when the caller is `qmaild` | only the SMTP server may say a message came from the network |
/// | `HIDE_HOST`, `QQEH`, `DEATH` | honoured | they only shape the caller's own message or shorten its own run |
/// | `QMAIL_QUEUE_CUSTOM_ERROR`, `ERROR_FD` | honoured; `ERROR_FD` only if that descriptor was open when qmail-queue started | the text goes to a descriptor the caller gave, never to a file qmail-queue opened |
///
/// The installed queue is `PREFIX/queue`, where `PREFIX` is the folder above the
/// `bin/` folder this program runs from (the kernel's `/proc/self/exe`, not
/// `argv[0]`). Both folders must be real folders owned by root and writable by
/// no one else, or qmail-queue refuses to run restricted (exit 61): a copy or
/// hard link of the program in a folder the caller controls finds no queue.
///
/// Descriptors: 0 (message) and 1 (envelope) must be open (else exits 54 and 79
/// before anything is created); a closed 2 is opened on /dev/null so that no
/// queue file can land on it. qmail-queue runs no program, so other inherited
/// descriptors stay the caller's own and are left alone.
enum Privilege {
    /// True when run setuid or setgid by anyone but root.
    static var restricted: Bool {
        (getuid() != geteuid() || getgid() != getegid()) && getuid() != 0
    }

    static func isOpen(_ fd: Int32) -> Bool { var st = emptyStat(); return fstat(fd, &st) == 0 }

    /// Makes descriptors 0-2 safe to use; returns an exit code on failure.
    static func checkStandardDescriptors() -> QueueExitCode? {
        if !isOpen(0) { return .readError }
        if !isOpen(1) { return .envelopeFormat }
        if !isOpen(2) {
            let fd = qs_open("/dev/null", O_WRONLY, 0)
            if fd != 2 {
                if fd >= 0 { _ = close(fd) }
                return .duplicatingDescriptors
            }
        }
        return nil
    }

    /// `PREFIX` of the running program, when its `bin/` and `PREFIX` are
    /// folders owned by root that no one else may write.
    static func trustedPrefix() -> String? {
        guard let bin = Sys.executableDirectory(), bin.hasPrefix("/") else { return nil }
        guard let slash = bin.lastIndex(of: "/") else { return nil }
        let prefix = slash == bin.startIndex ? "/" : String(bin[..<slash])
        for dir in [bin, prefix] {
            var st = emptyStat()
            if lstat(dir, &st) != 0 { return nil }
            if !isDirectory(st) || st.st_uid != 0 || st.st_mode & 0o022 != 0 { return nil }
        }
        return prefix
    }

    static func isDirectory(_ st: stat) -> Bool { st.st_mode & 0o170000 == 0o040000 }

    static func resolved(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// The queue a restricted run writes into, or nil (exit 61).
    static func restrictedQueue() -> String? {
        guard let prefix = trustedPrefix() else { return nil }
        guard let installed = resolved(prefix == "/" ? "/queue" : prefix + "/queue") else { return nil }
        var wanted: String? = nil
        if let q = Sys.environment("QUEUEDIR"), !q.isEmpty { wanted = q }
        else if let b = Sys.environment("QUEUE_BASE"), !b.isEmpty { wanted = QueueEnvironment.injectionQueue() }
        guard let w = wanted else { return installed }
        guard let r = resolved(w) else { return nil }
        if r == installed || r.hasPrefix(installed + "/") { return r }
        return nil
    }

    /// The layout of a queue as its folders show it: `mess/0` … `mess/N-1`, and
    /// `todo/0` for a split todo/ (BIGTODO).
    static func layout(of queue: String) -> QueueNames {
        var split = 0
        while split < 100_000 {
            var st = emptyStat()
            if stat(queue + "/mess/\(split)", &st) != 0 || !isDirectory(st) { break }
            split += 1
        }
        var st = emptyStat()
        let big = stat(queue + "/todo/0", &st) == 0 && isDirectory(st)
        return QueueNames(split: max(split, 1), bigTodo: big)
    }
}
