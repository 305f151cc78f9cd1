/// A binary min-heap of (time, key): qmail-send's `prioq`.
public struct TimedHeap: Sendable {
    public struct Entry: Sendable, Equatable {
        public var time: Time
        public var key: JobKey
    }

    private(set) var items: [Entry] = []

    public init() {}

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }
    public var min: Entry? { items.first }

    private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.time != b.time ? a.time < b.time : a.key < b.key
    }

    public mutating func insert(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if !TimedHeap.less(items[i], items[p]) { break }
            items.swapAt(i, p)
            i = p
        }
    }

    @discardableResult
    public mutating func popMin() -> Entry? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return top
    }

    /// Rebuilds from entries in O(n).
    public mutating func rebuild(_ entries: [Entry]) {
        items = entries
        if items.count < 2 { return }
        for start in stride(from: items.count / 2 - 1, through: 0, by: -1) { siftDown(start) }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && TimedHeap.less(items[l], items[m]) { m = l }
            if r < items.count && TimedHeap.less(items[r], items[m]) { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }

    public var entries: [Entry] { items }
}

/// A first-in first-out queue of jobs: an array read from a moving head,
/// compacted when the read part is the larger half.
struct JobFIFO: Sendable {
    private var items: [JobKey] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ k: JobKey) { items.append(k) }

    mutating func popFirst() -> JobKey? {
        guard head < items.count else { return nil }
        let k = items[head]
        head += 1
        if head == items.count { items.removeAll(keepingCapacity: true); head = 0 }
        else if head >= 1024 && head * 2 >= items.count { items.removeFirst(head); head = 0 }
        return k
    }
}
