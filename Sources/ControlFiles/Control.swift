// Compiled twice: into ControlFiles, and (through a symbolic link) into the
// Embedded Swift builds of qmail-inject and sendmail. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import SystemIO
#endif

/// A control file that exists but cannot be used as it stands.
public struct ControlError: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let line: Int
    public let message: String
    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }
    public var description: String { "\(file):\(line): \(message)" }
}

/// The control folder (`$CONTROLDIR`, default `$QMAILHOME/control`) read the way
/// qmail's `control.c` reads it: `readfile` drops blank and `#` lines and strips
/// trailing white space; `readline` is the first line; `readint` the first line
/// as a number. Names starting with `/` are absolute.
public struct ControlDirectory: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// `$CONTROLDIR`, else `$QMAILHOME/control`.
    public static func fromEnvironment() -> ControlDirectory {
        ControlDirectory(path: Sys.environment("CONTROLDIR").flatMap { $0.isEmpty ? nil : $0 } ?? (Paths.qmailHome + "/control"))
    }

    public func filePath(_ name: String) -> String {
        name.hasPrefix("/") ? name : path + "/" + name
    }

    /// Raw bytes, or nil when the file does not exist.
    public func readRaw(_ name: String) throws(ControlError) -> [UInt8]? {
        do throws(SystemError) { return try Sys.readFile(filePath(name)) } catch {
            throw ControlError(file: filePath(name), line: 0, message: "unable to read: \(error.reason)")
        }
    }

    /// White space that ends a control line: space, tab, and the CR of a
    /// file edited on Windows (CRLF line ends).
    @inline(__always)
    static func isTrailingSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D }

    /// The one place control text is cut into lines: at LF bytes, each line
    /// with its trailing white space (space, tab, CR) removed. Bytes, not
    /// Swift characters: in a String "\r\n" is one Character and would not
    /// split at "\n". Every line, with its 1-based number, blank ones kept.
    public static func splitLines(_ raw: [UInt8]) -> [(line: Int, text: String)] {
        var out: [(line: Int, text: String)] = []
        var start = 0
        var n = 0
        while start <= raw.count {
            var end = start
            while end < raw.count && raw[end] != 0x0A { end += 1 }
            if end == raw.count && start == raw.count && n > 0 { break }   // after the final LF
            n += 1
            var e = end
            while e > start && isTrailingSpace(raw[e - 1]) { e -= 1 }
            out.append((line: n, text: String(decoding: raw[start..<e], as: UTF8.self)))
            start = end + 1
        }
        return out
    }

    /// Lines with their 1-based numbers, blank and comment lines dropped.
    public func readLinesNumbered(_ name: String) throws(ControlError) -> [(line: Int, text: String)]? {
        guard let raw = try readRaw(name) else { return nil }
        var out: [(line: Int, text: String)] = []
        for l in ControlDirectory.splitLines(raw) where !l.text.isEmpty && !l.text.hasPrefix("#") {
            out.append(l)
        }
        return out
    }

    public func readLines(_ name: String) throws(ControlError) -> [String]? {
        try readLinesNumbered(name)?.map { $0.text }
    }

    /// The first line (trailing white space removed); nil when the file is missing.
    public func readLine(_ name: String) throws(ControlError) -> String? {
        guard let raw = try readRaw(name) else { return nil }
        var end = 0
        while end < raw.count && raw[end] != 0x0A { end += 1 }
        while end > 0 && ControlDirectory.isTrailingSpace(raw[end - 1]) { end -= 1 }
        return String(decoding: raw[0..<end], as: UTF8.self)
    }

    /// The first line as an integer; `fallback` when missing. A present file
    /// whose first line is not a number is an error naming file and line.
    public func readInt(_ name: String, default fallback: Int) throws(ControlError) -> Int {
        guard let line = try readLine(name) else { return fallback }
        let t = line.trimmingLeadingSpace()
        if t.isEmpty { return fallback }
        guard let v = Int(t) else {
            throw ControlError(file: filePath(name), line: 1, message: "expected a number, found \"\(line)\"")
        }
        return v
    }
}

extension String {
    func trimmingLeadingSpace() -> String {
        String(self.drop(while: { $0 == " " || $0 == "\t" }))
    }
}

/// Where things are: `$QMAILHOME` (default `/var/qmail`), the queue, sibling programs.
public enum Paths {
    public static var qmailHome: String {
        if let h = Sys.environment("QMAILHOME"), !h.isEmpty { return h }
        return "/var/qmail"
    }

    /// `$QUEUEDIR`, else `$QMAILHOME/queue`.
    public static var queueDir: String {
        if let q = Sys.environment("QUEUEDIR"), !q.isEmpty { return q }
        return qmailHome + "/queue"
    }

    /// A program of this suite: next to the running executable if it is there
    /// (a build folder or an install prefix), else `$QMAILHOME/bin/<name>`.
    public static func program(_ name: String) -> String {
        if let dir = Sys.executableDirectory() {
            let p = dir + "/" + name
            if Sys.isExecutable(p) { return p }
        }
        return qmailHome + "/bin/" + name
    }
}
