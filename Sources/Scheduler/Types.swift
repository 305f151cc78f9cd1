// DeliveryReport lives in QueueFormat (the helpers share it without the scheduler);
// everything that imports Scheduler sees it as before.
@_exported import QueueFormat

/// A message id: the inode number of its `mess` file.
public typealias MessageID = UInt64
/// Seconds since the epoch.
public typealias Time = Int64

/// qmail's two delivery channels.
public enum Channel: Int, Sendable, CaseIterable, Hashable, Comparable {
    case local = 0
    case remote = 1

    public var name: String { self == .local ? "local" : "remote" }
    /// `chanskip` of the retry formula.
    public var skip: Int64 { self == .local ? 10 : 20 }

    public static func < (a: Channel, b: Channel) -> Bool { a.rawValue < b.rawValue }
}

/// One message on one channel: the unit qmail-send schedules.
public struct JobKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let id: MessageID
    public let channel: Channel
    public init(_ id: MessageID, _ channel: Channel) { self.id = id; self.channel = channel }
    public static func < (a: JobKey, b: JobKey) -> Bool { (a.id, a.channel) < (b.id, b.channel) }
    public var description: String { "\(channel.name)/\(id)" }
}

/// qmail's retry schedule: at pass start, `birth + (isqrt(now - birth) + chanskip)²`.
/// Local attempts fall near birth + 0, 100, 400, 900 … s; remote 0, 400, 1600 … s.
public enum RetrySchedule {
    public static func isqrt(_ x: Int64) -> Int64 {
        if x <= 0 { return 0 }
        var r = Int64(Double(x).squareRoot())
        while r * r > x { r -= 1 }
        while (r + 1) * (r + 1) <= x { r += 1 }
        return r
    }

    public static func nextRetry(birth: Time, now: Time, channel: Channel) -> Time {
        let n = birth > now ? 0 : isqrt(now - birth)
        let k = n + channel.skip
        return birth + k * k
    }
}

/// The sentence qmail-send appends to a deferral of a message past its lifetime.
public let lifetimeExpiredSentence = "I'm not going to try again; this message has been in the queue too long.\n"

/// qmail-send's VERP (`senderadd`): a sender ending in `-@[]` is rewritten
/// for each recipient, `owner-@host-@[]` to `owner-box=domain@host`.
public enum Verp {
    static let suffix: [UInt8] = Array("-@[]".utf8)

    public static func isVerp(_ sender: [UInt8]) -> Bool {
        sender.count >= 4 && sender[(sender.count - 4)...].elementsEqual(suffix)
    }

    /// The envelope sender for one delivery to `recipient`.
    public static func sender(_ sender: [UInt8], for recipient: [UInt8]) -> [UInt8] {
        guard isVerp(sender) else { return sender }
        let i = sender.count
        let at = UInt8(ascii: "@")
        // The last '@' before the "-@[]" suffix, and the recipient's last '@'.
        guard let j = sender[0..<(i - 4)].lastIndex(of: at), j + 5 <= i,
              let k = recipient.lastIndex(of: at) else { return sender }
        var out = Array(sender[0..<j])
        out += recipient[0..<k]
        out.append(UInt8(ascii: "="))
        out += recipient[(k + 1)...]
        out.append(at)
        out += sender[(j + 1)..<(i - 4)]
        return out
    }
}
