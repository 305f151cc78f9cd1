// qmail-newu: compile users/assign into users/cdb (qmail-users(5); toolbox.md §4.3).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import Toolbox

let tool = Tool("qmail-newu")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: qmail-newu [ dir ]

Compiles dir/assign (qmail-users(5): =local:user:uid:gid:home:dash:ext: and
+prefix:user:uid:gid:home:dash:pre: lines, ended by a line "."), into
dir/cdb, the table local delivery reads in place of assign when it exists.
Written to dir/cdb.tmp, synced, then renamed: deliveries see the old table or
the new one. On a format error nothing is replaced.

dir: the argument, else $ASSIGNDIR, else $QMAILHOME/users
exit codes: 0 done; 111 bad format in assign, or trouble reading or writing
""")

let dir = args.first ?? tool.env("ASSIGNDIR").flatMap { $0.isEmpty ? nil : $0 } ?? (Paths.qmailHome + "/users")
if chdir(dir) != 0 { tool.fatal(111, "unable to chdir to \(dir): " + errorText(errno)) }
let input: [UInt8]
do throws(SystemError) {
    guard let b = try Sys.readFile("assign") else { tool.fatal(111, "unable to open users/assign: " + errorText(ENOENT)) }
    input = b
} catch {
    tool.fatal(111, "unable to read users/assign: " + errorText(error.errno))
}

func badFormat() -> Never { tool.fatal(111, "bad format in users/assign") }

var records: [([UInt8], [UInt8])] = []
var wildchars: [UInt8] = []
var pos = 0
var ended = false
while pos < input.count {
    guard let nl = input[pos...].firstIndex(of: 10) else { break }   // a last line without newline: no "." seen
    let line = Array(input[pos..<nl])
    pos = nl + 1
    if line.first == UInt8(ascii: ".") { ended = true; break }
    if line.contains(0) { badFormat() }
    guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { badFormat() }
    let kind = line[0]
    let name = line[1..<colon].map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 }
    // The six fields after the first colon, each ended by a colon.
    var fields: [ArraySlice<UInt8>] = []
    var start = colon + 1
    for _ in 0..<6 {
        guard let c = line[start...].firstIndex(of: UInt8(ascii: ":")) else { badFormat() }
        fields.append(line[start..<c])
        start = c + 1
    }
    var data: [UInt8] = []
    for (i, f) in fields.enumerated() {
        if i > 0 { data.append(0) }
        data += f
    }
    if kind == UInt8(ascii: "+") {
        if let last = name.last, !wildchars.contains(last) { wildchars.append(last) }
        records.append(([UInt8(ascii: "!")] + name, data))
    } else {
        records.append(([UInt8(ascii: "!")] + name + [0], data))
    }
}
if !ended { badFormat() }

do throws(SystemError) {
    let w = try ConstantDatabaseWriter(path: "cdb", tmp: "cdb.tmp")
    for (k, d) in records { try w.add(k, d) }
    try w.add([], wildchars)
    try w.commit()
} catch {
    switch error.operation {
    case "open": tool.fatal(111, "unable to open users/cdb.tmp: " + errorText(error.errno))
    case "rename": tool.fatal(111, "unable to move users/cdb.tmp to users/cdb: " + errorText(error.errno))
    default: tool.fatal(111, "unable to write users/cdb.tmp: " + errorText(error.errno))
    }
}
exit(0)
