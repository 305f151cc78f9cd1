/// Substring search without Foundation (which the per-message programs avoid).
extension StringProtocol {
    /// The first occurrence of `needle`, or nil.
    public func range(ofText needle: String) -> Range<Index>? {
        guard let f = needle.first else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i] == f && self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
