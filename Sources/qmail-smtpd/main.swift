import Receivers
#if canImport(Glibc)
import Glibc
#endif

exit(SMTPDMain.main(Array(CommandLine.arguments.dropFirst())))
