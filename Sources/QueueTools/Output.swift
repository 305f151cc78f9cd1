#if canImport(Glibc)
import Glibc
#endif
import SystemIO

/// Buffered output to a descriptor (64 KiB at a time): listings of a million
/// messages cost a few thousand writes.
public final class OutputBuffer {
    let fd: Int32
    var bytes: [UInt8] = []
    public private(set) var failed = false

    public init(fd: Int32) { self.fd = fd; bytes.reserveCapacity(1 << 16) }

    public func put(_ s: String) { bytes.append(contentsOf: s.utf8); if bytes.count >= 1 << 16 { flush() } }
    public func put(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b); if bytes.count >= 1 << 16 { flush() } }

    /// Appends in place (no intermediate string), then flushes when 64 KiB are waiting.
    public func append(_ body: (inout [UInt8]) -> Void) { body(&bytes); if bytes.count >= 1 << 16 { flush() } }

    /// Bytes outside 32–126 shown as `_` (qmail's `out()`): a listing never carries
    /// control characters to the terminal.
    public func putSafe(_ b: some Sequence<UInt8>) { put(b.map { $0 >= 32 && $0 <= 126 ? $0 : UInt8(ascii: "_") }) }

    public func flush() {
        if bytes.isEmpty || failed { bytes.removeAll(keepingCapacity: true); return }
        do { try Sys.write(fd, bytes) } catch { failed = true }
        bytes.removeAll(keepingCapacity: true)
    }
}

/// JSON text: strings escaped as Postfix's `postqueue -j` does (`\\ \" \b \f \n \r \t`,
/// other control bytes `\u00XX`); bytes that are not UTF-8 are shown as `\u00XX` (their
/// Latin-1 reading), so the output is always valid JSON. Written as bytes straight into
/// a buffer (qmail-qread --json writes a million of them).
public enum JSON {
    public static func string(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 2)
        put(bytes, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public static func string(_ s: String) -> String { string(Array(s.utf8)) }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// `bytes` as a JSON string, quotes included, appended to `out`.
    public static func put(_ bytes: [UInt8], into out: inout [UInt8]) {
        // Valid UTF-8 is kept as it is; otherwise each byte above 127 is escaped.
        out.append(UInt8(ascii: "\""))
        // The common case: printable ASCII with no quote or backslash goes in as it is.
        if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            out.append(contentsOf: bytes)
            out.append(UInt8(ascii: "\""))
            return
        }
        let valid = bytes.allSatisfy { $0 < 0x80 } || String(validating: bytes, as: UTF8.self) != nil
        for b in bytes {
            switch b {
            case UInt8(ascii: "\\"): out.append(92); out.append(92)
            case UInt8(ascii: "\""): out.append(92); out.append(34)
            case 8: out.append(92); out.append(UInt8(ascii: "b"))
            case 12: out.append(92); out.append(UInt8(ascii: "f"))
            case 10: out.append(92); out.append(UInt8(ascii: "n"))
            case 13: out.append(92); out.append(UInt8(ascii: "r"))
            case 9: out.append(92); out.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7f: escape(b, into: &out)
            case 0x80...: if valid { out.append(b) } else { escape(b, into: &out) }
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    static func escape(_ b: UInt8, into out: inout [UInt8]) {
        out.append(92); out.append(UInt8(ascii: "u")); out.append(48); out.append(48)
        out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
    }

    /// A number in decimal.
    public static func put(_ n: Int64, into out: inout [UInt8]) {
        if n < 0 { out.append(UInt8(ascii: "-")) }
        var v = n.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                      UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var i = 20
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { i -= 1; d[i] = UInt8(48 + v % 10); v /= 10 } while v > 0
            out.append(contentsOf: d[i..<20])
        }
    }

    public static func put(_ n: UInt64, into out: inout [UInt8]) {
        if n <= UInt64(Int64.max) { put(Int64(n), into: &out) } else { out.append(contentsOf: Array("\(n)".utf8)) }
    }

    /// ASCII text as it is (keys, punctuation).
    @inline(__always)
    public static func raw(_ s: StaticString, into out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }
}
