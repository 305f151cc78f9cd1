#if canImport(Glibc)
import Glibc
#endif
import SystemIO
import ControlFiles
import RemoteDelivery
import QueueTools

/// qmail-showctl: every control file the programs of this package read, its effective
/// value and its default, with a warning for a file that does not parse and for a
/// file no program reads (qmail-showctl(8)).
struct ShowCtl {
    enum Kind { case number, line, lines, text, file }
    struct Entry {
        var name: String
        var kind: Kind
        /// The value used when the file is missing (or, for `line`, empty).
        var fallback: String
        var readers: String
    }

    static let engine = "qmail-send, slowq-send, qmta-send"
    static let client = "qmail-send's SMTP client, qmail-remote"
    static let smtpd = "qmail-smtpd"

    /// Every control file read by name (a grep of Sources for `control.read…("…")`).
    static func catalog(me: String) -> [Entry] {
        [
            Entry(name: "me", kind: .line, fallback: "(required by the engine and qmail-smtpd)", readers: "every program"),
            Entry(name: "locals", kind: .lines, fallback: me, readers: engine),
            Entry(name: "percenthack", kind: .lines, fallback: "(none)", readers: engine),
            Entry(name: "virtualdomains", kind: .lines, fallback: "(none)", readers: engine),
            Entry(name: "envnoathost", kind: .line, fallback: me, readers: engine),
            Entry(name: "concurrencylocal", kind: .number, fallback: "10", readers: engine),
            Entry(name: "concurrencyremote", kind: .number, fallback: "20", readers: engine),
            Entry(name: "concurrencyremotedomain", kind: .number, fallback: "10", readers: engine),
            Entry(name: "holdlocal", kind: .number, fallback: "0", readers: engine),
            Entry(name: "holdremote", kind: .number, fallback: "0", readers: engine),
            Entry(name: "queuelifetime", kind: .number, fallback: "604800", readers: engine),
            Entry(name: "bouncelifetime", kind: .number, fallback: "604800", readers: engine),
            Entry(name: "bouncefrom", kind: .line, fallback: "MAILER-DAEMON", readers: engine + ", maildirserial"),
            Entry(name: "bouncehost", kind: .line, fallback: me, readers: engine + ", maildirserial"),
            Entry(name: "doublebouncehost", kind: .line, fallback: me, readers: engine + ", maildirserial"),
            Entry(name: "doublebounceto", kind: .line, fallback: "postmaster", readers: engine),
            Entry(name: "bouncemaxbytes", kind: .number, fallback: "50000", readers: engine),
            Entry(name: "bouncesubject", kind: .line, fallback: "failure notice", readers: engine),
            Entry(name: "doublebouncesubject", kind: .line, fallback: "failure notice", readers: engine),
            Entry(name: "bouncemessage", kind: .text, fallback: "(the built-in text)", readers: engine),
            Entry(name: "doublebouncemessage", kind: .text, fallback: "(the built-in text)", readers: engine),
            Entry(name: "bounceformat", kind: .line, fallback: "qsbmf", readers: engine),
            Entry(name: "delaywarning", kind: .number, fallback: "0", readers: engine),
            Entry(name: "todointerval", kind: .number, fallback: "1500", readers: engine),
            Entry(name: "helohost", kind: .line, fallback: me, readers: client),
            Entry(name: "smtproutes", kind: .lines, fallback: "(none: MX records)", readers: client),
            Entry(name: "timeoutconnect", kind: .number, fallback: "60", readers: client),
            Entry(name: "timeoutremote", kind: .number, fallback: "1200", readers: client),
            Entry(name: "tlsdestinations", kind: .lines, fallback: "(none)", readers: client),
            Entry(name: "tlsca", kind: .line, fallback: "(the system's CA certificates)", readers: client),
            Entry(name: "notls", kind: .number, fallback: "0", readers: client),
            Entry(name: "moreipme", kind: .lines, fallback: "(none)", readers: client + ", " + smtpd),
            Entry(name: "notipme", kind: .lines, fallback: "(none)", readers: client + ", " + smtpd),
            Entry(name: "smtpgreeting", kind: .lines, fallback: me, readers: smtpd),
            Entry(name: "localiphost", kind: .line, fallback: me, readers: smtpd),
            Entry(name: "rcpthosts", kind: .lines, fallback: "(none: every recipient is accepted)", readers: smtpd),
            Entry(name: "morercpthosts", kind: .lines, fallback: "(none)", readers: "qmail-newmrh"),
            Entry(name: "morercpthosts.cdb", kind: .file, fallback: "(none)", readers: smtpd),
            Entry(name: "databytes", kind: .number, fallback: "0", readers: smtpd),
            Entry(name: "timeoutsmtpd", kind: .number, fallback: "1200", readers: smtpd),
            Entry(name: "badmailfrom", kind: .lines, fallback: "(none)", readers: smtpd),
            Entry(name: "badrcptto", kind: .lines, fallback: "(none)", readers: smtpd),
            Entry(name: "maxrecipients", kind: .number, fallback: "1000", readers: smtpd),
            Entry(name: "maxhops", kind: .number, fallback: "100", readers: smtpd),
            Entry(name: "maxcmdlen", kind: .number, fallback: "4096", readers: smtpd),
            Entry(name: "servercert.pem", kind: .file, fallback: "(none: no STARTTLS)", readers: smtpd),
            Entry(name: "flowwindow", kind: .number, fallback: "10, or concurrencylocal + concurrencyremote if fewer", readers: "the receivers' daemons (in-process queue)"),
            Entry(name: "flowdelay", kind: .number, fallback: "1000", readers: "the receivers' daemons (in-process queue)"),
            Entry(name: "defaulthost", kind: .line, fallback: me, readers: "qmail-inject, sendmail"),
            Entry(name: "defaultdomain", kind: .line, fallback: me, readers: "qmail-inject, sendmail"),
            Entry(name: "idhost", kind: .line, fallback: me, readers: "qmail-inject, sendmail"),
            Entry(name: "queue_base", kind: .line, fallback: "(none)", readers: "qmail-qread and the operators' tools"),
            Entry(name: "defaultqueue", kind: .file, fallback: "(none)", readers: "rrt, maildirserial (an environment folder)"),
        ]
    }

    /// Names read with a queue's name after them (`concurrencyl.queue3`).
    static let perQueuePrefixes = ["concurrencyl.", "concurrencyr.", "bounceformat."]

    static let usage = """
        usage: qmail-showctl [-c controldir]
          lists every control file this package reads: its value, or its default,
          and who reads it; warns of a file that does not parse and of a file
          no program reads
          -c dir      the control folder (default $CONTROLDIR, else $QMAILHOME/control)
          -h, --help  this text

        """

    var out = ""
    var warnings = 0

    mutating func warn(_ s: String) { out += "warning: \(s)\n"; warnings += 1 }

    static func safe(_ s: String) -> String { String(s.map { ($0.isASCII && ($0.asciiValue! >= 32 && $0.asciiValue! <= 126)) ? $0 : "?" }) }

    mutating func show(_ e: Entry, _ control: ControlDirectory) {
        let label = e.name + String(repeating: " ", count: max(0, 22 - e.name.count)) + ": "
        let path = control.filePath(e.name)
        var st = stat()
        if lstat(path, &st) != 0 {
            out += label + e.fallback + " (Default)\n"
            return
        }
        if e.kind == .file {
            out += label + "present\n"
            return
        }
        let raw: [UInt8]
        do {
            guard let r = try control.readRaw(e.name) else { out += label + e.fallback + " (Default)\n"; return }
            raw = r
        } catch {
            out += label + "(unreadable)\n"
            warn("\(error)")
            return
        }
        let lines = ControlDirectory.splitLines(raw)
        switch e.kind {
        case .number:
            let first = lines.first?.text.drop(while: { $0 == " " || $0 == "\t" }) ?? ""
            if first.isEmpty { out += label + e.fallback + " (Default: the file is empty)\n"; return }
            if Int(first) == nil {
                out += label + ShowCtl.safe(String(first)) + "\n"
                warn("\(path):\(lines.first!.line): expected a number, found \"\(ShowCtl.safe(String(first)))\"")
            } else {
                out += label + "\(Int(first)!)\n"
            }
        case .line:
            guard let first = lines.first, !first.text.isEmpty else { out += label + e.fallback + " (Default: the file is empty)\n"; return }
            out += label + ShowCtl.safe(first.text) + "\n"
            if lines.count > 1 { warn("\(path): only the first line is read; \(lines.count - 1) more ignored") }
        case .lines:
            // As the programs read lists: blank and comment lines dropped.
            let items = lines.filter { !$0.text.isEmpty && !$0.text.hasPrefix("#") }
            if items.isEmpty { out += label + "(empty)\n"; return }
            for (k, l) in items.enumerated() {
                out += (k == 0 ? label : String(repeating: " ", count: label.count)) + ShowCtl.safe(l.text) + "\n"
            }
        case .text:
            out += label + "\(raw.count) bytes\n"
        case .file:
            break
        }
    }

    static func main(_ args: [String]) -> Int32 {
        var control = ControlDirectory.fromEnvironment()
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            switch a {
            case "-h", "--help": printOut(usage); return 0
            case "-c":
                guard i < args.count else { printError("qmail-showctl: fatal: -c needs a folder\n" + usage); return 100 }
                control = ControlDirectory(path: args[i]); i += 1
            default:
                printError("qmail-showctl: fatal: unknown argument \(a)\n" + usage)
                return 100
            }
        }
        guard let names = try? Sys.listDirectory(control.path) else {
            printError("qmail-showctl: fatal: unable to read \(control.path): \(String(cString: strerror(errno)))\n")
            return 111
        }
        var s = ShowCtl()
        s.out += "qmail home directory: \(Paths.qmailHome)\n"
        s.out += "control directory: \(control.path)\n"
        for q in QueueLocation.defaultQueues() where Sys.exists(q) {
            let loc = QueueLocation.detect(q)
            s.out += "queue: \(q) (split \(loc.names.split), big todo \(loc.names.bigTodo ? "yes" : "no"))\n"
        }
        s.out += "\n"
        let me = ((try? control.readLine("me")) ?? nil).flatMap { $0.isEmpty ? nil : ShowCtl.safe($0) } ?? "(me)"
        let catalog = catalog(me: me)
        for e in catalog { s.show(e, control) }
        // Per-queue overrides that exist.
        for name in names.sorted() where perQueuePrefixes.contains(where: { name.hasPrefix($0) }) {
            let base = name.hasPrefix("bounceformat.") ? "bounceformat" : name.hasPrefix("concurrencyl.") ? "concurrencylocal" : "concurrencyremote"
            s.show(Entry(name: name, kind: base == "bounceformat" ? .line : .number, fallback: base, readers: engine), control)
        }
        // Rules across files, as the programs apply them.
        do { _ = try EngineControls.load(from: control) } catch { s.warn("the engine would not start: \(error)") }
        do { _ = try SMTPRoutes.load(control) } catch { s.warn("\(error)") }
        var text = stat(), cdb = stat()
        if stat(control.filePath("morercpthosts"), &text) == 0 {
            if stat(control.filePath("morercpthosts.cdb"), &cdb) != 0 {
                s.warn("\(control.filePath("morercpthosts")) has no morercpthosts.cdb: run qmail-newmrh")
            } else if (cdb.st_mtim.tv_sec, cdb.st_mtim.tv_nsec) < (text.st_mtim.tv_sec, text.st_mtim.tv_nsec) {
                s.warn("\(control.filePath("morercpthosts.cdb")) is older than morercpthosts: run qmail-newmrh")
            }
        }
        // Files nobody reads: a typing error in a name is a setting silently not applied.
        let known = Set(catalog.map(\.name))
        for name in names.sorted() where !known.contains(name) && !perQueuePrefixes.contains(where: { name.hasPrefix($0) }) {
            if name.hasSuffix(".pem") || name.hasPrefix(".") || name.hasSuffix("~") { continue }
            s.warn("\(control.filePath(name)): I have no idea what this file does")
        }
        printOut(s.out)
        return s.warnings > 0 ? 1 : 0
    }
}
