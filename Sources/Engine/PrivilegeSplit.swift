#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueStore

/// qmail's split of the engine by privilege (docs/architecture.md, "Processes and
/// users"). Started as root, the engine starts its helpers, each as the user
/// qmail gives that work, then gives up root itself:
///
/// | process | user | does |
/// |---|---|---|
/// | qmail-send (this engine) | qmails | todo processing, the schedule, bounces (through qmail-queue) |
/// | qmail-lspawn | root | local deliveries, each in a child as its recipient's user |
/// | qmail-rspawn | qmailr | remote deliveries: DNS, SMTP, TLS (the only one that talks to the network) |
/// | qmail-clean | qmailq | removals in mess/, intd/, todo/ (qmailq's folders) |
public struct PrivilegeSplit: Sendable {
    public var engine: Spawn.Credentials
    public var remote: Spawn.Credentials
    public var cleaner: Spawn.Credentials
    /// Group `qmail`: the engine's only supplementary group.
    public var qmailGroup: gid_t
    public var localSpawner: String
    public var remoteSpawner: String
    public var cleanerProgram: String

    public struct Missing: Error, CustomStringConvertible {
        public let name: String
        public var description: String { name }
    }

    /// qmail's users and group from /etc/passwd and /etc/group, and the helper programs.
    public static func lookup(program: (String) -> String) throws(Missing) -> PrivilegeSplit {
        let users = UserDatabase.users(named: ["qmails", "qmailr", "qmailq"])
        guard let gid = UserDatabase.groupID(named: "qmail") else { throw Missing(name: "group qmail") }
        func cred(_ n: String) throws(Missing) -> Spawn.Credentials {
            guard let u = users[n] else { throw Missing(name: "user \(n)") }
            return Spawn.Credentials(uid: u.uid, gid: gid)
        }
        return PrivilegeSplit(engine: try cred("qmails"), remote: try cred("qmailr"), cleaner: try cred("qmailq"),
                              qmailGroup: gid, localSpawner: program("qmail-lspawn"), remoteSpawner: program("qmail-rspawn"),
                              cleanerProgram: program("qmail-clean"))
    }

    /// Files the engine keeps in lock/ (qmailq's folder), made while still root
    /// and given to qmails: the LMDB schedule and its lock file.
    func prepareEngineFiles(queueDir: String) throws(SystemError) {
        for name in ["engine.lmdb", "engine.lmdb-lock"] {
            let p = queueDir + "/lock/" + name
            let fd = try Sys.open(p, O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o600)
            let r = fchown(fd, engine.uid, engine.gid)
            Sys.close(fd)
            if r != 0 { throw SystemError("chown", path: p) }
        }
        // The receivers' inflow count (FlowControl): written by the engine, read by
        // the daemons, which write the queue as qmailq (group qmail).
        // Not fatal: without it the daemons simply take mail without waiting (the
        // engine logs a warning when it cannot open the file).
        try? FlowControl.prepare(queueDir: queueDir, owner: (engine.uid, qmailGroup))
        // The operators' command folder (Engine+Commands.swift), the engine's own.
        let commands = queueDir + "/" + Engine.commandFolder
        if mkdir(commands, 0o700) != 0 && errno != EEXIST { throw SystemError("mkdir", path: commands) }
        if chown(commands, engine.uid, engine.gid) != 0 { throw SystemError("chown", path: commands) }
    }

    /// Gives up root for good: group qmail only, then qmails.
    func dropToEngineUser() throws(SystemError) {
        var groups: [gid_t] = [qmailGroup]
        if setgroups(1, &groups) != 0 { throw SystemError("setgroups") }
        if setgid(engine.gid) != 0 { throw SystemError("setgid") }
        if setuid(engine.uid) != 0 { throw SystemError("setuid") }
        if setuid(0) == 0 { throw SystemError("setuid", path: "root could be taken back", errno: EPERM) }
    }
}
