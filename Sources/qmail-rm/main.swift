import QueueTools
import Glibc
exit(QueueChange.rmMain(Array(CommandLine.arguments.dropFirst())))
