// rrforward: in .qmail, `|rrforward .qmailrr[-ext] address1 address2 ...` —
// forward each message to the next address in turn (toolbox.md §1.4).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Toolbox

let tool = Tool("rrforward")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: rrforward .qmailrr[-ext] address1 address2 ...

In a .qmail file. Forwards the message to one of the addresses, taking them in
turn: the file .qmailrr (for .qmail) or .qmailrr-ext (for .qmail-ext) in the
home folder records the index used last. The file is locked while it is read and
written, so deliveries running at the same time each take the next address.
A file with garbage in it starts again at the first address. The message gets
$DTLINE on top and the envelope sender $NEWSENDER; rrforward prints
`rrforward: qp <pid> rr <index>` and exits 99. When the file name does not
belong to this delivery's extension, rrforward does nothing (exit 0).

environment: EXT, NEWSENDER, DTLINE (required); QMAILQUEUE, NULLQUEUE,
  ERROR_FD; $HOME/.defaultqueue, control/defaultqueue
exit codes: 0 not this extension; 99 forwarded; 100 EXT/NEWSENDER/DTLINE not
  set, queue refused for good; 111 fewer than two addresses, a bad file name,
  trouble with the sequence file, temporary queue trouble
""")
let ext = tool.required("EXT")
let newSender = tool.required("NEWSENDER")
let dtline = tool.required("DTLINE")
guard args.count >= 3 else { tool.fatal(111, "too few args (.qmailrr[-ext] rr1@domain rr2@domain ...)") }
let file = args[0]
guard file.hasPrefix(".qmailrr") else { tool.fatal(111, "\(file) doesn't begin with .qmailrr") }
if file != (ext.isEmpty ? ".qmailrr" : ".qmailrr-" + ext) { exit(0) }
let addresses = Array(args[1...])

let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
if fd == -1 { tool.fatal(111, "unable to open rr: \(file): " + errorText(errno)) }
while qs_flock(fd, LOCK_EX) == -1 {
    if qs_errno() != EINTR { tool.fatal(111, "unable to lock rr: \(file): " + errorText(qs_errno())) }
}
var previous = [UInt8](repeating: 0, count: 40)
let n = previous.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
if n < 0 { tool.fatal(111, "unable to read rr: \(file): " + errorText(errno)) }
let index = RoundRobin.next(previous: previous[0..<n], count: addresses.count)
if lseek(fd, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind rr: \(file): " + errorText(errno)) }
do throws(SystemError) { try Sys.write(fd, RoundRobin.record(index)) } catch {
    tool.fatal(111, "unable to write rr: \(file): " + errorText(error.errno))
}
close(fd)   // and with it the lock

tool.setEnvironment()
let out = Outgoing(tool)
out.put(dtline)
out.copy(from: 0)
let qp = out.finish(sender: newSender, recipients: [addresses[index]])
printError("rrforward: qp \(qp) rr \(index)")
exit(99)
