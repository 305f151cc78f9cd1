import QueueFormat

/// Netstrings read from a client connection (qmail-qmtpd, qmail-qmqpd), through
/// the receivers' buffered transport: the length prefix with `Netstring.Length`
/// (bounded), the content streamed to a sink or collected when it is small.
/// `budget`, when set, is how many bytes may still be read (QMQP: the outer
/// netstring's length); reading past it is a protocol error.
final class NetstringInput {
    let io: SMTPTransport
    var budget: Int? = nil
    /// The whole session's deadline (qmail's `alarm(3600)`), seconds since the epoch.
    let deadline: Int

    enum Failure: Error, Equatable {
        case eof
        case timeout
        case malformed(Netstring.Failure)
        /// Past the enclosing netstring's end.
        case overBudget
    }

    init(io: SMTPTransport, deadline: Int) {
        self.io = io
        self.deadline = deadline
    }

    private func checkTime() throws(Failure) {
        if Int(time(nil)) >= deadline { throw .timeout }
    }

    private func status(_ r: SMTPTransport.ReadStatus) throws(Failure) {
        switch r {
        case .ok: return
        case .eof: throw .eof
        case .timeout: throw .timeout
        }
    }

    private func spend(_ n: Int) throws(Failure) {
        if let b = budget {
            if n > b { throw .overBudget }
            budget = b - n
        }
    }

    /// True when the client has closed the connection before sending another
    /// byte (the normal end of a QMTP session); waits for input otherwise.
    func atEnd() throws(Failure) -> Bool {
        if io.hasBufferedInput { return false }
        try checkTime()
        switch io.fill() {
        case .ok: return false
        case .eof: return true
        case .timeout: throw .timeout
        }
    }

    /// A length prefix up to and including its `:`.
    func length(limit: Int) throws(Failure) -> Int {
        var parser = Netstring.Length(limit: limit)
        var result: Netstring.Length.Step = .needMore
        var spent = 0
        try checkTime()
        let r = io.consume { bytes in
            var used = 0
            for c in bytes {
                used += 1
                result = parser.feed(c)
                if result != .needMore { return (used, true) }
            }
            return (used, false)
        }
        spent = parser.digits + (result == .needMore ? 0 : 1)
        if case .failed(let f) = result { throw .malformed(f) }
        try status(r)
        try spend(spent)
        guard case .done(let n) = result else { throw .eof }
        return n
    }

    /// `n` bytes, handed to `sink` in pieces as they come.
    func content(_ n: Int, _ sink: (ArraySlice<UInt8>) -> Void) throws(Failure) {
        try spend(n)
        var left = n
        while left > 0 {
            try checkTime()
            let r = io.consume { bytes in
                let take = min(left, bytes.count)
                sink(bytes.prefix(take))
                left -= take
                return (take, left == 0)
            }
            try status(r)
        }
    }

    /// `n` bytes kept (for small contents: addresses).
    func collect(_ n: Int) throws(Failure) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        try content(n) { out.append(contentsOf: $0) }
        return out
    }

    /// The `,` that ends a netstring.
    func comma() throws(Failure) {
        if try byte() != UInt8(ascii: ",") { throw .malformed(.missingComma) }
    }

    /// One byte (QMTP's encoding byte), consumed.
    func byte() throws(Failure) -> UInt8 {
        try spend(1)
        var c: UInt8 = 0
        try checkTime()
        try status(io.consume { bytes in
            c = bytes.first!
            return (1, true)
        })
        return c
    }
}

#if canImport(Glibc)
import Glibc
#endif
