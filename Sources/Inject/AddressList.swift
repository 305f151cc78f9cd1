/// Extracts the mailbox addresses from an RFC 5322 address list: display
/// names, `<route>` brackets, comments, quoted strings and groups
/// (`undisclosed-recipients:;`) are understood; what remains is `local@domain`
/// as it goes into the envelope. As qmail-inject's token822 does, white space
/// outside quotes is dropped, and a quoted string gives its contents: the
/// quotes go, a backslash pair gives the character after the backslash, and
/// white space inside stays (`"john  smith"@d.example` is the envelope address
/// `john  smith@d.example`; the SMTP client quotes it again on the wire).
public enum AddressList {
    static func isSpace(_ ch: Character) -> Bool {
        ch == " " || ch == "\t" || ch == "\n" || ch == "\r" || ch == "\r\n"
    }

    static func isLineBreak(_ ch: Character) -> Bool {
        ch == "\n" || ch == "\r" || ch == "\r\n"
    }

    public static func parse(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""          // the address outside angle brackets for this mailbox
        var angle: String? = nil  // the address inside <...>
        var inAngle = false
        var inQuote = false
        var quotedOutside = false // a quoted string outside <...>: maybe a display name
        var commentDepth = 0
        var escaped = false

        func add(_ ch: Character) {
            if inAngle { angle!.append(ch) } else if angle == nil { current.append(ch) }
        }

        func finish() {
            var addr: String
            if let a = angle { addr = a } else {
                addr = current
                // A quoted display name with no address after it ("Joe Smith"): not a mailbox.
                if quotedOutside && !addr.contains("@") { addr = "" }
            }
            // Drop a source route (@a,@b:user@host).
            if addr.hasPrefix("@"), let colon = addr.firstIndex(of: ":") { addr = String(addr[addr.index(after: colon)...]) }
            if !addr.isEmpty { out.append(addr) }
            current = ""
            angle = nil
            quotedOutside = false
        }

        for ch in text {
            if escaped {
                escaped = false
                if commentDepth == 0 && !isLineBreak(ch) { add(ch) }
                continue
            }
            if commentDepth > 0 {
                if ch == "\\" { escaped = true } else if ch == "(" { commentDepth += 1 } else if ch == ")" { commentDepth -= 1 }
                continue
            }
            if inQuote {
                if ch == "\\" { escaped = true; continue }
                if ch == "\"" { inQuote = false; continue }
                // A folded line inside quotes unfolds: the line break goes, the blank stays.
                if !isLineBreak(ch) { add(ch) }
                continue
            }
            if isSpace(ch) { continue }
            switch ch {
            case "\\": escaped = true
            case "\"":
                inQuote = true
                if !inAngle { quotedOutside = true }
            case "(": commentDepth = 1
            case "<":
                inAngle = true
                angle = ""
            case ">":
                inAngle = false
            case ",":
                if inAngle { angle!.append(ch) } else { finish() }
            case ":":
                if inAngle { angle!.append(ch) } else if angle == nil && !current.contains("@") {
                    // A group name: what came before is not an address.
                    current = ""
                    quotedOutside = false
                } else { add(ch) }
            case ";":
                if inAngle { angle!.append(ch) } else { finish() }
            default:
                add(ch)
            }
        }
        finish()
        return out
    }
}
