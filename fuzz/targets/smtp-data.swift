// Fuzz target: qmail-smtpd's DATA reader (Receivers.SMTPDataParser) as a
// differential check: the input fed whole and fed in pieces (cut where the
// first byte says) gives the same message, the same end, the same byte and hop
// counts. And: the stored bytes never exceed the limit, and with the limit off
// the message has no CR LF pair a CRLF-to-LF pass would have removed.
#if canImport(Glibc)
import Glibc
#endif
@testable import Receivers

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 1, let data else { return 0 }
    let cut = Int(data[0]) + 1
    let input = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    for allow in [false, true] {
        for limit in [0, 64] {
            var whole = SMTPDataParser(limit: limit, allowBareLF: allow)
            var outWhole: [UInt8] = []
            let (usedWhole, endWhole) = whole.feed(input[...], into: &outWhole)
            var pieces = SMTPDataParser(limit: limit, allowBareLF: allow)
            var outPieces: [UInt8] = []
            var used = 0
            var end = SMTPDataParser.Outcome.needMore
            while used < input.count && end == .needMore {
                let stop = min(input.count, used + cut)
                let (u, e) = pieces.feed(input[used..<stop], into: &outPieces)
                used += u
                end = e
            }
            check(end == endWhole && used == usedWhole, "pieces and whole disagree on the end")
            check(outPieces == outWhole, "pieces and whole disagree on the message")
            check(pieces.stored == whole.stored && pieces.hops == whole.hops, "counts differ")
            if limit > 0 { check(outWhole.count <= limit, "stored past the limit") }
        }
    }
    return 0
}
