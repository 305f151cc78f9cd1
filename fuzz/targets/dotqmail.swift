// Fuzz target: .qmail files as qmail-local reads them (LocalDelivery/QmailLocal.swift):
//   QmailLocal.carryOut — the line loop: comments, ./file and ./Maildir/,
//   |program, &forward and bare addresses, +list, indimail's ?label branches
//   and :label targets, trailing-blank cutting, NUL bytes in lines —
// run as `qmail-local -n` (printOnly: it only says what it would do, nothing is
// written or started). Also the loop check QmailLocal.hasDeliveredTo (the input
// as a message), QmailLocal.spawnEnvironment (the input as envheaders) and
// QmailLocal.safeExtension.
// Input: a flag byte (bit 0: the .qmail file has its x bit, forward-only), then the file.
// Property: what -n prints ends with "did F+W+P".
import SystemIO
@testable import LocalDelivery

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard size > 0, let data else { return 0 }
    let flags = data[0]
    let file = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))

    let user = LocalUser(user: "joe", uid: 1000, gid: 1000, home: "/nonexistent/joe", dash: "-", ext: "list")
    let req = LocalDeliveryRequest(user: user, local: "joe-list", domain: "example.com", sender: "sender@example.org",
                                   defaultDelivery: "./Maildir/\n", messageFD: -1, switchIdentity: false, printOnly: true)
    let d = QmailLocal.Delivery(req: req, message: MessageFile(bytes: []), dtline: QmailLocal.deliveredToLine(req.recipient),
                                rpline: QmailLocal.returnPathLine(req.sender), ufline: [], newSender: req.sender, defaultPart: nil)
    if !file.isEmpty {
        // As QmailLocal.run: a final line without its newline gets one.
        var cmds = file
        if cmds.last != 10 { cmds.append(10) }
        let outcome = QmailLocal.carryOut(&cmds, forwardOnly: flags & 1 != 0, d)
        if outcome.exitCode == 0 {
            // By bytes: a Character-wise split would not cut "\r\n" (one grapheme).
            let lines = Array(outcome.text.utf8).split(separator: 10)
            check(lines.last?.starts(with: Array("did ".utf8)) == true, "-n output does not end with did: \(outcome.text.debugDescription)")
        }
    }
    _ = QmailLocal.hasDeliveredTo(file, d.dtline)
    _ = QmailLocal.spawnEnvironment(messid: "1/2", envHeaders: file)
    _ = QmailLocal.safeExtension(String(decoding: file.prefix(256), as: UTF8.self))
    return 0
}
