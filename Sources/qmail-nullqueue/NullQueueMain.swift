// Built with Embedded Swift, like qmail-queue (see Package.swift); Files.swift and
// SystemError.swift here are symbolic links to SystemIO's.
import CShims

/// qmail-nullqueue: accepts a message and its envelope and discards both.
@main
enum NullQueueMain {
    static let help = """
    usage: qmail-nullqueue < message 1< envelope

    Reads and discards a message on descriptor 0 and its envelope on descriptor 1,
    then exits 0: a queue program that makes mail disappear. Clients use it when
    NULLQUEUE is set. Exit codes: 0 done, 52 timeout (DEATH), 54 read error, 81 crash.

    environment:
      DEATH   seconds before giving up (default 86400)

    """

    static func main() {
        let args = Sys.arguments()
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            printOut(help)
            exit(0)
        }
        qs_crash_exit(81)
        qs_death_alarm(Sys.environment("DEATH").flatMap { UInt32($0) } ?? 86400, 52)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        for fd: Int32 in [0, 1] {
            while true {
                guard let n = try? Sys.read(fd, into: buf) else { exit(54) }
                if n == 0 { break }
            }
        }
        exit(0)
    }
}
