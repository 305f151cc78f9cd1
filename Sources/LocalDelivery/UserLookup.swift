#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles

/// Who receives a local address, as qmail-lspawn and qmail-getpw decide it.
public struct LocalUser: Equatable, Sendable {
    public var user: String
    public var uid: uid_t
    public var gid: gid_t
    public var home: String
    /// `-` when there is an extension (or the assign entry says so), else empty.
    public var dash: String
    public var ext: String

    public init(user: String, uid: uid_t, gid: gid_t, home: String, dash: String, ext: String) {
        self.user = user
        self.uid = uid
        self.gid = gid
        self.home = home
        self.dash = dash
        self.ext = ext
    }
}

/// The `users/assign` table in qmail-users(5) text form (what qmail-newu
/// compiles): `=local:user:uid:gid:home:dash:ext:` exact entries and
/// `+prefix:user:uid:gid:home:dash:pre:` wildcard entries, ended by `.`.
public struct AssignTable: Sendable {
    struct Entry: Sendable { var user: String; var uid: uid_t; var gid: gid_t; var home: String; var dash: String; var ext: String }
    var exact: [String: Entry] = [:]
    var wildcard: [String: Entry] = [:]

    public struct ParseError: Error, CustomStringConvertible {
        public let line: Int
        public let text: String
        public var description: String { "line \(line): malformed assign entry \"\(text)\"" }
    }

    public init() {}

    public init(parsing bytes: [UInt8]) throws {
        for (n, line) in ControlDirectory.splitLines(bytes) {
            if line == "." { break }
            if line.isEmpty { continue }
            guard let kind = line.first, kind == "=" || kind == "+" else { throw ParseError(line: n, text: line) }
            let f = line.dropFirst().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 7, let uid = UInt32(f[2]), let gid = UInt32(f[3]) else { throw ParseError(line: n, text: line) }
            let e = Entry(user: f[1], uid: uid, gid: gid, home: f[4], dash: f[5], ext: f[6])
            if kind == "=" { exact[f[0].lowercased()] = exact[f[0].lowercased()] ?? e }
            else { wildcard[f[0].lowercased()] = wildcard[f[0].lowercased()] ?? e }
        }
    }

    /// `$QMAILHOME/users/assign`, or an empty table when there is none.
    public static func load(qmailHome: String) throws -> AssignTable {
        guard let bytes = try Sys.readFile(qmailHome + "/users/assign") else { return AssignTable() }
        return try AssignTable(parsing: bytes)
    }

    public func lookup(_ local: String) -> LocalUser? {
        let key = local.lowercased()
        if let e = exact[key] {
            return LocalUser(user: e.user, uid: e.uid, gid: e.gid, home: e.home, dash: e.dash, ext: e.ext)
        }
        // Longest wildcard prefix first.
        var i = key.endIndex
        while true {
            let prefix = String(key[..<i])
            if let e = wildcard[prefix] {
                let rest = String(local[local.index(local.startIndex, offsetBy: prefix.count)...])
                return LocalUser(user: e.user, uid: e.uid, gid: e.gid, home: e.home, dash: e.dash, ext: e.ext + rest)
            }
            if i == key.startIndex { break }
            i = key.index(before: i)
        }
        return nil
    }
}

/// qmail-getpw: the longest `-`-separated prefix of `local` that names a
/// password-file user with uid ≠ 0 who owns an existing home; the rest is the
/// extension. Otherwise the `alias` user with the whole local part as extension.
public enum PasswordLookup {
    public static func lookup(_ local: String, passwdFile: String = "/etc/passwd") -> LocalUser? {
        let chars = Array(local)
        var cut = chars.count
        while cut >= 0 {
            if cut == chars.count || chars[cut] == "-" {
                let name = String(chars[0..<cut]).lowercased()
                if !name.isEmpty, let u = UserDatabase.user(named: name, passwdFile: passwdFile), u.uid != 0,
                   let st = try? Sys.stat(u.home), st.st_uid == u.uid {
                    let ext = cut < chars.count ? String(chars[(cut + 1)...]) : ""
                    return LocalUser(user: name, uid: u.uid, gid: u.gid, home: u.home, dash: cut < chars.count ? "-" : "", ext: ext)
                }
            }
            cut -= 1
        }
        if let a = UserDatabase.user(named: "alias", passwdFile: passwdFile) {
            return LocalUser(user: "alias", uid: a.uid, gid: a.gid, home: a.home, dash: "-", ext: local)
        }
        return nil
    }
}
