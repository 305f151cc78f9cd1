// bouncesaying: in .qmail, `|bouncesaying error [program [arg ...]]` —
// bounce the message with a text, always or when a program says so (toolbox.md §1.5).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("bouncesaying")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: bouncesaying error [ program [ arg ... ] ]

In a .qmail file. Without a program: prints error and exits 100, so the
message bounces with that text. With a program: runs it with the message on
descriptor 0; exit 0 → bounce as above; exit 111 → temporary error; any other
exit → delivery continues (exit 0).

exit codes: 0 continue; 100 bounce (or usage); 111 temporary trouble (program
  exit 111, fork, wait, crash)
""")
guard let error = args.first else { tool.quit(100, "bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]") }
if args.count > 1 {
    switch Child.run(Array(args.dropFirst())) {
    case .waitFailed: tool.fatal(111, "wait failed")
    case .crashed: tool.fatal(111, "child crashed")
    case .exited(0): break
    case .exited(111): tool.fatal(111, "temporary child error")
    case .exited: exit(0)
    }
}
tool.quit(100, error)
