#if canImport(Glibc)
import Glibc
#endif
import QueueFormat

/// A drate definition file: four NUL-terminated fields
/// `expr\0count\0starttime\0lasttime\0` (indimail-mta's `do_rate.h`);
/// bytes after the fourth field are ignored.
public struct RateDefinition: Equatable, Sendable {
    public var expression: String
    public var count: Int64
    public var start: Int64
    public var last: Int64

    public init(expression: String, count: Int64 = 0, start: Int64 = 0, last: Int64 = 0) {
        self.expression = expression
        self.count = count
        self.start = start
        self.last = last
    }

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let message: String
        public var description: String { message }
    }

    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> RateDefinition {
        let fields = bytes.split(separator: 0, maxSplits: 4, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard let expr = fields.first, !expr.isEmpty else { throw ParseError(message: "no rate expression") }
        func num(_ i: Int) throws(ParseError) -> Int64 {
            guard fields.count > i, !fields[i].isEmpty else { return 0 }
            guard let v = Int64(fields[i]) else { throw ParseError(message: "field \(i + 1) is not a number: \"\(fields[i])\"") }
            return v
        }
        return RateDefinition(expression: expr, count: try num(1), start: try num(2), last: try num(3))
    }

    public func bytes() -> [UInt8] { Array("\(expression)\0\(count)\0\(start)\0\(last)\0".utf8) }
}

/// How a domain's rate is enforced.
public enum LimiterMode: String, Sendable, Equatable {
    /// indimail-mta's average since the sample start (compatible, bursty).
    case average
    /// A generic cell rate algorithm: one delivery every 1/rate seconds, with a burst allowance.
    case smooth
}

/// A domain's limits: the rate expression, the mode, a burst, a concurrency window.
public struct DomainPolicy: Sendable, Equatable {
    /// The ledger key: the domain, the alias target, or `.global`.
    public var key: String
    public var expression: String
    public var mode: LimiterMode
    /// Deliveries allowed back to back (smooth mode); at least 1.
    public var burst: Double
    /// At most this many deliveries in flight to the domain (nil = no limit).
    public var concurrency: Int?
    /// Average mode: the sample restarts after this long without activity.
    public var interval: Int64

    public init(key: String, expression: String, mode: LimiterMode = .smooth, burst: Double = 1, concurrency: Int? = nil, interval: Int64 = 86400) {
        self.key = key
        self.expression = expression
        self.mode = mode
        self.burst = max(1, burst)
        self.concurrency = concurrency
        self.interval = interval
    }
}

/// What the limiter remembers of one domain (persisted in LMDB).
public struct DomainLedger: Sendable, Equatable {
    public var count: Int64 = 0
    public var start: Int64 = 0
    public var last: Int64 = 0
    /// Smooth mode: the theoretical arrival time of the next delivery (ms).
    public var tatMS: Int64 = 0
    /// Back-off factor after "rate limited" answers (1 = none).
    public var backoff: Double = 1
    public var successesSinceBackoff: Int = 0

    public init() {}

    public var bytes: [UInt8] { Array("\(count) \(start) \(last) \(tatMS) \(backoff) \(successesSinceBackoff)".utf8) }

    public init?(bytes: [UInt8]) {
        let f = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard f.count == 6, let c = Int64(f[0]), let s = Int64(f[1]), let l = Int64(f[2]), let t = Int64(f[3]),
              let b = Double(f[4]), let n = Int(f[5]) else { return nil }
        count = c; start = s; last = l; tatMS = t; backoff = b; successesSinceBackoff = n
    }
}

/// The outcome of asking to deliver to a domain now.
public enum Admission: Equatable, Sendable {
    /// Go; `logLine` says so in indimail's words (nil when the domain has no limit).
    case go(logLine: String?)
    /// Not before `until`; the log line explains.
    case wait(until: Int64, logLine: String)
    /// The expression does not evaluate: deliver, and warn.
    case broken(logLine: String)
    /// The definition's `concurrency` is reached: wait until one of its deliveries
    /// ends (`RateGate.freeSlots(policyKey)` turns positive).
    case busy(policyKey: String, logLine: String)
}

/// Per-domain rate control as a pure value, driven by the time it is given.
public struct RateGate: Sendable {
    public var ledgers: [String: DomainLedger] = [:]
    public var inFlight: [String: Int] = [:]
    /// The `concurrency` of each definition that has one, as last seen by `admit`.
    public var concurrencyLimit: [String: Int] = [:]
    /// Ledgers changed since the last `takeChanges()`.
    public private(set) var changed = Set<String>()
    public let queueName: String

    public init(queueName: String = "slowq") { self.queueName = queueName }

    public mutating func takeChanges() -> [(String, DomainLedger)] {
        let out = changed.map { ($0, ledgers[$0] ?? DomainLedger()) }
        changed.removeAll()
        return out
    }

    static func fmt(_ d: Double) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        _ = withVaList([d]) { vsnprintf(&buf, 64, "%.10f", $0) }
        return String(cString: buf)
    }

    /// Asks to start one delivery to `domain` under `policy` at `nowMS` (milliseconds).
    public mutating func admit(domain: String, id: UInt64, policy: DomainPolicy, nowMS: Int64) -> Admission {
        let now = nowMS / 1000
        let conf: Double
        do { conf = try RateExpression(policy.expression).evaluate() } catch {
            return .broken(logLine: "warn: \(queueName) \(domain) msg \(id): failed to get delivery rate for \(domain): \(error); proceeding to deliver")
        }
        var l = ledgers[policy.key] ?? DomainLedger()
        concurrencyLimit[policy.key] = policy.concurrency
        if let c = policy.concurrency, (inFlight[policy.key] ?? 0) >= c {
            return .busy(policyKey: policy.key, logLine: "warn: \(queueName) \(domain) msg \(id): \(c) deliveries in progress; will try again later")
        }
        let effective = conf / max(1, l.backoff)
        // A rate of zero (or too small to wait for) holds the domain; a negative one only counts.
        if conf >= 0 && effective < 1e-9 {
            return .wait(until: now + 3600, logLine: "warn: \(queueName) \(domain) msg \(id): rate is 0; will try again later")
        }
        switch policy.mode {
        case .average:
            if l.count == 0 || now - l.last > policy.interval { l.count = 0; l.start = now }
            let elapsed = now - l.start
            let cur = elapsed > 0 ? Double(l.count) / Double(elapsed) : 0
            if conf >= 0 && cur > effective {
                let need = Int64(Double(l.count) / effective) - elapsed
                ledgers[policy.key] = l
                return .wait(until: now + max(1, need), logLine: "warn: \(queueName) \(domain) msg \(id): rate exceeded [\(l.count + 1)/\(RateGate.fmt(cur))/\(RateGate.fmt(effective))] need \(need) secs; will try again later")
            }
            l = counted(l, key: policy.key, now: now)
            return .go(logLine: "info: \(queueName) \(domain) msg \(id): rate [\(l.count)/\(RateGate.fmt(cur))/\(RateGate.fmt(effective))] ok since \(elapsed) secs")
        case .smooth:
            guard effective > 0 else {
                // Negative: count only, as in average mode.
                _ = counted(l, key: policy.key, now: now)
                return .go(logLine: nil)
            }
            let T = Int64((1000.0 / effective).rounded(.up))
            let tau = Int64(Double(T) * (policy.burst - 1))
            if l.count == 0 || now - l.last > policy.interval { l.count = 0; l.start = now }
            if nowMS < l.tatMS - tau {
                let untilMS = l.tatMS - tau
                let need = (untilMS - nowMS + 999) / 1000
                ledgers[policy.key] = l
                let cur = now > l.start ? Double(l.count) / Double(now - l.start) : 0
                return .wait(until: (untilMS + 999) / 1000, logLine: "warn: \(queueName) \(domain) msg \(id): rate exceeded [\(l.count + 1)/\(RateGate.fmt(cur))/\(RateGate.fmt(effective))] need \(need) secs; will try again later")
            }
            // Lateness under a second (the scheduler works in seconds) is forgiven,
            // so the long-run rate is exact; a window still holds at most rate + burst.
            l.tatMS = (nowMS > l.tatMS && nowMS - l.tatMS < 1000 ? l.tatMS : max(l.tatMS, nowMS)) + T
            l = counted(l, key: policy.key, now: now)
            let cur = now > l.start ? Double(l.count) / Double(now - l.start) : 0
            return .go(logLine: "info: \(queueName) \(domain) msg \(id): rate [\(l.count)/\(RateGate.fmt(cur))/\(RateGate.fmt(effective))] ok since \(now - l.start) secs")
        }
    }

    /// A delivery admitted at `now`: counted in its ledger, which is stored and
    /// marked changed, and in the deliveries in flight. Returns the new ledger.
    mutating func counted(_ ledger: DomainLedger, key: String, now: Int64) -> DomainLedger {
        var l = ledger
        l.count += 1
        l.last = now
        ledgers[key] = l
        changed.insert(key)
        inFlight[key, default: 0] += 1
        return l
    }

    /// Deliveries the definition may still start now under its `concurrency`.
    public func freeSlots(_ policyKey: String) -> Int {
        guard let c = concurrencyLimit[policyKey] else { return Int.max }
        return c - (inFlight[policyKey] ?? 0)
    }

    /// A delivery to the domain finished. A "rate limited" answer (421, or a
    /// 4.7.x status) halves the rate, up to 64 times; successes recover it slowly.
    public mutating func finished(policyKey: String, report: String, deferred: Bool) {
        if let n = inFlight[policyKey], n > 0 { inFlight[policyKey] = n - 1 }
        var l = ledgers[policyKey] ?? DomainLedger()
        if deferred && RateGate.isRateLimitReply(report) {
            l.backoff = min(64, l.backoff * 2)
            l.successesSinceBackoff = 0
        } else if !deferred && l.backoff > 1 {
            l.successesSinceBackoff += 1
            if l.successesSinceBackoff >= 5 { l.backoff = max(1, l.backoff / 1.5); l.successesSinceBackoff = 0 }
        } else { return }
        ledgers[policyKey] = l
        changed.insert(policyKey)
    }

    /// A receiver saying "slow down": 421, or an enhanced status 4.7.x.
    public static func isRateLimitReply(_ text: String) -> Bool {
        for line in text.split(separator: "\n") {
            guard let r = line.range(ofText: "Remote host said: ") else { continue }
            let reply = line[r.upperBound...]
            if reply.hasPrefix("421") { return true }
            let words = reply.split(separator: " ")
            if words.count > 1, words[1].hasPrefix("4.7.") { return true }
        }
        return false
    }
}

