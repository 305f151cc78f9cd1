#if canImport(Glibc)
import Glibc
#endif
import SystemIO

/// Commands from the operators' tools, carried out inside the loop so that they never
/// race a delivery (docs/running.md, "Operating the queue").
///
/// A tool writes one command line to `lock/commands/<name>.tmp`, renames it to
/// `<name>.cmd` and writes a byte to `lock/trigger`. The engine looks at the folder
/// whenever the trigger fires (and at each periodic todo scan), carries each command
/// out, writes its answer to `<name>.out` (through `<name>.tmp-out` and a rename)
/// and removes the `.cmd` file. The folder is the engine's (0700), made at start.
///
/// | command | does | answer |
/// |---|---|---|
/// | `tcpok` | forgets every remote host the in-process SMTP client remembered as failing (memory and LMDB) | `ok <n>`: how many it forgot |
///
/// Anything else is answered `error unknown command` and logged.
extension Engine {
    public static let commandFolder = "lock/commands"

    func prepareCommandFolder() {
        _ = mkdir(options.queueDir + "/" + Engine.commandFolder, 0o700)
    }

    func processCommands() {
        let dir = options.queueDir + "/" + Engine.commandFolder
        guard let names = try? Sys.listDirectory(dir) else { return }
        for name in names.sorted() where name.hasSuffix(".cmd") {
            let path = dir + "/" + name
            guard let bytes = (try? Sys.readFile(path)) ?? nil else { continue }
            var text = String(decoding: bytes.prefix(4096), as: UTF8.self)
            while text.hasSuffix("\n") { text.removeLast() }
            let answer = command(text)
            let base = dir + "/" + String(name.dropLast(4))
            do {
                try Sys.writeFile(base + ".tmp-out", Array((answer + "\n").utf8), mode: 0o644)
                try Sys.rename(base + ".tmp-out", base + ".out")
            } catch {
                log.line("warning: unable to answer the command \(name): \(error)")
            }
            _ = try? Sys.unlinkIfPresent(path)
        }
    }

    func command(_ line: String) -> String {
        let words = line.split(separator: " ")
        switch words.first {
        case "tcpok":
            let n = smtp?.client.hosts.forgetAll() ?? 0
            log.line("info: qmail-tcpok: forgot \(n) remote host\(n == 1 ? "" : "s")")
            return "ok \(n)"
        default:
            log.line("warning: unknown command from lock/commands: \(EngineLog.lineSafe(String(line.prefix(200))))")
            return "error unknown command"
        }
    }
}
