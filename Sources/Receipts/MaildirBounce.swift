import Bounce
import QueueFormat

/// The bounce `maildirserial -b` sends for a maildir message its client refused
/// for good (indimail-mta `maildirserial.c` `bounce()`, MIME build; engine.md §7.2).
/// The message file must start with the two lines qmail-local writes:
/// `Return-Path: <S>` and `Delivered-To: R`.
public enum MaildirBounce {
    /// Controls: `bouncefrom` (MAILER-DAEMON), `bouncehost` (`me`) and the double
    /// bounce recipient `doublebounceto@doublebouncehost` (postmaster@`me`).
    public struct Settings: Sendable, Equatable {
        public var bounceFrom: String
        public var bounceHost: String
        public var doubleBounceRecipient: String

        public init(bounceFrom: String = "MAILER-DAEMON", bounceHost: String, doubleBounceRecipient: String) {
            self.bounceFrom = bounceFrom
            self.bounceHost = bounceHost
            self.doubleBounceRecipient = doubleBounceRecipient
        }
    }

    /// The two leading lines of a maildir message, and where the rest starts.
    public struct FileHead: Sendable, Equatable {
        /// S of `Return-Path: <S>` (empty for a bounce, `#@[]` for a double bounce).
        public var sender: [UInt8]
        /// R of `Delivered-To: R`.
        public var deliveredTo: [UInt8]
        /// Offset of the byte after the `Delivered-To:` line.
        public var restOffset: Int

        public init(sender: [UInt8], deliveredTo: [UInt8], restOffset: Int) {
            self.sender = sender
            self.deliveredTo = deliveredTo
            self.restOffset = restOffset
        }
    }

    static func line(_ bytes: [UInt8], from start: Int) -> Range<Int>? {
        guard start < bytes.count, let nl = bytes[start...].firstIndex(of: 10) else { return nil }
        return start..<(nl + 1)
    }

    /// Parses the head; nil = "bad file format" (the file is kept).
    public static func parseHead(_ file: [UInt8]) -> FileHead? {
        let returnPath = Array("Return-Path: <".utf8)
        let deliveredTo = Array("Delivered-To: ".utf8)
        guard let first = line(file, from: 0) else { return nil }
        let l1 = file[first]
        guard l1.count >= returnPath.count + 2, l1.starts(with: returnPath),
              l1[l1.endIndex - 2] == UInt8(ascii: ">") else { return nil }
        let sender = Array(l1[(l1.startIndex + returnPath.count)..<(l1.endIndex - 2)])
        if sender.contains(0) { return nil }
        guard let second = line(file, from: first.upperBound) else { return nil }
        let l2 = file[second]
        guard l2.starts(with: deliveredTo) else { return nil }
        let recipient = Array(l2[(l2.startIndex + deliveredTo.count)..<(l2.endIndex - 1)])
        return FileHead(sender: sender, deliveredTo: recipient, restOffset: second.upperBound)
    }

    /// What a bounce of this file amounts to.
    public enum Plan: Sendable, Equatable {
        /// The file is itself a double bounce: discard it ("triple bounce").
        case discardTripleBounce
        /// Queue a bounce with this envelope. A bounce (empty S) goes to the double
        /// bounce recipient from `#@[]`; otherwise to S from the empty sender.
        case send(envelopeSender: [UInt8], recipient: [UInt8])
    }

    public static func plan(_ head: FileHead, settings: Settings) -> Plan {
        if head.sender == Array("#@[]".utf8) { return .discardTripleBounce }
        if head.sender.isEmpty {
            return .send(envelopeSender: Array("#@[]".utf8), recipient: Array(settings.doubleBounceRecipient.utf8))
        }
        return .send(envelopeSender: [], recipient: head.sender)
    }

    /// The TAI64 label libtai's `tai_now` gives for a Unix time (2^62 + 10 + t).
    public static func taiLabel(unixTime: Int64) -> UInt64 {
        4611686018427387914 &+ UInt64(bitPattern: unixTime)
    }

    /// `<tai label>.qp_<qp>.KUI@<bouncehost>`.
    public static func boundary(taiLabel: UInt64, qp: Int32, bounceHost: String) -> String {
        "\(taiLabel).qp_\(qp).KUI@\(bounceHost)"
    }

    /// The bounce bytes.
    /// - `file`: the whole maildir file (the rest after its two head lines is enclosed).
    /// - `why`: the client's status text, without its newline.
    /// - `timedOut`: `-t` turned the result into a failure ("This message is too old").
    /// - `prefix`: maildirserial's prefix, removed from the front of R when present.
    /// - `date`: the UTC mess822 date (`Date822.classicUTC`).
    public static func compose(head: FileHead, file: [UInt8], why: [UInt8], timedOut: Bool, prefix: [UInt8],
                               settings: Settings, date: String, taiLabel: UInt64, qp: Int32) -> [UInt8] {
        var out: [UInt8] = []
        func put(_ s: String) { out += Array(s.utf8) }
        let single = !head.sender.isEmpty
        let recipient: [UInt8] = single ? head.sender : Array(settings.doubleBounceRecipient.utf8)
        let b = boundary(taiLabel: taiLabel, qp: qp, bounceHost: settings.bounceHost)
        put("Date: \(date)\n")
        put("From: "); out += AddressQuoting.quote(Array(settings.bounceFrom.utf8)); put("@\(settings.bounceHost)")
        put("\nTo: "); out += AddressQuoting.quote2(recipient)
        put("\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"\(b)\"")
        put("\nSubject: failure notice\n\n--\(b)")
        put("\n\n")
        put("Hi. This is the maildirbounce program at \(settings.bounceHost).\n")
        if single {
            put("I'm afraid I wasn't able to deliver your message to the following address.\n"
                + "This is a permanent error; I've given up. Sorry it didn't work out.\n\n")
        } else {
            put("I tried to deliver a bounce message to this address, but the bounce bounced!\n\n")
        }
        put("<")
        if head.deliveredTo.starts(with: prefix) {
            out += head.deliveredTo.dropFirst(prefix.count)
        } else {
            out += head.deliveredTo
        }
        put(">:\n")
        out += why
        put("\n")
        if timedOut { put("This message is too old. Giving up.\n") }
        put("\n")
        put(single ? "--- Enclosed is a copy of the message.\n\n--" : "--- Enclosed is the original bounce.\n\n--")
        put(b)
        put("\nContent-Type: message/rfc822\n\n")
        put("Return-Path: <"); out += AddressQuoting.quote2(head.sender); put(">\n")
        out += file[min(head.restOffset, file.count)...]
        put("\n--\(b)--\n")
        return out
    }
}

/// One result line from a maildirserial client (serialmail's protocol):
/// `filename\0` + status letter + text + `\n`.
public struct ClientResult: Sendable, Equatable {
    public var filename: [UInt8]
    /// `K` delivered, `D` permanent failure; anything else is temporary (`Z`).
    public var status: UInt8
    /// The text, without its newline.
    public var text: [UInt8]

    public init(filename: [UInt8], status: UInt8, text: [UInt8]) {
        self.filename = filename
        self.status = status
        self.text = text
    }

    public init(_ filename: String, _ status: Character, _ text: String) {
        self.init(filename: Array(filename.utf8), status: status.asciiValue!, text: Array(text.utf8))
    }

    public var filenameString: String { String(decoding: filename, as: UTF8.self) }
    public var textString: String { String(decoding: text, as: UTF8.self) }
}

/// Splits a client's output into results as bytes arrive. An incomplete result
/// at the end of the output is dropped, as maildirserial does.
public struct ClientResultParser: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// Adds bytes; returns the results they complete.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> [ClientResult] {
        pending += bytes
        var results: [ClientResult] = []
        var start = 0
        while start < pending.count {
            guard let nul = pending[start...].firstIndex(of: 0) else { break }
            let statusAt = nul + 1
            guard statusAt < pending.count else { break }
            let textStart = statusAt + 1
            guard textStart <= pending.count,
                  let nl = pending[textStart...].firstIndex(of: 10) else { break }
            results.append(ClientResult(filename: Array(pending[start..<nul]), status: pending[statusAt],
                                        text: Array(pending[textStart..<nl])))
            start = nl + 1
        }
        if start > 0 { pending.removeFirst(start) }
        return results
    }

    /// Parses a complete output at once.
    public static func parse(_ output: [UInt8]) -> [ClientResult] {
        var p = ClientResultParser()
        return p.feed(output)
    }
}
