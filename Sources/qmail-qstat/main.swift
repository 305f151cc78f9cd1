import QueueTools
import Glibc
exit(Qstat.main(Array(CommandLine.arguments.dropFirst())))
