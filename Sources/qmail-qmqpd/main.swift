import Receivers
#if canImport(Glibc)
import Glibc
#endif

exit(NetstringServerMain.main(.qmqp, Array(CommandLine.arguments.dropFirst())))
