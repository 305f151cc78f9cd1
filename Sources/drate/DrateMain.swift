#if canImport(Glibc)
import Glibc
#endif
import RateControl
import LMDB
import SystemIO
import ControlFiles

/// drate: manage per-domain delivery rates, in indimail-mta's file format,
/// on the same store slowq-send uses (definition files + the LMDB ledgers).
enum DrateMain {
    static let help = """
    usage: drate [-D dir] -d domain -r expr [-c]    set a domain's rate (+expr / -expr add to it)
           drate [-D dir] -s [-d domain]            show definitions and ledgers
           drate [-D dir] -l                        list rate-controlled domains
           drate [-D dir] -t -d domain [-C n] [-f]  simulate n deliveries now (-f: keep the counts)
           drate [-D dir] -a alias -d domain        make alias share domain's rate
           drate [-D dir] -U [-d domain]            delete a definition (all with -f)
           drate [-D dir] -R -d domain              reset a domain's counters
           drate [-D dir] --export | --import       ledgers to / from the drate files

    A rate expression gives deliveries per second: 500/3600 is 500 an hour. The
    definition files hold expr NUL count NUL start NUL last NUL, as indimail-mta's
    drate writes them. -c collapses an expression to its value.

    environment: RATELIMIT_DIR (default $QUEUEDIR/ratelimit, QUEUEDIR default
      $QMAILHOME/queue/slowq), QUEUEDIR (whose lock/engine.lmdb holds the ledgers)
    exit codes: 0 done, 100 usage or bad expression, 111 trouble with files

    """

    static func fail(_ m: String, _ code: Int32 = 111) -> Never { printError("drate: fatal: \(m)"); exit(code) }

    static func run() -> Never {
        var args = Array(CommandLine.arguments.dropFirst())
        var dir: String? = nil, domain: String? = nil, expr: String? = nil, alias: String? = nil
        var action: Character? = nil
        var count = 1, force = false, collapse = false
        func value() -> String {
            guard !args.isEmpty else { fail("option needs a value", 100) }
            return args.removeFirst()
        }
        while let a = args.first {
            args.removeFirst()
            switch a {
            case "--help", "-h": printOut(help); exit(0)
            case "-D": dir = value()
            case "-d":
                // drate keeps the part after the last @: -d user@example.com is example.com.
                let d = value().lowercased()
                domain = d.lastIndex(of: "@").map { String(d[d.index(after: $0)...]) } ?? d
            case "-r": expr = value(); action = action ?? "r"
            case "-s": action = "s"
            case "-l": action = "l"
            case "-t": action = "t"
            case "-a": alias = value().lowercased(); action = "a"
            case "-U": action = "U"
            case "-R": action = "R"
            case "-C": count = Int(value()) ?? 1
            case "-f": force = true
            case "-c": collapse = true
            case "-u": break
            case "--export": action = "e"
            case "--import": action = "i"
            default: fail("unknown option \(a)\n" + help, 100)
            }
        }
        let queue = Sys.environment("QUEUEDIR").flatMap { $0.isEmpty ? nil : $0 } ?? (Paths.qmailHome + "/queue/slowq")
        let path = dir ?? Sys.environment("RATELIMIT_DIR").flatMap { $0.isEmpty ? nil : $0 } ?? (queue + "/ratelimit")
        let rates = RateDirectory(path: path)
        guard let action else { fail("nothing to do\n" + help, 100) }
        if action != "l" && action != "s" && action != "e" && action != "i" && action != "U" && domain == nil { fail("-d domain is needed", 100) }
        if (try? Sys.stat(path)) == nil { _ = mkdir(path, 0o750) }
        let ledgers = LedgerStore(queue: queue)

        switch action {
        case "r":
            let d = domain!
            var e = expr!
            let file = path + "/" + d
            if e.hasPrefix("+") || e.hasPrefix("-"), let old = try? Sys.readFile(file), let def = try? RateDefinition.parse(old) {
                e = def.expression + e
            }
            let v: Double
            do { v = try RateExpression(e).evaluate() } catch { fail("bad rate expression \"\(e)\": \(error)", 100) }
            if collapse { e = fmt(v) }
            var def = (try? Sys.readFile(file)).flatMap { try? RateDefinition.parse($0) } ?? RateDefinition(expression: e)
            def.expression = e
            write(file, def)
            printOut("\(d): rate \(e) = \(fmt(v))/s (\(fmt(v * 3600)) an hour)\n")
        case "s", "l":
            let names = ((try? Sys.listDirectory(path)) ?? []).filter { n in n == ".global" || !n.hasPrefix(".") && n != "ratecontrol" }.sorted()
            for n in names where domain == nil || n == domain {
                guard let bytes = try? Sys.readFile(path + "/" + n), let def = try? RateDefinition.parse(bytes) else { continue }
                if action == "l" { printOut("\(n)\n"); continue }
                let v = (try? RateExpression(def.expression).evaluate()) ?? -1
                let policy: DomainPolicy? = n == ".global" ? DomainPolicy(key: ".global", expression: def.expression) : ((try? rates.policy(for: n)) ?? nil)
                let l = ledgers.get(policy?.key ?? n)
                let now = Int64(time(nil))
                var line = "\(n): rate \(def.expression) = \(fmt(v))/s, mode \(policy?.mode.rawValue ?? "smooth")"
                line += ", file count \(def.count) since \(def.start)"
                if let l {
                    let cur = now > l.start ? Double(l.count) / Double(now - l.start) : 0
                    line += ", delivered \(l.count) since \(l.start), current \(fmt(cur))/s"
                    let free = max(0, (l.tatMS - now * 1000 + 999) / 1000)
                    line += ", next free slot in \(free) s"
                    if l.backoff > 1 { line += ", backed off x\(fmt(l.backoff))" }
                }
                printOut(line + "\n")
            }
            // Ledgers of ratecontrol lines for one channel (no definition file).
            if action == "s" {
                for (k, l) in ledgers.all().sorted(by: { $0.0 < $1.0 }) where k.hasPrefix("local:") || k.hasPrefix("remote:") {
                    let d = String(k.drop(while: { $0 != ":" }).dropFirst())
                    if let domain, d != domain { continue }
                    printOut("\(k): ratecontrol line, delivered \(l.count) since \(l.start)\n")
                }
            }
        case "t":
            let d = domain!
            guard let p = (try? rates.policy(for: d)) ?? nil else { fail("\(d) is not rate controlled", 100) }
            // indimail's -t simulates with the file's own counts (average arithmetic).
            let file = path + "/" + d
            var def = (try? Sys.readFile(file)).flatMap { try? RateDefinition.parse($0) } ?? RateDefinition(expression: p.expression)
            var gate = RateGate(queueName: "drate")
            var l = DomainLedger()
            l.count = def.count; l.start = def.start; l.last = def.last
            gate.ledgers[p.key] = l
            var policy = p
            policy.mode = .average
            let now = Int64(time(nil))
            for i in 0..<count {
                switch gate.admit(domain: d, id: UInt64(i), policy: policy, nowMS: now * 1000) {
                case .go(let line): printOut((line ?? "ok") + "\n")
                case .wait(_, let line), .broken(let line), .busy(_, let line): printOut(line + "\n")
                }
                gate.finished(policyKey: p.key, report: "", deferred: false)
            }
            if force, let nl = gate.ledgers[p.key] {
                def.count = nl.count; def.start = nl.start; def.last = nl.last
                write(file, def)
            }
        case "a":
            let target = path + "/" + domain!
            guard Sys.exists(target) else { fail("\(domain!) has no definition", 100) }
            let link = path + "/" + alias!
            // Never over an existing definition (or .global): drate refuses, as indimail's does.
            var lst = stat()
            if lstat(link, &lst) == 0 {
                if (lst.st_mode & S_IFMT) != S_IFLNK { fail("Domain \(alias!) exists", 100) }
                _ = unlink(link)
            }
            if symlink(domain!, link) == -1 { fail("unable to link \(link): \(SystemError("symlink").reason)") }
            printOut("\(alias!) shares the rate of \(domain!)\n")
        case "U":
            if let d = domain { if (try? Sys.unlinkIfPresent(path + "/" + d)) == nil { fail("unable to remove \(d)") } }
            else if force { for n in (try? Sys.listDirectory(path)) ?? [] where n != "ratecontrol" && n != ".options" { _ = try? Sys.unlinkIfPresent(path + "/" + n) } }
            else { fail("-U needs -d domain, or -f for all", 100) }
        case "R":
            // The domain's own definition and ledger, and the ledgers of ratecontrol lines
            // for one channel (`local:<domain>`, `remote:<domain>`), which have no file.
            let file = path + "/" + domain!
            let channelKeys = ["local:" + domain!, "remote:" + domain!].filter { ledgers.get($0) != nil }
            if let bytes = try? Sys.readFile(file), var def = try? RateDefinition.parse(bytes) {
                def.count = 0; def.start = 0; def.last = 0
                write(file, def)
                ledgers.put(domain!, DomainLedger())
            } else if channelKeys.isEmpty {
                fail("\(domain!) has no definition", 100)
            }
            for k in channelKeys { ledgers.put(k, DomainLedger()) }
        case "e":
            for (k, l) in ledgers.all() {
                let file = path + "/" + k
                guard let bytes = try? Sys.readFile(file), var def = try? RateDefinition.parse(bytes) else { continue }
                def.count = l.count; def.start = l.start; def.last = l.last
                write(file, def)
                printOut("exported \(k)\n")
            }
        case "i":
            for n in ((try? Sys.listDirectory(path)) ?? []).sorted() where n != "ratecontrol" && n != ".options" {
                guard let bytes = try? Sys.readFile(path + "/" + n), let def = try? RateDefinition.parse(bytes) else { continue }
                var l = ledgers.get(n) ?? DomainLedger()
                l.count = def.count; l.start = def.start; l.last = def.last
                ledgers.put(n, l)
                printOut("imported \(n)\n")
            }
        default: break
        }
        exit(0)
    }

    static func write(_ file: String, _ def: RateDefinition) {
        do { try Sys.writeFile(file, def.bytes(), mode: 0o640) } catch { fail("unable to write \(file): \(error)") }
    }

    static func fmt(_ d: Double) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        _ = withVaList([d]) { vsnprintf(&buf, 64, "%.6g", $0) }
        return String(cString: buf)
    }
}

/// The ledgers in the queue's LMDB (`lock/engine.lmdb`, database `rates`).
struct LedgerStore {
    let env: LMDBEnvironment?
    let db: LMDBDatabase?

    init(queue: String) {
        let path = queue + "/lock/engine.lmdb"
        var o = LMDBEnvironment.Options()
        o.noSubdirectory = true
        o.mapSize = 4 << 30
        if Sys.exists(queue + "/lock"), let e = try? LMDBEnvironment(path: path, options: o), let d = try? e.database("rates") {
            env = e; db = d
        } else { env = nil; db = nil }
    }

    func get(_ key: String) -> DomainLedger? {
        guard let env, let db else { return nil }
        return (try? env.read { try $0.get(db, Array(key.utf8)) }).flatMap { $0.flatMap { DomainLedger(bytes: $0) } }
    }

    func put(_ key: String, _ l: DomainLedger) {
        guard let env, let db else { return }
        try? env.write { try $0.put(db, Array(key.utf8), l.bytes) }
    }

    func all() -> [(String, DomainLedger)] {
        guard let env, let db else { return [] }
        var out: [(String, DomainLedger)] = []
        try? env.read { txn in
            try txn.forEach(db) { k, v in
                if let l = DomainLedger(bytes: v) { out.append((String(decoding: k, as: UTF8.self), l)) }
                return true
            }
        }
        return out
    }
}
