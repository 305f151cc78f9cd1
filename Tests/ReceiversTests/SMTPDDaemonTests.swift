import XCTest
import Foundation
import Receivers
import QueueStore
import QueueFormat
import SystemIO
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The daemon: many connections in one process, its limits, the user it
/// serves as, real tcpserver for the classic mode, and a crash test.
final class SMTPDDaemonTests: XCTestCase {
    var h: SMTPDHarness!
    override func setUp() { h = SMTPDHarness() }
    override func tearDown() { h.cleanup() }

    func testServesAsTheNamedUserAndQueuesThroughQmailQueue() throws {
        let port = try h.startDaemon()
        let pid = h.daemonPIDs[0]
        let status = String(decoding: TestEnv.read("/proc/\(pid)/status"), as: UTF8.self)
        let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") }!
        XCTAssertEqual(uidLine.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().map(String.init), ["65534", "65534", "65534", "65534"])
        let (c, greeting) = try h.connect(port)
        defer { c.close() }
        XCTAssertEqual(greeting, ["220 domain ESMTP"])
        XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("Subject: d\r\n\r\nvia the daemon\r\n.").hasPrefix("250 ok"))
        XCTAssertEqual(c.command("QUIT"), "221 domain closing connection")
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by 127.0.0.1 with ESMTP; "), q[0].message)
        XCTAssertTrue(h.daemonLog.contains("MAIL from <a@x.example> RCPT <b@domain>"), h.daemonLog)
    }

    /// The daemon writes the queue itself (its user can write it): the same files,
    /// modes and bytes as qmail-queue writes for the same message under tcpserver's
    /// per-connection mode, apart from the u and p records and the Received lines.
    func testInProcessQueueIsByteCompatibleWithQmailQueue() throws {
        func send(_ c: SMTPDHarness.Client) {
            XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
            XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
            XCTAssertEqual(c.command("RCPT TO:<c@domain>"), "250 ok")
            XCTAssertEqual(c.command("DATA"), "354 go ahead")
            XCTAssertTrue(c.command("Subject: same\r\n\r\nthe same bytes\r\n..dot\r\n.").hasPrefix("250 ok"))
        }
        h.extraEnv["QQEH"] = "X-QQEH: both"
        let (viaQueue, _) = try h.classic()
        send(viaQueue)
        viaQueue.close()
        let port = try h.startDaemon()
        XCTAssertTrue(h.daemonLog.contains("in-process"), h.daemonLog)
        let (viaDaemon, _) = try h.connect(port)
        send(viaDaemon)
        viaDaemon.close()
        let todo = TestEnv.files(under: h.queue + "/todo").sorted()
        XCTAssertEqual(todo.count, 2)
        func stripUP(_ b: [UInt8]) -> [UInt8] {
            var i = 0, nul = 0
            while i < b.count && nul < 2 { if b[i] == 0 { nul += 1 }; i += 1 }
            return Array(b[i...])
        }
        func body(_ m: [UInt8]) -> [UInt8] {
            // After the two Received lines (qmail-queue's of two lines, then ours of two).
            var lines = 0, i = 0
            while i < m.count && lines < 4 { if m[i] == 10 { lines += 1 }; i += 1 }
            return Array(m[i...])
        }
        var envelopes: [[UInt8]] = [], bodies: [[UInt8]] = []
        for t in todo {
            let id = UInt64(t)!
            envelopes.append(stripUP(TestEnv.read(h.queue + "/todo/" + t)))
            let messPath = h.queue + "/mess/\(id % 23)/\(id)"
            bodies.append(body(TestEnv.read(messPath)))
            let st = try XCTUnwrap(try Sys.stat(messPath))
            XCTAssertEqual(st.st_mode & 0o777, 0o644)
            XCTAssertEqual(UInt64(st.st_ino), id)
            XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.queue + "/intd/" + t)).st_nlink, 2)
        }
        XCTAssertEqual(envelopes[0], envelopes[1])
        XCTAssertEqual(envelopes[0], Array("Fa@x.example\0Tb@domain\0Tc@domain\0eX-QQEH: both\n\0".utf8))
        XCTAssertEqual(bodies[0], bodies[1])
        XCTAssertEqual(bodies[0], Array("Subject: same\n\nthe same bytes\n.dot\n".utf8))
        XCTAssertEqual(TestEnv.files(under: h.queue + "/pid"), [])
    }

    /// The daemon's writer takes emptied files from the `pid/spare.<k>` ring that
    /// qmail-clean fills (SpareSlots): the message and its envelope are written
    /// into them, cut to their length, with the same bytes, modes and link counts
    /// as new files would have; a spare that still has another name (an intd file
    /// whose todo link is not gone yet) is never written, only dropped from the ring.
    func testInProcessQueueWritesIntoSpareFilesByteForByte() throws {
        let pidDir = try XCTUnwrap(try Sys.stat(h.queue + "/pid"))
        let garbage = Array(String(repeating: "old message text that must not survive\n", count: 300).utf8)
        var inodes: [UInt64] = []
        for k in 0..<2 {
            let p = h.queue + "/pid/spare.\(k)"
            try Sys.writeFile(p, garbage, mode: 0o644)
            XCTAssertEqual(chown(p, pidDir.st_uid, pidDir.st_gid), 0)
            inodes.append(UInt64(try XCTUnwrap(try Sys.stat(p)).st_ino))
        }
        let port = try h.startDaemon()
        XCTAssertTrue(h.daemonLog.contains("in-process"), h.daemonLog)
        let (c, _) = try h.connect(port)
        XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("Subject: reused\r\n\r\nshort\r\n.").hasPrefix("250 ok"))
        let todo = TestEnv.files(under: h.queue + "/todo")
        XCTAssertEqual(todo.count, 1)
        let id = try XCTUnwrap(UInt64(todo[0]))
        XCTAssertEqual(id, inodes[0], "the message id is the reused mess file's inode")
        let mess = TestEnv.read(h.queue + "/mess/\(id % 23)/\(id)")
        XCTAssertTrue(String(decoding: mess, as: UTF8.self).hasSuffix("Subject: reused\n\nshort\n"), String(decoding: mess, as: UTF8.self))
        XCTAssertFalse(String(decoding: mess, as: UTF8.self).contains("old message text"))
        let intd = try XCTUnwrap(try Sys.stat(h.queue + "/intd/\(id)"))
        XCTAssertEqual(UInt64(intd.st_ino), inodes[1], "the envelope went into the second spare")
        XCTAssertEqual(intd.st_nlink, 2)
        XCTAssertEqual(intd.st_mode & 0o777, 0o644)
        XCTAssertEqual(Array(TestEnv.read(h.queue + "/todo/\(id)").drop { $0 != UInt8(ascii: "F") }),
                       Array("Fa@x.example\0Tb@domain\0".utf8))
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(h.queue + "/mess/\(id % 23)/\(id)")).st_mode & 0o777, 0o644)

        // A spare that still has another name is dropped from the ring, never written.
        let other = h.queue + "/todo/held-elsewhere"
        for k in 2..<3 {
            let p = h.queue + "/pid/spare.\(k)"
            try Sys.writeFile(p, garbage, mode: 0o644)
            XCTAssertEqual(chown(p, pidDir.st_uid, pidDir.st_gid), 0)
            try Sys.link(p, other)
        }
        XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("Subject: second\r\n\r\nnew file\r\n.").hasPrefix("250 ok"))
        c.close()
        XCTAssertEqual(TestEnv.read(other), garbage, "the file with another name is untouched")
        XCTAssertEqual(try XCTUnwrap(try Sys.stat(other)).st_nlink, 1, "and no longer in the ring")
        unlink(other)
        XCTAssertEqual(TestEnv.files(under: h.queue + "/todo").count, 2)
        XCTAssertEqual(TestEnv.files(under: h.queue + "/pid"), [])
    }

    /// Inflow control: with the engine saying (in lock/flow, FlowControl's real
    /// file) that more messages wait for their first delivery than `flowwindow`,
    /// DATA waits; it goes on as soon as the count falls, or after `flowdelay`;
    /// a figure more than 10 s old is ignored.
    /// lock/flow saying `waiting`, the daemon started with a window of 5 and `delay` ms.
    func gatedDaemon(waiting: Int, delay: Int) throws -> (engine: FlowControl.Publisher, port: Int) {
        try FlowControl.prepare(queueDir: h.queue, owner: nil)
        let engine = try XCTUnwrap(FlowControl.Publisher(queueDir: h.queue))
        h.writeControl("flowwindow", "5\n")
        h.writeControl("flowdelay", "\(delay)\n")
        engine.publish(waiting)
        return (engine, try h.startDaemon())
    }

    /// The default window: 10, or one round of the engine's slots when that is fewer.
    func testInflowWindowDefaultsToTenOrTheEnginesSlots() throws {
        _ = try h.startDaemon()
        XCTAssertTrue(h.daemonLog.contains("inflow control: 10 messages ahead of the engine, then up to 1000 ms each"), h.daemonLog)
        h.writeControl("concurrencylocal", "2\n")
        h.writeControl("concurrencyremote", "3\n")
        _ = try h.startDaemon()
        XCTAssertTrue(h.daemonLog.contains("inflow control: 5 messages ahead of the engine"), h.daemonLog)
    }

    func testInflowControlWaitsForTheEngine() throws {
        let (engine, port) = try gatedDaemon(waiting: 10, delay: 20000)
        XCTAssertTrue(h.daemonLog.contains("inflow control: 5 messages ahead of the engine, then up to 20000 ms each"), h.daemonLog)
        func startData(_ c: SMTPDHarness.Client) {
            XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
            XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
            c.send("DATA\r\n")
        }
        func replied(_ c: SMTPDHarness.Client, withinMS ms: Int32) -> Bool {
            var p = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
            return !c.buffer.isEmpty || poll(&p, 1, ms) == 1
        }
        // Over the window: no 354 while the engine is behind.
        let (c1, _) = try h.connect(port)
        startData(c1)
        XCTAssertFalse(replied(c1, withinMS: 700), "DATA was answered while the engine was behind")
        // The engine catches up: the session goes on at once (long before flowdelay).
        engine.publish(0)
        XCTAssertTrue(replied(c1, withinMS: 5000))
        XCTAssertEqual(c1.reply().last, "354 go ahead")
        XCTAssertTrue(c1.command("Subject: one\r\n\r\nbody\r\n.").hasPrefix("250 ok"))
        c1.close()
        // A figure from an engine that stopped long ago is ignored.
        let fd = open(h.queue + "/" + FlowControl.fileName, O_WRONLY)
        var rec: (UInt64, UInt64) = (UInt64(1000).littleEndian, UInt64(time(nil) - 60).littleEndian)
        XCTAssertEqual(withUnsafeBytes(of: &rec) { pwrite(fd, $0.baseAddress, 16, 0) }, 16)
        close(fd)
        let (c2, _) = try h.connect(port)
        startData(c2)
        XCTAssertTrue(replied(c2, withinMS: 5000))
        XCTAssertEqual(c2.reply().last, "354 go ahead")
        XCTAssertTrue(c2.command("Subject: two\r\n\r\nbody\r\n.").hasPrefix("250 ok"))
        c2.close()
        XCTAssertEqual(try h.queued().count, 2)
    }

    /// With a short `flowdelay`, a session goes ahead when the engine stays behind:
    /// mail still comes in when the engine is stuck.
    func testInflowControlGoesAheadAfterTheDelay() throws {
        let (engine, port) = try gatedDaemon(waiting: 50, delay: 400)
        defer { withExtendedLifetime(engine) {} }
        let (c, _) = try h.connect(port)
        XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        clock_gettime(CLOCK_MONOTONIC, &t1)
        let waited = Int(t1.tv_sec - t0.tv_sec) * 1000 + Int(t1.tv_nsec - t0.tv_nsec) / 1_000_000
        XCTAssertGreaterThanOrEqual(waited, 390)
        XCTAssertTrue(c.command("Subject: late\r\n\r\nbody\r\n.").hasPrefix("250 ok"))
        c.close()
        // Off with a window of 0, and without lock/flow: no waiting, nothing said.
        h.writeControl("flowwindow", "0\n")
        let port2 = try h.startDaemon()
        let secondLog = String(decoding: TestEnv.read(h.dir + "/daemon-1.log"), as: UTF8.self)
        XCTAssertTrue(secondLog.contains("in-process"), secondLog)
        XCTAssertFalse(secondLog.contains("inflow control"), secondLog)
        let (c2, _) = try h.connect(port2)
        XCTAssertEqual(c2.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c2.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c2.command("DATA"), "354 go ahead")
        XCTAssertTrue(c2.command("Subject: off\r\n\r\nbody\r\n.").hasPrefix("250 ok"))
        c2.close()
        XCTAssertEqual(try h.queued().count, 2)
    }

    /// A connection that ends leaves its thread waiting for the next one: the
    /// next connection is served without a new thread (the daemon's thread ids
    /// are the same while each of the two connections is open), and two at once
    /// need two.
    func testAConnectionThreadServesTheNextConnection() throws {
        let port = try h.startDaemon()
        let pid = h.daemonPIDs[0]
        func threads() -> Set<String> {
            Set((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [])
        }
        var seen: [Set<String>] = []
        for _ in 0..<5 {
            let (c, greeting) = try h.connect(port)
            XCTAssertEqual(greeting, ["220 domain ESMTP"])
            seen.append(threads())
            XCTAssertEqual(c.command("QUIT"), "221 domain closing connection")
            c.close()
            // the thread is back waiting once the daemon has counted the connection out
            usleep(100_000)
        }
        XCTAssertEqual(Set(seen), [seen[0]], "a new thread for each connection: \(seen)")
        let (a, _) = try h.connect(port)
        let (b, _) = try h.connect(port)
        XCTAssertEqual(threads().count, seen[0].count + 1)
        XCTAssertEqual(a.command("QUIT"), "221 domain closing connection")
        XCTAssertEqual(b.command("QUIT"), "221 domain closing connection")
        a.close(); b.close()
    }

    func testRefusesToServeAsRootWithoutAUser() throws {
        let out = try TestEnv.run(TestEnv.program("qmail-smtpd"), ["--daemon", "--listen", "127.0.0.1:0", "--user", "no-such-user-here"],
                                  environment: h.environment)
        XCTAssertEqual(out.exitCode, 111)
        XCTAssertTrue(out.stderrText.contains("refusing to serve clients as root"), out.stderrText)
    }

    /// 1,000 connections at once, all greeted and served; the per-address bound
    /// turns the one past it away with 421.
    func testAThousandConcurrentConnectionsAndTheLimits() throws {
        var lim = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        lim.rlim_cur = max(lim.rlim_cur, min(lim.rlim_max, 4096))
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lim)
        let port = try h.startDaemon(["--max-connections", "1000", "--max-per-ip", "1000"])
        var clients: [SMTPDHarness.Client] = []
        for _ in 0..<1000 {
            let (c, g) = try h.connect(port)
            XCTAssertEqual(g, ["220 domain ESMTP"])
            clients.append(c)
        }
        // One more is over the limit.
        let (extra, g) = try h.connect(port)
        XCTAssertEqual(g, ["421 too many connections, try again later (#4.3.2)"])
        extra.close()
        for (i, c) in clients.enumerated() where i % 100 == 0 { XCTAssertEqual(c.command("NOOP"), "250 ok") }
        for c in clients { c.send("QUIT\r\n"); c.close() }
        // The slots come back.
        var ok = false
        for _ in 0..<100 {
            let (c, g) = try h.connect(port)
            c.close()
            if g == ["220 domain ESMTP"] { ok = true; break }
            usleep(50_000)
        }
        XCTAssertTrue(ok)
        // Per client address.
        h.cleanupDaemons()
        let p2 = try h.startDaemon(["--max-per-ip", "2"])
        let (a, _) = try h.connect(p2), (b, _) = try h.connect(p2)
        let (c3, g3) = try h.connect(p2)
        XCTAssertEqual(g3, ["421 too many connections, try again later (#4.3.2)"])
        a.close(); b.close(); c3.close()
    }

    /// Real tcpserver (ucspi-tcp) running qmail-smtpd per connection, as qmail sites do.
    func testUnderTcpserver() throws {
        guard Sys.isExecutable("/usr/bin/tcpserver") else { XCTFail("tcpserver is not installed (scripts/ensure-deps installs ucspi-tcp)"); return }
        var port = 0
        var pid: pid_t = 0
        let null = open("/dev/null", O_RDWR)
        defer { close(null) }
        for _ in 0..<20 {
            let p = Int.random(in: 20000...40000)
            pid = try Spawn.start("/usr/bin/tcpserver", arguments: ["tcpserver", "-R", "-H", "-l", "domain", "-c", "10", "127.0.0.1", "\(p)",
                                                                     TestEnv.program("qmail-smtpd")],
                                  environment: h.environment, fds: [.init(null, at: 0), .init(null, at: 1), .init(null, at: 2)], keepStandard: false)
            usleep(300_000)
            var st: Int32 = 0
            if waitpid(pid, &st, WNOHANG) == 0 { port = p; break }
        }
        XCTAssertNotEqual(port, 0)
        h.daemonPIDs.append(pid)
        let (c, g) = try h.connect(port)
        defer { c.close() }
        XCTAssertEqual(g, ["220 domain ESMTP"])
        XCTAssertEqual(c.command("MAIL FROM:<a@x.example>"), "250 ok")
        XCTAssertEqual(c.command("RCPT TO:<b@domain>"), "250 ok")
        XCTAssertEqual(c.command("DATA"), "354 go ahead")
        XCTAssertTrue(c.command("Subject: t\r\n\r\nvia tcpserver\r\n.").hasPrefix("250 ok"))
        let q = try h.queued()
        XCTAssertEqual(q.count, 1)
        // tcpserver's environment: TCPREMOTEIP 127.0.0.1, TCPLOCALHOST from -l.
        XCTAssertTrue(q[0].message.contains("(127.0.0.1)\n  by domain with ESMTP; "), q[0].message)
    }

    /// SIGKILL the daemon at random moments while 8 clients send 2,000 messages:
    /// every message that got 250 is in the queue afterwards, complete, and no
    /// message is there twice unless its client saw no 250 for a first try.
    func testKillingTheDaemonLosesNoAcknowledgedMessage() throws {
        try killTheDaemonAtRandom(seedName: "testKillingTheDaemonLosesNoAcknowledgedMessage", spares: false)
    }

    /// The same, with a remover (SpareSlots, as qmail-clean uses it) keeping the
    /// `pid/spare.<k>` ring filled with long files of garbage all along: every
    /// acknowledged message is queued whole, with nothing of a spare's old bytes in
    /// its mess or intd file, whatever moment the daemon was killed at.
    func testKillingTheDaemonWhileItWritesIntoSpareFilesLosesNothing() throws {
        try killTheDaemonAtRandom(seedName: "testKillingTheDaemonWhileItWritesIntoSpareFilesLosesNothing", spares: true)
    }

    final class Remover: @unchecked Sendable {
        let lock = NSLock()
        var stopped = false
        var retired = 0
        var inodes: Set<UInt64> = []
        var stop: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
    }

    func killTheDaemonAtRandom(seedName: String, spares: Bool) throws {
        var generator = SeededGenerator(for: seedName)
        let total = 2000
        let acked = h.dir + "/acked"
        mkdir(acked, 0o777)
        // Each client sends its share; a refused or broken session is retried on a new
        // connection; each message the server acknowledged is recorded by its number.
        let script = """
        import smtplib, socket, sys, time, os
        port_file, me, total, acked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        deadline = time.time() + 240
        i = me
        while i < total and time.time() < deadline:
            try:
                port = int(open(port_file).read())
                s = smtplib.SMTP("127.0.0.1", port, timeout=10)
                while i < total:
                    s.sendmail("c%d@x.example" % me, ["r%d@domain" % i], ("Subject: %d\\r\\nX-N: %d\\r\\n\\r\\n" % (i, i)) + "x" * 1500 + "\\r\\n")
                    open(os.path.join(acked, str(i)), "w").close()
                    i += 8
                s.quit()
            except Exception:
                time.sleep(0.05)
        """
        TestEnv.write(h.dir + "/client.py", script)
        let portFile = h.dir + "/port"
        TestEnv.write(portFile, "\(try h.startDaemon())")
        // The remover: garbage files renamed into the ring as qmail-clean renames removed
        // mess and intd files (same code), owned as the queue's files are.
        let remover = Remover()
        var removerThread: Foundation.Thread? = nil
        if spares {
            let pidDir = try XCTUnwrap(try Sys.stat(h.queue + "/pid"))
            let queue = h.queue
            let garbage = Array(String(repeating: "Tgarbage@spare\0X-N: -1\n", count: 200).utf8)
            let ring = SpareSlots(root: queue)
            removerThread = Foundation.Thread {
                var n = 0
                while !remover.stop {
                    let p = queue + "/intd/spare-source-\(n)"
                    n += 1
                    if (try? Sys.writeFile(p, garbage, mode: 0o644)) == nil { break }
                    _ = chown(p, pidDir.st_uid, pidDir.st_gid)
                    let ino = (try? Sys.stat(p)).flatMap { $0 }.map { UInt64($0.st_ino) }
                    if (try? ring.retire(p)) == true {
                        remover.lock.lock(); remover.retired += 1; if let ino { remover.inodes.insert(ino) }; remover.lock.unlock()
                    }
                    usleep(500)
                }
            }
            removerThread!.start()
        }
        let clients = try (0..<8).map { n in
            try Spawn.start("/usr/bin/env", arguments: ["env", "python3", h.dir + "/client.py", portFile, "\(n)", "\(total)", acked],
                            fds: [], keepStandard: true)
        }
        var kills = 0
        var killed: Set<String> = []
        while ((try? Sys.listDirectory(acked))?.count ?? 0) < total && kills < 12 {
            usleep(UInt32.random(in: 200_000...700_000, using: &generator))
            killed.formUnion(h.daemonPIDs.map { String($0) })
            h.cleanupDaemons()
            kills += 1
            TestEnv.write(portFile, "\(try h.startDaemon())")
        }
        for p in clients { _ = try Spawn.wait(p) }
        remover.lock.lock(); remover.stopped = true; remover.lock.unlock()
        if removerThread != nil {
            while removerThread!.isExecuting { usleep(10_000) }
            XCTAssertGreaterThan(remover.retired, 100, "the ring was kept filled")
            SpareSlots(root: h.queue).drop()
            // The remover's files that found the ring full were unlinked, not left.
            XCTAssertEqual(TestEnv.files(under: h.queue + "/intd").filter { $0.contains("spare-source") }, [])
        }
        let ackedNumbers = Set(((try? Sys.listDirectory(acked)) ?? []).compactMap { Int($0) })
        XCTAssertEqual(ackedNumbers.count, total, "every message was acknowledged in the end")
        var found: [Int: Int] = [:]
        var inSpares = 0
        for name in TestEnv.files(under: h.queue + "/todo") where remover.inodes.contains(UInt64(name.split(separator: "/").last!) ?? 0) {
            inSpares += 1
        }
        if spares { XCTAssertGreaterThan(inSpares, 0, "some messages were written into spare files") }
        for m in try h.queued() {
            guard let line = m.message.split(separator: "\n").first(where: { $0.hasPrefix("X-N: ") }), let n = Int(line.dropFirst(5)) else {
                XCTFail("a queued message without its number: \(m.message.prefix(300))"); continue
            }
            XCTAssertTrue(m.message.hasSuffix(String(repeating: "x", count: 1500) + "\n"), "message \(n) is complete")
            XCTAssertFalse(m.message.contains("garbage@spare"), "message \(n) holds nothing of a spare's old bytes")
            XCTAssertEqual(m.recipients, ["r\(n)@domain"])
            found[n, default: 0] += 1
        }
        for n in ackedNumbers { XCTAssertNotNil(found[n], "acknowledged message \(n) is in the queue") }
        // A kill between creating pid/PID.TIME.N and linking it into mess/ leaves that
        // empty file behind, as a killed qmail-queue does; it is never part of a message,
        // and the engine's cleanup removes it after 36 hours. Nothing else is there.
        let leftovers = try Sys.listDirectory(h.queue + "/pid")
        for n in leftovers {
            XCTAssertTrue(killed.contains(String(n.prefix(while: { $0 != "." }))), "pid/\(n) belongs to a daemon that was killed")
        }
        XCTAssertLessThanOrEqual(leftovers.count, kills * 8, "at most one pid/ file per session a kill cut")
        QueueFiles(root: h.queue, names: QueueNames(split: QueueNames.defaultSplit, bigTodo: false), sync: .safe).cleanupStalePidFiles(now: Int64(time(nil)) + 200_000)
        XCTAssertEqual(try Sys.listDirectory(h.queue + "/pid").count, 0, "the engine's cleanup takes the leftovers away")
        print("smtpd crash test\(spares ? " with spare files (\(remover.retired) retired, \(inSpares) messages written into one)" : ""): \(total) messages, \(kills) kills, \(found.values.filter { $0 > 1 }.count) queued twice")
    }
}

extension SMTPDHarness {
    func cleanupDaemons() {
        for p in daemonPIDs { kill(p, SIGKILL); _ = try? Spawn.wait(p) }
        daemonPIDs = []
    }
}
