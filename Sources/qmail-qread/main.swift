import QueueTools
import Glibc
exit(Qread.main(Array(CommandLine.arguments.dropFirst())))
