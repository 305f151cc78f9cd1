// qreceipt: in .qmail, `|qreceipt youraddress` — answer a
// Notice-Requested-Upon-Delivery-To: request (toolbox.md §1.9).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import QueueFormat
import Toolbox

let tool = Tool("qreceipt")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: qreceipt deliveryaddress

In a .qmail file. When the message's header has a
Notice-Requested-Upon-Delivery-To: field naming deliveryaddress (exactly, after
unquoting), qreceipt sends the envelope sender a short "success notice" (from
<>), quoting the message's Message-ID. Nothing is sent for bounces (sender empty
or #@[]). Delivery always continues (exit 0).

environment: SENDER (required); QMAILQUEUE, NULLQUEUE, ERROR_FD;
  $HOME/.defaultqueue, control/defaultqueue
exit codes: 0 sent or nothing to send; 100 usage, an unparsable notice field,
  permanent queue error; 111 read error, temporary queue error
""")
guard let mine = args.first, let sender = tool.env("SENDER") else { tool.quit(100, "qreceipt: usage: qreceipt deliveryaddress") }
let message: [UInt8]
do throws(SystemError) { message = try Sys.readAll(0) } catch { tool.fatal(111, "read error") }

var messageID: [UInt8]? = nil
var asked = false
let noticeName = Array("notice-requested-upon-delivery-to".utf8)
for f in HeaderScan.fields(message) {
    let name = HeaderScan.lower(f.name)
    if name == Array("message-id".utf8) { if messageID == nil { messageID = f.text } }
    if name == noticeName {
        let value = f.text[(f.text.firstIndex(of: UInt8(ascii: ":"))! + 1)...]
        do throws(HeaderScan.ParseError) {
            if try HeaderScan.addresses(value).contains(Array(mine.utf8)) { asked = true }
        } catch {
            var shown = f.text
            while shown.last == 10 { shown.removeLast() }
            tool.fatal(100, "unable to parse this: " + String(decoding: shown, as: UTF8.self))
        }
    }
}
if !asked || sender.isEmpty || sender == "#@[]" { exit(0) }

tool.setEnvironment()
let rp = String(decoding: AddressQuoting.quote2(Array(sender.utf8)), as: UTF8.self)
var text = "From: DELIVERY NOTICE SYSTEM <\(rp)>\nTo: <\(rp)>\nSubject: success notice\n\n"
text += "Hi! This is the qreceipt program. Your message was delivered to the\nfollowing address: \(mine). Thanks for asking.\n"
let out = Outgoing(tool)
out.put(text)
if let id = messageID { out.put("Your "); out.put(id) }
let r = out.finishReporting(sender: "", recipients: [sender])
if !r.isQueued { tool.fatal(r.isPermanent ? 100 : 111, r.isPermanent ? "permanent qmail-queue error" : "temporary qmail-queue error") }
exit(0)
