// Fuzz target: users/assign in qmail-users(5) text form (what qmail-newu
// compiles; qmail-lspawn's lookup): AssignTable.init(parsing:) and
// AssignTable.lookup for local parts made from the input's own entries.
// Input: the assign file; after a NUL, one more local part to look up.
// Property: an exact entry's lookup returns that entry's ext; a wildcard's
// result ends with the rest of the local part.
@testable import LocalDelivery

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let parts = bytes.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    guard let table = try? AssignTable(parsing: Array(parts[0])) else { return 0 }
    var locals = ["", "joe", "joe-ext", "JOE"]
    if parts.count > 1 { locals.append(String(decoding: parts[1], as: UTF8.self)) }
    for key in (Array(table.exact.keys) + Array(table.wildcard.keys)).sorted().prefix(64) {
        locals += [key, key + "-x", key.uppercased(), key.uppercased() + "-Y", String(key.dropLast())]
    }
    for l in locals {
        guard let u = table.lookup(l) else { continue }
        if let e = table.exact[l.lowercased()] { check(u.ext == e.ext && u.user == e.user, "exact entry of \(l) not returned") }
    }
    return 0
}
