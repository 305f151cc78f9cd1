// Fuzz target: what the queue front ends parse from outside input.
//   DKIMSignOptions.parse     (DKIMSIGNOPTIONS, an operator's option string)
//   MessageHeader.parse       (the message header qmail-dkim signs and verifies)
//   MessageHeader.addressDomain, DKIMPolicy.signedHeaderNames / keyPaths
// The first input byte chooses how the rest is read. Properties checked besides
// "does not crash": header fields are in order, inside the message, end before the
// body, and each starts with its name; a parsed option string parses again to the
// same options; key paths replace every % and the names to sign are escaped.
@testable import FrontEnds

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    guard let mode = bytes.first else { return 0 }
    let rest = Array(bytes.dropFirst())
    switch mode % 3 {
    case 0:
        let text = String(decoding: rest, as: UTF8.self)
        if let o = try? DKIMSignOptions.parse(text) {
            let again = try? DKIMSignOptions.parse(text)
            check(again == o, "the same option string parsed differently")
            if let x = o.expireSeconds { check(x > 0, "non-positive expiry \(x)") }
            if let a = o.algorithms { check(!a.isEmpty && a.count <= 2, "algorithm list \(a)") }
        }
    case 1:
        let h = MessageHeader.parse(rest)
        var previousEnd = 0
        for f in h.fields {
            check(f.range.lowerBound >= previousEnd && f.range.upperBound <= rest.count, "field range \(f.range) out of order or outside")
            check(f.range.upperBound <= h.bodyOffset, "field ends after the body starts")
            check(rest[f.range].starts(with: Array(f.name.utf8)) || f.name.utf8.contains(where: { $0 >= 0x80 }), "field does not start with its name \(f.name)")
            check(!f.name.isEmpty, "empty field name")
            previousEnd = f.range.upperBound
            _ = MessageHeader.addressDomain(MessageHeader.value(of: f, in: rest))
        }
        check(h.bodyOffset <= rest.count, "body offset past the end")
        for n in DKIMPolicy.signedHeaderNames(h, excludePrefixes: ["list-"]) {
            check(!n.contains("|") || n.contains("\\|"), "unescaped | in \(n)")
            check(!n.hasPrefix("x-") || n == "x-mailer", "an X- field is signed: \(n)")
        }
    default:
        let text = String(decoding: rest, as: UTF8.self)
        let parts = text.split(separator: "\n", maxSplits: 1).map(String.init)
        let template = parts.first ?? ""
        let domain = parts.count > 1 ? parts[1].replacingOccurrences("%", "") : "example.com"
        let p = DKIMPolicy.keyPaths(template: template, domain: domain, controlDirectory: "/c")
        check(!p.first.contains("%"), "a % left in \(p.first)")
        if let w = p.withoutDomain { check(!w.contains("%") && !w.contains("//"), "bad fallback \(w)") }
        _ = DKIMPolicy.selector(ofKeyPath: p.first)
        _ = MessageHeader.addressDomain(rest)
    }
    return 0
}

extension String {
    func replacingOccurrences(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}
