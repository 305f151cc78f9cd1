#if canImport(Glibc)
import Glibc
#endif
import CShims

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

extension Error {
    /// This error as a `SystemError` (errno EIO with its description when it is another kind).
    public var systemError: SystemError {
        if let s = self as? SystemError { return s }
        return SystemError("\(self)", errno: EIO)
    }
}
