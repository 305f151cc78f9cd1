#if canImport(Glibc)
import Glibc
#endif
import QueueFormat

/// The Received line a receiver writes in front of the message, in
/// indimail-mta's form:
///
///     Received: indimail-mta smtpd <pid> from <remotehost> (HELO <helo>) (<info>@<ip>)
///       by <local> with <protocol>; <local date>
///
/// `from` only when the client's host name is known; `(HELO …)` only when the
/// client greeted with a name that differs (case-insensitively) from it; the
/// `(<info>@<ip>)` part whenever the IP is known (indimail since 2023 drops it,
/// and the line break, when there is no `TCPREMOTEINFO`: we keep the intended
/// form). Every byte outside `A-Z a-z 0-9 . @ % + / = : - [ ] _` and space
/// becomes `?`. With `HIDE_HOST` set, only the program, pid, protocol and date remain.
public struct ReceivedLine: Sendable {
    public var program: String = "smtpd"
    public var pid: Int32 = getpid()
    public var remoteHost: String? = nil
    public var helo: String? = nil
    public var remoteInfo: String? = nil
    public var remoteIP: String? = nil
    public var localHost: String? = nil
    public var hide = false

    public init() {}

    static func safe(_ s: String) -> String {
        String(decoding: s.utf8.map { c -> UInt8 in
            let ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57)
                || ".@%+/=:-[]_ ".utf8.contains(c)
            return ok ? c : UInt8(ascii: "?")
        }, as: UTF8.self)
    }

    public func text(protocol proto: String, date: String) -> String {
        var s = "Received: indimail-mta \(program) \(pid)"
        if !hide {
            let host = (remoteHost?.isEmpty ?? true) || remoteHost == "unknown" ? nil : remoteHost
            if let host { s += " from " + ReceivedLine.safe(host) }
            if let helo, !helo.isEmpty, helo.lowercased() != host?.lowercased() { s += " (HELO " + ReceivedLine.safe(helo) + ")" }
            if let ip = remoteIP, !ip.isEmpty {
                s += " (" + (remoteInfo.map { ReceivedLine.safe($0) + "@" } ?? "") + ReceivedLine.safe(ip) + ")\n"
            }
            if let l = localHost, !l.isEmpty { s += "  by " + ReceivedLine.safe(l) }
        }
        return s + " with " + proto + "; " + date + "\n"
    }

    /// Now, as indimail's date822fmt writes it (local time, weekday, numeric zone).
    public static func date(_ t: time_t = time(nil)) -> String { Date822.local(t) }
}
