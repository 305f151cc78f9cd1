#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import ControlFiles

/// How a queue front end passes a message on: it becomes the next queue program
/// (execv), with descriptor 0 replaced by the (changed) message held in an
/// unlinked temporary file and descriptor 1 (the envelope) left as it came, unread,
/// so the next program reads the client's envelope itself. The custom-error
/// descriptor (ERROR_FD, default 2) is inherited: text the next program writes
/// there reaches the client unchanged, and its exit code is ours.
public enum QueueHandOff {
    /// indimail-mta's exit codes the front ends use.
    public enum Exit {
        public static let outOfMemory: Int32 = 51
        public static let timeout: Int32 = 52
        public static let writeError: Int32 = 53
        public static let readError: Int32 = 54
        public static let configuration: Int32 = 55
        public static let pipe: Int32 = 60
        public static let tempFile: Int32 = 68
        public static let spamFilterProblem: Int32 = 76
        public static let internalBug: Int32 = 81
        public static let custom: Int32 = 88
        public static let exec: Int32 = 120
        public static let fork: Int32 = 121
        public static let waitSurprise: Int32 = 122
        public static let crashed: Int32 = 123
        public static let spam: Int32 = 32
    }

    /// The next program (`qmulti` in indimail-mta): the front end's own arguments
    /// when it has any, else `$<variable>` (DKIMQUEUE, SPAMQUEUE …) split at spaces,
    /// else `$QUEUEPROG`, else qmail-queue next to this program. The variable used
    /// is removed from the environment so that the next program does not loop.
    public static func nextProgram(arguments: [String], variable: String?) -> [String] {
        if arguments.count > 1 { return Array(arguments.dropFirst()) }
        for name in [variable, "QUEUEPROG"].compactMap({ $0 }) {
            if let v = Sys.environment(name), !v.isEmpty {
                unsetenv(name)
                let parts = v.split(separator: " ").map(String.init)
                if !parts.isEmpty { return parts }
            }
        }
        return [Paths.program("qmail-queue")]
    }

    /// Reads descriptor 0 to its end; exits 54 on a read error.
    public static func readMessage() -> [UInt8] {
        do throws(SystemError) { return try Sys.readAll(0) } catch { exit(Exit.readError) }
    }

    /// A descriptor open on an unlinked temporary file (in `$TMPDIR`, default /tmp)
    /// holding `parts`, positioned at 0.
    public static func memoryFile(_ parts: [[UInt8]]) -> Int32? {
        let dir = Sys.environment("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((dir + "/qmailFrontEndXXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        for p in parts where !p.isEmpty {
            do throws(SystemError) { try Sys.write(fd, p) } catch { Sys.close(fd); return nil }
        }
        if lseek(fd, 0, SEEK_SET) != 0 { Sys.close(fd); return nil }
        return fd
    }

    /// Replaces this process with `program`, its descriptor 0 reading `parts`.
    /// Never returns: exits 68 (temporary file), 120 (exec) on failure.
    public static func execQueue(_ program: [String], message parts: [[UInt8]]) -> Never {
        guard let fd = memoryFile(parts) else { exit(Exit.tempFile) }
        if fd != 0 {
            if dup2(fd, 0) != 0 { exit(Exit.pipe) }
            Sys.close(fd)
        }
        execProgram(program)
    }

    /// execv with descriptors as they are; exits 120 when it fails.
    public static func execProgram(_ program: [String]) -> Never {
        var cargs: [UnsafeMutablePointer<CChar>?] = program.map { strdup($0) }
        cargs.append(nil)
        _ = chdir("/")
        execv(program[0], cargs)
        let e = errno
        let text = "\(Sys.arguments().first.map { String($0.split(separator: "/").last ?? "") } ?? "front end"): unable to run \(program[0]): \(String(cString: strerror(e)))\n"
        _ = try? Sys.write(2, text)
        exit(Exit.exec)
    }

    /// Writes `D…`/`Z…` custom error text on ERROR_FD (default 2; -1 = none) and exits 88.
    public static func customError(_ kind: Character, program: String, text: String, code: String) -> Never {
        var fd: Int32 = 2
        if let e = Sys.environment("ERROR_FD"), let v = Int32(e.trimmingCharacters()) { fd = v }
        if fd >= 0 {
            let status = code.hasPrefix("X.") ? (kind == "D" ? "5" : "4") + code.dropFirst() : Substring(code)
            _ = try? Sys.write(fd, "\(kind)\(program): \(text) (#\(status))")
        }
        exit(Exit.custom)
    }
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" || s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
