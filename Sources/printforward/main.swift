// printforward: print a fastforward cdb as setforward instructions (toolbox.md §1.12).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("printforward")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: printforward < data.cdb

Prints the database setforward(1) or newaliases(1) made as setforward
instructions, one command a line, with special characters quoted by
backslashes: the output fed to setforward makes the same database.

exit codes: 0 done; 100 not a fastforward database (or cut short); 111 read error
""")
// Descriptor 0 is read through /proc/self/fd/0: tinycdb maps the file.
let db: ConstantDatabase
do throws(SystemError) { db = try ConstantDatabase(path: "/proc/self/fd/0") } catch {
    if error.errno == EPROTO { tool.quit(100, "printmaillist: fatal: bad database format") }
    tool.fatal(111, "unable to read input: " + errorText(error.errno))
}
var out = BufferedWriter(fd: 1)
var bad = false
do throws(SystemError) {
    try db.forEach { key, data in
        guard !bad, let text = SetForward.print(key: key, data: data) else { bad = true; return }
        try? out.write(text)
    }
} catch {
    bad = true
}
try? out.flush()
if bad { tool.quit(100, "printmaillist: fatal: bad database format") }
exit(0)
