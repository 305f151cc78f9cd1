// Compiled twice: into SystemIO, and (through a symbolic link) into the Embedded
// Swift builds of qmail-inject and sendmail. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
#endif

/// An operating-system call that failed, with the errno it returned and what it was doing.
/// Mirrors how qmail reports `<operation> <path>: <strerror>`.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let errno: Int32
    public let operation: String
    public let path: String?

    public init(_ operation: String, path: String? = nil, errno code: Int32 = qs_errno()) {
        self.errno = code
        self.operation = operation
        self.path = path
    }

    public var reason: String { String(cString: strerror(errno)) }

    public var description: String {
        if let path { return "\(operation) \(path): \(reason)" }
        return "\(operation): \(reason)"
    }

    /// The disk or quota is full.
    public var isNoSpace: Bool { errno == ENOSPC || errno == EDQUOT }
}

#if !hasFeature(Embedded)
extension Error {
    /// This error as a `SystemError` (errno EIO with its description when it is another kind).
    public var systemError: SystemError {
        if let s = self as? SystemError { return s }
        return SystemError("\(self)", errno: EIO)
    }
}
#endif

/// qmail's `error_str`: the short texts qmail programs put into delivery
/// reports ("Unable to switch to /home/x: access denied. (#4.3.0)").
public enum QmailErrorText {
    public static func text(_ code: Int32) -> String {
        switch code {
        case 0: return "no error"
        case EINTR: return "interrupted system call"
        case ENOMEM: return "out of memory"
        case ENOENT: return "file does not exist"
        case ETXTBSY: return "text busy"
        case EIO: return "input/output error"
        case EEXIST: return "file already exists"
        case ETIMEDOUT: return "timed out"
        case EINPROGRESS: return "operation in progress"
        case EAGAIN: return "temporary failure"
        case EPIPE: return "broken pipe"
        case EPERM: return "permission denied"
        case EACCES: return "access denied"
        case ENXIO: return "device not configured"
        case EFAULT: return "bad address"
        case EBUSY: return "device busy"
        case EXDEV: return "cross-device link"
        case ENOTDIR: return "not a directory"
        case EISDIR: return "is a directory"
        case EINVAL: return "invalid argument"
        case ENFILE: return "system cannot open more files"
        case EMFILE: return "process cannot open more files"
        case EFBIG: return "file too big"
        case ENOSPC: return "out of disk space"
        case EROFS: return "read-only file system"
        case ELOOP: return "symbolic link loop"
        case ENAMETOOLONG: return "file name too long"
        case EDQUOT: return "disk quota exceeded"
        case ECONNREFUSED: return "connection refused"
        case ECONNRESET: return "connection reset"
        case ESTALE: return "stale NFS file handle"
        default: return String(cString: strerror(code))
        }
    }
}
