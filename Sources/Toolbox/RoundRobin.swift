// rrforward's sequence file (toolbox.md §1.4). No imports: the fuzz target
// compiles this file in as source.

public enum RoundRobin {
    /// The address index after the one the file's bytes record: the leading
    /// decimal digits of `previous` plus one, wrapping to 0 at `count`; no
    /// digits (an empty, new or garbage file) or a number too large → 0.
    public static func next(previous: some Collection<UInt8>, count: Int) -> Int {
        guard count > 0 else { return 0 }
        var value = 0
        var digits = 0
        for b in previous {
            guard b >= 48 && b <= 57 else { break }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(b - 48))
            if o1 || o2 { return 0 }
            value = a
            digits += 1
        }
        if digits == 0 { return 0 }
        if value >= count - 1 { return 0 }
        return value + 1
    }

    /// What is written back at offset 0 (without truncating: stale bytes after
    /// the newline are never read, only the leading digits are).
    public static func record(_ index: Int) -> [UInt8] { Array("\(index)\n".utf8) }
}
