/// The envelope a queue client hands to qmail-queue on descriptor 1, and the
/// `intd/`/`todo/` file qmail-queue writes from it: NUL-terminated records,
/// each a type byte and text (`u` uid, `p` qmail-queue pid, `F` sender,
/// `T` recipient, `e` QQEH headers, `h` envheaders), with no extra final NUL
/// in the file. The client's stream ends with an extra NUL after the last `T`.
public struct Envelope: Equatable, Sendable {
    public var uid: [UInt8]?
    public var pid: [UInt8]?
    public var sender: [UInt8]
    public var recipients: [[UInt8]]
    public var qqeh: [UInt8]?
    public var envHeaders: [UInt8]?

    public init(sender: [UInt8], recipients: [[UInt8]], uid: [UInt8]? = nil, pid: [UInt8]? = nil,
                qqeh: [UInt8]? = nil, envHeaders: [UInt8]? = nil) {
        self.sender = sender
        self.recipients = recipients
        self.uid = uid
        self.pid = pid
        self.qqeh = qqeh
        self.envHeaders = envHeaders
    }

    public init(sender: String, recipients: [String]) {
        self.init(sender: Array(sender.utf8), recipients: recipients.map { Array($0.utf8) })
    }

    /// The longest address accepted, NUL included (qmail-queue's `ADDR`).
    public static let addressLimit = 1003

    /// Bytes of a queue file (`intd`/`todo`): u, p, F, T…, e, h.
    public func queueFileBytes() -> [UInt8] {
        var out: [UInt8] = []
        func record(_ type: Character, _ text: [UInt8]) {
            out.append(type.asciiValue!)
            out.append(contentsOf: text)
            out.append(0)
        }
        if let uid { record("u", uid) }
        if let pid { record("p", pid) }
        record("F", sender)
        for r in recipients { record("T", r) }
        if let qqeh { record("e", qqeh) }
        if let envHeaders { record("h", envHeaders) }
        return out
    }

    /// Bytes a client writes on descriptor 1: `F`sender`\0`, `T`rcpt`\0`…, `\0`.
    public func clientStreamBytes() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "F")] + sender + [0]
        for r in recipients { out.append(UInt8(ascii: "T")); out += r; out.append(0) }
        out.append(0)
        return out
    }

    public enum ParseError: Error, Equatable, Sendable {
        case unknownRecordType(UInt8, offset: Int)
        case missingSender
        case truncated
    }

    /// Parses a queue file (`todo`, `intd`) as written by qmail-queue (ours,
    /// classic qmail or indimail-mta). Accepts exactly the record types u/p/F/T/e/h;
    /// the last F/e/h seen wins, as in todo processing.
    public static func parseQueueFile(_ bytes: [UInt8]) throws -> Envelope {
        var env = Envelope(sender: [], recipients: [])
        var sawSender = false
        var i = 0
        while i < bytes.count {
            let type = bytes[i]
            var j = i + 1
            while j < bytes.count && bytes[j] != 0 { j += 1 }
            if j == bytes.count { throw ParseError.truncated }
            let text = Array(bytes[(i + 1)..<j])
            switch type {
            case UInt8(ascii: "u"): env.uid = text
            case UInt8(ascii: "p"): env.pid = text
            case UInt8(ascii: "F"): env.sender = text; sawSender = true
            case UInt8(ascii: "T"): env.recipients.append(text)
            case UInt8(ascii: "e"): env.qqeh = text
            case UInt8(ascii: "h"): env.envHeaders = text
            default: throw ParseError.unknownRecordType(type, offset: i)
            }
            i = j + 1
        }
        if !sawSender { throw ParseError.missingSender }
        return env
    }
}

/// A recipient record in a `local/` or `remote/` file: `T` pending, `D` done.
public struct RecipientRecord: Equatable, Sendable {
    public var done: Bool
    public var address: [UInt8]
    /// Byte offset of the record's type byte in the file (for `markDone`).
    public var offset: Int

    public init(done: Bool, address: [UInt8], offset: Int) {
        self.done = done
        self.address = address
        self.offset = offset
    }

    public enum ParseError: Error, Equatable, Sendable { case unknownRecordType(UInt8, offset: Int) }

    /// Parses a channel file. A truncated final record (no NUL) is ignored, as
    /// qmail-send's getln does at end of file.
    public static func parseChannelFile(_ bytes: [UInt8]) throws -> [RecipientRecord] {
        var out: [RecipientRecord] = []
        var i = 0
        while i < bytes.count {
            var j = i
            while j < bytes.count && bytes[j] != 0 { j += 1 }
            if j == bytes.count { break }
            let type = bytes[i]
            switch type {
            case UInt8(ascii: "T"), UInt8(ascii: "D"):
                out.append(RecipientRecord(done: type == UInt8(ascii: "D"), address: Array(bytes[(i + 1)..<j]), offset: i))
            default:
                throw ParseError.unknownRecordType(type, offset: i)
            }
            i = j + 1
        }
        return out
    }
}
