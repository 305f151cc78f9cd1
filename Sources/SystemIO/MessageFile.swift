#if canImport(Glibc)
import Glibc
#endif

/// A message read from its queue file in bounded chunks, so that a delivery's
/// memory does not grow with the message: a 270 MB message costs a 64 KB
/// buffer, not 270 MB (or twice that once dot-stuffed). Reads use `pread`,
/// so the descriptor's offset is left alone (a program delivery reads the
/// same descriptor as its standard input). Messages given as bytes (tests,
/// a message on a pipe) go through the same interface.
public struct MessageFile: Sendable {
    public static let chunkSize = 65536

    enum Source: Sendable {
        case file(fd: Int32, size: Int)
        case bytes([UInt8])
    }
    let source: Source

    /// The file open on `fd`, of the size `fstat` gives now (queue files do not change).
    public init(fd: Int32, path: String? = nil) throws(SystemError) {
        let st = try Sys.fstat(fd, path: path)
        source = .file(fd: fd, size: Int(st.st_size))
    }

    /// A message held in memory.
    public init(bytes: [UInt8]) { source = .bytes(bytes) }

    /// Standard input: a regular file is read in place (qmail-rspawn gives the
    /// queue file); anything else (a pipe) is read into memory.
    public static func standardInput() throws(SystemError) -> MessageFile {
        let st = try Sys.fstat(0)
        if (st.st_mode & S_IFMT) == S_IFREG { return try MessageFile(fd: 0) }
        return MessageFile(bytes: try Sys.readAll(0))
    }

    public var count: Int {
        switch source {
        case .file(_, let size): return size
        case .bytes(let b): return b.count
        }
    }

    /// The last byte, nil for an empty message.
    public func lastByte() throws(SystemError) -> UInt8? {
        if count == 0 { return nil }
        var one: [UInt8] = []
        try read(at: count - 1, count: 1, into: &one)
        return one.last
    }

    /// `count` bytes from `offset` into `buffer` (its old contents replaced);
    /// fewer only at the end of the message. A file that ends before the size
    /// it had is an error (EIO), never a silently shorter message.
    public func read(at offset: Int, count wanted: Int, into buffer: inout [UInt8]) throws(SystemError) {
        let n = max(0, min(wanted, count - offset))
        switch source {
        case .bytes(let b):
            buffer.removeAll(keepingCapacity: true)
            buffer.append(contentsOf: b[offset..<(offset + n)])
        case .file(let fd, _):
            if buffer.count != n {
                if buffer.count > n { buffer.removeLast(buffer.count - n) } else { buffer.append(contentsOf: repeatElement(0, count: n - buffer.count)) }
            }
            var done = 0
            var failure: SystemError? = nil
            buffer.withUnsafeMutableBytes { raw in
                while done < n {
                    let r = pread(fd, raw.baseAddress! + done, n - done, off_t(offset + done))
                    if r == -1 && errno == EINTR { continue }
                    if r == -1 { failure = SystemError("read"); return }
                    if r == 0 { failure = SystemError("read", errno: EIO); return }
                    done += r
                }
            }
            if let failure { throw failure }
        }
    }

    /// Calls `body` with each chunk of at most `chunkSize` bytes, in order; one
    /// buffer serves every chunk.
    public func forEachChunk<E: Error>(_ body: (ArraySlice<UInt8>) throws(E) -> Void) throws(MessageFileFailure<E>) {
        if case .bytes(let b) = source {
            var offset = 0
            while offset < b.count {
                let end = min(offset + MessageFile.chunkSize, b.count)
                do throws(E) { try body(b[offset..<end]) } catch { throw .body(error) }
                offset = end
            }
            return
        }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(MessageFile.chunkSize)
        var offset = 0
        while offset < count {
            do throws(SystemError) { try read(at: offset, count: MessageFile.chunkSize, into: &buffer) } catch { throw .read(error) }
            do throws(E) { try body(buffer[...]) } catch { throw .body(error) }
            offset += buffer.count
        }
    }

    /// Whether any byte has its high bit set (8BITMIME), read in chunks.
    public func hasEightBitBytes() throws(SystemError) -> Bool {
        var found = false
        do throws(MessageFileFailure<Never>) {
            try forEachChunk { (chunk: ArraySlice<UInt8>) throws(Never) in
                if !found && chunk.contains(where: { $0 >= 128 }) { found = true }
            }
        } catch {
            if case .read(let e) = error { throw e }
        }
        return found
    }
}

/// A failure while going through a message: reading it, or what the caller did with a chunk.
public enum MessageFileFailure<E: Error>: Error {
    case read(SystemError)
    case body(E)
}
