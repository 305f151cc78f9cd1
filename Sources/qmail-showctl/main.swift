import Glibc
exit(ShowCtl.main(Array(CommandLine.arguments.dropFirst())))
