// Compiled twice: into Receipts, and (through a symbolic link) into the Embedded
// Swift build of new-inject. Keep it Embedded-clean: typed throws, no existentials.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import SystemIO
import ControlFiles
#endif

/// indimail-mta's `set_environment()`: before queueing, programs load the
/// environment directories `$HOME/.defaultqueue` (skipped for root unless
/// allowed) and, when `QUEUE_BASE` is unset, `<controldir>/defaultqueue`.
/// Each is an envdir: one file per variable, the value is the file's first line
/// (trailing blanks removed, NUL read as newline), an empty file unsets it.
public enum DefaultQueue {
    /// A variable to set (value) or unset (nil).
    public typealias Change = (name: String, value: String?)

    /// Reads an envdir; throws on unreadable entries.
    public static func read(_ dir: String) throws(SystemError) -> [Change] {
        var changes: [Change] = []
        for name in try Sys.listDirectory(dir).sorted() where !name.hasPrefix(".") {
            if name.contains("=") { continue }
            let path = dir + "/" + name
            // A regular file (S_IFREG; the octal masks, as the C macros do not reach Embedded Swift typed).
            guard let st = try Sys.stat(path), (st.st_mode & 0o170000) == 0o100000 else { continue }
            let bytes = try Sys.readFile(path) ?? []
            if bytes.isEmpty { changes.append((name: name, value: nil)); continue }
            var line = bytes.prefix { $0 != 10 }.map { $0 == 0 ? UInt8(10) : $0 }
            while let last = line.last, last == 32 || last == 9 { line.removeLast() }
            changes.append((name: name, value: String(decoding: line, as: UTF8.self)))
        }
        return changes
    }

    public static func apply(_ changes: [Change]) {
        for c in changes {
            if let v = c.value { setenv(c.name, v, 1) } else { unsetenv(c.name) }
        }
    }

    /// Applies both directories. A problem with `$HOME/.defaultqueue` is a warning
    /// (returned, nothing from it applied); one with the control directory's is fatal (thrown).
    public static func setEnvironment(rootAllowed: Bool, control: ControlDirectory) throws(SystemError) -> [String] {
        var warnings: [String] = []
        if let home = Sys.environment("HOME"), getuid() != 0 || rootAllowed {
            let dir = home + "/.defaultqueue"
            if access(dir, X_OK) == 0 {
                do throws(SystemError) { apply(try read(dir)) } catch {
                    warnings.append("unable to read \(dir): \(error.reason)")
                }
            }
        }
        if Sys.environment("QUEUE_BASE") == nil {
            let dir = control.filePath("defaultqueue")
            if access(dir, X_OK) == 0 {
                do throws(SystemError) { apply(try read(dir)) } catch {
                    throw SystemError("unable to read \(dir)", errno: error.errno)
                }
            } else {
                let e = SystemError("unable to access defaultqueue")
                if e.errno != ENOENT { throw e }
            }
        }
        return warnings
    }
}
