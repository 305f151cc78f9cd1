// qnotify: in .qmail, `|qnotify [-n] [-h]` — send the read notice (RFC 3798
// MDN) a message asks for with Disposition-Notification-To: (toolbox.md §1.8).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import Toolbox

let tool = Tool("qnotify")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: qnotify [-n] [-h]

In a .qmail file. When the message asks for a disposition notification
(Disposition-Notification-To:, or the field named by $DISPOSITION_HEADER) and has
a Message-ID, and the address asked for is the envelope sender (domain in any
case), qnotify sends the sender a multipart/report MDN (RFC 3798, "displayed",
MDN-sent-automatically), from <>, with the message attached. Otherwise it does
nothing. Delivery always continues (exit 0).

options: -n print the notice instead of queueing it; -h attach only the
  original header (text/rfc822-headers)
environment: SENDER (else RPLINE, else the Return-Path field), RECIPIENT, HOST,
  DISPOSITION_HEADER; QMAILQUEUE, NULLQUEUE, ERROR_FD
exit codes: 0 sent or nothing to do; 1 usage or read error; 2 write error or
  unable to start the queue program; 100 permanent queue error; 111 temporary
  queue error
""")
var printOnly = false, headersOnly = false
for a in args {
    guard a.hasPrefix("-"), a.count > 1 else { tool.quit(1, "usage: qnotify [-n][-h]") }
    for c in a.dropFirst() {
        switch c {
        case "n": printOnly = true
        case "h": headersOnly = true
        default: tool.quit(1, "usage: qnotify [-n][-h]")
        }
    }
}
// The message is never held whole: the header is read (and kept), then the body
// is copied in chunks of 64 KiB, so memory does not grow with the message size.
let chunkSize = 65536
var chunk = [UInt8](repeating: 0, count: chunkSize)
var atEnd = false
/// Reads the next chunk of standard input; an empty slice at the end.
@MainActor func readChunk() -> ArraySlice<UInt8> {
    if atEnd { return [] }
    while true {
        let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { tool.quit(1, "qnotify: fatal: read error") }
        if n == 0 { atEnd = true }
        return chunk[0..<n]
    }
}

/// The addr-spec of a field value: inside <> when present; quotes and
/// backslashes removed; a source route dropped. nil when too long (> 900).
func addrSpec(_ value: some Collection<UInt8>) -> [UInt8]? {
    var v = Array(value)
    while let l = v.last, l == 10 || l == 13 || l == 32 || l == 9 { v.removeLast() }
    if let lt = v.firstIndex(of: UInt8(ascii: "<")), let gt = v[lt...].firstIndex(of: UInt8(ascii: ">")) { v = Array(v[(lt + 1)..<gt]) }
    var out: [UInt8] = []
    var esc = false
    for b in v {
        if esc { out.append(b); esc = false; continue }
        if b == UInt8(ascii: "\\") { esc = true; continue }
        if b == UInt8(ascii: "\"") { continue }
        out.append(b)
    }
    out = Array(out.drop { $0 == 32 || $0 == 9 })
    if out.first == UInt8(ascii: "@"), let c = out.firstIndex(of: UInt8(ascii: ":")) { out = Array(out[(c + 1)...]) }
    return out.count > 900 ? nil : out
}

// The header: first occurrence of each field wins; Date and Subject keep the
// first physical line with its newline.
let dispName = HeaderScan.lower(Array((tool.env("DISPOSITION_HEADER").flatMap { $0.isEmpty ? nil : $0 } ?? "Disposition-Notification-To").utf8)) + Array(": ".utf8)
var date: [UInt8]?, subject: [UInt8]?, returnPath: [UInt8]?, from: [UInt8]?, messageID: [UInt8]?, disp: [UInt8]?
var input: [UInt8] = []   // the header as read, and the start of the body read with it
var headerEnd = 0
var pos = 0
while true {
    var e = pos
    while e < input.count && input[e] != 10 { e += 1 }
    if e == input.count && !atEnd {
        // A line begun that can no longer be a field (a blank or a control byte
        // before any colon) ends the header at once, however long it grows.
        let partial = input[pos..<e]
        if let f = partial.first, f != 32, f != 9,
           let k = partial.firstIndex(where: { $0 <= 32 || $0 == 58 }), partial[k] != 58 || k == partial.startIndex { break }
        // The line is not whole yet: read on.
        input += readChunk()
        continue
    }
    if pos >= input.count { break }
    let line = Array(input[pos..<min(e + 1, input.count)])
    let isContinuation = line.first == 32 || line.first == 9
    let colon = line.firstIndex(of: UInt8(ascii: ":"))
    if !isContinuation && (colon == nil || colon == 0 || line[..<colon!].contains { $0 <= 32 }) { break }
    pos = e + 1
    headerEnd = min(pos, input.count)
    if isContinuation { continue }
    func value(_ prefix: String, caseless: Bool = false) -> [UInt8]? {
        let p = Array(prefix.utf8)
        guard line.count >= p.count else { return nil }
        let head = Array(line[0..<p.count])
        if caseless ? HeaderScan.lower(head) == HeaderScan.lower(p) : head == p { return Array(line[p.count...]) }
        return nil
    }
    if date == nil, let v = value("Date: ") { date = v }
    if subject == nil, let v = value("Subject: ") { subject = v }
    if returnPath == nil, let v = value("Return-Path: ") { guard let a = addrSpec(v) else { exit(0) }; returnPath = a }
    if from == nil, let v = value("From: ") { guard let a = addrSpec(v) else { exit(0) }; from = a }
    if messageID == nil, let v = value("Message-ID: ", caseless: true) { messageID = v }
    if disp == nil, line.count >= dispName.count, HeaderScan.lower(line[0..<dispName.count]) == dispName {
        guard let a = addrSpec(line[dispName.count...]) else { exit(0) }
        disp = a
    }
}
guard let disp, messageID != nil else { exit(0) }
var rp: [UInt8]
if let s = tool.env("SENDER") { rp = Array(s.utf8) }
else if let r = tool.env("RPLINE"), let a = addrSpec(Array(r.utf8).drop { $0 != UInt8(ascii: ":") }.dropFirst()) { rp = a }
else if let r = returnPath { rp = r }
else { exit(0) }
guard let recipient = tool.env("RECIPIENT") else { tool.quit(0, "recipient not set") }
guard let host = tool.env("HOST") else { tool.quit(0, "HOST not set") }

// The address asked for must be the return path: local part exact, domain in any case.
func split(_ a: [UInt8]) -> ([UInt8], [UInt8]) {
    guard let at = a.lastIndex(of: UInt8(ascii: "@")) else { return (a, []) }
    return (Array(a[..<at]), HeaderScan.lower(a[(at + 1)...]))
}
if rp.isEmpty || split(disp) != split(rp) { exit(0) }

// The reported recipient: a virtual domain's "host-user@host" is shown as "user@host".
var r = recipient
if r.lowercased().hasPrefix(host.lowercased() + "-") { r = String(r.dropFirst(host.count + 1)) }

let now = time(nil)
let d822 = Date822.local(now) + "\n"
let boundary = "_----------=_\(now)\(getpid())"
let subj = String(decoding: subject ?? [], as: UTF8.self)
let dispText = String(decoding: disp, as: UTF8.self)
var out = "From: <\(r)>\nDate: \(d822)Subject: Disposition Notification - \(subj)To: \(dispText)\n"
out += "MIME-Version: 1.0\n\n"
out += "Content-Type: multipart/report;  report-type=disposition-notification;\n boundary=\"\(boundary)\"\n"
out += "\n--\(boundary)\n\n"
out += "The message sent on \(String(decoding: date ?? [], as: UTF8.self))From \(String(decoding: from ?? [], as: UTF8.self)) to \(r) with \nsubject \(subj)"
out += "has been delivered at \(d822)There is no guarantee that the message has been read or understood.\n"
out += "\n--\(boundary)\nContent-Type: message/disposition-notification\n\nReporting-UA: \(dispText); IndiMail MDA\n"
out += "Original-Recipient: rfc822; \(r)\nFinal-Recipient: rfc822; \(r)\n"
out += "Disposition: automatic-action/MDN-sent-automatically; displayed\n"
out += "\n--\(boundary)\nContent-Transfer-Encoding: 8bit\nContent-Disposition: attachment\n"
out += headersOnly ? "Content-Type: text/rfc822-headers\n\n" : "Content-Type: message/rfc822\n\n"
let trailer = Array("--\(boundary)--\n\n".utf8)
/// The original: with -h its header only; else the header, then the body as it is read.
@MainActor func copyOriginal(_ put: (ArraySlice<UInt8>) -> Void) {
    if headersOnly { put(input[0..<headerEnd]); return }
    put(input[...])
    input = []
    while true {
        let c = readChunk()
        if c.isEmpty { return }
        put(c)
    }
}

if printOnly {
    var writer = BufferedWriter(fd: 1)
    var failed = false
    func write(_ b: ArraySlice<UInt8>) { if !failed { do throws(SystemError) { try writer.write(b) } catch { failed = true } } }
    write(Array(out.utf8)[...])
    copyOriginal(write)
    write(trailer[...])
    do throws(SystemError) { try writer.flush() } catch { failed = true }
    if failed { tool.quit(2, "qnotify: fatal: write error") }
    exit(0)
}
tool.setEnvironment()
let session = Outgoing(tool, openFailure: "unable to fork: ", openFailureCode: 2)
session.put(out)
copyOriginal { session.put($0) }
session.put(trailer)
let result = session.finishReporting(sender: "", recipients: [String(decoding: rp, as: UTF8.self)])
if !result.isQueued { tool.fatal(result.isPermanent ? 100 : 111, result.isPermanent ? "permanent qmail-queue error" : "temporary qmail-queue error") }
exit(0)
