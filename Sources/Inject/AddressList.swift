/// Extracts the mailbox addresses from an RFC 5322 address list: display
/// names, `<route>` brackets, comments, quoted strings and groups
/// (`undisclosed-recipients:;`) are understood; what remains is `local@domain`.
public enum AddressList {
    public static func parse(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""          // text outside angle brackets for this mailbox
        var angle: String? = nil  // text inside <...>
        var inAngle = false
        var inQuote = false
        var commentDepth = 0
        var escaped = false

        func finish() {
            let candidate: String
            if let a = angle { candidate = a } else { candidate = current }
            let trimmed = candidate.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined()
            // Drop a source route (@a,@b:user@host).
            var addr = trimmed
            if addr.hasPrefix("@"), let colon = addr.firstIndex(of: ":") { addr = String(addr[addr.index(after: colon)...]) }
            if !addr.isEmpty { out.append(addr) }
            current = ""
            angle = nil
        }

        for ch in text {
            if escaped {
                escaped = false
                if inAngle { angle!.append(ch) } else if commentDepth == 0 { current.append(ch) }
                continue
            }
            if commentDepth > 0 {
                if ch == "\\" { escaped = true } else if ch == "(" { commentDepth += 1 } else if ch == ")" { commentDepth -= 1 }
                continue
            }
            if inQuote {
                if ch == "\\" { escaped = true; continue }
                if ch == "\"" { inQuote = false }
                if inAngle { angle!.append(ch) } else { current.append(ch) }
                continue
            }
            switch ch {
            case "\\": escaped = true
            case "\"":
                inQuote = true
                if inAngle { angle!.append(ch) } else { current.append(ch) }
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
                } else { current.append(ch) }
            case ";":
                if inAngle { angle!.append(ch) } else { finish() }
            default:
                if inAngle { angle!.append(ch) } else if angle == nil { current.append(ch) }
            }
        }
        finish()
        // Display names without brackets ("Joe Smith") leave text with spaces
        // collapsed; keep only what looks like an address or a bare local name.
        return out.filter { !$0.contains("\"") || $0.contains("@") }
    }
}
