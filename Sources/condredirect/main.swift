// condredirect: in .qmail, `|condredirect [-r] newaddress program [arg ...]` —
// forward the message when the program says so (toolbox.md §1.2).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("condredirect")
let usage = "usage: condredirect [ -r ] newaddress program [ arg ... ]"
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
\(usage)

In a .qmail file. Runs program with the message on descriptor 0. If it exits 0,
condredirect queues the message for newaddress (from $SENDER, with $DTLINE and
$QQEH on top) and exits 99, so later .qmail lines do not run; any other exit
(or a program that cannot be found) lets delivery continue (exit 0). With -r
the sense is reversed: exit 0 continues, any other exit forwards. Exit 100 and
111 of the program are passed on as permanent and temporary errors. The sender
is rewritten with SRS when the SRS controls are set, as forward(1) does.

environment: SENDER, DTLINE (required when forwarding), QQEH; QMAILQUEUE,
  NULLQUEUE, ERROR_FD; $HOME/.defaultqueue, control/defaultqueue
exit codes: 0 continue; 99 forwarded; 100 usage, program exit 100, queue
  refused for good; 111 temporary trouble (fork, wait, crash, program exit 111,
  queue)
""")

// Every argument is scanned: anything starting with '-' other than -r is refused.
var reverse = false
for a in args where a.hasPrefix("-") {
    let b = Array(a.utf8)
    if b.count < 2 || b[1] != UInt8(ascii: "r") { tool.quit(100, "condredirect: Invalid option \(a)\n\(usage)") }
    if a == "-r" { reverse = true }
}
let operands = reverse ? Array(args.dropFirst()) : args
guard operands.count >= 2 else { tool.quit(100, "condredirect: \(usage)") }
let newAddress = operands[0]
let program = Array(operands[1...])

var forwardIt = false
switch Child.run(program, notFound: 2) {
case .waitFailed: tool.fatal(111, "wait failed")
case .crashed: tool.fatal(111, "child crashed")
case .exited(let code):
    switch code {
    case 100: tool.fatal(100, "permanent child error")
    case 111: tool.fatal(111, "temporary child error")
    case 0: forwardIt = !reverse
    default: forwardIt = reverse
    }
}
if !forwardIt { exit(0) }

if lseek(0, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind: " + errorText(errno)) }
guard let sender = tool.env("SENDER") else { tool.fatal(100, "SENDER not set") }
guard let dtline = tool.env("DTLINE") else { tool.fatal(100, "DTLINE not set") }
tool.setEnvironment()
let forwardSender = tool.srsSender(sender)
let out = Outgoing(tool)
out.put(dtline)
if let qqeh = tool.env("QQEH") { out.put(qqeh) }
out.copy(from: 0)
let qp = out.finish(sender: forwardSender, recipients: [newAddress])
printError("condredirect: qp \(qp)")
exit(99)
