// fastforward's database (djb's fastforward, toolbox.md §1.12): the setforward
// instruction language, the record layout, and the lookup fastforward does.

/// The records of a fastforward database: `:target` → the NUL-terminated
/// commands (`&address`, `|program`, `!program`, `./file`, `/file`), and
/// `?target` → the owner address (no NUL).
public enum SetForward {
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static let maxAddress = 800

    /// Reads instructions `target: command, command, ...;`. `#` starts a comment
    /// to the end of the line; spaces, tabs and newlines are ignored; `\x` is x.
    /// Targets are lower-cased. Returns the records in the order to write them.
    public static func parse(_ input: [UInt8]) throws(Failure) -> [(key: [UInt8], data: [UInt8])] {
        var records: [(key: [UInt8], data: [UInt8])] = []
        var target: [UInt8] = []
        var command: [UInt8] = []
        var list: [UInt8] = []
        var inTarget = true
        var i = 0
        func endCommand() throws(Failure) {
            defer { command.removeAll(keepingCapacity: true) }
            guard let first = command.first else { return }
            if first == UInt8(ascii: "?") {
                records.append(([UInt8(ascii: "?")] + target, Array(command.dropFirst())))
                return
            }
            var c = command
            switch first {
            case UInt8(ascii: "|"), UInt8(ascii: "!"), UInt8(ascii: "."), UInt8(ascii: "/"): break
            case UInt8(ascii: "&"): if c.count - 1 > maxAddress { throw Failure(message: "addresses over 800 bytes are not permitted") }
            default:
                if c.count > maxAddress { throw Failure(message: "addresses over 800 bytes are not permitted") }
                c.insert(UInt8(ascii: "&"), at: 0)
            }
            list += c
            list.append(0)
        }
        while i < input.count {
            var ch = input[i]
            i += 1
            switch ch {
            case UInt8(ascii: "#"):
                while i < input.count && input[i] != 10 { i += 1 }
                continue
            case 32, 9, 10:
                continue
            case UInt8(ascii: ":"):
                if !inTarget { throw Failure(message: "double colons are not permitted") }
                inTarget = false
                continue
            case UInt8(ascii: ","), UInt8(ascii: ";"):
                if inTarget { throw Failure(message: "commas are not permitted before colons") }
                try endCommand()
                if ch == UInt8(ascii: ";") {
                    if !list.isEmpty { records.append(([UInt8(ascii: ":")] + target, list)) }
                    target.removeAll(keepingCapacity: true)
                    list.removeAll(keepingCapacity: true)
                    inTarget = true
                }
                continue
            case UInt8(ascii: "\\"):
                guard i < input.count else { throw Failure(message: "final instruction must end with semicolon") }
                ch = input[i]
                i += 1
            default:
                break
            }
            if ch == 0 { throw Failure(message: "NUL bytes are not permitted") }
            if inTarget { target.append((ch >= 65 && ch <= 90) ? ch + 32 : ch) } else { command.append(ch) }
        }
        if !inTarget || !target.isEmpty { throw Failure(message: "final instruction must end with semicolon") }
        return records
    }

    /// The commands of a `:` record (each ended by NUL; an unterminated last one
    /// is taken as it is).
    public static func commands(_ data: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var cur: [UInt8] = []
        for b in data {
            if b == 0 { out.append(cur); cur = [] } else { cur.append(b) }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// printforward's escaping: a backslash before bytes up to 32 and `, : ; \ #`.
    public static func escape(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        for b in bytes {
            if b <= 32 || b == UInt8(ascii: ",") || b == UInt8(ascii: ":") || b == UInt8(ascii: ";")
                || b == UInt8(ascii: "\\") || b == UInt8(ascii: "#") { out.append(UInt8(ascii: "\\")) }
            out.append(b)
        }
        return out
    }

    /// printforward's text for one record; nil for a record that is not one.
    public static func print(key: [UInt8], data: [UInt8]) -> [UInt8]? {
        guard let kind = key.first else { return nil }
        let target = escape(key.dropFirst())
        if kind == UInt8(ascii: "?") {
            return target + Array(": ?".utf8) + escape(data) + Array(";\n".utf8)
        }
        guard kind == UInt8(ascii: ":"), data.last == 0 else { return nil }
        var out = target + Array(":\n".utf8)
        for c in commands(data) { out += Array(", ".utf8) + escape(c) + [10] }
        return out + Array(";\n".utf8)
    }
}

/// fastforward's expansion of one recipient, over a lookup function (the cdb).
public struct FastForwardPlan: Equatable {
    /// Programs to run, in order: (command, throughPreline).
    public var programs: [(command: [UInt8], preline: Bool)] = []
    /// Files (setmaillist lists) to read, in order.
    public var files: [[UInt8]] = []
    public var recipients: [[UInt8]] = []
    public var found = false

    public static func == (a: FastForwardPlan, b: FastForwardPlan) -> Bool {
        a.recipients == b.recipients && a.files == b.files && a.found == b.found
            && a.programs.map { $0.command } == b.programs.map { $0.command } && a.programs.map { $0.preline } == b.programs.map { $0.preline }
    }
    public init() {}
}

public enum FastForward {
    public static func lower(_ b: some Collection<UInt8>) -> [UInt8] { b.map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 } }

    /// The keys a recipient is looked up under, most specific first:
    /// `addr`, `@host`, `user@` (without the record's type byte).
    public static func wildcardKeys(_ address: [UInt8]) -> [[UInt8]] {
        let a = lower(address)
        guard let at = a.lastIndex(of: UInt8(ascii: "@")) else { return [a] }
        return [a, Array(a[at...]), Array(a[...at])]
    }

    /// The commands for `address`: its `:` record, by exact key then the wildcards.
    public static func lookupCommands<E: Error>(_ address: [UInt8], _ get: ([UInt8]) throws(E) -> [UInt8]?) throws(E) -> [UInt8]? {
        for k in wildcardKeys(address) {
            if let d = try get([UInt8(ascii: ":")] + k) { return d }
        }
        return nil
    }

    /// The owner of `address` (its `?` record, wildcards apply), if any.
    public static func owner<E: Error>(_ address: [UInt8], _ get: ([UInt8]) throws(E) -> [UInt8]?) throws(E) -> [UInt8]? {
        for k in wildcardKeys(address) {
            if let d = try get([UInt8(ascii: "?")] + k) { return d }
        }
        return nil
    }

    /// Expands the recipient. `&address` entries with no `?` record but a `:`
    /// record of their own (exact key) are expanded in turn; every distinct
    /// command is handled once, so alias loops end. Files are handed to
    /// `readFile`, which returns their commands. Work is a list, not recursion:
    /// a list of any length or depth costs no stack.
    public static func expand<E: Error>(_ recipient: [UInt8], get: ([UInt8]) throws(E) -> [UInt8]?,
                                        readFile: ([UInt8]) throws(E) -> [[UInt8]]) throws(E) -> FastForwardPlan {
        var plan = FastForwardPlan()
        guard let top = try lookupCommands(recipient, get) else { return plan }
        plan.found = true
        var seen = Set<[UInt8]>()
        var work: [[UInt8]] = SetForward.commands(top).reversed()
        while let c = work.popLast() {
            guard let first = c.first, seen.insert(c).inserted else { continue }
            switch first {
            case UInt8(ascii: "|"): plan.programs.append((Array(c.dropFirst()), false))
            case UInt8(ascii: "!"): plan.programs.append((Array(c.dropFirst()), true))
            case UInt8(ascii: "."), UInt8(ascii: "/"):
                plan.files.append(c)
                for e in try readFile(c).reversed() {
                    if let f = e.first, f == UInt8(ascii: "&") || f == UInt8(ascii: ".") || f == UInt8(ascii: "/") { work.append(e) }
                }
            case UInt8(ascii: "&"):
                let addr = Array(c.dropFirst())
                if addr.count >= 900 { continue }
                let key = lower(addr)
                if try get([UInt8(ascii: "?")] + key) == nil, let sub = try get([UInt8(ascii: ":")] + key) {
                    work += SetForward.commands(sub).reversed()
                } else {
                    plan.recipients.append(addr)
                }
            default: continue
            }
        }
        return plan
    }
}
