// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift build of new-inject. Keep it Embedded-clean: typed throws,
// no existentials, no casts.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import QueueFormat
import QueueClient
import ControlFiles
import SystemIO
#endif

/// new-inject's options (toolbox.md §2.1): `-nNaAhHFIMRS -f sender`.
public struct NewInjectOptions: Equatable, Sendable {
    /// `-n`: print the envelope and message instead of queueing (`-N` undoes it).
    public var printOnly = false
    /// `a` arguments only, `h` header only, `H` both, `A` arguments if any, else header.
    public var strategy: UInt8 = UInt8(ascii: "A")
    public var killFrom = false          // -F
    public var killMessageID = false     // -I
    public var killReturnPath = false    // -S
    public var verpMessage = false       // -M
    public var verpRecipient = false     // -R
    public var sender: [UInt8]? = nil    // -f
    public var recipients: [[UInt8]] = []
    public init() {}

    public static let usage = "new-inject: usage: new-inject [ -nNaAhHFIMRS ] [ -f sender ] [ recip ... ]"

    /// `$QMAILINJECT`: the letters F I M R S, in either case; others are ignored.
    public mutating func apply(qmailInject: String) {
        for b in qmailInject.utf8 {
            switch b | 0x20 {
            case UInt8(ascii: "f"): killFrom = true
            case UInt8(ascii: "i"): killMessageID = true
            case UInt8(ascii: "m"): verpMessage = true
            case UInt8(ascii: "r"): verpRecipient = true
            case UInt8(ascii: "s"): killReturnPath = true
            default: break
            }
        }
    }

    public enum Parsed: Equatable { case run, help, usage }

    /// getopt's rules: flags may be combined (`-nH`), `-f` takes the rest of its
    /// argument or the next one, `--` or the first non-option ends the options.
    public mutating func parse(_ args: [String]) -> Parsed {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--help" { return .help }
            if a == "--" { i += 1; break }
            if !a.hasPrefix("-") || a == "-" { break }
            var letters = Array(a.utf8.dropFirst())
            while !letters.isEmpty {
                let c = letters.removeFirst()
                switch c {
                case UInt8(ascii: "n"): printOnly = true
                case UInt8(ascii: "N"): printOnly = false
                case UInt8(ascii: "a"), UInt8(ascii: "A"), UInt8(ascii: "h"), UInt8(ascii: "H"): strategy = c
                case UInt8(ascii: "F"): killFrom = true
                case UInt8(ascii: "I"): killMessageID = true
                case UInt8(ascii: "M"): verpMessage = true
                case UInt8(ascii: "R"): verpRecipient = true
                case UInt8(ascii: "S"): killReturnPath = true
                case UInt8(ascii: "f"):
                    if !letters.isEmpty { sender = letters; letters = [] } else {
                        i += 1
                        guard i < args.count else { return .usage }
                        sender = Array(args[i].utf8)
                    }
                default: return .usage
                }
            }
            i += 1
        }
        while i < args.count { recipients.append(Array(args[i].utf8)); i += 1 }
        return .run
    }
}

/// What new-inject takes from the environment and the control files.
public struct NewInjectConfig: Equatable, Sendable {
    public var rules = RewriteRules(rules: [])
    /// The Message-ID's end: `.<pid>.qmail@<idhost, rewritten>`.
    public var idAppend: [UInt8] = []
    /// `$QMAILNAME`, `$MAILNAME`, `$NAME`: the name of an added From:.
    public var name: [UInt8]? = nil
    /// The added From:'s address before rewriting: `user@host`.
    public var fromAddress: [UInt8] = []
    /// The default envelope sender before rewriting: `suser[-VERP][-]@shost`.
    public var senderAddress: [UInt8] = []
    /// `$QMAILMFTFILE`: mailing lists (lower-cased) whose posts get Mail-Followup-To.
    public var mailingLists: [[UInt8]]? = nil
    public init() {}

    public struct Failure: Error, Equatable {
        public let message: String
    }

    static func lowered(_ b: [UInt8]) -> [UInt8] { b.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 } }

    /// The sources in toolbox.md §2.1's order; the first one set wins (an
    /// environment variable set to the empty string counts as set, as in the
    /// original). `now` and `pid` give -M's VERP tag and the Message-ID.
    public static func load(options: NewInjectOptions, control: ControlDirectory, now: Int, pid: Int32,
                            env: (String) -> String?) throws(Failure) -> NewInjectConfig {
        var c = NewInjectConfig()
        func reason(_ e: ControlError) -> String {
            e.message.hasPrefix("unable to read: ") ? String(e.message.dropFirst(16)) : e.message
        }
        /// A whole file, blank and `#` lines dropped; nil when it does not exist.
        func lines(_ dir: ControlDirectory, _ name: String, _ what: String) throws(Failure) -> [String]? {
            do throws(ControlError) { return try dir.readLines(name) } catch {
                throw Failure(message: "unable to read \(what): \(reason(error))")
            }
        }
        func line(_ name: String) throws(Failure) -> String? {
            do throws(ControlError) { return try control.readLine(name) } catch {
                throw Failure(message: "unable to read \(control.filePath(name)): \(reason(error))")
            }
        }
        /// A file named by the environment: absolute, or relative to the working directory.
        func named(_ f: String, _ what: String) throws(Failure) -> [String]? {
            try lines(f.hasPrefix("/") ? control : ControlDirectory(path: "."), f, what)
        }
        if let f = env("QMAILMFTFILE"), let l = try named(f, "$QMAILMFTFILE") {
            c.mailingLists = l.map { lowered(Array($0.utf8)) }
        }
        var rewrite: [String]? = nil
        if let f = env("QMAILREWRITEFILE") { rewrite = try named(f, "$QMAILREWRITEFILE") }
        c.name = (env("QMAILNAME") ?? env("MAILNAME") ?? env("NAME")).map { Array($0.utf8) }
        let user = env("QMAILUSER") ?? env("MAILUSER") ?? env("USER") ?? env("LOGNAME") ?? "anonymous"
        let host = env("QMAILHOST") ?? env("MAILHOST") ?? ""
        var suser = env("QMAILSUSER") ?? user
        let shost = env("QMAILSHOST") ?? host
        let me = try line("me")
        /// The environment, else the control file, else `me`, else the literal fallback.
        func pick(_ variable: String, _ file: String, _ fallback: String) throws(Failure) -> String {
            if let v = env(variable) { return v }
            if let v = try line(file) { return v }
            return me ?? fallback
        }
        if rewrite == nil { rewrite = try lines(control, "rewrite", control.filePath("rewrite")) }
        if let rewrite { c.rules = RewriteRules(lines: rewrite) } else {
            let dh = try pick("QMAILDEFAULTHOST", "defaulthost", "DEFAULTHOST")
            let dd = try pick("QMAILDEFAULTDOMAIN", "defaultdomain", "DEFAULTDOMAIN")
            let pd = try pick("QMAILPLUSDOMAIN", "plusdomain", "PLUSDOMAIN")
            c.rules = .builtIn(defaultHost: Array(dh.utf8), plusDomain: Array(pd.utf8), defaultDomain: Array(dd.utf8))
        }
        let idhost = try pick("QMAILIDHOST", "idhost", "IDHOST")
        c.idAppend = Array(".\(pid).qmail@".utf8) + c.rules.host(Array(idhost.utf8))
        if options.verpMessage {
            // The low 32 bits of the TAI64 label of now (2^62 + 10 + Unix seconds), then the pid.
            let tai = UInt64(bitPattern: Int64(now)) &+ 10
            suser += "-\(UInt32(truncatingIfNeeded: tai)).\(pid)"
        }
        if options.verpRecipient { suser += "-" }
        c.senderAddress = Array((suser + "@" + shost).utf8)
        c.fromAddress = Array((user + "@" + host).utf8)
        return c
    }
}

/// The result of new-inject's header processing.
public struct NewInjectOutput: Equatable, Sendable {
    /// The new header, blank line included when a body follows.
    public var header: [UInt8]
    public var sender: [UInt8]
    public var recipients: [[UInt8]]

    /// `-n`'s envelope lines: `Envelope-Sender: <s>` and `Envelope-Recipients:` with one `  <r>,` line each.
    public var envelopeText: [UInt8] {
        var out = Array("Envelope-Sender: ".utf8) + MailboxList.quote(address: sender, text: nil) + [10]
        out += Array("Envelope-Recipients:\n".utf8)
        for r in recipients { out += [32, 32] + MailboxList.quote(address: r, text: nil) + [44, 10] }
        return out
    }
}

/// new-inject's message preparation, kept pure (no I/O) for tests and fuzzing.
public enum NewInjector {
    static let traceFields: Set<String> = ["received", "delivered-to", "errors-to", "return-receipt-to", "resent-sender",
                                           "resent-from", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc",
                                           "resent-date", "resent-message-id"]

    /// The field's value as bytes: after the colon, line breaks removed (a
    /// continuation line keeps its leading blank).
    static func value(_ f: HeaderBlock.Field) -> [UInt8] {
        guard let colon = f.raw.firstIndex(of: 58) else { return [] }
        var v: [UInt8] = []
        for b in f.raw[(colon + 1)...] where b != 10 && b != 13 { v.append(b) }
        return v
    }

    public static func prepare(_ header: HeaderBlock, options: NewInjectOptions, config: NewInjectConfig,
                               now: Int, hasBody: Bool) -> NewInjectOutput {
        var top: [UInt8] = []
        var bottom: [UInt8] = []
        var messageIDs: [UInt8] = []
        var date: HeaderDate? = nil
        var lists: [String: [MailboxItem]] = [:]
        var envelopeRecipientsField = false
        var envelopeSenderField = false
        for f in header.fields {
            let key = f.key
            switch key {
            case "date":
                if let d = HeaderDate.parse(value(f)) { date = d }
            case "to", "cc", "bcc", "apparently-to", "notice-requested-upon-delivery-to", "from", "sender", "reply-to",
                 "mail-reply-to", "mail-followup-to", "return-path", "envelope-recipients", "envelope-sender":
                let list = key == "apparently-to" ? "bcc" : key
                lists[list, default: []] += MailboxList.parse(value(f))
                if key == "envelope-recipients" { envelopeRecipientsField = true }
                if key == "envelope-sender" { envelopeSenderField = true }
            case "message-id":
                messageIDs += f.raw
            case "content-length":
                break
            default:
                if traceFields.contains(key) { top += f.raw } else { bottom += f.raw }
            }
        }
        if options.killReturnPath { lists["return-path"] = nil }
        if options.killMessageID { messageIDs = [] }
        if options.killFrom { lists["from"] = nil }
        for (k, v) in lists { lists[k] = MailboxList.rewrite(v, config.rules) }
        func list(_ k: String) -> [MailboxItem] { lists[k] ?? [] }

        // The envelope.
        var recipients: [[UInt8]] = []
        let strategy = options.strategy == UInt8(ascii: "A")
            ? (options.recipients.isEmpty ? UInt8(ascii: "h") : UInt8(ascii: "a")) : options.strategy
        if strategy != UInt8(ascii: "h") { recipients += options.recipients.map { config.rules.address($0) } }
        if strategy != UInt8(ascii: "a") {
            let fromHeader = envelopeRecipientsField ? MailboxList.addresses(list("envelope-recipients"))
                : MailboxList.addresses(list("to")) + MailboxList.addresses(list("cc")) + MailboxList.addresses(list("bcc"))
            recipients += fromHeader
        }
        recipients = recipients.filter { !$0.isEmpty }
        var sender: [UInt8]
        if let s = options.sender { sender = config.rules.address(s) }
        else if envelopeSenderField, let s = MailboxList.addresses(list("envelope-sender")).last { sender = s }
        else if let s = MailboxList.addresses(list("return-path")).last { sender = s }
        else {
            sender = config.rules.address(config.senderAddress)
            if options.verpRecipient { sender += Array("-@[]".utf8) }
        }

        // The header.
        var out = top
        let d = date ?? HeaderDate.utc(now)
        out += Array("Date: \(d.formatted)\n".utf8)
        if messageIDs.isEmpty { messageIDs = Array("Message-ID: <\(d.stamp)".utf8) + config.idAppend + Array(">\n".utf8) }
        out += messageIDs
        func put(_ name: String, _ items: [MailboxItem]) {
            if items.isEmpty { return }
            out += MailboxList.fold(name: Array(name.utf8), MailboxList.render(items))
        }
        if list("from").isEmpty {
            out += Array("From: ".utf8) + MailboxList.quote(address: config.rules.address(config.fromAddress), text: config.name) + [10]
        } else {
            put("From: ", list("from"))
        }
        put("Sender: ", list("sender"))
        put("Reply-To: ", list("reply-to"))
        put("Mail-Reply-To: ", list("mail-reply-to"))
        var followup = list("mail-followup-to")
        if followup.isEmpty, let mft = config.mailingLists {
            let named = (MailboxList.addresses(list("to")) + MailboxList.addresses(list("cc"))).contains { a in
                mft.contains(NewInjectConfig.lowered(a))
            }
            if named { followup = list("to") + list("cc") }
        }
        put("Mail-Followup-To: ", followup)
        if list("to").isEmpty && list("cc").isEmpty { out += Array("Cc: recipient list not shown: ;\n".utf8) }
        put("To: ", list("to"))
        put("Cc: ", list("cc"))
        put("Notice-Requested-Upon-Delivery-To: ", list("notice-requested-upon-delivery-to"))
        out += bottom
        if hasBody { out.append(10) }
        return NewInjectOutput(header: out, sender: sender, recipients: recipients)
    }
}
