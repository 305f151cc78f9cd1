// Compiled twice: into QueueFormat, and (through a symbolic link) into the
// Embedded Swift build of qmail-queue. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
#endif

/// RFC 822 dates as qmail writes them.
public enum Date822 {
    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }

    /// indimail-mta's `date822fmt`: local time with weekday and numeric offset,
    /// `Wed, 7 Aug 2025 08:49:18 +0530` (no trailing newline).
    public static func local(_ t: time_t) -> String {
        var tt = t
        var tm = tm()
        localtime_r(&tt, &tm)
        let off = tm.tm_gmtoff
        let sign = off < 0 ? "-" : "+"
        let a = abs(off) / 60
        let hh = Int32(a / 60), mm = Int32(a % 60)
        return "\(days[Int(tm.tm_wday)]), \(tm.tm_mday) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(clock(tm)) \(sign)\(two(hh))\(two(mm))"
    }

    /// The broken-down UTC time of `t`.
    public static func utc(_ t: time_t) -> tm {
        var tt = t
        var tm = tm()
        gmtime_r(&tt, &tm)
        return tm
    }

    /// `hh:mm:ss`.
    static func clock(_ tm: tm) -> String { "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))" }

    /// qmail's myctime() (the mbox From_ line, `$UFLINE`): UTC,
    /// `Thu Nov 26 05:39:05 2026` and a newline.
    public static func myctime(_ t: time_t) -> String {
        let tm = utc(t)
        return "\(days[Int(tm.tm_wday)]) \(months[Int(tm.tm_mon)]) \(two(tm.tm_mday)) \(clock(tm)) \(1900 + Int(tm.tm_year))\n"
    }

    /// Classic qmail's UTC form without weekday: `7 Aug 2025 03:19:18 -0000`.
    public static func classicUTC(_ t: time_t) -> String {
        let tm = utc(t)
        return "\(tm.tm_mday) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) \(clock(tm)) -0000"
    }
}

/// The `Received:` line qmail-queue puts at the top of every message
/// (indimail-mta's `receivedfmt`, engine.md §2.2).
public struct ReceivedLine: Sendable {
    public enum Invoker: Sendable, Equatable {
        case alias
        case bounce
        /// A user, optionally from the network (with the peer address when known).
        case uid(UInt32, network: Bool, ip: String?)
    }

    public var pid: Int32
    public var host: String?
    public var invoker: Invoker
    public var date: String

    public init(pid: Int32, host: String?, invoker: Invoker, date: String) {
        self.pid = pid
        self.host = host
        self.invoker = invoker
        self.date = date
    }

    /// `Received: indimail-mta queue P by host H\n (invoked by uid U); DATE\n`.
    /// With no host (HIDE_HOST) the host part and its fold vanish and `(` follows
    /// the pid with no space, exactly as indimail-mta writes it.
    public func bytes() -> [UInt8] {
        var s = "Received: indimail-mta queue \(pid)"
        if let host { s += " by host \(host)\n " }
        switch invoker {
        case .alias: s += "(invoked by alias"
        case .bounce: s += "(invoked for bounce"
        case let .uid(uid, network, ip):
            s += "(invoked "
            if network {
                s += "from network"
                if let ip, host != nil { s += " \(ip)" }
                s += ", "
            }
            s += "by uid \(uid)"
        }
        s += "); \(date)\n"
        return Array(s.utf8)
    }
}
