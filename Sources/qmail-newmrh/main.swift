import Receivers
#if canImport(Glibc)
import Glibc
#endif

exit(NewMRH.main(Array(CommandLine.arguments.dropFirst())))
