/// `DKIMSIGNOPTIONS` as indimail-mta's qmail-dkim reads it: getopt-style letters
/// `b:c:li:qthx:z:` in one string, split at white space.
///
///   -c r|s|t|u   canonicalization: relaxed/relaxed (default), simple/simple,
///                relaxed/simple, simple/relaxed (header/body)
///   -l           add the body length tag l=
///   -q           add the query method tag q=dns/txt (libopendkim always writes it)
///   -t           add the time stamp t= (libopendkim always writes it)
///   -h           add copied headers z=
///   -i id|-      the identity i= (`-` = none)
///   -x secs|-    expiry x= after secs seconds (default 604800; `-` = no x=)
///   -z 1|2|3|4   rsa-sha1, rsa-sha256 (default), both, ed25519-sha256
///   -b n         accepted and ignored (old key size option)
public struct DKIMSignOptions: Equatable, Sendable {
    public enum Canonicalization: Equatable, Sendable {
        case simple, relaxed
    }
    public enum Algorithm: Equatable, Sendable {
        case rsaSHA1, rsaSHA256, ed25519SHA256
        public var name: String {
            switch self {
            case .rsaSHA1: return "rsa-sha1"
            case .rsaSHA256: return "rsa-sha256"
            case .ed25519SHA256: return "ed25519-sha256"
            }
        }
    }

    public var headerCanon: Canonicalization = .relaxed
    public var bodyCanon: Canonicalization = .relaxed
    public var bodyLengthTag = false
    public var queryMethodTag = false
    public var timestampTag = false
    public var copiedHeaders = false
    public var identity: String? = nil
    /// Seconds the signature is valid; nil = no x= tag.
    public var expireSeconds: Int? = 604800
    /// The algorithms asked for with -z; nil = not given (the key's type decides).
    public var algorithms: [Algorithm]? = nil

    public init() {}

    public struct Invalid: Error, Equatable, Sendable {
        public let reason: String
        public init(_ reason: String) { self.reason = reason }
    }

    /// Parses the option string. Anything unknown or malformed is `Invalid`
    /// (qmail-dkim then refuses with `Invalid DKIMSIGNOPTIONS`).
    public static func parse(_ text: String) throws(Invalid) -> DKIMSignOptions {
        var o = DKIMSignOptions()
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        var i = 0
        while i < words.count {
            let w = Array(words[i].utf8)
            i += 1
            if w.count < 2 || w[0] != UInt8(ascii: "-") {
                throw Invalid("not an option: \(String(decoding: w, as: UTF8.self))")
            }
            if w == Array("--".utf8) { if i < words.count { throw Invalid("operands are not allowed") }; break }
            var j = 1
            while j < w.count {
                let letter = w[j]
                j += 1
                let takesArgument = [UInt8(ascii: "b"), UInt8(ascii: "c"), UInt8(ascii: "i"),
                                     UInt8(ascii: "x"), UInt8(ascii: "z")].contains(letter)
                var argument = ""
                if takesArgument {
                    if j < w.count {
                        argument = String(decoding: w[j...], as: UTF8.self)
                        j = w.count
                    } else if i < words.count {
                        argument = words[i]
                        i += 1
                    } else {
                        throw Invalid("option -\(Character(Unicode.Scalar(letter))) needs a value")
                    }
                }
                switch letter {
                case UInt8(ascii: "b"): break
                case UInt8(ascii: "c"):
                    switch argument.first {
                    case "r": o.headerCanon = .relaxed; o.bodyCanon = .relaxed
                    case "s": o.headerCanon = .simple; o.bodyCanon = .simple
                    case "t": o.headerCanon = .relaxed; o.bodyCanon = .simple
                    case "u": o.headerCanon = .simple; o.bodyCanon = .relaxed
                    default: throw Invalid("-c takes r, s, t or u")
                    }
                case UInt8(ascii: "l"): o.bodyLengthTag = true
                case UInt8(ascii: "q"): o.queryMethodTag = true
                case UInt8(ascii: "t"): o.timestampTag = true
                case UInt8(ascii: "h"): o.copiedHeaders = true
                case UInt8(ascii: "i"):
                    if argument.hasPrefix("-") { o.identity = nil } else {
                        guard argument.contains("@"), argument.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ";") }) else {
                            throw Invalid("-i takes an address (local@domain) or -")
                        }
                        o.identity = argument
                    }
                case UInt8(ascii: "x"):
                    if argument.hasPrefix("-") { o.expireSeconds = nil } else {
                        guard let s = Int(argument), s > 0, s <= 100 * 366 * 86400 else {
                            throw Invalid("-x takes a number of seconds or -")
                        }
                        o.expireSeconds = s
                    }
                case UInt8(ascii: "z"):
                    switch argument.first {
                    case "1": o.algorithms = [.rsaSHA1]
                    case "2": o.algorithms = [.rsaSHA256]
                    case "3": o.algorithms = [.rsaSHA1, .rsaSHA256]
                    case "4": o.algorithms = [.ed25519SHA256]
                    default: throw Invalid("-z takes 1, 2, 3 or 4")
                    }
                default:
                    throw Invalid("unknown option -\(Character(Unicode.Scalar(letter)))")
                }
            }
        }
        return o
    }
}
