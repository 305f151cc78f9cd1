#if canImport(Glibc)
import Glibc
#endif
import SystemIO

/// The maildir side of maildirserial (djb's `maildir.c`, paths relative to the
/// maildir): `tmp/` cleaning and the list of messages in `new/` and `cur/`.
public enum MaildirScan {
    /// Files in `tmp/` whose access time is older than this are removed (36 hours).
    public static let tmpLifetime: Int64 = 129600

    /// `maildir_clean`: unlinks stale `tmp/` files; errors are ignored.
    public static func cleanTmp(maildir: String, now: Int64) {
        let tmp = maildir + "/tmp"
        guard let names = try? Sys.listDirectory(tmp) else { return }
        for name in names where !name.hasPrefix(".") {
            let path = tmp + "/" + name
            guard let st = try? Sys.stat(path) else { continue }
            if now > Int64(st.st_atim.tv_sec) + tmpLifetime { _ = try? Sys.unlinkIfPresent(path) }
        }
    }

    /// One message: its name relative to the maildir (`new/…` or `cur/…`) and mtime.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var mtime: Int64
        public init(name: String, mtime: Int64) { self.name = name; self.mtime = mtime }
    }

    /// `maildir_scan(new, cur)`: messages whose mtime is before `now`, oldest first
    /// (dot files skipped). Throws when `new/` or `cur/` cannot be read.
    public static func messages(maildir: String, now: Int64) throws -> [Entry] {
        var entries: [Entry] = []
        for sub in ["new", "cur"] {
            let names: [String]
            do { names = try Sys.listDirectory(maildir + "/" + sub) } catch {
                throw SystemError("unable to scan $MAILDIR/\(sub)", errno: error.systemError.errno)
            }
            for name in names where !name.hasPrefix(".") {
                let rel = sub + "/" + name
                guard let st = try? Sys.stat(maildir + "/" + rel) else { continue }
                let mtime = Int64(st.st_mtim.tv_sec)
                if mtime < now { entries.append(Entry(name: rel, mtime: mtime)) }
            }
        }
        // Oldest first; equal times in name order so runs are repeatable.
        entries.sort { $0.mtime != $1.mtime ? $0.mtime < $1.mtime : $0.name < $1.name }
        return entries
    }

    /// Whether a message's second line is `Delivered-To: <prefix>…` (`hasprefix`).
    /// Reads only the first two lines.
    public static func deliveredToHasPrefix(_ head: [UInt8], prefix: [UInt8]) -> Bool {
        guard let nl1 = head.firstIndex(of: 10) else { return false }
        let rest = head[(nl1 + 1)...]
        guard let nl2 = rest.firstIndex(of: 10) else { return false }
        let line = rest[rest.startIndex..<nl2]
        let tag = Array("Delivered-To: ".utf8)
        guard line.starts(with: tag) else { return false }
        return line.dropFirst(tag.count).starts(with: prefix)
    }

    /// The start of a file, up to and including its second newline (or all of it).
    public static func readHead(_ path: String, limit: Int = Int.max) throws -> [UInt8] {
        let fd = try Sys.open(path, O_RDONLY)
        defer { Sys.close(fd) }
        var out: [UInt8] = []
        var newlines = 0
        var buf = [UInt8](repeating: 0, count: 1024)
        while out.count < limit {
            let n = try buf.withUnsafeMutableBytes { raw in try Sys.read(fd, into: raw, path: path) }
            if n == 0 { break }
            let before = out.count
            out += buf[0..<n]
            newlines += out[before...].lazy.filter { $0 == 10 }.count
            if newlines >= 2 { break }
        }
        return out
    }
}
