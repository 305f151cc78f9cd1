#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO

/// Running the program a helper wraps (condredirect, bouncesaying, except,
/// filterto, preline): `execvp` semantics (a name without `/` is looked for
/// in `$PATH`), descriptors 0–2 inherited unless given.
public enum Child {
    /// The path `execvp` would run, or the errno it would fail with.
    public static func resolve(_ program: String) -> (path: String?, errno: Int32) {
        if program.isEmpty { return (nil, ENOENT) }
        if program.contains("/") { return (program, 0) }
        let search = Sys.environment("PATH") ?? "/bin:/usr/bin"
        var failure = ENOENT
        for dir in search.split(separator: ":", omittingEmptySubsequences: false) {
            let candidate = (dir.isEmpty ? "." : String(dir)) + "/" + program
            var st = stat()
            if stat(candidate, &st) != 0 { continue }
            if (st.st_mode & S_IFMT) == S_IFREG && access(candidate, X_OK) == 0 { return (candidate, 0) }
            failure = EACCES
        }
        return (nil, failure)
    }

    /// Starts `argv` (argv[0] = the program) with the given descriptors in
    /// place of ours; the errno of a failed start (fork or exec).
    public static func start(_ argv: [String], stdin: Int32? = nil, stdout: Int32? = nil) -> (pid: pid_t?, errno: Int32) {
        let (path, e) = resolve(argv[0])
        guard let path else { return (nil, e) }
        var maps: [Spawn.FDMap] = []
        if let stdin { maps.append(.init(stdin, at: 0)) }
        if let stdout { maps.append(.init(stdout, at: 1)) }
        do throws(SystemError) {
            return (try Spawn.start(path, arguments: argv, fds: maps, keepStandard: true), 0)
        } catch {
            return (nil, error.errno)
        }
    }

    /// How a wrapped program ended, as the helpers see it: an exec failure is
    /// the child's exit code qmail's helpers give it (`_exit(111)` for a
    /// temporary errno, `notFound` for ENOENT, 100 otherwise).
    public enum End: Equatable {
        case exited(Int32)
        case crashed
        case waitFailed
    }

    public static func execFailureCode(_ e: Int32, notFound: Int32 = 100) -> Int32 {
        if isTemporaryError(e) { return 111 }
        if e == ENOENT { return notFound }
        return 100
    }

    public static func wait(_ pid: pid_t) -> End {
        switch try? Spawn.wait(pid) {
        case .exited(let c)?: return .exited(c)
        case .signaled?: return .crashed
        case nil: return .waitFailed
        }
    }

    /// Runs the program to its end with our descriptors.
    public static func run(_ argv: [String], notFound: Int32 = 100) -> End {
        let (pid, e) = start(argv)
        guard let pid else { return .exited(execFailureCode(e, notFound: notFound)) }
        return wait(pid)
    }
}
