#if canImport(Glibc)
import Glibc
#endif
import CShims

/// How a child process ended.
public enum ExitStatus: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)
}

/// Process creation with exact descriptor control: each `FDMap` puts one of our
/// descriptors at a fixed number in the child; every other descriptor is closed.
public enum Spawn {
    public struct FDMap: Sendable {
        public var source: Int32
        public var target: Int32
        public init(_ source: Int32, at target: Int32) { self.source = source; self.target = target }
    }

    /// Starts `path` with `arguments` (argv[0] included). `environment` nil = inherit.
    public static func start(_ path: String, arguments: [String], environment: [String]? = nil,
                             fds: [FDMap], keepStandard: Bool = true, directory: String? = nil) throws -> pid_t {
        var cargs: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        cargs.append(nil)
        defer { for p in cargs { free(p) } }
        var cenv: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup($0) } + [nil] }
        defer { if let cenv { for p in cenv { free(p) } } }
        let maps = fds.map { qs_fdmap(source: $0.source, target: $0.target) }
        var pid: pid_t = 0
        let rc: Int32 = maps.withUnsafeBufferPointer { mp in
            cargs.withUnsafeMutableBufferPointer { ap in
                if cenv != nil {
                    return cenv!.withUnsafeMutableBufferPointer { ep in
                        qs_spawn(&pid, path, ap.baseAddress, ep.baseAddress, mp.baseAddress, Int32(mp.count), keepStandard ? 1 : 0, directory)
                    }
                }
                return qs_spawn(&pid, path, ap.baseAddress, environ, mp.baseAddress, Int32(mp.count), keepStandard ? 1 : 0, directory)
            }
        }
        if rc != 0 { throw SystemError("spawn", path: path, errno: rc) }
        return pid
    }

    /// Waits for `pid`, retrying on EINTR.
    public static func wait(_ pid: pid_t) throws -> ExitStatus {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, 0)
            if r == -1 {
                if qs_errno() == EINTR { continue }
                throw SystemError("waitpid")
            }
            break
        }
        return decode(status)
    }

    public static func decode(_ status: Int32) -> ExitStatus {
        if qs_wifsignaled(status) != 0 { return .signaled(qs_wtermsig(status)) }
        return .exited(qs_wexitstatus(status))
    }

    /// A pipe whose both ends are close-on-exec.
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var r: Int32 = -1, w: Int32 = -1
        if qs_pipe_cloexec(&r, &w) == -1 { throw SystemError("pipe") }
        return (r, w)
    }
}
