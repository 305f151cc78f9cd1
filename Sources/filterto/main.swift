// filterto: in .qmail, `|filterto address prog [arg ...]` — queue a program's
// output for an address (toolbox.md §1.3).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Toolbox

let tool = Tool("filterto")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: filterto newaddress program [ arg ... ]

In a .qmail file. Runs program with the message on descriptor 0 and queues what
it writes on descriptor 1, with $DTLINE on top, for newaddress (from $SENDER).
If the program exits 0 the result is queued and filterto exits 99 (later .qmail
lines do not run); exit 111 is a temporary error; any other exit queues nothing
and delivery continues (exit 0).

environment: SENDER, DTLINE (required); QMAILQUEUE, NULLQUEUE, ERROR_FD;
  $HOME/.defaultqueue, control/defaultqueue
exit codes: 0 continue; 99 queued; 100 usage, SENDER/DTLINE not set, queue
  refused for good; 111 temporary trouble (pipe, fork, program exit 111 or
  crash, queue)
""")
guard args.count >= 2 else { tool.quit(100, "filterto: usage: filterto newaddress program [ arg ... ]") }
let address = args[0]
qs_ignore_sigpipe()
guard let pipe = try? Spawn.pipe() else { tool.fatal(111, "unable to create pipe: " + errorText(errno)) }
let (started, e) = Child.start(Array(args[1...]), stdout: pipe.write)
Sys.close(pipe.write)
// An exec failure is the child's exit code (100 or 111), as in qmail's fork-and-exec.
let pid: pid_t? = started
let execFailure: Int32? = started == nil ? Child.execFailureCode(e) : nil

guard let sender = tool.env("SENDER") else { tool.fatal(100, "SENDER not set") }
guard let dtline = tool.env("DTLINE") else { tool.fatal(100, "DTLINE not set") }
tool.setEnvironment()
let out = Outgoing(tool)
out.put(dtline)
out.copy(from: pipe.read, readFailure: "unable to read program output: ")
Sys.close(pipe.read)
let end: Child.End = pid.map { Child.wait($0) } ?? .exited(execFailure ?? 100)
switch end {
case .exited(0):
    let qp = out.finish(sender: sender, recipients: [address])
    printError("filterto: qp \(qp)")
    exit(99)
case .exited(111):
    out.abort()
    tool.fatal(111, "temporary child error")
case .crashed:
    out.abort()
    tool.fatal(111, "child crashed")
case .waitFailed:
    out.abort()
    tool.fatal(111, "wait failed")
case .exited:
    out.abort()
    exit(0)
}
