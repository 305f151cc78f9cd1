// printforward: print a fastforward cdb as setforward instructions (toolbox.md §1.12).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("printforward")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: printforward < data.cdb     (or: cat data.cdb | printforward)

Prints the database setforward(1) or newaliases(1) made as setforward
instructions, one command a line, with special characters quoted by
backslashes: the output fed to setforward makes the same database.
Standard input may be a pipe: it is then copied to a temporary file in
$TMPDIR (else /tmp) first, up to 4 GiB (the largest a cdb can be).

exit codes: 0 done; 100 not a fastforward database (or cut short); 111 read error
""")
/// tinycdb maps the file it reads, so standard input must be a file. When it is
/// not (`cat aliases.cdb | printforward`), it is first copied into a temporary
/// file in $TMPDIR (else /tmp), removed at once and read through its descriptor.
/// The copy stops at 4 GiB: no cdb is larger (its positions are 32-bit numbers),
/// so more input than that is not a database (exit 100).
let pipeLimit = 4 * 1024 * 1024 * 1024 - 1
@MainActor func inputPath() -> String {
    var st = stat()
    if fstat(0, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { return "/proc/self/fd/0" }
    let dir = tool.env("TMPDIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    var template = Array((dir + "/printforward.XXXXXX").utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    if fd < 0 { tool.fatal(111, "unable to create a temporary file in \(dir): " + errorText(errno)) }
    _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
    var buffer = [UInt8](repeating: 0, count: 65536)
    var total = 0
    while true {
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 { tool.fatal(111, "unable to read input: " + errorText(errno)) }
        if n == 0 { break }
        total += n
        if total > pipeLimit { tool.quit(100, "printmaillist: fatal: bad database format") }
        do throws(SystemError) { try Sys.write(fd, Array(buffer[0..<n])) } catch {
            tool.fatal(111, "unable to write a temporary file in \(dir): " + errorText(error.errno))
        }
    }
    return "/proc/self/fd/\(fd)"
}
let db: ConstantDatabase
do throws(SystemError) { db = try ConstantDatabase(path: inputPath()) } catch {
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
