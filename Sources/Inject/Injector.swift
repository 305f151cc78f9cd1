// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift builds of qmail-inject and sendmail. Keep it Embedded-clean:
// typed throws, no existentials, no casts.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import QueueFormat
import QueueClient
import ControlFiles
import SystemIO
#endif

/// qmail-inject's settings: command-line flags and the values from control
/// files and the environment that shape the headers it adds.
public struct InjectSettings: Sendable {
    /// Recipients named on the command line.
    public var recipients: [String] = []
    /// `-t` (sendmail) / `-h` (qmail-inject): take recipients from the header.
    public var recipientsFromHeader = false
    /// `-a`: only the command-line recipients.
    public var argumentsOnly = false
    /// `-f`: envelope sender.
    public var sender: String? = nil
    /// `-F` / `$QMAILNAME`: full name for an added From:.
    public var fullName: String? = nil
    public var user: String = "root"
    public var defaultHost: String = "localhost"
    /// `$QMAILHOST` / `$MAILHOST`: the host of an added From: and of the default
    /// envelope sender (qmail-inject's mailhost); recipients are still qualified
    /// with `defaulthost`. Nil: `defaulthost`.
    public var mailHost: String? = nil
    public var defaultDomain: String = "localhost"
    public var idHost: String = "localhost"
    /// Host for the envelope sender (`$QMAILSHOST`, else defaulthost).
    public var senderHost: String? = nil
    public var senderUser: String? = nil

    public init() {}

    /// Values from `$CONTROLDIR` (`me`, `defaulthost`, `defaultdomain`, `idhost`)
    /// and the environment (`QMAILUSER`, `MAILUSER`, `USER`, `LOGNAME`;
    /// `QMAILHOST`, `MAILHOST`; `QMAILNAME`, `MAILNAME`, `NAME`; `QMAILSUSER`, `QMAILSHOST`).
    public static func fromEnvironment(control: ControlDirectory = .fromEnvironment(),
                                       env: (String) -> String? = Sys.environment) throws(ControlError) -> InjectSettings {
        var s = InjectSettings()
        let me = try control.readLine("me")
        func nonEmpty(_ v: String?) -> String? { (v?.isEmpty ?? true) ? nil : v }
        s.defaultHost = nonEmpty(try control.readLine("defaulthost")) ?? nonEmpty(me) ?? "defaulthost"
        s.defaultDomain = nonEmpty(try control.readLine("defaultdomain")) ?? nonEmpty(me) ?? "defaultdomain"
        s.idHost = nonEmpty(try control.readLine("idhost")) ?? nonEmpty(me) ?? "idhost"
        s.mailHost = nonEmpty(env("QMAILHOST")) ?? nonEmpty(env("MAILHOST"))
        s.user = nonEmpty(env("QMAILUSER")) ?? nonEmpty(env("MAILUSER")) ?? nonEmpty(env("USER")) ?? nonEmpty(env("LOGNAME")) ?? "anonymous"
        s.fullName = nonEmpty(env("QMAILNAME")) ?? nonEmpty(env("MAILNAME")) ?? nonEmpty(env("NAME"))
        s.senderUser = nonEmpty(env("QMAILSUSER"))
        s.senderHost = nonEmpty(env("QMAILSHOST"))
        return s
    }

    /// Line breaks in what the command line and the environment give: in an
    /// address (`-f`, a recipient argument, the user and host names an added
    /// From: and the envelope sender are made of) a CR or LF would end a header
    /// line or an SMTP command early, so it is refused (the returned text says
    /// which value). A full name (`-F`, `$QMAILNAME` …) is folded instead: each
    /// line break, with the white space after it, becomes one space.
    public mutating func refuseLineBreaks() -> String? {
        func hasBreak(_ v: String?) -> Bool { v?.utf8.contains { $0 == 10 || $0 == 13 } ?? false }
        if hasBreak(sender) { return "the envelope sender (-f) contains a line break" }
        for r in recipients where hasBreak(r) { return "a recipient argument contains a line break" }
        if hasBreak(user) { return "the user name (-f, $QMAILUSER, $MAILUSER, $USER or $LOGNAME) contains a line break" }
        if hasBreak(mailHost) { return "the mail host (-f, $QMAILHOST or $MAILHOST) contains a line break" }
        if hasBreak(senderUser) { return "$QMAILSUSER contains a line break" }
        if hasBreak(senderHost) { return "$QMAILSHOST contains a line break" }
        if let name = fullName, hasBreak(name) {
            var out: [UInt8] = []
            var afterBreak = false
            for b in name.utf8 {
                if b == 10 || b == 13 {
                    if !afterBreak && out.last != 32 { out.append(32) }
                    afterBreak = true
                } else if afterBreak && (b == 32 || b == 9) {
                    continue
                } else {
                    afterBreak = false
                    out.append(b)
                }
            }
            fullName = String(decoding: out, as: UTF8.self)
        }
        return nil
    }

    /// `user` → `user@defaulthost`; `user@host` → `user@host.defaultdomain`
    /// when the host has no dot (qmail-inject's qualification).
    public func qualify(_ address: String) -> String {
        if address.isEmpty { return address }
        guard let at = address.lastIndex(of: "@") else { return address + "@" + defaultHost }
        let host = address[address.index(after: at)...]
        if host.isEmpty { return address + defaultHost }
        if !host.contains(".") && !host.hasPrefix("[") && !defaultDomain.isEmpty {
            return address + "." + defaultDomain
        }
        return address
    }
}

/// A message ready for the queue: bytes, envelope sender and recipients.
public struct PreparedMessage: Equatable, Sendable {
    public var bytes: [UInt8]
    public var sender: String
    public var recipients: [String]
}

public enum InjectError: Error, CustomStringConvertible, Equatable {
    case noRecipients
    public var description: String {
        switch self {
        case .noRecipients: return "no recipients"
        }
    }
}

/// qmail-inject's message preparation, kept pure: header fix-ups
/// (Date, Message-ID, From added when missing; Bcc, Resent-Bcc, Return-Path and
/// Content-Length removed) and recipient extraction.
public enum Injector {
    static let recipientFields: Set<String> = ["to", "cc", "bcc", "apparently-to"]
    static let resentRecipientFields: Set<String> = ["resent-to", "resent-cc", "resent-bcc"]

    public static func prepare(_ message: [UInt8], settings: InjectSettings, now: time_t, pid: Int32) throws(InjectError) -> PreparedMessage {
        try prepare(HeaderBlock(parsing: message), complete: true, settings: settings, now: now, pid: pid)
    }

    /// `header` split from the start of the message; with `complete` false the rest
    /// of the body follows later, and the final newline is then the caller's.
    static func prepare(_ parsed: HeaderBlock, complete: Bool, settings: InjectSettings, now: time_t, pid: Int32) throws(InjectError) -> PreparedMessage {
        var header = parsed
        let resent = header.fields.contains { $0.key.hasPrefix("resent-") }

        var recipients: [String] = []
        let useHeader = settings.recipientsFromHeader || (settings.recipients.isEmpty && !settings.argumentsOnly)
        if useHeader {
            let names = resent ? resentRecipientFields : recipientFields
            for f in header.all(names) { recipients += AddressList.parse(f.value) }
        }
        recipients += settings.recipients
        recipients = recipients.map(settings.qualify)
        var seen = Set<String>()
        recipients = recipients.filter { seen.insert($0).inserted }
        if recipients.isEmpty { throw InjectError.noRecipients }

        header.remove(["bcc", "resent-bcc", "return-path", "content-length"])

        var added: [String] = []
        let fromName = resent ? "resent-from" : "from"
        let fromAddress = settings.mailHost.map { settings.user + "@" + $0 } ?? settings.qualify(settings.user)
        if header.first(fromName) == nil && header.first("from") == nil {
            if let name = settings.fullName {
                added.append("From: \(quoteDisplayName(name)) <\(fromAddress)>")
            } else {
                added.append("From: \(fromAddress)")
            }
        }
        if header.first("date") == nil {
            added.append("Date: \(Date822.local(now))")
        }
        if header.first("message-id") == nil {
            added.append("Message-ID: <\(timestamp(now)).\(pid).qmail@\(settings.idHost)>")
        }

        var out: [UInt8] = []
        out.reserveCapacity(header.body.count + 4096)
        for f in header.fields { out += f.raw }
        for line in added { out += Array(line.utf8); out.append(10) }
        out.append(10)
        out += header.body
        if complete, let last = out.last, last != 10 { out.append(10) }

        let sender: String
        if let s = settings.sender { sender = s.isEmpty ? "" : settings.qualify(s) }
        else {
            let u = settings.senderUser ?? settings.user
            sender = u + "@" + (settings.senderHost ?? settings.mailHost ?? settings.defaultHost)
        }
        return PreparedMessage(bytes: out, sender: sender, recipients: recipients)
    }

    static func quoteDisplayName(_ name: String) -> String {
        let special = Set("()<>[]:;@\\,.\"")
        if name.contains(where: { special.contains($0) }) {
            return "\"" + name.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\""
        }
        return name
    }

    /// `YYYYMMDDhhmmss` in UTC, qmail-inject's Message-ID stamp.
    static func timestamp(_ t: time_t) -> String {
        let tm = Date822.utc(t)
        func p(_ v: Int32, _ w: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s }
        return p(tm.tm_year + 1900, 4) + p(tm.tm_mon + 1, 2) + p(tm.tm_mday, 2) + p(tm.tm_hour, 2) + p(tm.tm_min, 2) + p(tm.tm_sec, 2)
    }

    /// Reads standard input, prepares, queues through the client layer.
    /// Returns the exit code: 0 queued, 100 permanent failure, 111 temporary.
    /// Only the header (and what came with it) is held in memory: the queue
    /// program starts once the header is read, and the body streams through.
    public static func run(program: String, settings: InjectSettings) -> Int32 {
        let chunkSize = 65536
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { chunk.deallocate() }
        func readFailed(_ error: SystemError) -> Int32 {
            printError("\(program): fatal: unable to read message: \(error.reason)")
            return 111
        }
        // The header: read until where it ends is decided, or to the end of input.
        var header: HeaderBlock
        var atEnd: Bool
        do throws(SystemError) {
            (header, atEnd) = try HeaderBlock.read(into: chunk) { b throws(SystemError) in try Sys.read(0, into: b, path: "standard input") }
        } catch { return readFailed(error) }
        // A failure before the queue program runs still reads the input to its end, as
        // when the whole message was read first: the writer is not left with EPIPE.
        func failEarly(_ code: Int32) -> Int32 {
            if !atEnd { Sys.discardToEnd(0) }
            return code
        }
        let prepared: PreparedMessage
        do throws(InjectError) { prepared = try prepare(header, complete: atEnd, settings: settings, now: time(nil), pid: getpid()) } catch {
            printError("\(program): fatal: \(error.description)")
            return failEarly(100)
        }
        header.body = []
        let session: QueueSession
        do throws(QueueSession.StartFailure) { session = try QueueSession() } catch {
            printError("\(program): fatal: \(String(decoding: error.text.dropFirst(), as: UTF8.self).trimmingNewlines())")
            return failEarly(error.text.first == UInt8(ascii: "D") ? 100 : 111)
        }
        session.put(prepared.bytes)
        var last = prepared.bytes.last
        let readError = atEnd ? nil : session.putRest(of: 0, chunk: chunk, last: &last)
        if !atEnd, readError == nil, last != 10 { session.put(CollectionOfOne(UInt8(10))) }
        session.from(Array(prepared.sender.utf8))
        for r in prepared.recipients { session.to(LosslessText.encode(r)) }
        let result = session.close()
        if let readError { return readFailed(readError) }
        if result.isQueued { return 0 }
        printError("\(program): fatal: \(result.message.trimmingNewlines())")
        return result.isPermanent ? 100 : 111
    }
}

extension String {
    func replacingAll(_ a: String, with b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(ofText: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    func trimmingNewlines() -> String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}

