// Fuzz target: DNS answers as the resolver reads them (RemoteDelivery/DNS.swift):
//   DNSResolver.parse (header, rcode, TC bit, question and answer sections, A,
//   AAAA, MX and CNAME records) for each record type, DNSResolver.readName
//   (labels, compression pointers, loops) at offsets named by the input, and
//   the text parsers fed from outside: DNSResolver.parseServer ($DNS_SERVER,
//   resolv.conf's nameserver), DNSResolver.encodeName (domains from addresses),
//   and TcptoFile.parse (lock/tcpto records).
// Property: every A record has 4 bytes and every AAAA record 16.
@testable import RemoteDelivery

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let m = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    for t in [DNSResolver.RecordType.a, .aaaa, .mx, .cname] {
        if case .records(let rs)? = DNSResolver.parse(m, type: t) {
            for r in rs {
                switch r {
                case .a(let a): check(a.count == 4, "A record of \(a.count) bytes")
                case .aaaa(let a): check(a.count == 16, "AAAA record of \(a.count) bytes")
                default: break
                }
            }
        }
    }
    if m.count >= 2 {
        _ = DNSResolver.readName(m, 12)
        _ = DNSResolver.readName(m, Int(m[0]) << 8 | Int(m[1]))
        _ = DNSResolver.readName(m, m.count - 1)
    }
    if m.count < 512 {
        let text = String(decoding: m, as: UTF8.self)
        _ = DNSResolver.parseServer(text)
        _ = DNSResolver.encodeName(text)
    }
    for n in 0..<min(64, m.count / TcptoFile.recordSize) { _ = TcptoFile.parse(m, at: n * TcptoFile.recordSize)?.ip }
    return 0
}
