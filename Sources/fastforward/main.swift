// fastforward: in .qmail-default, `|fastforward [-nNpPdD] data.cdb` — forward
// mail by a database of aliases (toolbox.md §1.12).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import ControlFiles
import Toolbox

let tool = Tool("fastforward")
let usage = "fastforward: usage: fastforward [ -nNpP ] data.cdb"
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: fastforward [ -nNpPdD ] data.cdb

In a .qmail file (typically ~alias/.qmail-default). Looks the recipient up in
data.cdb (made by setforward or newaliases): user@host, then @host, then user@.
Programs are run at once (|prog with sh -c, !prog through preline); addresses
that are themselves targets in the database are expanded (each command once,
so alias loops end); the rest are recipients of one new message, with
$DTLINE on top, from the target's owner (?owner) when there is one, else $SENDER.

options:
  -n   print what would be done (run, from, to) instead of doing it
  -N   do it (default)
  -p   pass through: an address not in the database exits 0 (later lines run);
       a forwarded message exits 99
  -P   an address not in the database bounces (default); forwarded: exit 0
  -d   the recipient is $DEFAULT@$HOST ($EXT when DEFAULT is unset)
  -D   the recipient is $RECIPIENT (default)

environment: RECIPIENT or DEFAULT/EXT and HOST, SENDER, DTLINE; QMAILQUEUE,
  NULLQUEUE, ERROR_FD; $HOME/.defaultqueue, control/defaultqueue
exit codes: 0, 99 as above; 100 unknown address (-P), usage, program or queue
  refused for good; 111 temporary trouble (database unreadable, a list file not
  world-readable, a program, the queue)
""")

var printOnly = false, passThrough = false, useDefault = false
var i = 0
while i < args.count, args[i].hasPrefix("-"), args[i] != "-" {
    if args[i] == "--" { i += 1; break }
    for c in args[i].dropFirst() {
        switch c {
        case "n": printOnly = true
        case "N": printOnly = false
        case "p": passThrough = true
        case "P": passThrough = false
        case "d": useDefault = true
        case "D": useDefault = false
        default: tool.quit(100, usage)
        }
    }
    i += 1
}
guard i < args.count else { tool.quit(100, usage) }
let cdbPath = args[i]

let recipient: String
if useDefault {
    guard let def = tool.env("DEFAULT") ?? tool.env("EXT") else { tool.fatal(100, "$DEFAULT or $EXT must be set") }
    guard let host = tool.env("HOST") else { tool.fatal(100, "$HOST must be set") }
    recipient = def + "@" + host
} else {
    guard let r = tool.env("RECIPIENT") else { tool.fatal(100, "$RECIPIENT must be set") }
    recipient = r
}
var sender = tool.env("SENDER") ?? "original envelope sender"

nonisolated(unsafe) let db: ConstantDatabase
do throws(SystemError) { db = try ConstantDatabase(path: cdbPath) } catch {
    tool.fatal(111, "unable to read \(cdbPath): " + errorText(error.errno))
}
func get(_ key: [UInt8]) throws(SystemError) -> [UInt8]? { try db.find(key) }
func readList(_ name: [UInt8]) throws(SystemError) -> [[UInt8]] {
    let path = String(decoding: name, as: UTF8.self)
    guard let st = try Sys.stat(path) else { throw SystemError("open", path: path, errno: ENOENT) }
    if st.st_mode & 0o444 != 0o444 { tool.fatal(111, "\(path) is not world-readable") }
    return SetForward.commands(try Sys.readFile(path) ?? [])
}

let rcpt = Array(recipient.utf8)
let plan: FastForwardPlan
do throws(SystemError) {
    if !sender.isEmpty && sender != "#@[]", let owner = try FastForward.owner(rcpt, get) {
        sender = String(decoding: owner, as: UTF8.self)
    }
    plan = try FastForward.expand(rcpt, get: get, readFile: readList)
} catch {
    if error.path == cdbPath { tool.fatal(111, "unable to read \(cdbPath): " + errorText(error.errno)) }
    tool.fatal(111, "unable to read \(error.path ?? ""): " + errorText(error.errno))
}
if !plan.found {
    if passThrough { exit(0) }
    tool.quit(100, "Sorry, no mailbox here by that name. (#5.1.1)")
}

func visible(_ b: [UInt8]) -> String { String(decoding: b.map { $0 < 32 ? UInt8(ascii: "_") : $0 }, as: UTF8.self) }

// Programs, each with the message from its start, qmail-local's exit-code rules.
for p in plan.programs {
    if printOnly { printError("run " + visible(p.command)); continue }
    if lseek(0, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind message: " + errorText(errno)) }
    let script = String(decoding: p.command, as: UTF8.self)
    let argv = p.preline ? [Paths.program("preline"), "sh", "-c", script] : ["/bin/sh", "-c", script]
    switch Child.run(argv) {
    case .exited(0), .exited(99): continue
    case .exited(let c) where [64, 65, 70, 76, 77, 78, 100, 112].contains(c): exit(100)
    case .crashed: tool.fatal(111, "child crashed")
    default: exit(111)
    }
}
if plan.recipients.isEmpty {
    if printOnly { printError("no forwarding") }
    exit(passThrough ? 99 : 0)
}
let recipients = plan.recipients.reversed().map { String(decoding: $0, as: UTF8.self) }
if printOnly {
    printError("from " + visible(Array(sender.utf8)))
    for r in recipients { printError("to " + visible(Array(r.utf8))) }
    exit(passThrough ? 99 : 0)
}
guard let dtline = tool.env("DTLINE") else { tool.fatal(100, "DTLINE not set") }
if lseek(0, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind message: " + errorText(errno)) }
tool.setEnvironment()
let out = Outgoing(tool)
out.put(dtline)
out.copy(from: 0)
let qp = out.finish(sender: sender, recipients: recipients)
printError("fastforward: qp \(qp)")
exit(passThrough ? 99 : 0)
