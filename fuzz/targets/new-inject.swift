// Fuzz target: new-inject's parsers (Inject/HostRewriting.swift, MailboxList.swift,
// HeaderDate.swift, NewInjector.swift, Header.swift). The input is rewriting rules,
// a NUL, then a message (no NUL: the built-in rules and the whole input as message).
//   RewriteRules(lines:) and address/host rewriting, MailboxList.parse/render/fold
//   on every field, HeaderDate.parse, NewInjector.prepare.
// Properties:
//  - an address rewritten keeps its local part and gets exactly one `@` after it
//    (the empty address and `@` alone stay empty);
//  - an address list written again (quoted) reads back to the same addresses;
//  - folding only breaks lines between elements (undoing the breaks gives the
//    unfolded text back);
//  - a date read, written and read again is the same date (years 1000 and up);
//  - the header prepare writes is read back as a header that ends where it ends:
//    no generated line (a name, an address, a date) can break out of its field.
@testable import Inject

func unfold(_ b: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        if b[i] == 10, i + 2 < b.count, b[i + 1] == 32, b[i + 2] == 32 { out.append(32); i += 3; continue }
        out.append(b[i])
        i += 1
    }
    return out
}

/// An address as it reads back once written: a host that is empty is not
/// written, so a final `@` goes (and `@` alone is the empty address).
func normalized(_ a: [UInt8]) -> [UInt8] {
    var a = a
    while a.last == 64 { a.removeLast() }
    return a
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    var rules = RewriteRules.builtIn(defaultHost: Array("dh.example".utf8), plusDomain: Array("pd.example".utf8),
                                     defaultDomain: Array("dd.example".utf8))
    var message = input
    if let nul = input.firstIndex(of: 0) {
        rules = RewriteRules(rules: input[..<nul].split(separator: 10).map { Array($0) })
        message = Array(input[(nul + 1)...])
    }
    let header = HeaderBlock(parsing: message)
    for f in header.fields {
        let value = NewInjector.value(f)
        let items = MailboxList.parse(value)
        for a in MailboxList.addresses(items) {
            let r = rules.address(a)
            if a.isEmpty || a == [64] { check(r.isEmpty, "empty address rewritten to something") ; continue }
            let at = a.firstIndex(of: 64) ?? a.count
            check(r.starts(with: a[..<at]) && r.count > at && r[at] == 64, "rewriting changed the local part")
        }
        let rewritten = MailboxList.rewrite(items, rules)
        let rendered = MailboxList.render(rewritten)
        let again = MailboxList.parse(rendered)
        check(MailboxList.addresses(again).map(normalized) == MailboxList.addresses(rewritten).map(normalized),
              "a list written again reads back other addresses")
        let name = Array("To: ".utf8)
        let folded = MailboxList.fold(name: name, rendered)
        check(folded.last == 10, "a folded field without its newline")
        check(unfold(Array(folded.dropLast())) == name + unfold(rendered).map { $0 }, "folding changed the text")
        if let d = HeaderDate.parse(value), d.year >= 1000, d.year < 1_000_000_000 {
            check(HeaderDate.parse(Array(d.formatted.utf8)) == d, "a date written reads back otherwise: \(d.formatted)")
        }
    }
    var options = NewInjectOptions()
    options.recipients = [Array("arg".utf8)]
    options.strategy = UInt8(ascii: "H")
    var config = NewInjectConfig()
    config.rules = rules
    config.idAppend = Array(".42.qmail@".utf8) + rules.host(Array("idhost".utf8))
    config.fromAddress = Array("user@".utf8)
    config.senderAddress = Array("user@".utf8)
    config.name = Array("A \"quoted\"\nname".utf8)
    config.mailingLists = [Array("list@dd.example".utf8)]
    let out = NewInjector.prepare(header, options: options, config: config, now: 1_700_000_000, hasBody: true)
    let reread = HeaderBlock(parsing: out.header + Array("X\n".utf8))
    check(reread.hadSeparator && reread.body == Array("X\n".utf8), "the header written does not read back as one header")
    check(!out.recipients.contains { $0.isEmpty }, "an empty recipient")
    return 0
}
