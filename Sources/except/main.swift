// except: in .qmail, `|except program [arg ...]` — turn a program's success
// into a bounce and its failure into success (toolbox.md §1.5).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("except")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: except program [ arg ... ]

In a .qmail file. Runs program with the message on descriptor 0 and reverses
its verdict: exit 0 becomes 100 (the message bounces with the program's
output); exit 111 stays a temporary error; any other exit becomes 0.

exit codes: 0 program failed; 100 program succeeded (or usage); 111 temporary
  trouble (program exit 111, fork, wait, crash)
""")
guard !args.isEmpty else { tool.quit(100, "except: usage: except program [ arg ... ]") }
switch Child.run(args) {
case .waitFailed: tool.fatal(111, "wait failed")
case .crashed: tool.fatal(111, "child crashed")
case .exited(0): exit(100)
case .exited(111): tool.fatal(111, "temporary child error")
case .exited: exit(0)
}
