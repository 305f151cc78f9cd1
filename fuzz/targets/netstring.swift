// Fuzz target: the netstring parser of QMTP and QMQP (QueueFormat.Netstring),
// as a differential check. The first byte picks the limit (0..255, or 2^31
// for odd values above 200); the rest is the input. Properties: the prefix
// parser fed a byte at a time agrees with `parse`; a complete netstring's
// content is exactly as long as its prefix says and no longer than the limit,
// and parsing its encoding again gives the same length; a prefix over the
// limit is refused at the first digit that passes it (at most 21 bytes in);
// `list` never crashes, and what it returns re-encodes no longer than its input.
@testable import QueueFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let limit = data[0] > 200 && data[0] % 2 == 1 ? 1 << 31 : Int(data[0])
    let input = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let whole = Netstring.parse(input[...], limit: limit)
    // The prefix a byte at a time.
    var length = Netstring.Length(limit: limit)
    var step = Netstring.Length.Step.needMore
    var used = 0
    for c in input {
        used += 1
        step = length.feed(c)
        if step != .needMore { break }
    }
    switch (step, whole) {
    case (.failed(let f), .failed(let g)):
        check(f == g, "prefix failure \(f), parse failure \(g)")
        if f == .tooLong {
            // Refused at the first digit that takes the value past the limit: the digits
            // before it (leading zeros aside) are no more than the limit has.
            let before = input[0..<(used - 1)].drop { $0 == UInt8(ascii: "0") }
            check(before.count <= String(limit).count && used <= 21, "tooLong after \(used) bytes, limit \(limit)")
        }
    case (.done(let n), .complete(let content, let next)):
        check(content.count == n && n <= limit, "content \(content.count), prefix \(n), limit \(limit)")
        check(next == content.upperBound + 1 && input[content.upperBound] == UInt8(ascii: ","), "end")
        check(Netstring.encode(input[content]).count <= next, "encoding longer than the input")
        let again = Netstring.parse(Netstring.encode(input[content])[...], limit: limit)
        if case .complete(let c2, _) = again { check(c2.count == n, "round trip") } else { check(false, "round trip failed") }
    case (.done(let n), .needMore):
        check(input.count <= used + n, "needMore with the whole netstring at hand")
    case (.done, .failed(let g)):
        check(g == .missingComma, "a complete prefix, then \(g)")
    case (.needMore, .needMore):
        check(used == input.count, "needMore before the input's end")
    default:
        check(false, "prefix parser \(step), parse \(whole)")
    }
    // A list: all netstrings, or a failure; never a crash, and the ranges tile the input.
    if case .success(let ranges) = Netstring.list(input[...], limit: limit) {
        var rebuilt: [UInt8] = []
        for r in ranges { rebuilt += Netstring.encode(input[r]) }
        // Leading zeros in a prefix are accepted, so the rebuilt list may be shorter.
        check(rebuilt.count <= input.count, "list longer than its input")
    }
    return 0
}
