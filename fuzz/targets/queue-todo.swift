// Fuzz target: the engine's own readers of queue files (QueueStore), on a
// queue in tmpfs: the input is written as todo/<id> (and an empty mess/<id>),
// then
//   QueueFiles.preprocess   (qmail-send's todo_do: todo → info, local, remote)
//   QueueFiles.info         (the info file it wrote)
//   QueueFiles.channelRecords (local/ and remote/ it wrote)
// and the input again as an info file read by QueueFiles.info. The queue is
// made once; each input finds the files the previous one left.
// Property: the records preprocess reports are the records the channel files hold.
#if canImport(Glibc)
import Glibc
#endif
import QueueFormat
@testable import QueueStore

nonisolated(unsafe) var queue: QueueFiles? = nil
let id: UInt64 = 1234

func setUp() -> QueueFiles {
    if let q = queue { return q }
    let root = "/dev/shm/swiftqmail-fuzz-queue-\(getpid())"
    let names = QueueNames(split: 1)
    for folder in QueueNames.Folder.allCases {
        mkdir(root, 0o700); mkdir(root + "/" + folder.rawValue, 0o700)
        if names.isSplit(folder) { mkdir(root + "/" + names.directory(folder, id), 0o700) }
    }
    let q = QueueFiles(root: root, names: names, sync: SyncPolicy(files: .none, directories: false))
    let fd = open(q.path(.mess, id), O_WRONLY | O_CREAT | O_TRUNC, 0o600); close(fd)
    queue = q
    return q
}

func write(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    check(fd >= 0, "cannot create \(path)")
    var off = 0
    while off < bytes.count { let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }; check(n > 0, "write failed"); off += n }
    close(fd)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    let q = setUp()
    // What the previous input left (info, and local/ or remote/) stays: preprocess
    // replaces it, as after an interrupted pass (unlinking it here cost a fifth
    // of the time and kept that path from being run).
    write(q.path(.todo, id), bytes)
    // Recipients at "local.test" (any case) are local, the rest remote.
    let route: (String) -> (local: Bool, address: String) = { a in
        (a.lowercased().hasSuffix("@local.test"), a)
    }
    if let p = try? q.preprocess(id, route: route) {
        _ = try? q.info(id)
        if p.hasLocal { check((try? q.channelRecords(id, local: true)) == p.localRecords, "local/ differs from what preprocess reported") }
        if p.hasRemote { check((try? q.channelRecords(id, local: false)) == p.remoteRecords, "remote/ differs from what preprocess reported") }
    }
    unlink(q.path(.todo, id))
    write(q.path(.info, id), bytes)
    _ = try? q.info(id)
    return 0
}
