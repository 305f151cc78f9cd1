import QueueTools
import Glibc
exit(Qshape.main(Array(CommandLine.arguments.dropFirst())))
