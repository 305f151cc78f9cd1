import Glibc
import Workers
import LocalDelivery
import SystemIO
import ControlFiles

let help = """
usage: qmail-lspawn defaultdelivery

The local spawner of qmail's spawner protocol: reads delivery commands on
descriptor 0 (from qmail-send or qmta-send -l), delivers each local recipient
as qmail-local does (users/assign, the password file, the alias user; .qmail
files; Maildir, mbox, programs, forwards) on worker threads, and writes one
K/Z/D report per delivery on descriptor 1. Its working directory is the
queue's mess/ folder, with umask 077. Exits when its input closes and deliveries have finished.

environment: QMAILHOME (users/assign), QMAILQUEUE (for forwards)
exit codes: 0 done; 111 trouble (users/assign unreadable, output closed)

"""
if CommandLine.arguments.count > 1 && (CommandLine.arguments[1] == "--help" || CommandLine.arguments[1] == "-h") {
    printOut(help)
    exit(0)
}
// qmail-local starts with umask(077): what deliveries create is private.
umask(0o077)
let delivery = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "./Mailbox"
guard let assign = try? AssignTable.load(qmailHome: Paths.qmailHome) else {
    printError("qmail-lspawn: fatal: unable to read \(Paths.qmailHome)/users/assign")
    exit(111)
}
let worker = LocalWorker(assign: assign, defaultDelivery: delivery)
exit(SpawnerMain.run { d, path in worker.deliver(d, messagePath: path) })
