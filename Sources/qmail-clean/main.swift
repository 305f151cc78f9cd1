import Glibc
import QueueFormat
import QueueStore
import SystemIO

let help = """
usage: qmail-clean

Removes queue files on behalf of the engine, which runs as qmails and may not
write mess/, intd/ or todo/ (owned by qmailq). Started by qmail-send as qmailq
in the queue folder; reads requests on descriptor 0, each ended by NUL, and
answers each with one byte on descriptor 1 (classic qmail's protocol):

  todo/ID   remove intd/ID, then todo/ID          answer + (done) or ! (failed)
  foop/ID   remove intd/ID, then mess/SPLIT/ID    answer + or !
  drop/0    remove the spare files in pid/         answer +
  anything else                                   answer x

The intd and mess files it removes are renamed into pid/spare.0 ... pid/spare.63
while one of those names is free (else unlinked), for qmail-smtpd's daemon to
write the next messages into; drop/ removes them (the engine asks when idle).
Every 30 requests, and at start, it removes pid/ files older than 36 hours
(left by killed qmail-queue runs). Exits when its input closes.

environment: CONFSPLIT, BIGTODO (the queue's layout, as for qmail-send)
exit codes: 0 input closed; 100 output closed; 111 not started in a queue

"""
if CommandLine.arguments.count > 1 && (CommandLine.arguments[1] == "--help" || CommandLine.arguments[1] == "-h") {
    printOut(help)
    exit(0)
}
guard Sys.exists("mess"), Sys.exists("intd"), Sys.exists("todo") else {
    printError("qmail-clean: fatal: not started in a queue folder")
    exit(111)
}
signal(SIGPIPE, SIG_IGN)
let names = QueueEnvironment.names()
let files = { () -> QueueFiles in
    var f = QueueFiles(root: ".", names: names, sync: .safe)
    f.pidSpares = SpareSlots(root: ".")
    return f
}()
var untilPidCleanup = 0
var input: [UInt8] = []
var chunk = [UInt8](repeating: 0, count: 4096)

func respond(_ c: Character) {
    if (try? Sys.write(1, [c.asciiValue!])) == nil { exit(100) }
}

while true {
    if untilPidCleanup == 0 {
        files.cleanupStalePidFiles(now: Int64(time(nil)))
        untilPidCleanup = 30
    }
    guard let nul = input.firstIndex(of: 0) else {
        let n = read(0, &chunk, chunk.count)
        if n == -1 && errno == EINTR { continue }
        if n <= 0 { exit(0) }
        input += chunk[0..<n]
        if input.count > 4096 && input.firstIndex(of: 0) == nil { exit(0) }   // no request is that long
        continue
    }
    let line = Array(input[..<nul])
    input.removeFirst(nul + 1)
    untilPidCleanup -= 1
    // As qmail-clean: 5 bytes of kind, 1 to 20 digits.
    guard line.count > 5, line.count < 100, line[5...].allSatisfy({ $0 >= 48 && $0 <= 57 }),
          let id = UInt64(String(decoding: line[5...], as: UTF8.self)) else { respond("x"); continue }
    switch String(decoding: line[..<5], as: UTF8.self) {
    case "foop/": respond((try? files.removeMessFiles(id)) != nil ? "+" : "!")
    case "todo/": respond((try? files.removeTodoFiles(id)) != nil ? "+" : "!")
    case "drop/": files.pidSpares?.drop(); respond("+")
    default: respond("x")
    }
}
