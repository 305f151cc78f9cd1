#if canImport(Glibc)
import Glibc
#endif
import CCDB
import CShims
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
    /// `users/cdb` (qmail-newu's), read at every lookup as qmail-lspawn does; when
    /// set, the text table is not used.
    public private(set) var cdbPath: String? = nil

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

    /// `$QMAILHOME/users/cdb` when it exists (qmail-newu's compiled table, read
    /// at each lookup, so a new one counts at once), else `$QMAILHOME/users/assign`,
    /// else an empty table.
    public static func load(qmailHome: String) throws -> AssignTable {
        let cdb = qmailHome + "/users/cdb"
        if Sys.exists(cdb) {
            var t = AssignTable()
            t.cdbPath = cdb
            return t
        }
        guard let bytes = try Sys.readFile(qmailHome + "/users/assign") else { return AssignTable() }
        return try AssignTable(parsing: bytes)
    }

    /// A users/cdb that cannot be read (missing wildcard record, cut short…).
    public struct CDBError: Error, CustomStringConvertible {
        public let path: String
        public let errno: Int32
        public var description: String { "unable to read \(path): \(QmailErrorText.text(errno))" }
    }

    /// The lookup with the users/cdb read error qmail-lspawn defers on.
    public func find(_ local: String) -> Result<LocalUser?, CDBError> {
        if let cdbPath { return AssignTable.cdbLookup(cdbPath, local) }
        return .success(lookup(local))
    }

    /// qmail-lspawn's `nughde_get`: the wildcard characters from the record
    /// under the empty key (which must exist), then `!local\0` (lower-cased), then
    /// `!` + each prefix of local from the longest, tried only when empty or when
    /// its last character is a wildcard character; a prefix match appends the
    /// rest of local (as addressed) to the stored extension.
    static func cdbLookup(_ path: String, _ local: String) -> Result<LocalUser?, CDBError> {
        guard let db = qs_cdb_open_checked(path) else { return .failure(CDBError(path: path, errno: qs_errno())) }
        defer { qs_cdb_close(db) }
        func get(_ key: [UInt8]) -> Result<[UInt8]?, CDBError> {
            var len: UInt32 = 0
            let r = key.withUnsafeBytes { qs_cdb_find(db, $0.baseAddress, UInt32($0.count), nil, 0, &len) }
            if r < 0 { return .failure(CDBError(path: path, errno: EPROTO)) }
            if r == 0 { return .success(nil) }
            var data = [UInt8](repeating: 0, count: Int(len))
            let again = key.withUnsafeBytes { k in data.withUnsafeMutableBytes { qs_cdb_find(db, k.baseAddress, UInt32(k.count), $0.baseAddress, UInt32($0.count), &len) } }
            if again != 1 { return .failure(CDBError(path: path, errno: EPROTO)) }
            return .success(data)
        }
        func user(_ data: [UInt8], append: ArraySlice<UInt8>) -> Result<LocalUser?, CDBError> {
            let f = data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard f.count >= 6, let uid = UInt32(f[1]), let gid = UInt32(f[2]) else {
                return .failure(CDBError(path: path, errno: EPROTO))
            }
            return .success(LocalUser(user: f[0], uid: uid, gid: gid, home: f[3], dash: f[4],
                                      ext: f[5] + String(decoding: append, as: UTF8.self)))
        }
        let wild: [UInt8]
        switch get([]) {
        case .failure(let e): return .failure(e)
        case .success(nil): return .failure(CDBError(path: path, errno: EPROTO))
        case .success(let w?): wild = w
        }
        let original = Array(local.utf8)
        let lower = original.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 }
        let bang = UInt8(ascii: "!")
        switch get([bang] + lower + [0]) {
        case .failure(let e): return .failure(e)
        case .success(let d?): return user(d, append: [])
        case .success(nil): break
        }
        var k = lower.count
        while k >= 0 {
            if k == 0 || wild.contains(lower[k - 1]) {
                switch get([bang] + lower[0..<k]) {
                case .failure(let e): return .failure(e)
                case .success(let d?): return user(d, append: original[k...])
                case .success(nil): break
                }
            }
            k -= 1
        }
        return .success(nil)
    }

    public func lookup(_ local: String) -> LocalUser? {
        if let cdbPath {
            if case .success(let u) = AssignTable.cdbLookup(cdbPath, local) { return u }
            return nil
        }
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
