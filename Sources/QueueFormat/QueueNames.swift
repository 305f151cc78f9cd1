// Compiled twice: into QueueFormat, and (through a symbolic link) into the
// Embedded Swift build of qmail-queue. Keep it Embedded-clean.
/// Names of the files and folders of a qmail queue (`fmtqfn`): the message id is
/// the inode number of `mess/<id % split>/<id>`. `mess info local remote` are
/// always split, `todo intd` only with BIGTODO, `bounce pid` never.
public struct QueueNames: Sendable, Equatable {
    public var split: Int
    public var bigTodo: Bool

    /// Classic qmail's split.
    public static let defaultSplit = 23

    public init(split: Int = QueueNames.defaultSplit, bigTodo: Bool = false) {
        precondition(split > 0)
        self.split = split
        self.bigTodo = bigTodo
    }

    public enum Folder: String, CaseIterable, Sendable {
        case mess, intd, todo, info, local, remote, bounce, pid, lock
    }

    public func isSplit(_ folder: Folder) -> Bool {
        switch folder {
        case .mess, .info, .local, .remote: return true
        case .todo, .intd: return bigTodo
        case .bounce, .pid, .lock: return false
        }
    }

    /// Relative path of the file for message `id` in `folder`, e.g. `mess/4/16229931`.
    public func path(_ folder: Folder, _ id: UInt64) -> String {
        if isSplit(folder) { return "\(folder.rawValue)/\(id % UInt64(split))/\(id)" }
        return "\(folder.rawValue)/\(id)"
    }

    /// The sub-folder of `folder` that holds `id` (`todo` or `todo/4`).
    public func directory(_ folder: Folder, _ id: UInt64) -> String {
        if isSplit(folder) { return "\(folder.rawValue)/\(id % UInt64(split))" }
        return folder.rawValue
    }

    /// A queue file name as a message id: decimal digits only, no sign, no
    /// leading zero (qmail's names are `%lu` of the inode), at most 20 digits.
    public static func parseID<C: Collection>(_ name: C) -> UInt64? where C.Element == UInt8 {
        guard let first = name.first, first != UInt8(ascii: "0") || name.count == 1, name.count <= 20 else { return nil }
        var v: UInt64 = 0
        for b in name {
            guard b >= 48 && b <= 57 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b - 48))
            if o1 || o2 { return nil }
            v = a
        }
        return v
    }
}
