// Fuzz target: sendmail's aliases file as newaliases reads it
// (Sources/Toolbox/Aliases.swift with HeaderScan.swift and FastForward.swift,
// compiled in as source). Input: the aliases file.
// Properties: a failure is one of newaliases' texts with exit 100 or 111;
// otherwise every record is a fastforward record printforward can print
// (`:` keys with NUL-ended commands, `?` keys with an owner), and every
// address it forwards to has an @ and is at most 800 bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let c = Aliases.Completion(defaultHost: Array("example.com".utf8), defaultDomain: Array("example.com".utf8),
                               plusDomain: Array("plus.example.com".utf8))
    let records: [(key: [UInt8], data: [UInt8])]
    do { records = try Aliases.records(bytes, c) } catch {
        check(error.code == 100 || error.code == 111, "exit code \(error.code)")
        return 0
    }
    for r in records {
        check(r.key.first == UInt8(ascii: ":") || r.key.first == UInt8(ascii: "?"), "bad key \(r.key)")
        if r.key.first == UInt8(ascii: ":") {
            check(r.data.isEmpty || r.data.last == 0, "commands not NUL-ended")
            if !r.data.isEmpty { check(SetForward.print(key: r.key, data: r.data) != nil, "printforward refuses \(r.key)") }
            for cmd in SetForward.commands(r.data) where cmd.first == UInt8(ascii: "&") {
                check(cmd.contains(UInt8(ascii: "@")) && cmd.count - 1 <= 800, "bad address \(cmd)")
            }
        }
    }
    return 0
}
