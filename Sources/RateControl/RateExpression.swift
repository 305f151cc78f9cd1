#if canImport(Glibc)
import Glibc
#endif

/// indimail-mta's rate expression language (libqmail `evaluate.c`): numbers
/// (`500`, `.5`, `$1f4`), `+ - * / % **`, comparisons, `&& || ! & | ^ ~ << >>`,
/// parentheses, variables assigned with `=`, statements separated by `;` (the
/// value is the last one's), and the functions acos asin atan cos cosh exp ln
/// log sin sinh sqr sqrt tan tanh. `/` always gives a real. A variable not
/// assigned in the expression is read from the environment. The value is a
/// rate in deliveries per second, e.g. `500/3600`.
public struct RateExpression: Sendable, Equatable {
    public let text: String

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let message: String
        public let position: Int
        public var description: String { "\(message) at position \(position + 1)" }
    }

    public init(_ text: String) { self.text = text }

    /// Evaluates; errors name the position (1-based in `description`).
    public func evaluate() throws(Failure) -> Double {
        var p = Parser(chars: Array(text.utf8))
        return try p.program()
    }

    /// evaluate.c's scan_number: `$` or `0x` and hexadecimal digits, else decimal
    /// digits with an optional `.` fraction; what follows is ignored; nil without digits.
    static func leadingNumber(_ c: [UInt8]) -> Double? {
        func hex(_ b: UInt8) -> Int64? {
            switch b {
            case 48...57: return Int64(b - 48)
            case 97...102: return Int64(b - 87)
            case 65...70: return Int64(b - 55)
            default: return nil
            }
        }
        var i = 0
        if c.first == UInt8(ascii: "$") || (c.count > 1 && c[0] == 48 && c[1] == UInt8(ascii: "x")) {
            i = c[0] == UInt8(ascii: "$") ? 1 : 2
            var v: Int64 = 0
            let start = i
            while i < c.count, let d = hex(c[i]) { v = v &* 16 &+ d; i += 1 }
            return i > start ? Double(v) : nil
        }
        var v: Double = 0
        var digits = 0
        while i < c.count, c[i] >= 48 && c[i] <= 57 { v = v * 10 + Double(c[i] - 48); i += 1; digits += 1 }
        if i < c.count, c[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            while i < c.count, c[i] >= 48 && c[i] <= 57 { v += scale * Double(c[i] - 48); scale /= 10; i += 1; digits += 1 }
            if digits == 0 && i == 1 { return nil }
            return v
        }
        return digits > 0 ? v : nil
    }

    struct Parser {
        let chars: [UInt8]
        var i = 0
        var variables: [String: Double] = [:]
        /// How deep the recursive descent is: `power` and `unary` count a level
        /// each, so a parenthesis or a function's argument counts two, a unary
        /// operator or a `**` one. Beyond `maxDepth` the expression is an error:
        /// a few thousand `(` overflowed the stack (found by fuzzing).
        var depth = 0
        static let maxDepth = 500

        init(chars: [UInt8]) { self.chars = chars }

        mutating func enter() throws(Failure) {
            depth += 1
            if depth > Parser.maxDepth { throw fail("expression nested too deeply") }
        }

        mutating func skip() { while i < chars.count && (chars[i] == 32 || chars[i] == 9 || chars[i] == 10 || chars[i] == 13) { i += 1 } }
        func fail(_ m: String) -> Failure { Failure(message: m, position: i) }

        /// A value as the integer the bit operators work on; one that has none
        /// (infinite, NaN, beyond Int64) is an error, not a trap.
        func int(_ v: Double, _ op: String) throws(Failure) -> Int64 {
            guard v.isFinite, abs(v) < 9.0e18 else { throw fail("\(op) of a number out of range") }
            return Int64(v)
        }

        mutating func peek(_ s: String) -> Bool {
            skip()
            // Byte by byte: no array per call (the parser peeks at every operator).
            var j = i
            for b in s.utf8 {
                guard j < chars.count, chars[j] == b else { return false }
                j += 1
            }
            return true
        }

        mutating func eat(_ s: String) -> Bool {
            if peek(s) { i += s.utf8.count; return true }
            return false
        }

        mutating func program() throws(Failure) -> Double {
            var v = try assignment()
            while eat(";") {
                skip()
                if i >= chars.count { break }
                v = try assignment()
            }
            skip()
            if i < chars.count { throw fail("unexpected \"\(Character(UnicodeScalar(chars[i])))\"") }
            if v.isNaN || v.isInfinite { throw fail("the value is not a number") }
            return v
        }

        mutating func assignment() throws(Failure) -> Double {
            let save = i
            skip()
            if let name = identifier(), peek("="), !peek("==") {
                _ = eat("=")
                let v = try assignment()
                variables[name] = v
                return v
            }
            i = save
            return try logicalOr()
        }

        mutating func identifier() -> String? {
            skip()
            let start = i
            while i < chars.count, (chars[i] >= 97 && chars[i] <= 122) || (chars[i] >= 65 && chars[i] <= 90) || chars[i] == 95 || (i > start && chars[i] >= 48 && chars[i] <= 57) { i += 1 }
            if i == start { return nil }
            return String(decoding: chars[start..<i], as: UTF8.self)
        }

        mutating func logicalOr() throws(Failure) -> Double {
            var v = try logicalAnd()
            while eat("||") { let r = try logicalAnd(); v = (v != 0 || r != 0) ? 1 : 0 }
            return v
        }
        mutating func logicalAnd() throws(Failure) -> Double {
            var v = try bitOr()
            while eat("&&") { let r = try bitOr(); v = (v != 0 && r != 0) ? 1 : 0 }
            return v
        }
        mutating func bitOr() throws(Failure) -> Double {
            var v = try bitXor()
            while !peek("||") && eat("|") { let r = try bitXor(); v = Double(try int(v, "|") | int(r, "|")) }
            return v
        }
        mutating func bitXor() throws(Failure) -> Double {
            var v = try bitAnd()
            while eat("^") { let r = try bitAnd(); v = Double(try int(v, "^") ^ int(r, "^")) }
            return v
        }
        mutating func bitAnd() throws(Failure) -> Double {
            var v = try comparison()
            while !peek("&&") && eat("&") { let r = try comparison(); v = Double(try int(v, "&") & int(r, "&")) }
            return v
        }
        mutating func comparison() throws(Failure) -> Double {
            var v = try shift()
            while true {
                if eat("==") { v = v == (try shift()) ? 1 : 0 }
                else if eat("!=") { v = v != (try shift()) ? 1 : 0 }
                else if eat("<=") { v = v <= (try shift()) ? 1 : 0 }
                else if eat(">=") { v = v >= (try shift()) ? 1 : 0 }
                else if !peek("<<") && eat("<") { v = v < (try shift()) ? 1 : 0 }
                else if !peek(">>") && eat(">") { v = v > (try shift()) ? 1 : 0 }
                else { return v }
            }
        }
        mutating func shift() throws(Failure) -> Double {
            var v = try additive()
            while true {
                if eat("<<") { let r = try additive(); v = Double(try int(v, "<<") << int(r, "<<")) }
                else if eat(">>") { let r = try additive(); v = Double(try int(v, ">>") >> int(r, ">>")) }
                else { return v }
            }
        }
        mutating func additive() throws(Failure) -> Double {
            var v = try multiplicative()
            while true {
                if eat("+") { v += try multiplicative() }
                else if eat("-") { v -= try multiplicative() }
                else { return v }
            }
        }
        mutating func multiplicative() throws(Failure) -> Double {
            var v = try power()
            while true {
                if !peek("**") && eat("*") { v *= try power() }
                else if eat("/") {
                    let at = i
                    let r = try power()
                    if r == 0 { throw Failure(message: "division by zero", position: at) }
                    v /= r
                }
                else if eat("%") {
                    // As indimail's evaluator: both sides truncated to integers first, so a
                    // right side that truncates to 0 is a division by zero.
                    let at = i
                    let r = try power()
                    guard v.isFinite, r.isFinite, abs(v) < 9.0e18, abs(r) < 9.0e18 else {
                        throw Failure(message: "% of a number out of range", position: at)
                    }
                    let a = Int64(v), b = Int64(r)
                    if b == 0 { throw Failure(message: "division by zero", position: at) }
                    v = Double(a % b)
                }
                else { return v }
            }
        }
        mutating func power() throws(Failure) -> Double {
            try enter()
            defer { depth -= 1 }
            let base = try unary()
            if eat("**") { return pow(base, try power()) }
            return base
        }
        mutating func unary() throws(Failure) -> Double {
            try enter()
            defer { depth -= 1 }
            if eat("-") { return -(try unary()) }
            if eat("+") { return try unary() }
            if eat("!") { return (try unary()) == 0 ? 1 : 0 }
            if eat("~") { let r = try unary(); return Double(~(try int(r, "~"))) }
            return try primary()
        }
        mutating func primary() throws(Failure) -> Double {
            skip()
            guard i < chars.count else { throw fail("unexpected end of expression") }
            if eat("(") {
                let v = try assignment()
                if !eat(")") { throw fail("missing )") }
                return v
            }
            if chars[i] == UInt8(ascii: "$") {
                i += 1
                let start = i
                while i < chars.count, (chars[i] >= 48 && chars[i] <= 57) || (chars[i] >= 97 && chars[i] <= 102) || (chars[i] >= 65 && chars[i] <= 70) { i += 1 }
                guard i > start, let v = Int64(String(decoding: chars[start..<i], as: UTF8.self), radix: 16) else { throw fail("bad hexadecimal number") }
                return Double(v)
            }
            if (chars[i] >= 48 && chars[i] <= 57) || chars[i] == UInt8(ascii: ".") {
                let start = i
                while i < chars.count, (chars[i] >= 48 && chars[i] <= 57) || chars[i] == UInt8(ascii: ".") { i += 1 }
                if i < chars.count, chars[i] == UInt8(ascii: "e") || chars[i] == UInt8(ascii: "E") {
                    var j = i + 1
                    if j < chars.count, chars[j] == UInt8(ascii: "-") || chars[j] == UInt8(ascii: "+") { j += 1 }
                    if j < chars.count, chars[j] >= 48 && chars[j] <= 57 {
                        i = j
                        while i < chars.count, chars[i] >= 48 && chars[i] <= 57 { i += 1 }
                    }
                }
                guard let v = Double(String(decoding: chars[start..<i], as: UTF8.self)) else { i = start; throw fail("bad number") }
                return v
            }
            let at = i
            guard let name = identifier() else { throw fail("unexpected \"\(Character(UnicodeScalar(chars[i])))\"") }
            if eat("(") {
                let arg = try assignment()
                if !eat(")") { throw fail("missing )") }
                switch name.lowercased() {
                case "acos": return acos(arg)
                case "asin": return asin(arg)
                case "atan": return atan(arg)
                case "cos": return cos(arg)
                case "cosh": return cosh(arg)
                case "exp": return exp(arg)
                case "ln": return Glibc.log(arg)
                case "log": return log10(arg)
                case "sin": return sin(arg)
                case "sinh": return sinh(arg)
                case "sqr": return arg * arg
                case "sqrt": return sqrt(arg)
                case "tan": return tan(arg)
                case "tanh": return tanh(arg)
                default: throw Failure(message: "unknown function \(name)", position: at)
                }
            }
            if let v = variables[name] { return v }
            // As indimail's evaluator: a variable the expression has not assigned is read
            // from the environment, as the number its value starts with.
            guard let text = getenv(name) else { throw Failure(message: "unknown variable \(name)", position: at) }
            guard let v = RateExpression.leadingNumber(Array(String(cString: text).utf8)) else {
                throw Failure(message: "the environment's \(name) is not a number", position: at)
            }
            variables[name] = v
            return v
        }
    }
}
