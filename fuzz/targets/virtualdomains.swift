// Fuzz target: control/virtualdomains (and locals, percenthack) as the engine
// reads them: EngineControls.load over a control folder in tmpfs, then
// AddressRewriter.route (qmail-send's rewrite) and AddressRewriter.stripPrepend
// on addresses made from the input's keys.
// Input: NUL-separated parts: virtualdomains, locals, percenthack, and an
// address to route; a missing part is a missing file. control/me is fixed.
// Property: stripPrepend undoes the prepend route() added for a domain key.
#if canImport(Glibc)
import Glibc
#endif
@testable import ControlFiles

nonisolated(unsafe) var dir = ""

func put(_ name: String, _ bytes: ArraySlice<UInt8>?) {
    let path = dir + "/" + name
    guard let bytes else { unlink(path); return }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    check(fd >= 0, "cannot create \(path)")
    var off = bytes.startIndex
    while off < bytes.endIndex { let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }; check(n > 0, "write failed"); off += n }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if dir.isEmpty {
        dir = "/dev/shm/swiftqmail-fuzz-virtualdomains-\(getpid())"; mkdir(dir, 0o700)
        put("me", Array("mx.example.org\n".utf8)[...])
    }
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let parts = bytes.split(separator: 0, maxSplits: 3, omittingEmptySubsequences: false)
    put("virtualdomains", parts[0])
    put("locals", parts.count > 1 ? parts[1] : nil)
    put("percenthack", parts.count > 2 ? parts[2] : nil)
    guard let controls = try? EngineControls.load(from: ControlDirectory(path: dir)) else { return 0 }
    let rewriter = AddressRewriter(controls: controls)
    var addresses = ["joe", "joe@mx.example.org", "joe%x.y@example.com", "joe@"]
    if parts.count > 3 { addresses.append(String(decoding: parts[3], as: UTF8.self)) }
    for key in controls.virtualDomains.keys.sorted().prefix(64) {
        addresses += [key, "joe@" + key, "joe@sub." + key, "joe%" + key + "@" + key, key.uppercased()]
    }
    for a in addresses {
        switch rewriter.route(a) {
        case .local(let l):
            _ = rewriter.stripPrepend(l)
            // An address whose own domain (not the whole address) selected the prepend:
            // the bounce text shows it without the prepend again.
            if controls.percentHack.isEmpty, let at = a.lastIndex(of: "@"),
               !controls.locals.contains(a[a.index(after: at)...].lowercased()),
               controls.virtualDomains[a.lowercased()] == nil {
                let stripped = rewriter.stripPrepend(l)
                check(stripped == a, "stripPrepend(\(l)) = \(stripped), but route() made it from \(a)")
            }
        case .remote(let r): _ = rewriter.stripPrepend(r)
        }
    }
    return 0
}
