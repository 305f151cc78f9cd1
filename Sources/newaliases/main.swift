// newaliases: compile sendmail's aliases file into a fastforward database
// (indimail's inewaliases; toolbox.md §1.12).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import Toolbox

let tool = Tool("newaliases")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: newaliases [ aliases ]

Reads sendmail's aliases file (default /etc/aliases) and writes the database
fastforward(1) reads: aliases.tmp (mode 0644), synced, renamed to aliases.cdb
(/etc/aliases.cdb by default). Lines: alias: recipient, recipient, ...;
a line starting with a space or tab continues the previous one; # lines are
comments. A recipient is an address (completed with defaulthost, plusdomain,
defaultdomain), "|program" (run under preline), or :include:file (the list
file.bin made by setmaillist). An alias without @ stands for that user at any
host; owner-X also makes X's owner (the envelope sender of mail to X).
Use: |fastforward -d /etc/aliases.cdb in ~alias/.qmail-default.

control files: me, defaulthost, defaultdomain, plusdomain
exit codes: 0 done; 100 over-long address or NUL byte; 111 a line that does
  not parse, empty recipient, file delivery, empty :include:, trouble
  reading or writing (nothing is replaced on an error)
""")
let source = args.first ?? "/etc/aliases"
let control = ControlDirectory.fromEnvironment()
func controlLine(_ name: String) -> String? {
    do throws(ControlError) { return try control.readLine(name) } catch { tool.fatal(111, "unable to read controls: \(error.message)") }
}
let me = controlLine("me") ?? "me"
let completion = Aliases.Completion(defaultHost: Array((controlLine("defaulthost") ?? me).utf8),
                                    defaultDomain: Array((controlLine("defaultdomain") ?? me).utf8),
                                    plusDomain: Array((controlLine("plusdomain") ?? me).utf8))
let input: [UInt8]
do throws(SystemError) {
    guard let b = try Sys.readFile(source) else { tool.fatal(111, "unable to open \(source): " + errorText(ENOENT)) }
    input = b
} catch { tool.fatal(111, "unable to read \(source): " + errorText(error.errno)) }
let records: [(key: [UInt8], data: [UInt8])]
do throws(Aliases.Failure) { records = try Aliases.records(input, completion) } catch { tool.fatal(error.code, error.message) }
umask(0o033)
do throws(SystemError) {
    let w = try ConstantDatabaseWriter(path: source + ".cdb", tmp: source + ".tmp")
    for r in records { try w.add(r.key, r.data) }
    try w.commit()
} catch {
    switch error.operation {
    case "open": tool.fatal(111, "unable to create \(source).tmp: " + errorText(error.errno))
    case "rename": tool.fatal(111, "unable to move \(source).tmp to \(source).cdb: " + errorText(error.errno))
    default: tool.fatal(111, "unable to write to \(source).tmp: " + errorText(error.errno))
    }
}
exit(0)
