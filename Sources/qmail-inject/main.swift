import Glibc
import Inject
exit(InjectCommandLine.main(.qmailInject))
