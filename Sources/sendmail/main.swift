import Glibc
import Inject
exit(InjectCommandLine.main(.sendmail))
