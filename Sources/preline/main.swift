// preline: `preline [-f] [-r] [-d] [-e] cmd [arg ...]` — give a program the
// message with qmail-local's From_, Return-Path, Delivered-To and QQEH lines
// on top (toolbox.md §1.6).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Toolbox

let tool = Tool("preline")
let usage = "preline: usage: preline cmd [ arg ... ]"
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: preline [ -f ] [ -r ] [ -d ] [ -e ] cmd [ arg ... ]

In a .qmail file, for programs that expect a mailbox-style message. Runs cmd
with, on its descriptor 0: $UFLINE (the From_ line), $RPLINE (Return-Path:),
$DTLINE (Delivered-To:), $QQEH, then the message. Exits with cmd's exit code.

options:
  -f   leave out the From_ line        -r   leave out Return-Path:
  -d   leave out Delivered-To:         -e   leave out $QQEH

environment: UFLINE, RPLINE, DTLINE, QQEH (each required unless left out)
exit codes: cmd's; 100 usage or cmd cannot be run for good; 111 a required
  variable is missing, cmd crashed, or cannot be run for now
""")

var want = (f: true, r: true, d: true, e: true)
var i = 0
scan: while i < args.count {
    let a = args[i]
    if a == "--" { i += 1; break }
    if !a.hasPrefix("-") || a == "-" { break }
    for c in a.dropFirst() {
        switch c {
        case "f": want.f = false
        case "r": want.r = false
        case "d": want.d = false
        case "e": want.e = false
        default: tool.quit(100, usage)
        }
    }
    i += 1
}
let command = Array(args[i...])
if command.isEmpty { tool.quit(100, usage) }

var head = ""
for (on, name) in [(want.f, "UFLINE"), (want.r, "RPLINE"), (want.d, "DTLINE"), (want.e, "QQEH")] where on {
    guard let v = tool.env(name) else { tool.fatal(111, "No \(name) environment variable") }
    head += v
}

qs_ignore_sigpipe()
guard let pipe = try? Spawn.pipe() else { tool.fatal(111, "unable to create pipe: " + errorText(errno)) }
let (pid, e) = Child.start(command, stdin: pipe.read)
Sys.close(pipe.read)
guard let pid else {
    tool.fatal(Child.execFailureCode(e), "unable to run \(command[0]): " + errorText(e))
}
// A program that stops reading early is its own business: its exit code decides.
var writer = BufferedWriter(fd: pipe.write)
var open = true
do throws(SystemError) { try writer.write(head) } catch { open = false }
var buffer = [UInt8](repeating: 0, count: 65536)
while open {
    let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
    if n < 0 && qs_errno() == EINTR { continue }
    if n < 0 { kill(pid, SIGTERM); _ = Child.wait(pid); tool.fatal(111, "unable to read message: " + errorText(qs_errno())) }
    if n == 0 { break }
    do throws(SystemError) { try writer.write(buffer[0..<n]) } catch { open = false }
}
if open { try? writer.flush() }
Sys.close(pipe.write)
switch Child.wait(pid) {
case .exited(let code): exit(code)
case .crashed: tool.fatal(111, "child crashed")
case .waitFailed: tool.fatal(111, "wait failed")
}
