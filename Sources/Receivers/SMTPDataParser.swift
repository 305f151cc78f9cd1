/// The DATA reader of qmail-smtpd (`blast`), byte by byte, as a value that can
/// be fed the client's bytes in any pieces: CRLF becomes LF, a lone CR is
/// kept, the first dot of every line is removed, `CRLF . CRLF` ends the data
/// (a body that starts with `. CRLF` is empty), and a bare LF is an error
/// unless `allowBareLF` (then a LF alone ends a line as CRLF would). It also
/// counts the hops (header lines starting with `Received` or `Delivered`,
/// case-insensitively, before the first empty line) and the stored bytes,
/// which stop being kept once they pass `limit` (the rest is still read).
public struct SMTPDataParser: Sendable {
    public enum Outcome: Equatable, Sendable { case needMore, finished, bareLF }

    /// 1: at a line start; 0: inside a line; 2: line start + dot;
    /// 3: line start + dot + CR; 4: after a CR.
    var state = 1
    public var allowBareLF = false
    /// Stored bytes allowed (0 = no limit).
    public var limit = 0
    public private(set) var stored = 0
    public private(set) var hops = 0
    var inHeader = true
    var lineLength = 0
    var lineStart: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0)

    public init(limit: Int = 0, allowBareLF: Bool = false) {
        self.limit = limit
        self.allowBareLF = allowBareLF
    }

    /// The stored message passed `limit`.
    public var overflowed: Bool { limit > 0 && stored > limit }

    @inline(__always)
    mutating func emit(_ b: UInt8, _ out: inout [UInt8]) {
        stored += 1
        if limit == 0 || stored <= limit { out.append(b) }
        guard inHeader else { return }
        if lineLength < 9 {
            let l = b >= 65 && b <= 90 ? b + 32 : b
            withUnsafeMutableBytes(of: &lineStart) { $0[lineLength] = l }
        }
        lineLength += 1
        if b == 10 {
            if lineLength == 1 { inHeader = false; return }
            let n = lineLength - 1
            withUnsafeBytes(of: &lineStart) { p in
                if n >= 8 && p[0..<8].elementsEqual("received".utf8) { hops += 1 }
                else if n >= 9 && p[0..<9].elementsEqual("delivered".utf8) { hops += 1 }
            }
            lineLength = 0
        }
    }

    /// Reads `input` up to the end of the data; the message bytes go to `out`.
    /// Returns how many bytes were used (what follows the end belongs to the
    /// next command) and whether the data ended, needs more, or had a bare LF.
    public mutating func feed(_ input: ArraySlice<UInt8>, into out: inout [UInt8]) -> (used: Int, outcome: Outcome) {
        var used = 0
        for b in input {
            used += 1
            switch state {
            case 1, 0:
                if b == 10 {
                    if !allowBareLF { return (used, .bareLF) }
                    emit(10, &out); state = 1
                } else if b == 13 {
                    state = 4
                } else if b == UInt8(ascii: ".") && state == 1 {
                    state = 2
                } else {
                    emit(b, &out); state = 0
                }
            case 2:
                if b == 10 {
                    if !allowBareLF { return (used, .bareLF) }
                    return (used, .finished)
                } else if b == 13 {
                    state = 3
                } else {
                    emit(b, &out); state = 0
                }
            case 3:
                if b == 10 { return (used, .finished) }
                emit(UInt8(ascii: "."), &out); emit(13, &out)
                if b == 13 { state = 4 } else { emit(b, &out); state = 0 }
            default: // 4
                if b == 10 {
                    emit(10, &out); state = 1
                } else if b == 13 {
                    emit(13, &out)
                } else {
                    emit(13, &out); emit(b, &out); state = 0
                }
            }
        }
        return (used, .needMore)
    }
}
