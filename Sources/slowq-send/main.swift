import Glibc
import Engine
exit(FrontEnd.main(.slowqSend))
