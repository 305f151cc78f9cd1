/// Netstrings (cr.yp.to/proto/netstrings.txt), the framing of QMTP and QMQP:
/// decimal length, `:`, the bytes, `,` — `12:hello world!,`, the empty one `0:,`.
///
/// One parser for every reader of them (qmail-qmtpd, qmail-qmqpd, qmail-qmqpc's
/// and the QMTP client's responses), bounded: the length prefix is refused as
/// soon as its value passes the caller's limit, so a prefix of 2 GB (or of a
/// thousand digits) is rejected after at most a few bytes and nothing is
/// allocated for it. Stricter than qmail in one point: a byte other than a digit
/// before the `:` is an error (qmail multiplies it in).
public enum Netstring {
    /// Why a netstring is refused.
    public enum Failure: Error, Equatable, Sendable {
        /// A byte other than a digit or `:` in the length prefix, or no digit at all.
        case badLength
        /// The length is larger than the limit the reader allows.
        case tooLong
        /// The byte after the content is not `,`.
        case missingComma
    }

    /// The netstring of `bytes`.
    public static func encode<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var out = Array(String(bytes.count).utf8)
        out.reserveCapacity(out.count + bytes.count + 2)
        out.append(UInt8(ascii: ":"))
        out.append(contentsOf: bytes)
        out.append(UInt8(ascii: ","))
        return out
    }

    /// The length prefix read a byte at a time (the servers stream the content
    /// without keeping it, so only the prefix is parsed here).
    public struct Length: Sendable {
        public let limit: Int
        public private(set) var value = 0
        public private(set) var digits = 0

        public init(limit: Int) { self.limit = limit }

        public enum Step: Equatable, Sendable {
            case needMore
            /// The `:` was read: the content's length.
            case done(Int)
            case failed(Failure)
        }

        /// Takes one byte of the prefix.
        public mutating func feed(_ c: UInt8) -> Step {
            if c == UInt8(ascii: ":") {
                return digits == 0 ? .failed(.badLength) : .done(value)
            }
            guard c >= 48 && c <= 57 else { return .failed(.badLength) }
            let d = Int(c - 48)
            // value * 10 + d > limit, without overflow.
            if value > limit / 10 || value * 10 > limit - d { return .failed(.tooLong) }
            value = value * 10 + d
            digits += 1
            // Leading zeros cannot make the value pass the limit; bound them too.
            if digits > 20 { return .failed(.badLength) }
            return .needMore
        }
    }

    /// The outcome of parsing a netstring at the start of a buffer.
    public enum Parsed: Equatable, Sendable {
        /// The content is `bytes[content]`; the netstring ends before `next`.
        case complete(content: Range<Int>, next: Int)
        /// The buffer ends before the netstring does.
        case needMore
        case failed(Failure)
    }

    /// Parses the netstring at the start of `bytes` (indices are `bytes`' own).
    public static func parse(_ bytes: ArraySlice<UInt8>, limit: Int) -> Parsed {
        var length = Length(limit: limit)
        var i = bytes.startIndex
        while i < bytes.endIndex {
            switch length.feed(bytes[i]) {
            case .needMore:
                i += 1
            case .failed(let f):
                return .failed(f)
            case .done(let n):
                let start = i + 1
                // n ≤ limit, and limit is far from Int.max for every caller; guard anyway.
                guard n <= bytes.endIndex - start else { return .needMore }
                let end = start + n
                guard end < bytes.endIndex else { return .needMore }
                guard bytes[end] == UInt8(ascii: ",") else { return .failed(.missingComma) }
                return .complete(content: start..<end, next: end + 1)
            }
        }
        return .needMore
    }

    /// Splits `bytes` into the netstrings it is made of, entirely (a QMTP
    /// recipient list, a QMQP package body). Each content at most `limit` bytes.
    public static func list(_ bytes: ArraySlice<UInt8>, limit: Int) -> Result<[Range<Int>], Failure> {
        var out: [Range<Int>] = []
        var rest = bytes
        while !rest.isEmpty {
            switch parse(rest, limit: limit) {
            case .complete(let content, let next):
                out.append(content)
                rest = bytes[next...]
            case .needMore:
                // The list ends inside a netstring: its prefix or content is cut short.
                return .failure(rest.contains(UInt8(ascii: ":")) ? .missingComma : .badLength)
            case .failed(let f):
                return .failure(f)
            }
        }
        return .success(out)
    }
}
