// Fuzz target: the rate definitions in RATELIMIT_DIR (RateControl/RateDirectory.swift,
// RateLimiter.swift):
//   RateDefinition.parse (a domain file: expression NUL count NUL start NUL last)
//   RateDirectory.options(for:) (.options: domain:mode=…,burst=…,concurrency=…)
//   RateDirectory.policy(for:channel:) (domain file, then ratecontrol lines
//   pattern[:local|:remote]:expr with fnmatch or, with QREGEX, regcomp, then .global)
// Input: a mode byte (bit 0: QREGEX, bit 1: channel "remote", bit 2: "local"), then
// parts separated by 0xFF bytes: .options, ratecontrol, .global, the file of
// example.com, and a domain to look up.
// In memory for most inputs: the parts are given to RateDirectory as memoryFiles.
// One input in 16 (size % 16 == 0) also goes through the folder: the parts are
// written to a folder in tmpfs (emptied first) and looked up there, which must
// give the same policies (for distinct domains without a NUL byte: a NUL ends
// the file's name, and a ratecontrol match writes a domain file that a second
// lookup of the same domain reads). Writing and reading the folder for every
// input made this target slow.
// Property: RateDefinition.parse(def.bytes()) == def; folder and memory agree.
#if canImport(Glibc)
import Glibc
#endif
@testable import RateControl

nonisolated(unsafe) var dir = ""

func put(_ name: String, _ bytes: ArraySlice<UInt8>?) {
    let path = dir + "/" + name
    guard let bytes else { return }
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return }   // a name the file system refuses (too long)
    var off = bytes.startIndex
    while off < bytes.endIndex { let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }; check(n > 0, "write failed"); off += n }
    close(fd)
}

func empty() {
    guard let d = opendir(dir) else { return }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(d)
    for n in names { unlink(dir + "/" + n) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if dir.isEmpty { dir = "/dev/shm/swiftqmail-fuzz-ratedefs-\(getpid())"; mkdir(dir, 0o700) }
    guard size > 0, let data else { return 0 }
    let mode = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))

    if let def = try? RateDefinition.parse(bytes) {
        check((try? RateDefinition.parse(def.bytes())) == def, "RateDefinition round trip changed \(def)")
    }

    let parts = bytes.split(separator: 0xFF, maxSplits: 4, omittingEmptySubsequences: false)
    let names = [".options", "ratecontrol", ".global", "example.com"]
    var files: [String: [UInt8]] = [:]
    for (i, name) in names.enumerated() where i < parts.count { files[name] = Array(parts[i]) }
    let channel: String? = mode & 2 != 0 ? "remote" : mode & 4 != 0 ? "local" : nil
    var domains = ["example.com", "mail.example.com", "other.net"]
    if parts.count > 4 { domains.append(String(decoding: parts[4], as: UTF8.self)) }
    var memory = RateDirectory(path: dir, useRegex: mode & 1 != 0)
    memory.memoryFiles = files
    let fromMemory = domains.map { try? memory.policy(for: $0, channel: channel) }
    if size % 16 == 0 {
        empty()
        for (i, name) in names.enumerated() where i < parts.count { put(name, parts[i]) }
        let rd = RateDirectory(path: dir, useRegex: mode & 1 != 0)
        var seen = Set<String>()
        for (i, d) in domains.enumerated() {
            let got = try? rd.policy(for: d, channel: channel)
            if !d.utf8.contains(0), seen.insert(d.lowercased()).inserted {
                check(got == fromMemory[i], "policy(for: \(d.debugDescription)): folder \(String(describing: got)), memory \(String(describing: fromMemory[i]))")
            }
        }
    }
    return 0
}
