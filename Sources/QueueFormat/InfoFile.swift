/// The `info/<n>/<id>` file the scheduler writes at preprocessing (queue-layout §4.4):
/// `F<sender>\0`, then optional `e<qqeh>\0` and `h<envheaders>\0`. The operator tools
/// read it beside a running engine and from queues anyone may have damaged, so every
/// defect is reported, never guessed around.
public struct InfoFile: Equatable, Sendable {
    public var sender: [UInt8]
    public var qqeh: [UInt8]?
    public var envHeaders: [UInt8]?

    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// No bytes at all.
        case empty
        /// The first record is not `F`.
        case noSender(UInt8)
        /// A record without its closing NUL (a torn or cut file), at this offset.
        case truncated(offset: Int)
        case unknownRecordType(UInt8, offset: Int)

        public var description: String {
            switch self {
            case .empty: return "empty info file"
            case .noSender(let b): return "info file does not start with a sender record (byte \(b))"
            case .truncated(let o): return "truncated info file (record at byte \(o) has no end)"
            case let .unknownRecordType(b, o): return "unknown record type \(b) at byte \(o) of the info file"
            }
        }
    }

    public init(sender: [UInt8], qqeh: [UInt8]? = nil, envHeaders: [UInt8]? = nil) {
        self.sender = sender
        self.qqeh = qqeh
        self.envHeaders = envHeaders
    }

    /// Parses an info file. The first record must be a complete `F`; later `F`, `e`
    /// and `h` records replace earlier ones (as the scheduler reads them).
    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> InfoFile {
        guard let first = bytes.first else { throw .empty }
        guard first == UInt8(ascii: "F") else { throw .noSender(first) }
        var info = InfoFile(sender: [])
        var i = 0
        while i < bytes.count {
            var j = i + 1
            while j < bytes.count && bytes[j] != 0 { j += 1 }
            if j >= bytes.count { throw .truncated(offset: i) }
            let text = Array(bytes[(i + 1)..<j])
            switch bytes[i] {
            case UInt8(ascii: "F"): info.sender = text
            case UInt8(ascii: "e"): info.qqeh = text
            case UInt8(ascii: "h"): info.envHeaders = text
            default: throw .unknownRecordType(bytes[i], offset: i)
            }
            i = j + 1
        }
        return info
    }
}
