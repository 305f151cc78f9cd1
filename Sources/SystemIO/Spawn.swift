// Compiled twice: into SystemIO, and (through a symbolic link) into the Embedded
// Swift builds of qmail-inject and sendmail. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
#endif

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

    /// A user identity for a child process.
    public struct Credentials: Sendable, Equatable {
        public var uid: uid_t
        public var gid: gid_t
        public init(uid: uid_t, gid: gid_t) { self.uid = uid; self.gid = gid }
    }

    /// Starts `path` with `arguments` (argv[0] included). `environment` nil = inherit.
    /// With `credentials` the child switches to that user before exec (fork path);
    /// otherwise posix_spawn is used.
    public static func start(_ path: String, arguments: [String], environment: [String]? = nil,
                             fds: [FDMap], keepStandard: Bool = true, directory: String? = nil,
                             credentials: Credentials? = nil) throws(SystemError) -> pid_t {
        var cargs: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        cargs.append(nil)
        defer { for p in cargs { free(p) } }
        var cenv: [UnsafeMutablePointer<CChar>?] = []
        if let environment { cenv = environment.map { strdup($0) } + [nil] }
        defer { for p in cenv { free(p) } }
        var maps = fds.map { qs_fdmap(source: $0.source, target: $0.target) }
        if credentials != nil && keepStandard {
            // The fork path maps exactly what it is given: keep 0..2 explicitly.
            for fd: Int32 in 0...2 where !fds.contains(where: { $0.target == fd }) {
                maps.append(qs_fdmap(source: fd, target: fd))
            }
        }
        var pid: pid_t = 0
        let rc: Int32 = maps.withUnsafeBufferPointer { mp in
            cargs.withUnsafeMutableBufferPointer { ap in
                cenv.withUnsafeMutableBufferPointer { ep in
                    let envp = environment == nil ? qs_environ() : ep.baseAddress
                    if let c = credentials {
                        return qs_spawn_as(&pid, path, ap.baseAddress, envp, mp.baseAddress, Int32(mp.count), directory, c.uid, c.gid)
                    }
                    return qs_spawn(&pid, path, ap.baseAddress, envp, mp.baseAddress, Int32(mp.count), keepStandard ? 1 : 0, directory)
                }
            }
        }
        if rc != 0 { throw SystemError("spawn", path: path, errno: rc) }
        return pid
    }

    /// Waits for `pid`, retrying on EINTR.
    public static func wait(_ pid: pid_t) throws(SystemError) -> ExitStatus {
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
    public static func pipe() throws(SystemError) -> (read: Int32, write: Int32) {
        var r: Int32 = -1, w: Int32 = -1
        if qs_pipe_cloexec(&r, &w) == -1 { throw SystemError("pipe") }
        return (r, w)
    }
}
