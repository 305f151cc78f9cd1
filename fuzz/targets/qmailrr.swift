// Fuzz target: rrforward's .qmailrr sequence file (Sources/Toolbox/RoundRobin.swift,
// compiled in as source). Input: the file's bytes; its first byte also picks the
// number of addresses (1-64).
// Properties: the next index is always within the addresses; what is written
// back, read again, gives the index after it (the rotation goes on from any
// garbage).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let count = Int(bytes.first ?? 0) % 64 + 1
    let previous = bytes.prefix(40)
    let i = RoundRobin.next(previous: previous, count: count)
    check(i >= 0 && i < count, "index \(i) outside 0..<\(count)")
    // The record written at offset 0, over the old bytes (no truncation).
    var file = Array(previous)
    let rec = RoundRobin.record(i)
    if file.count < rec.count { file += [UInt8](repeating: 0, count: rec.count - file.count) }
    file.replaceSubrange(0..<rec.count, with: rec)
    let j = RoundRobin.next(previous: file.prefix(40), count: count)
    check(j == (i + 1) % count, "after \(i) of \(count) came \(j)")
    return 0
}
