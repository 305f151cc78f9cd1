// srsfilter: in .qmail-srs-default, `|srsfilter` — send a bounce to an SRS
// address back to the address it stands for (toolbox.md §1.10).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import Toolbox

let tool = Tool("srsfilter")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: srsfilter

In the .qmail file that receives mail for SRS addresses (e.g. .qmail-srs-default
of the user owning srs_domain). Only bounces are handled (an empty $SENDER);
other mail is ignored (exit 0). The SRS address is $EXT2 (the extension after
its first part): it is checked (hash, age) and decoded, and the bounce is queued
for the decoded address, from <>, with its first To: field replaced by
`To: <decoded>` (other To: fields dropped; one added when there is none).

environment: SENDER, EXT2, HOST (required); QMAILQUEUE, NULLQUEUE, ERROR_FD;
  SRS_* (names of other SRS control files)
control files: srs_domain, srs_secrets, srs_maxage, srs_hashlength, srs_hashmin,
  srs_separator; doublebounceto (default postmaster), doublebouncehost (me)
exit codes: 0 queued, ignored (sender not empty) or discarded (triple bounce);
  100 a variable not set, an SRS refusal (SRS: <text>: forged or expired
  address), SRS not configured, no message body; 111 unreadable controls,
  temporary queue trouble
""")
guard let sender = tool.env("SENDER") else { tool.fatal(100, "SENDER not set") }
if !sender.isEmpty { tool.quit(0, "srsfilter: ignore: SENDER must be empty") }
let ext2 = tool.required("EXT2")
_ = tool.required("HOST")

let control = ControlDirectory.fromEnvironment()
func controlLine(_ name: String) -> String? {
    do throws(ControlError) { return try control.readLine(name) } catch { tool.fatal(111, "unable to read controls") }
}
let doubleBounceTo = controlLine("doublebounceto") ?? "postmaster"
let doubleBounceHost = controlLine("doublebouncehost") ?? controlLine("me") ?? "doublebouncehost"

var rcpt: String
switch SRSControl.reverse(Array(ext2.utf8), control: control) {
case .rewritten(let b): rcpt = String(decoding: b, as: UTF8.self)
case .error(let text): tool.fatal(100, "SRS: " + text)
case .controls: tool.fatal(111, "unable to read controls")
case .unchanged: tool.fatal(100, "unable to rewrite envelope")
}
if rcpt == "#@[]" { tool.quit(0, "srsfilter: warn: triple bounce: discarding message") }
if rcpt.isEmpty {
    if doubleBounceTo.isEmpty { tool.quit(0, "srsfilter: warn: double bounce: discarding message") }
    rcpt = doubleBounceTo + "@" + doubleBounceHost
}

tool.setEnvironment()
let out = Outgoing(tool)
// The header: the first To: field becomes ours, later ones go, continuations with them.
var reader = BufferedReader(fd: 0)
var sawTo = false
var dropping = false
var ended = false
do throws(SystemError) {
    while true {
        let (line, terminated) = try reader.read(until: 10)
        if !terminated { break }        // the end inside the header: no body
        if line.isEmpty {
            if !sawTo { out.put("To: " + rcpt + "\n") }
            out.put([10])
            ended = true
            break
        }
        if let f = line.first, f == 32 || f == 9 {
            if !dropping { out.put(line); out.put([10]) }
            continue
        }
        dropping = false
        if line.count >= 3, line[0] | 0x20 == UInt8(ascii: "t"), line[1] | 0x20 == UInt8(ascii: "o"), line[2] == UInt8(ascii: ":") {
            dropping = true
            if !sawTo { out.put("To: " + rcpt + "\n"); sawTo = true }
            continue
        }
        out.put(line)
        out.put([10])
    }
    if ended {
        try reader.drain { raw in out.put(UnsafeRawBufferPointer(raw)) }
    }
} catch {
    out.abort()
    tool.fatal(111, "unable to read message: " + errorText(error.errno))
}
if !ended {
    out.abort()
    tool.fatal(100, "unable to read message body")
}
let qp = out.finish(sender: "", recipients: [rcpt])
printError("srsfilter: qp \(qp)")
exit(0)
