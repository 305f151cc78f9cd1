// Compiled twice: into its library, and (through a symbolic link) into the
// Embedded Swift build of new-inject. Keep it Embedded-clean: typed throws,
// no existentials, no casts.

/// A `Date:` field's time as new-inject reads and writes it: the calendar
/// fields as written (in the field's own zone) and the zone's offset.
public struct HeaderDate: Equatable, Sendable {
    public var year: Int
    public var month: Int      // 1...12
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int
    /// Minutes east of UTC.
    public var offset: Int
    /// `-0000`: the time is UTC and the sender's zone is not known.
    public var zoneUnknown: Bool

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, offset: Int, zoneUnknown: Bool) {
        self.year = year; self.month = month; self.day = day
        self.hour = hour; self.minute = minute; self.second = second
        self.offset = offset; self.zoneUnknown = zoneUnknown
    }

    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let zones: [(String, Int)] = [
        ("ut", 0), ("gmt", 0), ("utc", 0), ("z", 0), ("bst", 60), ("cet", 60), ("met", 60), ("metdst", 120), ("eet", 120),
        ("ist", 120), ("hkt", 480), ("jst", 540), ("edt", -240), ("est", -300), ("cdt", -300), ("cst", -360),
        ("mdt", -360), ("mst", -420), ("pdt", -420), ("pst", -480),
    ]

    /// A number of at most nine digits, with an optional sign; nil otherwise.
    static func number(_ w: [UInt8]) -> Int? {
        var i = 0
        var negative = false
        if let f = w.first, f == 43 || f == 45 { negative = f == 45; i = 1 }
        guard i < w.count, w.count - i <= 9 else { return nil }
        var v = 0
        while i < w.count {
            guard w[i] >= 48 && w[i] <= 57 else { return nil }
            v = v * 10 + Int(w[i] - 48)
            i += 1
        }
        return negative ? -v : v
    }

    static func lowered(_ w: [UInt8]) -> String {
        String(decoding: w.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
    }

    /// Parses `[Www,] D Mon YYYY hh:mm[:ss] zone [DST]`; nil when the field does
    /// not give at least the date, the time and a zone it knows. Two-digit years
    /// below 50 are 20xx, other years below 1000 are 19xx.
    public static func parse(_ value: [UInt8]) -> HeaderDate? {
        // Words and colons, after the last `,` or `;` (which ends a weekday).
        var words: [[UInt8]] = []
        var current: [UInt8] = []
        var depth = 0
        func flush() { if !current.isEmpty { words.append(current); current = [] } }
        for b in value {
            if depth > 0 {
                if b == 40 { depth += 1 } else if b == 41 { depth -= 1 }
                continue
            }
            switch b {
            case 40: flush(); depth = 1
            case 44, 59: flush(); words = []
            case 58: flush(); words.append([58])
            case 32, 9, 10, 13, 46, 34: flush()
            default: current.append(b)
            }
        }
        flush()
        var d = HeaderDate(year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0, offset: 0, zoneUnknown: false)
        // States: day, month, year, hour, ':', minute, ':' or zone, second, zone, DST.
        var state = 1
        var known = false
        for w in words {
            if w == [58] {
                if state == 5 { state = 6 } else if state == 7 { state = 8 }
                continue
            }
            let n = number(w)
            switch state {
            case 1:
                guard let n else { return nil }
                d.day = n
            case 2:
                guard let m = monthNames.firstIndex(of: lowered(w)) else { return nil }
                d.month = m + 1
            case 3:
                guard var y = n else { return nil }
                if y < 50 { y += 2000 }
                if y < 1000 { y += 1900 }
                d.year = y
            case 4:
                guard let n else { return nil }
                d.hour = n
            case 5:
                return nil
            case 6:
                guard let n else { return nil }
                d.minute = n
            case 8:
                guard let n else { return nil }
                d.second = n
            case 7, 9:
                if state == 7 { d.second = 0; state = 9 }
                if let n {
                    let a = n < 0 ? -n : n
                    let minutes = (a / 100) * 60 + a % 100
                    d.offset = n < 0 ? -minutes : minutes
                    d.zoneUnknown = w == Array("-0000".utf8)
                } else {
                    let name = lowered(w)
                    guard let z = zones.first(where: { $0.0 == name }) else { return nil }
                    d.offset = z.1
                }
                known = true
            case 10:
                if lowered(w) == "dst" && !d.zoneUnknown { d.offset += 60 }
            default: break
            }
            if state < 10 { state += 1 }
        }
        guard known, d.month >= 1 else { return nil }
        return d
    }

    /// The current time as new-inject writes it when the message has no date: UTC, `-0000`.
    public static func utc(_ secondsSinceEpoch: Int) -> HeaderDate {
        // Days to civil date (proleptic Gregorian), without the C library.
        let days = secondsSinceEpoch >= 0 ? secondsSinceEpoch / 86400 : (secondsSinceEpoch - 86399) / 86400
        let secs = secondsSinceEpoch - days * 86400
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return HeaderDate(year: year, month: month, day: day, hour: secs / 3600, minute: secs % 3600 / 60,
                          second: secs % 60, offset: 0, zoneUnknown: true)
    }

    static func two(_ n: Int) -> String { n >= 0 && n < 10 ? "0" + String(n) : String(n) }

    /// `7 Dec 2026 17:40:00 +0100` (no weekday).
    public var formatted: String {
        let names = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        var s = String(day) + " " + names[month - 1] + " " + String(year) + " "
        s += HeaderDate.two(hour) + ":" + HeaderDate.two(minute) + ":" + HeaderDate.two(second) + " "
        if zoneUnknown { return s + "-0000" }
        let a = offset < 0 ? -offset : offset
        return s + (offset < 0 ? "-" : "+") + HeaderDate.two(a / 60) + HeaderDate.two(a % 60)
    }

    /// `YYYYMMDDhhmmss`, the start of a Message-ID.
    public var stamp: String {
        String(year) + HeaderDate.two(month) + HeaderDate.two(day) + HeaderDate.two(hour) + HeaderDate.two(minute) + HeaderDate.two(second)
    }
}
