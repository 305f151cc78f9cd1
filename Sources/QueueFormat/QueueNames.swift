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
}
