// setforward: compile fastforward instructions into a cdb (toolbox.md §1.12).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("setforward")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: setforward data.cdb data.tmp

Reads forwarding instructions on descriptor 0 and writes them to data.cdb for
fastforward(1): data.tmp first, synced, then renamed over data.cdb.
Instructions: target: command, command, ...;  A target is user@host, @host
(any user at host) or user@ (that user at any host). A command is an address
(&address or address), |program, !program (run under preline), ./file or
/file (a list made by setmaillist), or ?owner (the envelope sender for mail
to the target). # starts a comment; spaces, tabs and newlines are ignored;
backslash quotes the next character.

exit codes: 0 done; 100 bad input (nothing replaced); 111 trouble writing
""")
guard args.count >= 2 else { tool.quit(100, "setforward: usage: setforward data.cdb data.tmp") }
let input: [UInt8]
do throws(SystemError) { input = try Sys.readAll(0) } catch { tool.fatal(111, "unable to read input: " + errorText(error.errno)) }
let records: [(key: [UInt8], data: [UInt8])]
do throws(SetForward.Failure) { records = try SetForward.parse(input) } catch { tool.fatal(100, error.message) }
do throws(SystemError) {
    let w = try ConstantDatabaseWriter(path: args[0], tmp: args[1])
    for r in records { try w.add(r.key, r.data) }
    try w.commit()
} catch {
    switch error.operation {
    case "open": tool.fatal(111, "unable to create \(args[1]): " + errorText(error.errno))
    case "rename": tool.fatal(111, "unable to move \(args[1]) to \(args[0]): " + errorText(error.errno))
    default: tool.fatal(111, "unable to write to \(args[1]): " + errorText(error.errno))
    }
}
exit(0)
