// Fuzz target: queue files as QueueFormat reads them.
//   Envelope.parseQueueFile      (todo/ and intd/ files: u p F T e h records)
//   RecipientRecord.parseChannelFile  (local/ and remote/ files: T and D records)
//   InfoFile.parse               (info/ files as qmail-qread reads them: F e h records)
// Properties checked besides "does not crash": what parses re-serializes
// (queueFileBytes) to bytes that parse to the same envelope, and every channel
// record's offset points at its own type byte and text.
import QueueFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))

    if let env = try? Envelope.parseQueueFile(bytes) {
        let again: Envelope
        do { again = try Envelope.parseQueueFile(env.queueFileBytes()) } catch {
            fatalError("queueFileBytes of a parsed envelope does not parse: \(error)")
        }
        check(again == env, "queue file round trip changed the envelope")
        _ = env.clientStreamBytes()
    }

    if let info = try? InfoFile.parse(bytes) {
        var again: [UInt8] = [UInt8(ascii: "F")] + info.sender + [0]
        if let e = info.qqeh { again += [UInt8(ascii: "e")] + e + [0] }
        if let h = info.envHeaders { again += [UInt8(ascii: "h")] + h + [0] }
        check((try? InfoFile.parse(again)) == info, "info file round trip changed the records")
        check(bytes.last == 0, "an info file without a final NUL parsed")
    }

    if let records = try? RecipientRecord.parseChannelFile(bytes) {
        for r in records {
            check(r.offset >= 0 && r.offset < bytes.count, "record offset outside the file")
            check(bytes[r.offset] == (r.done ? UInt8(ascii: "D") : UInt8(ascii: "T")), "offset not at the record's type byte")
            let end = r.offset + 1 + r.address.count
            check(end < bytes.count && bytes[end] == 0 && Array(bytes[(r.offset + 1)..<end]) == r.address,
                         "record address does not match the file")
        }
    }
    return 0
}
