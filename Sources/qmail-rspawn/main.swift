import Glibc
import Workers
import QueueFormat
import RemoteDelivery
import SystemIO
import ControlFiles

let help = """
usage: qmail-rspawn

The remote spawner of qmail's spawner protocol: reads delivery commands on
descriptor 0 (from qmail-send or qmta-send -r), delivers each recipient by SMTP
with the in-process client (connection reuse across messages), and writes one
K/Z/D report per delivery on descriptor 1, folded the way qmail-rspawn folds
qmail-remote's reports. Working directory: the queue's mess/ folder.

environment: CONTROLDIR, DNS_SERVER, TLS_CA_FILE
control files: as qmail-remote(8)
exit codes: 0 done; 111 trouble

"""
if CommandLine.arguments.count > 1 && (CommandLine.arguments[1] == "--help" || CommandLine.arguments[1] == "-h") {
    printOut(help)
    exit(0)
}
guard let settings = try? SMTPSettings.load(.fromEnvironment()) else {
    printError("qmail-rspawn: fatal: unable to read controls")
    exit(111)
}
let worker = SMTPWorker(client: SMTPClient(settings: settings))
exit(SpawnerMain.run { d, path in worker.deliver([d], messagePath: path).first?.1 ?? DeliveryReport(.deferral, "no report") })
