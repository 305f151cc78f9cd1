// Compiled twice: into SystemIO, and (through a symbolic link) into the Embedded
// Swift build of qmail-queue. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
#endif

/// Reads `/etc/passwd` and `/etc/group` directly. Statically linked programs
/// must not call getpwnam: glibc would load NSS modules built for another
/// link and crash (seen with libnss_systemd). qmail's system users live in
/// these files.
public enum UserDatabase {
    public struct User: Equatable, Sendable {
        public let name: String
        public let uid: uid_t
        public let gid: gid_t
        public let home: String
        public let shell: String
    }

    public static func user(named name: String, passwdFile: String = "/etc/passwd") -> User? {
        users(named: [name], passwdFile: passwdFile)[name]
    }

    /// Several users in one read of the password file.
    public static func users(named names: Set<String>, passwdFile: String = "/etc/passwd") -> [String: User] {
        guard let bytes = try? Sys.readFile(passwdFile) else { return [:] }
        var out: [String: User] = [:]
        for line in bytes.split(separator: 10) {
            let f = line.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            guard f.count >= 7 else { continue }
            let name = String(decoding: f[0], as: UTF8.self)
            guard names.contains(name), out[name] == nil,
                  let uid = UInt32(String(decoding: f[2], as: UTF8.self)),
                  let gid = UInt32(String(decoding: f[3], as: UTF8.self)) else { continue }
            out[name] = User(name: name, uid: uid, gid: gid, home: String(decoding: f[5], as: UTF8.self),
                             shell: String(decoding: f[6], as: UTF8.self))
            if out.count == names.count { break }
        }
        return out
    }

    public static func groupID(named name: String, groupFile: String = "/etc/group") -> gid_t? {
        guard let bytes = try? Sys.readFile(groupFile) else { return nil }
        for line in bytes.split(separator: 10) {
            let f = line.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            if f.count >= 3, String(decoding: f[0], as: UTF8.self) == name,
               let gid = UInt32(String(decoding: f[2], as: UTF8.self)) { return gid }
        }
        return nil
    }
}
