// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift build of new-inject. Keep it Embedded-clean: typed throws,
// no existentials, no casts.

/// An address field as new-inject rewrites it: parsed into mailboxes (an
/// address with the text that named it) and groups, so the addresses can be
/// rewritten and the field written again, quoted and folded.
///
/// Unlike `AddressList` (which only extracts envelope addresses), this keeps the
/// display names and comments, as the text of the mailbox they belong to, and
/// keeps groups (`friends: a@x, b@y;`) as groups.
public enum MailboxItem: Equatable, Sendable {
    /// An address (`local@host`, unquoted; empty for `<>`), with its display name
    /// and comments joined by single spaces (nil when there were none).
    case mailbox(address: [UInt8], text: [UInt8]?)
    /// `name:` opens a group; `;` closes it.
    case groupStart(name: [UInt8])
    case groupEnd
}

public enum MailboxList {
    enum Token: Equatable {
        case word([UInt8])      // an atom, or the contents of a quoted string
        case literal([UInt8])   // a domain literal, brackets included
        case comment([UInt8])
        case special(UInt8)     // < > , ; : @ .
        case space
    }

    static func isSpecial(_ b: UInt8) -> Bool {
        b == 60 || b == 62 || b == 44 || b == 59 || b == 58 || b == 64 || b == 46
    }

    static func isBlank(_ b: UInt8) -> Bool { b == 32 || b == 9 || b == 10 || b == 13 }

    /// RFC 822 tokens: quoted strings and comments lose their delimiters and
    /// backslashes (nested comments keep their inner parentheses); an
    /// unterminated one runs to the end.
    static func tokenize(_ s: [UInt8]) -> [Token] {
        var out: [Token] = []
        var i = 0
        let n = s.count
        while i < n {
            let c = s[i]
            if isBlank(c) {
                while i < n && isBlank(s[i]) { i += 1 }
                out.append(.space)
                continue
            }
            if c == UInt8(ascii: "\"") {
                var w: [UInt8] = []
                i += 1
                while i < n && s[i] != UInt8(ascii: "\"") {
                    // A backslash keeps the byte after it, whatever it is.
                    if s[i] == UInt8(ascii: "\\") && i + 1 < n { w.append(s[i + 1]); i += 2; continue }
                    // A folded line inside quotes unfolds: the line break goes, the blank stays.
                    if s[i] != 10 && s[i] != 13 { w.append(s[i]) }
                    i += 1
                }
                i += 1
                out.append(.word(w))
                continue
            }
            if c == UInt8(ascii: "[") {
                var w: [UInt8] = [c]
                i += 1
                while i < n && s[i] != UInt8(ascii: "]") {
                    if s[i] == UInt8(ascii: "\\") && i + 1 < n { w.append(s[i + 1]); i += 2; continue }
                    if !isBlank(s[i]) { w.append(s[i]) }
                    i += 1
                }
                i += 1
                w.append(UInt8(ascii: "]"))
                out.append(.literal(w))
                continue
            }
            if c == UInt8(ascii: "(") {
                var w: [UInt8] = []
                var depth = 1
                i += 1
                while i < n {
                    var b = s[i]
                    if b == UInt8(ascii: "\\") && i + 1 < n { i += 1; b = s[i] }
                    else if b == UInt8(ascii: "(") { depth += 1 }
                    else if b == UInt8(ascii: ")") {
                        depth -= 1
                        if depth == 0 { i += 1; break }
                    }
                    w.append(b == 10 || b == 13 || b == 9 ? 32 : b)
                    i += 1
                }
                out.append(.comment(w))
                continue
            }
            if isSpecial(c) {
                out.append(.special(c))
                i += 1
                continue
            }
            var w: [UInt8] = []
            while i < n {
                var b = s[i]
                if isBlank(b) || isSpecial(b) || b == UInt8(ascii: "\"") || b == UInt8(ascii: "(") || b == UInt8(ascii: "[") { break }
                if b == UInt8(ascii: "\\") && i + 1 < n { i += 1; b = s[i] }
                w.append(b)
                i += 1
            }
            out.append(.word(w))
        }
        return out
    }

    /// Words joined by single spaces, trimmed: the text of a display name,
    /// comments included.
    static func collapse(_ parts: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        for b in parts {
            if b == 32 { if !out.isEmpty && out.last != 32 { out.append(32) } } else { out.append(b) }
        }
        while out.last == 32 { out.removeLast() }
        return out.isEmpty ? nil : out
    }

    /// Parses one field's value (unfolded or not).
    public static func parse(_ value: [UInt8]) -> [MailboxItem] {
        let tokens = tokenize(value)
        var items: [MailboxItem] = []
        var inGroup = false
        var i = 0
        while i < tokens.count {
            // One segment: up to a `,` `;` or group `:` outside angle brackets.
            var text: [UInt8] = []          // display name and comments, raw
            var angle: [Token]? = nil
            var plain: [Token] = []         // an address without angle brackets
            var terminator: UInt8 = 0
            while i < tokens.count {
                let t = tokens[i]
                i += 1
                if case .special(let c) = t {
                    if c == 44 || c == 59 { terminator = c; break }
                    if c == 58 && angle == nil { terminator = c; break }
                    if c == 60 && angle == nil {
                        var inner: [Token] = []
                        while i < tokens.count {
                            if case .special(62) = tokens[i] { i += 1; break }
                            inner.append(tokens[i])
                            i += 1
                        }
                        angle = inner
                        // What came before was a display name, not an address.
                        for p in plain { text += tokenText(p) }
                        plain = []
                        continue
                    }
                    if c == 62 { continue }
                }
                if case .comment(let w) = t {
                    text.append(32); text += w; text.append(32)
                    continue
                }
                if angle != nil {
                    if case .space = t { continue }
                    text += tokenText(t)   // words after <...>: more name
                } else {
                    plain.append(t)
                }
            }
            if terminator == 58 {
                for p in plain { text += tokenText(p) }
                if inGroup { items.append(.groupEnd) }
                items.append(.groupStart(name: collapse(text) ?? []))
                inGroup = true
                continue
            }
            if let inner = angle {
                items.append(.mailbox(address: addrSpec(inner, dropRoute: true), text: collapse(text)))
            } else {
                // Words without `.` or `@` between them are separate addresses (`To: joe bob`).
                var addresses: [[UInt8]] = []
                var current: [Token] = []
                var afterWord = false
                for t in plain {
                    switch t {
                    case .word, .literal:
                        if afterWord && !current.isEmpty { addresses.append(addrSpec(current, dropRoute: false)); current = [] }
                        current.append(t)
                        afterWord = true
                    case .special:
                        current.append(t)
                        afterWord = false
                    default: break
                    }
                }
                if !current.isEmpty { addresses.append(addrSpec(current, dropRoute: false)) }
                let name = collapse(text)
                if addresses.isEmpty, !inGroup, let name {
                    // Only a comment or a name (`To: (nobody)`): kept, as an empty group.
                    items.append(.groupStart(name: name))
                    items.append(.groupEnd)
                }
                for (k, a) in addresses.enumerated() {
                    items.append(.mailbox(address: a, text: k == addresses.count - 1 ? name : nil))
                }
            }
            if terminator == 59 && inGroup {
                items.append(.groupEnd)
                inGroup = false
            }
        }
        if inGroup { items.append(.groupEnd) }
        return items
    }

    static func tokenText(_ t: Token) -> [UInt8] {
        switch t {
        case .word(let w), .literal(let w): return w
        case .comment(let w): return [32] + w + [32]
        case .special(let c): return [c]
        case .space: return [32]
        }
    }

    /// The address inside `<...>` or a bare addr-spec: tokens concatenated,
    /// blanks and comments dropped; a source route (`@a,@b:`) dropped.
    static func addrSpec(_ tokens: [Token], dropRoute: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for t in tokens {
            switch t {
            case .word(let w), .literal(let w): out += w
            case .special(let c):
                if c == 58 && dropRoute { out = [] } else { out.append(c) }
            default: break
            }
        }
        return out
    }

    // MARK: writing

    /// Whether a local part or host must be quoted to survive as one token.
    static func needsQuote(_ s: ArraySlice<UInt8>) -> Bool {
        if s.isEmpty || s.first == 46 || s.last == 46 { return true }
        var prev: UInt8 = 0
        for b in s {
            if b == 46 && prev == 46 { return true }
            if b < 33 || b > 126 { return true }
            switch b {
            case 64, 60, 62, 91, 93, 40, 41, 44, 59, 58, 34, 92: return true
            default: break
            }
            prev = b
        }
        return false
    }

    /// Quoted-string content: `"` `\` `[` `]` CR and NUL get a backslash; a line
    /// break becomes a space (a header line must not end inside a name).
    static func escape(_ s: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        for b in s {
            if b == 10 { out.append(32); continue }
            if b == 34 || b == 92 || b == 91 || b == 93 || b == 13 || b == 0 { out.append(92) }
            out.append(b)
        }
        return out
    }

    /// One mailbox as written: `local@host`, `"Display Name" <local@host>`, `<>`.
    public static func quote(address: [UInt8], text: [UInt8]?) -> [UInt8] {
        var out: [UInt8] = []
        let empty = address.isEmpty || address == [64]
        if let text { out += [34] + escape(text[...]) + [34, 32] }
        let bracket = empty || text != nil
        if bracket { out.append(60) }
        if !empty {
            let at = address.lastIndex(of: 64) ?? address.count
            let local = address[0..<at]
            if needsQuote(local) { out += [34] + escape(local) + [34] } else { out += local }
            let host = at < address.count ? address[(at + 1)...] : []
            if !host.isEmpty {
                out.append(64)
                if !needsQuote(host) { out += host }
                // A domain literal stays one only without blanks: a reader drops those
                // inside brackets (RFC 822 folding), so such a host is quoted instead.
                else if host.count >= 2 && host.first == 91 && host.last == 93
                            && !host.dropFirst().dropLast().contains(where: { isBlank($0) }) {
                    out += [91] + escape(host.dropFirst().dropLast()) + [93]
                } else { out += [34] + escape(host) + [34] }
            }
        }
        if bracket { out.append(62) }
        return out
    }

    /// The items written as one list, `\n` between the pieces a fold may break at.
    public static func render(_ items: [MailboxItem]) -> [UInt8] {
        var out: [UInt8] = []
        var first = true
        var groupOpen = false
        var groupEmpty = false
        let separator: [UInt8] = Array(",\n  ".utf8)
        for item in items {
            switch item {
            case .mailbox(let address, let text):
                if groupOpen && groupEmpty { groupEmpty = false } else if !first { out += separator }
                out += quote(address: address, text: text)
            case .groupStart(let name):
                if groupOpen { out.append(59) }
                if !first { out += separator }
                out += [34] + escape(name[...]) + [34, 58, 32]
                groupOpen = true
                groupEmpty = true
            case .groupEnd:
                if groupOpen { out.append(59) }
                groupOpen = false
            }
            first = false
        }
        if groupOpen { out.append(59) }
        return out
    }

    /// `name` and the rendered list, folded so lines stay within `width`
    /// columns where the pieces allow; ends with a newline.
    public static func fold(name: [UInt8], _ rendered: [UInt8], width: Int = 78) -> [UInt8] {
        var out = name
        var column = name.count
        var start = 0
        var index = 0
        while start <= rendered.count {
            var end = start
            while end < rendered.count && rendered[end] != 10 { end += 1 }
            let piece = rendered[start..<end]
            var compact = piece
            while compact.count >= 2 && compact.first == 32 && compact[compact.startIndex + 1] == 32 { compact = compact.dropFirst() }
            if index > 0 && column + compact.count > width {
                out.append(10)
                out += piece
                column = piece.count
            } else {
                out += compact
                column += compact.count
            }
            index += 1
            start = end + 1
        }
        out.append(10)
        return out
    }

    /// The addresses of the mailboxes, in order.
    public static func addresses(_ items: [MailboxItem]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for item in items { if case .mailbox(let a, _) = item { out.append(a) } }
        return out
    }

    /// Every mailbox's address through `rules`.
    public static func rewrite(_ items: [MailboxItem], _ rules: RewriteRules) -> [MailboxItem] {
        items.map { item in
            if case .mailbox(let a, let t) = item { return .mailbox(address: rules.address(a), text: t) }
            return item
        }
    }
}
