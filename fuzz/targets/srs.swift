// Fuzz target: SRS addresses (Sources/Toolbox/SRS.swift, compiled in as source,
// with a stand-in for HMAC-SHA1 so the target needs no OpenSSL).
// Input: an address; its first byte picks the separator and the hash length.
// Properties: reverse never crashes on any address; forward then reverse gives
// back a plain sender (one @, no = in the host), and an SRS0 address forwarded
// again (SRS1) reverses to the SRS0 address at its first forwarder's domain.
func standIn(_ key: [UInt8], _ msg: [UInt8]) -> [UInt8] {
    var h: [UInt8] = Array(repeating: 0, count: 20)
    var acc: UInt32 = 2166136261
    for (i, b) in (key + [0] + msg).enumerated() { acc = (acc ^ UInt32(b)) &* 16777619; h[i % 20] ^= UInt8(truncatingIfNeeded: acc >> 8) }
    return h
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let input = Array(bytes.dropFirst())
    var config = SRSConfig(domain: Array("srs.example.net".utf8), secrets: [Array("secret".utf8), Array("old".utf8)])
    config.separator = [UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "-")][Int(first) % 3]
    config.hashLength = Int(first >> 4) % 8 + 4
    config.hashMin = config.hashLength
    let srs = SRS(config: config, now: 1_704_067_200 + Int(first) * 86400, hmac: standIn)
    _ = try? srs.reverse(input)
    guard let forwarded = try? srs.forward(input) else { return 0 }
    check(forwarded.count < 1000, "a rewritten address of 1000 bytes or more")
    let ats = input.filter { $0 == UInt8(ascii: "@") }.count
    guard ats == 1, let at = input.firstIndex(of: UInt8(ascii: "@")) else { return 0 }
    let user = input[..<at], host = input[(at + 1)...]
    if host.contains(UInt8(ascii: "=")) || host.isEmpty || user.isEmpty || forwarded == input { return 0 }
    let isSRS1 = SRS.isTag(user, UInt8(ascii: "1")), isSRS0 = SRS.isTag(user, UInt8(ascii: "0"))
    if isSRS1 { return 0 }
    guard let back = try? srs.reverse(forwarded) else { check(false, "our own address does not reverse: \(forwarded)"); return 0 }
    if isSRS0 {
        check(back == Array("SRS0".utf8) + user.dropFirst(4) + [UInt8(ascii: "@")] + host, "SRS1 reversed to \(back)")
    } else {
        check(back == input, "SRS0 reversed to \(back), not \(input)")
    }
    return 0
}
