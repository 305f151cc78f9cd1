#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import QueueFormat
import LocalDelivery

/// Runs one local delivery in the calling (worker) thread, with qmail-lspawn's
/// decisions before qmail-local's: the address must have a host; an empty
/// local part is thrown away; the user comes from users/assign, the password
/// file, or the alias user.
public struct LocalWorker: Sendable {
    public var assign: AssignTable
    public var defaultDelivery: String
    public var passwdFile: String = "/etc/passwd"

    public init(assign: AssignTable, defaultDelivery: String) {
        self.assign = assign
        self.defaultDelivery = defaultDelivery
    }

    public func deliver(_ d: WorkItem, messagePath: String) -> DeliveryReport {
        let rcpt = String(decoding: d.recipient, as: UTF8.self)
        guard let at = rcpt.lastIndex(of: "@") else {
            return DeliveryReport(.failure, "Sorry, address must include host name. (#5.1.3)\n")
        }
        let local = String(rcpt[..<at]), domain = String(rcpt[rcpt.index(after: at)...])
        if local.isEmpty { return DeliveryReport(.success, "") }
        let assigned: LocalUser?
        switch assign.find(local) {
        case .success(let u): assigned = u
        case .failure: return DeliveryReport(.deferral, "Trouble reading users/cdb in qmail-lspawn.\n")
        }
        guard let user = assigned ?? PasswordLookup.lookup(local, passwdFile: passwdFile) else {
            return DeliveryReport(.deferral, "Unable to find alias user!\n")
        }
        let euid = geteuid()
        if euid != 0 && user.uid != euid {
            return DeliveryReport(.deferral, "Unable to set proper uid, gid for \(user.user).\n")
        }
        // Opened with our own identity, before switching to the user's.
        let fd = open(messagePath, O_RDONLY | O_CLOEXEC)
        if fd == -1 { return DeliveryReport(.deferral, "qmail-spawn unable to open message. (#4.3.0)\n") }
        defer { close(fd) }
        var req = LocalDeliveryRequest(user: user, local: local, domain: domain, sender: String(decoding: d.sender, as: UTF8.self),
                                       qqeh: String(decoding: d.qqeh, as: UTF8.self), defaultDelivery: defaultDelivery,
                                       messageFD: fd, switchIdentity: euid == 0)
        // MESSID is the mess path below mess/: "<split>/<id>".
        let parts = messagePath.split(separator: "/")
        req.spawnEnvironment = QmailLocal.spawnEnvironment(messid: parts.suffix(2).joined(separator: "/"), envHeaders: d.envHeaders)
        let outcome = QmailLocal.deliver(req)
        return LocalWorker.report(outcome)
    }

    /// qmail-lspawn's report: letter from the exit code, output capped at 3000 bytes.
    public static func report(_ outcome: LocalOutcome) -> DeliveryReport {
        var text = Array(outcome.text.utf8)
        if let nul = text.firstIndex(of: 0) { text = Array(text[..<nul]) }
        if text.count > 3000 {
            text = Array(text.prefix(3000 - 31 - 3)) + Array("\nError report too long, sorry.\n".utf8)
        }
        let kind: DeliveryReport.Kind = outcome.letter == "K" ? .success : outcome.letter == "Z" ? .deferral : .failure
        return DeliveryReport(kind, text)
    }
}

/// Runs an external qmail-remote-compatible program for one recipient
/// (`host sender qqeh size recipient`) and folds its reports the way
/// qmail-rspawn does (engine.md §4.5).
public struct ExternalRemoteWorker: Sendable {
    public var program: String

    public init(program: String) { self.program = program }

    public func deliver(_ d: WorkItem, messagePath: String) -> DeliveryReport {
        let rcpt = String(decoding: d.recipient, as: UTF8.self)
        let host = rcpt.lastIndex(of: "@").map { String(rcpt[rcpt.index(after: $0)...]) } ?? rcpt
        let input = open(messagePath, O_RDONLY | O_CLOEXEC)
        if input == -1 { return DeliveryReport(.deferral, "qmail-spawn unable to open message. (#4.3.0)\n") }
        defer { close(input) }
        let size = (try? Sys.fstat(input))?.st_size ?? 0
        guard let out = try? Spawn.pipe() else { return DeliveryReport(.deferral, "qmail-spawn unable to create pipe. (#4.3.0)\n") }
        let pid: pid_t
        do {
            pid = try Spawn.start(program, arguments: [program, host, String(decoding: d.sender, as: UTF8.self),
                                                       String(decoding: d.qqeh, as: UTF8.self), "\(size)", rcpt],
                                  fds: [.init(input, at: 0), .init(out.write, at: 1), .init(out.write, at: 2)],
                                  keepStandard: false, directory: "/")
        } catch {
            Sys.close(out.read); Sys.close(out.write)
            return DeliveryReport(.deferral, "Unable to run qmail-remote.\n")
        }
        Sys.close(out.write)
        let output = (try? Sys.readAll(out.read)) ?? []
        Sys.close(out.read)
        let status = (try? Spawn.wait(pid)) ?? .signaled(0)
        return ExternalRemoteWorker.fold(output: output, status: status)
    }

    /// qmail-rspawn's report composition from qmail-remote's output and exit.
    public static func fold(output: [UInt8], status: ExitStatus) -> DeliveryReport {
        switch status {
        case .signaled: return DeliveryReport(.deferral, "qmail-remote crashed.\n")
        case .exited(111): return DeliveryReport(.deferral, "Unable to run qmail-remote.\n")
        case .exited(let c) where c != 0: return DeliveryReport(.failure, "Unable to run qmail-remote.\n")
        default: break
        }
        var reports = output.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
        if reports.last?.isEmpty ?? false { reports.removeLast() }
        guard let first = reports.first, !first.isEmpty else { return DeliveryReport(.deferral, "qmail-remote produced no output.\n") }
        func value(_ b: UInt8) -> Int? {
            switch b { case UInt8(ascii: "K"): return 1; case UInt8(ascii: "Z"): return 0; case UInt8(ascii: "D"): return -1; default: return nil }
        }
        var result = 0
        var resultIndex: Int? = nil
        for (i, r) in reports.enumerated().dropFirst() {
            if let f = r.first, let v = value(f) { result = v; resultIndex = i; break }
        }
        var orr = result
        if let v = value(first[0]) { orr = v; result = v; resultIndex = nil }
        else if first[0] == UInt8(ascii: "s") { orr = 0 }
        else if first[0] == UInt8(ascii: "h") { orr = -1 }
        var text = Array(first.dropFirst())
        if result <= orr, let i = resultIndex { text += reports[i].dropFirst() }
        let kind: DeliveryReport.Kind = orr == 1 ? .success : orr == 0 ? .deferral : .failure
        return DeliveryReport(kind, text)
    }
}
