// replier: in .qmail, `|replier dir address program [arg ...]` — send a
// program's output as an automatic reply (toolbox.md §1.7).
#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Toolbox

let tool = Tool("replier")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: replier dir address program [ arg ... ]

In a .qmail file. For mail to <inlocal>-<request>@..., runs program with the
message on descriptor 0 and $REQUEST ($REQUEST2..4) set, and sends what it
prints, as a reply, to address (often "$SENDER"), from <outlocal>return-@<outhost>.
The reply starts with Mailing-List: <mailinglist>, the headeradd lines and
Delivered-To: replier <outlocal><request>@<outhost>; the program's header fields
named in headerremove are left out. Bounces are never answered; a reply that
already carries the Delivered-To line or a Mailing-List field is refused (loop).
dir holds the six files inlocal, outhost, outlocal, mailinglist, headerremove,
headeradd (one item a line; blank and # lines ignored), all required.

environment: SENDER, LOCAL; QMAILQUEUE, NULLQUEUE, ERROR_FD; $HOME/.defaultqueue,
  control/defaultqueue
exit codes: 0 the program did not exit 0 (nothing sent); 99 sent; 100 usage, a
  bounce, a missing file, a wrong address, a looping reply, permanent queue
  error; 111 program exit 111, unreadable dir or file, temporary queue error,
  no end after 24 hours ("Timeout on maildir delivery. (#4.3.0)")
""")
guard args.count >= 3 else { tool.quit(100, "replier: usage: replier dir addr prog [ args ]") }
let dir = args[0], address = args[1], program = Array(args[2...])
umask(0o022)
// After 24 hours replier gives up: 111 with "Timeout on maildir delivery. (#4.3.0)"
// (toolbox.md §1.7). For the tests only, $SWIFTQMAIL_TEST_REPLIER_ALARM (a number of
// seconds, 1 to 86400) shortens the wait; nothing else reads it.
let alarmSeconds = tool.env("SWIFTQMAIL_TEST_REPLIER_ALARM").flatMap { UInt32($0) }.flatMap { (1...86400).contains($0) ? $0 : nil } ?? 86400
qs_death_alarm_saying(alarmSeconds, 111, "Timeout on maildir delivery. (#4.3.0)\n")
tool.setEnvironment()
if chdir(dir) != 0 { tool.fatal(111, "unable to switch to \(dir): " + errorText(errno)) }
if let s = tool.env("SENDER"), s.isEmpty || s == "#@[]" { tool.fatal(100, "I don't reply to bounce messages (#5.7.2)") }
guard let local = tool.env("LOCAL") else { tool.fatal(111, "LOCAL not set") }

func conf(_ name: String) -> [String] {
    let bytes: [UInt8]
    do throws(SystemError) {
        guard let b = try Sys.readFile(name) else { tool.fatal(100, "\(dir)/\(name) does not exist") }
        bytes = b
    } catch { tool.fatal(111, "unable to read \(dir)/\(name): " + errorText(error.errno)) }
    return bytes.split(separator: 10, omittingEmptySubsequences: false).compactMap { raw -> String? in
        var l = raw
        while let last = l.last, last == 32 || last == 9 { l = l.dropLast() }
        if l.isEmpty || l.first == UInt8(ascii: "#") { return nil }
        return String(decoding: l, as: UTF8.self)
    }
}
let inlocal = conf("inlocal").first ?? ""
let outhost = conf("outhost").first ?? ""
let outlocal = conf("outlocal").first ?? ""
let mailinglist = conf("mailinglist").first ?? ""
let headerremove = Set(conf("headerremove").map { HeaderScan.lower(Array($0.utf8)) })
let headeradd = conf("headeradd")

let l = Array(local.utf8), pre = Array(inlocal.utf8)
guard l.count > pre.count, HeaderScan.lower(l[0..<pre.count]) == HeaderScan.lower(pre), l[pre.count] == UInt8(ascii: "-") else {
    tool.fatal(100, "I do not accept messages at this address (#5.1.1)")
}
let request = String(decoding: l[(pre.count + 1)...], as: UTF8.self)
setenv("REQUEST", request, 1)
for n in 2...4 {
    // REQUEST2: after the first '-', REQUEST3 after the second, …
    let dashes = Array(request.utf8).enumerated().filter { $0.element == UInt8(ascii: "-") }.map { $0.offset }
    setenv("REQUEST\(n)", dashes.count >= n - 1 ? String(decoding: Array(request.utf8)[(dashes[n - 2] + 1)...], as: UTF8.self) : "", 1)
}

qs_ignore_sigpipe()
guard let pipe = try? Spawn.pipe() else { tool.fatal(111, "unable to create pipe: " + errorText(errno)) }
let (pid, e) = Child.start(program, stdout: pipe.write)
Sys.close(pipe.write)
let output = (try? Sys.readAll(pipe.read)) ?? []
Sys.close(pipe.read)
let end: Child.End = pid.map { Child.wait($0) } ?? .exited(Child.execFailureCode(e))
switch end {
case .exited(0): break
case .exited(111): tool.fatal(111, "temporary child error")
case .crashed: tool.fatal(111, "child crashed")
case .waitFailed: tool.fatal(111, "wait failed")
case .exited: exit(0)
}

let dt = Array("Delivered-To: replier \(outlocal)\(request)@\(outhost)\n".utf8)
var reply = Array("Mailing-List: \(mailinglist)\n".utf8)
for h in headeradd { reply += Array((h + "\n").utf8) }
reply += dt
// The program's header: fields named in headerremove are left out (with their
// continuation lines); our own Delivered-To line or a Mailing-List field is a loop.
var i = 0
var dropping = false
var inHeader = true
while i < output.count && inHeader {
    var e = i
    while e < output.count && output[e] != 10 { e += 1 }
    let line = Array(output[i..<min(e + 1, output.count)])
    if line == [10] { inHeader = false; break }
    if let f = line.first, f == 32 || f == 9 {
        if !dropping { reply += line }
    } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
        let name = HeaderScan.lower(line[..<colon])
        if line == dt { tool.fatal(100, "this message is looping: it already has my Delivered-To line (#5.4.6)") }
        if name == Array("mailing-list".utf8) { tool.fatal(100, "message already has Mailing-List (#5.7.2)") }
        dropping = headerremove.contains(name)
        if !dropping { reply += line }
    } else {
        inHeader = false
        break
    }
    i = e + 1
}
reply += output[min(i, output.count)...]

let out = Outgoing(tool, openFailure: "unable to run qmail-queue: ")
out.put(reply)
let qp = out.finish(sender: "\(outlocal)return-@\(outhost)", recipients: [address])
printError("replier: qp \(qp)")
exit(99)
