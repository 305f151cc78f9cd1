// forward: in .qmail, `|forward address ...` — queue the message again for
// other addresses (toolbox.md §1.1).
#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import Toolbox

let tool = Tool("forward")
let args = Array(Sys.arguments().dropFirst())
tool.helpIfAsked(args, """
usage: forward address ...

In a .qmail file: |forward address ...
Queues the message (descriptor 0) again for every address, from $NEWSENDER,
with the Delivered-To line of this delivery ($DTLINE), an X-Forwarded-To:
line per address, an X-Forwarded-For: line naming the sender, and $QQEH.
Later lines of the .qmail file still run (exit 0). When the SRS controls are
set (control/srs_domain, srs_secrets), the sender is rewritten to an SRS address
first (not when its domain is in rcpthosts/morercpthosts.cdb, unless
srs_alwaysrewrite is set).

environment: NEWSENDER, DTLINE (required), QQEH; QMAILQUEUE, NULLQUEUE,
  ERROR_FD (the queue-client layer); $HOME/.defaultqueue, control/defaultqueue
control files: srs_domain, srs_secrets, srs_maxage, srs_hashlength,
  srs_hashmin, srs_separator, srs_alwaysrewrite (SRS_* variables name others),
  rcpthosts, morercpthosts.cdb
exit codes: 0 queued; 100 NEWSENDER or DTLINE not set, an SRS refusal, or the
  queue refused the message for good; 111 temporary trouble (message read,
  unreadable controls, queue)
""")

guard let newSender = tool.env("NEWSENDER") else { tool.fatal(100, "NEWSENDER not set") }
guard let dtline = tool.env("DTLINE") else { tool.fatal(100, "DTLINE not set") }
tool.setEnvironment()
let sender = tool.srsSender(newSender)

let out = Outgoing(tool)
out.put(dtline)
for a in args { out.put("X-Forwarded-To: " + a + "\n") }
out.put("X-Forwarded-For: " + sender + "\n")
if let qqeh = tool.env("QQEH") { out.put(qqeh) }
out.copy(from: 0)
let qp = out.finish(sender: sender, recipients: args)
printError("forward: qp \(qp)")
exit(0)
