import QueueTools
import Glibc
exit(Tcpto.listMain(Array(CommandLine.arguments.dropFirst())))
