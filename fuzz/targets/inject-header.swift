// Fuzz target: qmail-inject's header processing (Inject/Header.swift, AddressList.swift, Injector.swift):
//   HeaderBlock.init(parsing:) and HeaderBlock.split(_:final:) (the incremental
//   split qmail-inject does while the header is still arriving), Field.key,
//   Field.value (unfolding, LosslessText.decode), AddressList.parse on every
//   field, LosslessText.encode, and Injector.prepare (recipients from To/Cc/Bcc
//   or Resent-*, Bcc removal, added From/Date/Message-ID).
// Properties:
//  - split(prefix, final: false), when it decides (non-nil), decides as the whole
//    message does: the same fields (raw bytes), the same separator flag, and a
//    body that the whole message's body starts with;
//  - prepare keeps every field it does not remove, byte for byte.
@testable import Inject

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let m = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let whole = HeaderBlock(parsing: m)
    for f in whole.fields {
        let v = f.value
        _ = f.key
        _ = AddressList.parse(v)
        _ = LosslessText.encode(v)
    }
    // Cut points: after each of the first newlines, and a few inside lines.
    var cuts: [Int] = []
    for (i, b) in m.enumerated() where b == 10 && cuts.count < 12 { cuts.append(i + 1); if i > 0 { cuts.append(i) } }
    cuts += [1, 2, 5, m.count / 2, m.count - 1]
    for k in cuts where k > 0 && k < m.count {
        guard let early = HeaderBlock.split(Array(m[..<k]), final: false) else { continue }
        check(early.fields.map(\.raw) == whole.fields.map(\.raw), "split decided at \(k) with other fields")
        check(early.hadSeparator == whole.hadSeparator, "split decided at \(k) with another separator flag")
        check(whole.body.starts(with: early.body), "split decided at \(k) with another body start")
    }
    var settings = InjectSettings()
    settings.defaultHost = "example.org"
    settings.defaultDomain = "example.org"
    if let p = try? Injector.prepare(m, settings: settings, now: 1_700_000_000, pid: 42) {
        check(!p.recipients.isEmpty, "prepared with no recipients")
        var out = p.bytes[...]
        for f in whole.fields where !["bcc", "resent-bcc", "return-path", "content-length"].contains(f.key) {
            check(out.starts(with: f.raw), "prepare changed or dropped field \(f.name)")
            out = out.dropFirst(f.raw.count)
        }
    }
    return 0
}
