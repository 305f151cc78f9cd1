// Compiled twice: into SystemIO, and (through a symbolic link) into the Embedded
// Swift builds of qmail-inject and sendmail. Keep it Embedded-clean.
#if hasFeature(Embedded)
import CShims
#else
import Glibc
import CShims
#endif

/// Reads a descriptor through a buffer, a byte at a time when needed: the
/// equivalent of qmail's substdio for parsing NUL-separated records.
public struct BufferedReader {
    public let fd: Int32
    public let path: String?
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    public init(fd: Int32, path: String? = nil, capacity: Int = 8192) {
        self.fd = fd
        self.path = path
        self.buffer = [UInt8](repeating: 0, count: capacity)
    }

    private mutating func fill() throws(SystemError) -> Bool {
        let fd = self.fd, path = self.path
        let r = buffer.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) -> Result<Int, SystemError> in
            do throws(SystemError) { return .success(try Sys.read(fd, into: raw, path: path)) } catch { return .failure(error) }
        }
        let n = try r.get()
        start = 0
        end = n
        return n > 0
    }

    /// The next byte, or nil at end of input.
    public mutating func byte() throws(SystemError) -> UInt8? {
        if start == end { if try !fill() { return nil } }
        let b = buffer[start]
        start += 1
        return b
    }

    /// Reads up to and including `terminator`; returns the bytes without it, and
    /// whether the terminator was seen (false = end of input first).
    public mutating func read(until terminator: UInt8, limit: Int = Int.max) throws(SystemError) -> (bytes: [UInt8], terminated: Bool) {
        var out: [UInt8] = []
        while true {
            if start == end { if try !fill() { return (out, false) } }
            var i = start
            while i < end && buffer[i] != terminator { i += 1 }
            out.append(contentsOf: buffer[start..<i])
            if i < end {
                start = i + 1
                return (out, true)
            }
            start = end
            if out.count > limit { return (out, false) }
        }
    }

    /// Bytes already buffered but not consumed, then the rest of the descriptor, to `sink`.
    public mutating func drain(_ sink: (UnsafeRawBufferPointer) throws(SystemError) -> Void) throws(SystemError) {
        while true {
            if start < end {
                let s = start, e = end
                let failure = buffer.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> SystemError? in
                    do throws(SystemError) { try sink(UnsafeRawBufferPointer(rebasing: raw[s..<e])); return nil } catch { return error }
                }
                if let failure { throw failure }
                start = end
            }
            if try !fill() { return }
        }
    }
}

/// Collects writes to a descriptor into a buffer (qmail's substdio for output).
public struct BufferedWriter {
    public let fd: Int32
    public let path: String?
    private var buffer: [UInt8] = []
    private let capacity: Int

    public init(fd: Int32, path: String? = nil, capacity: Int = 65536) {
        self.fd = fd
        self.path = path
        self.capacity = capacity
        buffer.reserveCapacity(capacity)
    }

    public mutating func write(_ bytes: some Collection<UInt8>) throws(SystemError) {
        if buffer.count + bytes.count > capacity { try flush() }
        if bytes.count >= capacity {
            try Sys.write(fd, Array(bytes), path: path)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    public mutating func write(_ string: String) throws(SystemError) {
        try write(Array(string.utf8))
    }

    public mutating func write(byte: UInt8) throws(SystemError) {
        if buffer.count + 1 > capacity { try flush() }
        buffer.append(byte)
    }

    public mutating func flush() throws(SystemError) {
        if buffer.isEmpty { return }
        try Sys.write(fd, buffer, path: path)
        buffer.removeAll(keepingCapacity: true)
    }
}
