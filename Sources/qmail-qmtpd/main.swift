import Receivers
#if canImport(Glibc)
import Glibc
#endif

exit(NetstringServerMain.main(.qmtp, Array(CommandLine.arguments.dropFirst())))
