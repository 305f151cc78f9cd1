#if canImport(Glibc)
import Glibc
#endif
import CNet
import CShims
import SystemIO
import ControlFiles
import RemoteDelivery
import Synchronization

/// A network and prefix length (`127.0.0.0/8`, `::1/128`, a bare address).
public struct AddressRange: Sendable, Equatable {
    public let address: [UInt8]
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let a = ipAddress(parts[0]) else { return nil }
        address = a
        if parts.count == 2 {
            guard let p = Int(parts[1]), p >= 0, p <= a.count * 8 else { return nil }
            prefix = p
        } else { prefix = a.count * 8 }
    }

    public func contains(_ text: String) -> Bool {
        guard let a = ipAddress(text), a.count == address.count else { return false }
        var bits = prefix
        for i in 0..<a.count where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : UInt8(0xFF << (8 - bits) & 0xFF)
            if a[i] & mask != address[i] & mask { return false }
            bits -= 8
        }
        return true
    }
}

/// qmail-smtpd as one long-running process: it binds its addresses (as root
/// if the port needs it), then becomes the unprivileged user and serves each
/// connection on a thread of its own, with a bound on connections in total and
/// per client address. Same commands, replies and files as under tcpserver.
public final class SMTPDaemon: @unchecked Sendable {
    public struct Settings: Sendable {
        public var listen: [(address: [UInt8], port: Int)] = []
        public var user: String? = nil
        public var maxConnections = 200
        public var maxPerIP = 20
        public var relay: [AddressRange] = []
        public var options = SMTPDOptions()
        public init() {}
    }

    let settings: Settings
    let control: ControlDirectory
    /// Chosen after the privilege drop (in-process when the queue is writable).
    var queue: MessageQueue
    var listeners: [Int32] = []
    let counts = Mutex<(total: Int, perIP: [String: Int])>((0, [:]))
    let threads = ConnectionThreads()
    let controlsBox: Mutex<SMTPDControls>
    let baseEnvironment: [String]
    /// The program's name in the log (the same daemon serves qmail-qmtpd and qmail-qmqpd).
    public var name = "qmail-smtpd"
    /// Written to a client turned away for too many connections.
    public var busyReply = Array("421 too many connections, try again later (#4.3.2)\r\n".utf8)
    /// How the control files are read at start and on SIGHUP.
    public var loadControls: @Sendable (ControlDirectory) throws -> SMTPDControls = { try SMTPDControls.load($0) }
    /// Serves one connection in place of an SMTP session (QMTP, QMQP): the
    /// transport, the client, the queue program's environment, the controls.
    public var serveConnection: (@Sendable (SMTPTransport, ConnectionInfo, [String], SMTPDControls) -> Void)? = nil

    public init(settings: Settings, control: ControlDirectory, controls: SMTPDControls, queue: MessageQueue) {
        self.settings = settings
        self.control = control
        self.queue = queue
        controlsBox = Mutex(controls)
        // The queue program inherits our environment less any one connection's variables.
        let drop = ["PROTO", "TCPREMOTEIP", "TCPREMOTEHOST", "TCPREMOTEINFO", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALHOST",
                    "TCPLOCALPORT", "TCP6REMOTEIP", "TCP6LOCALIP", "TCP6LOCALPORT", "RELAYCLIENT", "AUTHINFO"]
        baseEnvironment = currentEnvironment().filter { e in !drop.contains { e.hasPrefix($0 + "=") } }
    }

    static func say(_ s: String) {
        _ = try? Sys.write(2, Array((s + "\n").utf8))
    }

    /// Binds every address; the bound ports (useful with port 0). Also raises
    /// the limit on open descriptors to its hard limit: each connection holds
    /// one, and its queue program three more while a message is handed over.
    public func bind() throws(SystemError) -> [Int] {
        var lim = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        }
        var ports: [Int] = []
        for (a, p) in settings.listen {
            let fd = a.withUnsafeBufferPointer { qs_listen($0.baseAddress, Int32($0.count), Int32(p), 512) }
            if fd < 0 { throw SystemError("bind \(ipText(a)):\(p)", errno: -fd) }
            listeners.append(fd)
            ports.append(Int(qs_local_port(fd)))
        }
        return ports
    }

    /// Becomes `settings.user` (default `qmaild`) when running as root; never
    /// serves a client as root.
    public func dropPrivileges() throws(SystemError) {
        guard geteuid() == 0 else { return }
        let name = settings.user ?? "qmaild"
        guard let pw = UserDatabase.user(named: name) else {
            throw SystemError("refusing to serve clients as root: no user \(name) (name one with --user)", errno: ENOENT)
        }
        if pw.uid == 0 { throw SystemError("refusing to serve clients as root: \(name) has uid 0", errno: EPERM) }
        var groups: [gid_t] = [pw.gid]
        if setgroups(1, &groups) == -1 { throw SystemError("setgroups") }
        if setgid(pw.gid) == -1 { throw SystemError("setgid") }
        if setuid(pw.uid) == -1 { throw SystemError("setuid") }
        if setuid(0) == 0 { throw SystemError("dropping root did not stick", errno: EPERM) }
    }

    nonisolated(unsafe) static var stopRequested: sig_atomic_t = 0
    nonisolated(unsafe) static var reloadRequested: sig_atomic_t = 0

    /// Accepts until SIGTERM; then stops listening and waits (at most
    /// `timeoutsmtpd` seconds) for the sessions in progress.
    public func serve() {
        signal(SIGPIPE, SIG_IGN)
        signal(SIGTERM) { _ in SMTPDaemon.stopRequested = 1 }
        signal(SIGHUP) { _ in SMTPDaemon.reloadRequested = 1 }
        var fds = listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while SMTPDaemon.stopRequested == 0 {
            if SMTPDaemon.reloadRequested != 0 {
                SMTPDaemon.reloadRequested = 0
                do {
                    let c = try loadControls(control)
                    controlsBox.withLock { $0 = c }
                    SMTPDaemon.say("\(name): control files read again")
                } catch {
                    SMTPDaemon.say("\(name): unable to read controls, keeping the old ones: \(error)")
                }
            }
            let r = poll(&fds, nfds_t(fds.count), 500)
            if r <= 0 { continue }
            for p in fds where p.revents & Int16(POLLIN) != 0 { acceptOne(p.fd) }
        }
        for l in listeners { close(l) }
        let deadline = time(nil) + time_t(controlsBox.withLock { $0.timeout })
        while counts.withLock({ $0.total }) > 0 && time(nil) < deadline { usleep(50_000) }
    }

    func acceptOne(_ lfd: Int32) {
        var remote = [CChar](repeating: 0, count: 64), local = [CChar](repeating: 0, count: 64)
        var rport: Int32 = 0, lport: Int32 = 0
        let fd = qs_accept(lfd, &remote, 64, &rport, &local, 64, &lport)
        if fd < 0 { return }
        let ip = String(cString: remote)
        let admitted = counts.withLock { c -> Bool in
            if c.total >= settings.maxConnections || c.perIP[ip, default: 0] >= settings.maxPerIP { return false }
            c.total += 1
            c.perIP[ip, default: 0] += 1
            return true
        }
        if !admitted {
            _ = busyReply.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            close(fd)
            return
        }
        var info = ConnectionInfo(remoteIP: ip, localIP: String(cString: local), localPort: Int(lport))
        if settings.relay.contains(where: { $0.contains(ip) }) { info.relayClient = "" }
        let job = Job(daemon: self, fd: fd, info: info)
        if !threads.run(job) {
            close(fd)
            finished(ip)
        }
    }

    func finished(_ ip: String) {
        counts.withLock { c in
            c.total -= 1
            let n = c.perIP[ip, default: 1] - 1
            c.perIP[ip] = n > 0 ? n : nil
        }
    }

    /// The threads connections run on. A thread whose connection ended waits
    /// up to `idleSeconds` for the next one before it exits (at most `maxIdle`
    /// wait at once), so a busy daemon does not create and destroy a thread
    /// per connection (`clone`, the stack's `madvise`, signal masks: about a
    /// dozen system calls each time). Each thread has a small stack: sessions
    /// keep their buffers on the heap.
    final class ConnectionThreads: @unchecked Sendable {
        let lock = ConditionLock()
        var waiting: [Job] = []
        var idle = 0
        let idleSeconds = 10
        let maxIdle = 64

        /// Runs `job` on an idle thread or a new one; false when no thread could be made.
        func run(_ job: Job) -> Bool {
            lock.lock()
            if idle > waiting.count {
                waiting.append(job)
                lock.signal()
                lock.unlock()
                return true
            }
            lock.unlock()
            var attr = pthread_attr_t()
            pthread_attr_init(&attr)
            defer { pthread_attr_destroy(&attr) }
            pthread_attr_setstacksize(&attr, 512 * 1024)
            pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
            var tid = pthread_t()
            let box = Unmanaged.passRetained(Start(threads: self, job: job))
            let r = pthread_create(&tid, &attr, { arg in
                let start = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
                start.threads.loop(first: start.job)
                return nil
            }, box.toOpaque())
            if r != 0 { box.release(); return false }
            return true
        }

        final class Start {
            let threads: ConnectionThreads
            let job: Job
            init(threads: ConnectionThreads, job: Job) { self.threads = threads; self.job = job }
        }

        private func loop(first: Job) {
            var job: Job? = first
            while let j = job {
                j.run()
                job = nil
                lock.lock()
                if idle < maxIdle {
                    idle += 1
                    while waiting.isEmpty { if !lock.wait(seconds: idleSeconds) { break } }
                    idle -= 1
                    if !waiting.isEmpty { job = waiting.removeFirst() }
                }
                lock.unlock()
            }
        }
    }

    /// One connection.
    final class Job: @unchecked Sendable {
        let daemon: SMTPDaemon
        let fd: Int32
        let info: ConnectionInfo

        init(daemon: SMTPDaemon, fd: Int32, info: ConnectionInfo) {
            self.daemon = daemon
            self.fd = fd
            self.info = info
        }

        func run() {
            let controls = daemon.controlsBox.withLock { $0 }
            let io = SMTPTransport(readFD: fd, writeFD: fd, timeout: controls.timeout)
            if let serve = daemon.serveConnection {
                serve(io, info, daemon.baseEnvironment + info.environment, controls)
                io.flush()
                shutdown(fd, Int32(SHUT_RDWR))
                close(fd)
                daemon.finished(info.remoteIP)
                return
            }
            let session = SMTPSession(transport: io, controls: controls, connection: info, options: daemon.settings.options,
                                      queue: daemon.queue, environment: daemon.baseEnvironment + info.environment,
                                      log: { SMTPDaemon.say($0) })
            session.run()
            io.flush()
            io.endTLS()
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
            daemon.finished(info.remoteIP)
        }
    }
}

func currentEnvironment() -> [String] {
    var out: [String] = []
    var p = environ
    while let e = p.pointee { out.append(String(cString: e)); p += 1 }
    return out
}
