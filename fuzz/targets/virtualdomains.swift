// Fuzz target: control/virtualdomains (and locals, percenthack) as the engine
// reads them: EngineControls.load over a control folder in tmpfs, then
// AddressRewriter.route (qmail-send's rewrite) and AddressRewriter.stripPrepend
// on addresses made from the input's keys.
// Input: NUL-separated parts: virtualdomains, locals, percenthack, and an
// address to route; a missing part is a missing file. control/me is fixed.
// In memory for most inputs: the parts are cut into lines by
// ControlDirectory.splitLines (blank and # lines dropped, as readLinesNumbered
// does) and virtualdomains parsed by EngineControls.virtualDomains, the
// function load uses. One input in 16 (size % 16 == 0) also goes through the
// files: the parts are written to the folder and EngineControls.load reads
// every control file, which must give the same EngineControls (writing and
// reading some 20 files per input made this target slow).
// Property: stripPrepend undoes the prepend route() added for a domain key;
// load from the files agrees with the in-memory controls.
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
    func lines(_ b: ArraySlice<UInt8>) -> [(line: Int, text: String)] {
        ControlDirectory.splitLines(Array(b)).filter { !$0.text.isEmpty && !$0.text.hasPrefix("#") }
    }
    var memory: EngineControls? = EngineControls(me: "mx.example.org")
    if parts.count > 1 { memory!.locals = Set(lines(parts[1]).map { $0.text.lowercased() }) }
    if parts.count > 2 { memory!.percentHack = Set(lines(parts[2]).map { $0.text.lowercased() }) }
    do { memory!.virtualDomains = try EngineControls.virtualDomains(lines(parts[0]), file: dir + "/virtualdomains") } catch { memory = nil }
    if size % 16 == 0 {
        put("virtualdomains", parts[0])
        put("locals", parts.count > 1 ? parts[1] : nil)
        put("percenthack", parts.count > 2 ? parts[2] : nil)
        let loaded = try? EngineControls.load(from: ControlDirectory(path: dir))
        check(loaded == memory, "load from the files: \(String(describing: loaded)), in memory: \(String(describing: memory))")
    }
    guard let controls = memory else { return 0 }
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
