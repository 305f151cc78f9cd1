// dot-forward: in .qmail, `|dot-forward [-nN] file ...` — follow sendmail-style
// .forward files (toolbox.md §1.11).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import ControlFiles
import Toolbox

let tool = Tool("dot-forward")
let usage = "dot-forward: usage: dot-forward [ -nN ] file ..."
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: dot-forward [ -nN ] file ...

In ~/.qmail (typically `|dot-forward .forward` then `./Maildir/`). Reads the
first of the files that exists and is not empty, sendmail's .forward format:
one or more addresses a line (an RFC 822 address list; # lines are comments).
Addresses are forwarded in one message (with $DTLINE, from $NEWSENDER); "|cmd"
runs cmd with sh -c at once, with the From_, Return-Path and Delivered-To lines
before the message; the user's own name (or \\user, or user@host) means
"deliver here too". Addresses without @ get @defaulthost, without a dot in the
domain .defaultdomain, a trailing + becomes .plusdomain.

options: -n print what would be done, do nothing; -N do it (default)
environment: USER, HOST, NEWSENDER, DTLINE, RPLINE, UFLINE; QMAILQUEUE,
  NULLQUEUE, ERROR_FD
control files: me, defaulthost, defaultdomain, plusdomain
exit codes: 0 deliver here too (or no usable file: the next .qmail lines run);
  99 handled, stop; 100 usage, a program's permanent failure, queue refused for
  good; 111 unreadable controls or file, an unparsable line, file delivery, a
  program's temporary failure, temporary queue trouble
""")
var printOnly = false
var i = 0
while i < args.count, args[i].hasPrefix("-"), args[i].count > 1 {
    for c in args[i].dropFirst() {
        switch c {
        case "n": printOnly = true
        case "N": printOnly = false
        default: tool.quit(100, usage)
        }
    }
    i += 1
}
let files = Array(args[i...])
if files.isEmpty { tool.quit(100, usage) }

let ufline = tool.env("UFLINE") ?? "", rpline = tool.env("RPLINE") ?? "", dtline = tool.env("DTLINE") ?? ""
let newSender = tool.env("NEWSENDER") ?? "", user = tool.env("USER") ?? "", host = tool.env("HOST") ?? ""
tool.setEnvironment()
let control = ControlDirectory.fromEnvironment()
func controlLine(_ name: String) -> String? {
    do throws(ControlError) { return try control.readLine(name) } catch { tool.fatal(111, "unable to read controls: \(error.message)") }
}
let me = controlLine("me") ?? "me"
let defaultHost = controlLine("defaulthost") ?? me
let defaultDomain = controlLine("defaultdomain") ?? me
let plusDomain = controlLine("plusdomain") ?? me

func lower(_ s: String) -> String { String(decoding: HeaderScan.lower(Array(s.utf8)), as: UTF8.self) }

/// A program: run at once, the message after the mailbox lines; qmail-local's exit rules.
func runProgram(_ command: String) {
    qs_ignore_sigpipe()
    if lseek(0, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind message: " + errorText(errno)) }
    guard let pipe = try? Spawn.pipe() else { tool.fatal(111, "unable to create pipe: " + errorText(errno)) }
    let (pid, e) = Child.start(["/bin/sh", "-c", command], stdin: pipe.read)
    Sys.close(pipe.read)
    guard let pid else { tool.fatal(111, "unable to run /bin/sh: " + errorText(e)) }
    var w = BufferedWriter(fd: pipe.write)
    var ok = true
    do throws(SystemError) { try w.write(ufline + rpline + dtline) } catch { ok = false }
    var buffer = [UInt8](repeating: 0, count: 65536)
    while ok {
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress!, $0.count) }
        if n < 0 && qs_errno() == EINTR { continue }
        if n <= 0 { break }
        do throws(SystemError) { try w.write(buffer[0..<n]) } catch { ok = false }
    }
    if ok { try? w.flush() }
    Sys.close(pipe.write)
    switch Child.wait(pid) {
    case .exited(0), .exited(99): return
    case .exited(let c) where [64, 65, 70, 76, 77, 78, 100, 112].contains(c): exit(100)
    case .crashed: tool.fatal(111, "child crashed")
    default: exit(111)
    }
}

func complete(_ a: String) -> String {
    var addr = a
    if !addr.contains("@") { addr += "@" + defaultHost }
    if addr.hasSuffix("+") { addr = String(addr.dropLast()) + "." + plusDomain }
    if let at = addr.lastIndex(of: "@"), !addr[addr.index(after: at)...].contains(".") { addr += "." + defaultDomain }
    return addr
}

for file in files {
    let bytes: [UInt8]
    do throws(SystemError) {
        guard let b = try Sys.readFile(file) else { continue }
        bytes = b
    } catch { tool.fatal(111, "unable to open \(file): " + errorText(error.errno)) }
    var targets: [String] = []
    var direct = false
    var acted = false
    for raw in bytes.split(separator: 10) {
        let line = String(decoding: raw, as: UTF8.self)
        let trimmed = line.drop { $0 == " " || $0 == "\t" }
        if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
        var addresses: [String]
        if trimmed.hasPrefix("|") || trimmed.hasPrefix("\"|") {
            // A program line, quoted or not, is one address: it is not split at spaces.
            var p = String(trimmed)
            while p.hasSuffix(" ") || p.hasSuffix("\t") || p.hasSuffix("\r") { p.removeLast() }
            if p.hasPrefix("\"") {
                guard p.count >= 2, p.hasSuffix("\"") else { tool.fatal(111, "unable to parse this line: " + line) }
                p = String(p.dropFirst().dropLast())
            }
            addresses = [p]
        } else {
            do throws(HeaderScan.ParseError) {
                addresses = try HeaderScan.addresses(raw).map { String(decoding: $0, as: UTF8.self) }
            } catch { tool.fatal(111, "unable to parse this line: " + line) }
        }
        for a in addresses where !a.isEmpty {
            acted = true
            if (!a.contains("@") && lower(a) == lower(user)) || lower(a) == lower(user + "@" + host) {
                direct = true
                if printOnly { printError("direct delivery") }
                continue
            }
            if !a.contains("@") && a.hasPrefix("/") { tool.fatal(111, "file delivery \(a) not supported") }
            if !a.contains("@") && a.hasPrefix("|") {
                let cmd = String(a.dropFirst())
                if printOnly { printError("pipe through " + cmd) } else { runProgram(cmd) }
                continue
            }
            let t = complete(a)
            if printOnly { printError("forward " + t) }
            targets.append(t)
        }
    }
    if !acted {
        if printOnly { printError("skipping empty file " + file) }
        continue
    }
    if !targets.isEmpty && !printOnly {
        if lseek(0, 0, SEEK_SET) == -1 { tool.fatal(111, "unable to rewind message: " + errorText(errno)) }
        let out = Outgoing(tool)
        out.put(dtline)
        out.copy(from: 0)
        let r = out.finishReporting(sender: newSender, recipients: targets)
        if !r.isQueued { tool.fatal(r.isPermanent ? 100 : 111, "unable to forward message: " + r.message) }
        printError("dot-forward: info: qp \(out.session.qp)")
    }
    exit(direct ? 0 : 99)
}
exit(0)
