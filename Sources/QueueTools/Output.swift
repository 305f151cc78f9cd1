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
/// Latin-1 reading), so the output is always valid JSON.
public enum JSON {
    public static func string(_ bytes: [UInt8]) -> String {
        var out = "\""
        if let s = String(validating: bytes, as: UTF8.self) {
            for u in s.unicodeScalars { escape(u, into: &out) }
        } else {
            for b in bytes {
                if b >= 0x80 { out += "\\u00" + hex2(b) } else { escape(Unicode.Scalar(b), into: &out) }
            }
        }
        out += "\""
        return out
    }

    public static func string(_ s: String) -> String { string(Array(s.utf8)) }

    static func escape(_ u: Unicode.Scalar, into out: inout String) {
        switch u {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\u{8}": out += "\\b"
        case "\u{c}": out += "\\f"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 || u.value == 0x7f { out += "\\u00" + hex2(UInt8(u.value)) } else { out.unicodeScalars.append(u) }
        }
    }

    static func hex2(_ b: UInt8) -> String {
        let d = Array("0123456789abcdef")
        return String([d[Int(b >> 4)], d[Int(b & 15)]])
    }
}
