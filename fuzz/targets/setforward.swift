// Fuzz target: fastforward's alias source (setforward's instruction language,
// Sources/Toolbox/FastForward.swift, compiled in as source) and the expansion
// fastforward does over the records it makes.
// Input: setforward instructions.
// Properties: a parse either fails with one of setforward's texts or gives
// records whose keys start with ':' or '?'; printing the records and parsing
// the text again gives the same records (printforward | setforward round
// trip); expanding any target ends (alias loops included), handles each
// command once and never yields an address of 900 bytes or more.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    guard let records = try? SetForward.parse(bytes) else { return 0 }
    var text: [UInt8] = []
    var table: [[UInt8]: [UInt8]] = [:]
    for r in records {
        check(r.key.first == UInt8(ascii: ":") || r.key.first == UInt8(ascii: "?"), "bad key \(r.key)")
        if table[r.key] == nil { table[r.key] = r.data }
        guard let t = SetForward.print(key: r.key, data: r.data) else {
            check(false, "printforward refuses a record setforward made: \(r.key) \(r.data)"); return 0
        }
        text += t
    }
    do {
        let again = try SetForward.parse(text)
        check(again.map { $0.key } == records.map { $0.key } && again.map { $0.data } == records.map { $0.data },
              "round trip changed the records")
    } catch {
        check(false, "printforward's text does not parse: \(error)")
    }
    for key in table.keys.prefix(16) where key.first == UInt8(ascii: ":") {
        let plan = FastForward.expand(Array(key.dropFirst()), get: { (k: [UInt8]) throws(Never) -> [UInt8]? in table[k] },
                                      readFile: { (_: [UInt8]) throws(Never) -> [[UInt8]] in [] })
        check(plan.found, "a target is not found")
        check(Set(plan.recipients).count == plan.recipients.count, "a recipient twice")
        check(plan.recipients.allSatisfy { $0.count < 900 }, "an address of 900 bytes or more")
    }
    return 0
}
