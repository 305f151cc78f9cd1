import QueueTools
import Glibc
exit(Tcpto.clearMain(Array(CommandLine.arguments.dropFirst())))
