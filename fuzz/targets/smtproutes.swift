// Fuzz target: control/smtproutes, read the way qmail-remote reads it:
//   ControlDirectory.readLinesNumbered (control.c's readfile: blank and # lines
//   dropped, trailing blanks cut), SMTPRoutes.init(lines:file:), then
//   SMTPRoutes.route(for:) (DomainTable.lookup) for domains taken from the input.
// In memory for most inputs: the input is cut into lines by
// ControlDirectory.splitLines (blank and # lines dropped, as readLinesNumbered
// does) and given to SMTPRoutes.init(lines:file:). One input in 16
// (size % 16 == 0) also goes through the file: it is written to a control
// folder in tmpfs (/dev/shm) and loaded with SMTPRoutes.load, which must give
// the same lines and the same routes (writing a file per input made this
// target slow).
// Property: a route found has a port in 1...65535; the file and memory agree.
#if canImport(Glibc)
import Glibc
#endif
import ControlFiles
@testable import RemoteDelivery

nonisolated(unsafe) var dir = ""

func put(_ name: String, _ bytes: ArraySlice<UInt8>) {
    let fd = open(dir + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    check(fd >= 0, "cannot create \(dir)/\(name)")
    var off = bytes.startIndex
    while off < bytes.endIndex { let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }; check(n > 0, "write failed"); off += n }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if dir.isEmpty { dir = "/dev/shm/swiftqmail-fuzz-smtproutes-\(getpid())"; mkdir(dir, 0o700) }
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let lines = ControlDirectory.splitLines(bytes).filter { !$0.text.isEmpty && !$0.text.hasPrefix("#") }
    let memory = try? SMTPRoutes(lines: lines, file: dir + "/smtproutes")
    if size % 16 == 0 {
        put("smtproutes", bytes[...])
        let control = ControlDirectory(path: dir)
        let fromFile = try? control.readLinesNumbered("smtproutes")
        check(fromFile.map { $0.map(\.line) } == lines.map(\.line) && fromFile.map { $0.map(\.text) } == lines.map(\.text),
              "readLinesNumbered differs from the lines in memory")
        check((try? SMTPRoutes.load(control)) == memory, "SMTPRoutes.load differs from the routes made in memory")
    }
    guard let routes = memory else { return 0 }
    var domains = ["", "example.com", "a.b.example.com", "EXAMPLE.COM"]
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n").prefix(64) {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let key = String(line[..<colon])
        domains += [key, "x" + key, "mail." + key, key.uppercased()]
    }
    for d in domains {
        if let r = routes.route(for: d) { check(r.port > 0 && r.port < 65536, "route with port \(r.port)") }
    }
    return 0
}
