#if canImport(Glibc)
import Glibc
#endif
import CNet

/// One client connection: reads with a timeout through an input buffer (so
/// pipelined commands are never lost), buffered replies flushed before the
/// server waits for input (RFC 2920's batching), and STARTTLS. Under
/// tcpserver the connection is descriptors 0 and 1; in the daemon one socket.
public final class SMTPTransport: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32
    var tls: UnsafeMutableRawPointer? = nil
    /// Bytes read and not yet used: `buffer[start...]`.
    var buffer: [UInt8] = []
    var start = 0
    var output: [UInt8] = []
    /// Seconds each wait for input, and each write, may take.
    public var timeout: Int { didSet { kernelTimeouts = setKernelTimeouts() } }
    public private(set) var failed = false
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 16)
    /// Both descriptors are sockets whose `SO_RCVTIMEO`/`SO_SNDTIMEO` carry the
    /// timeout, so a plain blocking read or write waits at most `timeout` and
    /// no `poll` is needed before it (two system calls per SMTP command become
    /// one). Pipes, files and TLS keep the `poll` before each read and write.
    var kernelTimeouts = false

    public enum ReadStatus: Equatable { case ok, eof, timeout }

    public init(readFD: Int32, writeFD: Int32, timeout: Int) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.timeout = timeout
        output.reserveCapacity(4096)
        kernelTimeouts = setKernelTimeouts()
    }

    /// Sets the socket timeouts; false when a descriptor is not a socket (or is
    /// non-blocking, where a read would not wait at all).
    private func setKernelTimeouts() -> Bool {
        var tv = timeval(tv_sec: max(1, timeout), tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        for fd in readFD == writeFD ? [readFD] : [readFD, writeFD] {
            let fl = fcntl(fd, F_GETFL)
            if fl == -1 || fl & O_NONBLOCK != 0 { return false }
        }
        guard setsockopt(readFD, SOL_SOCKET, SO_RCVTIMEO, &tv, size) == 0,
              setsockopt(writeFD, SOL_SOCKET, SO_SNDTIMEO, &tv, size) == 0 else { return false }
        return true
    }

    deinit {
        if let t = tls { qs_tls_close(t) }
        scratch.deallocate()
    }

    public var isTLS: Bool { tls != nil }

    public var tlsDescription: String? {
        guard let t = tls else { return nil }
        var buf = [CChar](repeating: 0, count: 256)
        _ = qs_tls_description(t, &buf, 256)
        return String(cString: buf)
    }

    /// Queues a reply line (CRLF added).
    public func reply(_ line: String) {
        output += Array(line.utf8)
        output += [13, 10]
    }

    /// Queues bytes as they are (QMTP and QMQP responses).
    public func send(_ bytes: [UInt8]) {
        output += bytes
    }

    /// Writes what is queued; false when the client is gone or too slow.
    @discardableResult
    public func flush() -> Bool {
        var off = 0
        while off < output.count && !failed {
            if tls == nil && !kernelTimeouts {
                var p = pollfd(fd: writeFD, events: Int16(POLLOUT), revents: 0)
                let r = poll(&p, 1, Int32(clamping: timeout * 1000))
                if r == 0 { failed = true; break }
                if r < 0 { if errno == EINTR { continue }; failed = true; break }
            }
            let n = output.withUnsafeBytes { raw -> Int in
                if let tls { return qs_tls_write(tls, raw.baseAddress! + off, raw.count - off) }
                return Glibc.write(writeFD, raw.baseAddress! + off, raw.count - off)
            }
            if n <= 0 {
                if n == -1 && errno == EINTR { continue }
                failed = true
                break
            }
            off += n
        }
        output.removeAll(keepingCapacity: true)
        return !failed
    }

    /// Unused input is at hand.
    public var hasBufferedInput: Bool { start < buffer.count }

    /// Reads more input (after flushing the replies), waiting at most `timeout`.
    func fill() -> ReadStatus {
        if !flush() { return .eof }
        if start > 0 && start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
        if start > 65536 { buffer.removeFirst(start); start = 0 }
        while true {
            if tls == nil ? !kernelTimeouts : qs_tls_pending(tls) == 0 {
                var p = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
                let r = poll(&p, 1, Int32(clamping: timeout * 1000))
                if r == 0 { return .timeout }
                if r < 0 { if errno == EINTR { continue }; return .eof }
            }
            let n: Int
            if let tls { n = qs_tls_read(tls, scratch, 65536) } else { n = Glibc.read(readFD, scratch, 65536) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return .timeout }
            if n <= 0 { return .eof }
            buffer.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: n))
            return .ok
        }
    }

    public enum Line: Equatable { case line([UInt8]), tooLong, eof, timeout }

    /// One command line: up to LF, one CR before it dropped; a NUL becomes LF
    /// (as indimail does). Longer than `maxLength`: `.tooLong` (the rest is not read).
    public func readLine(maxLength: Int) -> Line {
        // Bytes after `start` already searched for LF (fill may move the buffer, so
        // this is kept relative to `start`).
        var searched = 0
        while true {
            if let nl = buffer[(start + searched)...].firstIndex(of: 10) {
                var line = Array(buffer[start..<nl])
                start = nl + 1
                if line.last == 13 { line.removeLast() }
                if line.count > maxLength { return .tooLong }
                for i in line.indices where line[i] == 0 { line[i] = 10 }
                return .line(line)
            }
            searched = buffer.count - start
            if searched > maxLength { return .tooLong }
            switch fill() {
            case .ok: continue
            case .eof: return .eof
            case .timeout: return .timeout
            }
        }
    }

    /// Feeds input to `body` until it says it has used what it needs; what it
    /// did not use stays for the next command. `body` returns the bytes used and
    /// whether it is done.
    public func consume(_ body: (ArraySlice<UInt8>) -> (used: Int, done: Bool)) -> ReadStatus {
        while true {
            if start < buffer.count {
                let (used, done) = body(buffer[start...])
                start += used
                if done { return .ok }
            }
            let r = fill()
            if r != .ok { return r }
        }
    }

    /// Ends TLS (close_notify) before the descriptor is closed: after the close
    /// the number may already belong to another connection.
    public func endTLS() {
        if let t = tls { qs_tls_close(t); tls = nil }
    }

    /// Throws away input received and not used (after STARTTLS: RFC 3207).
    public func discardInput() {
        buffer.removeAll(keepingCapacity: true)
        start = 0
    }

    /// The TLS handshake as server; nil on success, else the reason.
    public func startTLS(certificate: String) -> String? {
        flush()
        discardInput()
        // The handshake's reads and writes are bounded by the socket timeouts where the
        // descriptors are sockets (a pipe under a test has none: the peer is trusted there).
        _ = qs_socket_timeout(readFD, Int32(clamping: timeout * 1000))
        if writeFD != readFD { _ = qs_socket_timeout(writeFD, Int32(clamping: timeout * 1000)) }
        var err = [CChar](repeating: 0, count: 256)
        guard let t = qs_tls_accept(readFD, writeFD, certificate, &err, 256) else { return String(cString: err) }
        tls = t
        return nil
    }
}
