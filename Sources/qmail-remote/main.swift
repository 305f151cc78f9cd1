import Glibc
import RemoteDelivery
exit(RemoteMain.run(Array(CommandLine.arguments.dropFirst())))
