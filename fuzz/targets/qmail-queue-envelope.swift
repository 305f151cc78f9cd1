// Fuzz target: qmail-queue's reader of the client's envelope (descriptor 1:
// `F`sender NUL, `T`recipient NUL …, NUL), Injection.writeEnvelope in
// Sources/QueueStore/Injection.swift — the one implementation of the injection
// protocol, compiled into the Embedded Swift qmail-queue through a symbolic link
// and into QueueStore, whose build this target links.
//
// The input is the client's stream, read from a file in tmpfs; the queue
// file is written to another. Oracle: a small reference model of the protocol as
// qmail-queue(8) documents it: first byte not F or a recipient not T → 79; a CR
// or LF in an address → 79 (our addition: no line breaks into SMTP commands); an
// address of 1003 bytes or more → 11; end of input early → 54; else the queue
// file is u<uid> NUL p<pid> NUL, the records as sent, then the e (QQEH) record.
// Inputs of odd length are run with a QQEH text, even ones without.
#if canImport(Glibc)
import Glibc
#endif
import CShims
import QueueFormat
import SystemIO
@testable import QueueStore

nonisolated(unsafe) var inFD: Int32 = -1
nonisolated(unsafe) var outFD: Int32 = -1

enum Model: Equatable { case ok([UInt8]), fail(QueueExitCode) }

func model(_ input: [UInt8], qqeh: [UInt8]?, uid: UInt32, pid: Int32) -> Model {
    var out = Array("u\(uid)\0p\(pid)\0".utf8)
    var i = 0
    func next() -> UInt8? { guard i < input.count else { return nil }; i += 1; return input[i - 1] }
    func address() -> QueueExitCode? {
        var count = 0
        while true {
            guard let b = next() else { return .readError }
            if b == 10 || b == 13 { return .envelopeFormat }
            out.append(b)
            if b == 0 { return nil }
            count += 1
            if count >= 1003 { return .addressTooLong }
        }
    }
    guard let f = next() else { return .fail(.readError) }
    guard f == UInt8(ascii: "F") else { return .fail(.envelopeFormat) }
    out.append(f)
    if let e = address() { return .fail(e) }
    while true {
        guard let b = next() else { return .fail(.readError) }
        if b == 0 { break }
        guard b == UInt8(ascii: "T") else { return .fail(.envelopeFormat) }
        out.append(b)
        if let e = address() { return .fail(e) }
    }
    if let qqeh, !qqeh.isEmpty {
        out.append(UInt8(ascii: "e")); out += qqeh
        if qqeh.last != 10 { out.append(10) }
        out.append(0)
    }
    return .ok(out)
}

func readAll(_ fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    lseek(fd, 0, SEEK_SET)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        check(n >= 0, "read of the queue file failed")
        if n == 0 { return out }
        out += buf[0..<n]
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if inFD < 0 {
        // Two unlinked files in tmpfs (memfd_create needs _GNU_SOURCE in the C headers).
        let base = "/dev/shm/swiftqmail-fuzz-envelope-\(getpid())"
        inFD = open(base + ".in", O_RDWR | O_CREAT | O_TRUNC, 0o600)
        outFD = open(base + ".out", O_RDWR | O_CREAT | O_TRUNC, 0o600)
        check(inFD >= 0 && outFD >= 0, "cannot create \(base).in/.out")
        unlink(base + ".in"); unlink(base + ".out")
    }
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    ftruncate(inFD, 0); lseek(inFD, 0, SEEK_SET)
    var off = 0
    while off < input.count {
        let n = input[off...].withUnsafeBytes { write(inFD, $0.baseAddress, $0.count) }
        check(n > 0, "write failed"); off += n
    }
    lseek(inFD, 0, SEEK_SET)
    ftruncate(outFD, 0); lseek(outFD, 0, SEEK_SET)

    let qqeh: [UInt8]? = size % 2 == 1 ? Array("X-Fuzz: qqeh".utf8) : nil
    let pid: Int32 = 4242
    var injection = Injection(queueDir: "/nonexistent", names: QueueNames(), sync: SyncPolicy(files: .none, directories: false),
                              received: .alias, host: nil, qqeh: qqeh)
    injection.pullTrigger = false
    var reader = BufferedReader(fd: inFD, path: "envelope")
    let got: Model
    do throws(Injection.Failure) {
        try injection.writeEnvelope(next: { () throws(Injection.Failure) -> UInt8? in
            do throws(SystemError) { return try reader.byte() } catch {
                throw Injection.Failure(.readError, "reading the envelope: " + error.reason)
            }
        }, to: outFD, path: "intd/fuzz", pid: pid)
        got = .ok(readAll(outFD))
    } catch {
        got = .fail(error.code)
    }
    let want = model(input, qqeh: qqeh, uid: getuid(), pid: pid)
    check(got == want, "writeEnvelope disagrees with the protocol: got \(got), expected \(want)")
    return 0
}
