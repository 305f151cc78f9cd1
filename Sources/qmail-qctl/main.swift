import QueueTools
import Glibc
exit(QueueChange.ctlMain(Array(CommandLine.arguments.dropFirst())))
