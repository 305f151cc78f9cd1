#if canImport(Glibc)
import Glibc
#endif
import CShims
import FrontEnds
import SystemIO
import ControlFiles

/// qmail-spamfilter: a queue front end that pipes the message through a spam
/// filter ($SPAMFILTER), then, by the filter's verdict, passes the filtered
/// message on, queues it for a redirect address, or refuses it.
@main
enum QmailSpamFilter {
    static let help = """
    usage: qmail-spamfilter [queue-program [arg ...]] < message 1< envelope

    A qmail-queue front end (put it in QMAILQUEUE). It runs the program named by
    SPAMFILTER (split at spaces, no shell) with the message on its standard input;
    the program's standard output (the message with the filter's header fields,
    as `bogofilter -p` writes it) is what goes on. By the filter's exit code:
      ham or unsure   the filtered message goes to the next queue program with
                      the client's envelope
      spam            with SPAMREDIRECT (or control globalspamredirect) the
                      message is queued for that address only (empty sender);
                      then REJECTSPAM=1 refuses it (exit 32, "Dqq spam or junk
                      mail threshold exceeded (#5.7.1)"), REJECTSPAM>1 drops it
                      silently (exit 0); without REJECTSPAM it is queued as ham
      anything else   exit 76, "Zqq temporary problem with SPAM filter
                      (#4.3.0)": a filter that fails, crashes, writes nothing or
                      runs longer than SPAMFILTER_TIMEOUT never loses the message,
                      the client keeps it and tries later

    environment:
      SPAMFILTER              the filter command; unset: pass the message on as is
      SPAMEXITCODE (0), HAMEXITCODE (1), UNSUREEXITCODE (2)   the filter's verdicts
      SPAMFILTER_TIMEOUT      seconds the filter may run (default 300)
      REJECTSPAM, SPAMREDIRECT   see above
      RELAYCLIENT, AUTHINFO with RELAYCLIENT_NOSPAMFILTER   no filtering for relay clients
      SPAMQUEUE, QUEUEPROG    the next queue program (else the arguments, else qmail-queue)
      CONTROLDIR, DEATH (86400), ERROR_FD, TMPDIR

    exit codes: the next queue program's; 32 spam refused, 52 timeout (DEATH),
      54 read error, 60 pipe, 68 temporary file, 76 filter failed or timed out,
      81 crash, 120 unable to run the next program, 121 fork

    """

    static func main() {
        let args = Sys.arguments()
        if args.count > 1 && (args[1] == "--help" || args[1] == "-h") {
            _ = try? Sys.write(1, help)
            exit(0)
        }
        qs_crash_exit(QueueHandOff.Exit.internalBug)
        qs_death_alarm(Sys.environment("DEATH").flatMap { UInt32($0) } ?? 86400, QueueHandOff.Exit.timeout)
        qs_ignore_sigpipe()
        let next = QueueHandOff.nextProgram(arguments: args, variable: "SPAMQUEUE")
        let relay = Sys.environment("RELAYCLIENT") != nil || Sys.environment("AUTHINFO") != nil
        guard let filter = Sys.environment("SPAMFILTER")?.split(separator: " ").map(String.init), !filter.isEmpty,
              !(relay && Sys.environment("RELAYCLIENT_NOSPAMFILTER") != nil) else {
            QueueHandOff.execProgram(next)
        }
        unsetenv("SPAMFILTER")
        let message = QueueHandOff.readMessage()
        let timeout = Sys.environment("SPAMFILTER_TIMEOUT").flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil } ?? 300
        let (code, filtered) = FilterRun.run(filter, message: message, timeoutSeconds: timeout)
        let spamCode = exitCodeSetting("SPAMEXITCODE", 0)
        let hamCode = exitCodeSetting("HAMEXITCODE", 1)
        let unsureCode = exitCodeSetting("UNSUREEXITCODE", 2)
        guard let code, filtered.count > 0, code == spamCode || code == hamCode || code == unsureCode else {
            exit(QueueHandOff.Exit.spamFilterProblem)
        }
        if code != spamCode { QueueHandOff.execQueue(next, message: [filtered]) }

        // Spam.
        let reject = Int(Sys.environment("REJECTSPAM") ?? "") ?? 0
        var redirect = Sys.environment("SPAMREDIRECT") ?? ""
        if redirect.isEmpty {
            do throws(ControlError) { redirect = try ControlDirectory.fromEnvironment().readLine("globalspamredirect") ?? "" } catch {
                exit(55)
            }
        }
        if redirect.isEmpty {
            if reject == 1 { exit(QueueHandOff.Exit.spam) }
            if reject > 1 { exit(0) }
            QueueHandOff.execQueue(next, message: [filtered])
        }
        // The client's envelope is read and dropped; the copy goes to the redirect address only.
        Sys.discardToEnd(1)
        let status = FilterRun.queue(next, message: filtered, envelope: Array("F\0T\(redirect)\0\0".utf8))
        if status != 0 { exit(status) }
        if reject == 1 { exit(QueueHandOff.Exit.spam) }
        exit(0)
    }

    static func exitCodeSetting(_ name: String, _ fallback: Int32) -> Int32 {
        Sys.environment(name).flatMap { Int32($0) } ?? fallback
    }
}

enum FilterRun {
    /// Runs the filter with the message on its standard input (a temporary file)
    /// and collects its standard output. The exit code, or nil when it crashed,
    /// could not run or outlived the timeout (then it is killed).
    static func run(_ argv: [String], message: [UInt8], timeoutSeconds: Int) -> (Int32?, [UInt8]) {
        guard let input = QueueHandOff.memoryFile([message]) else { exit(QueueHandOff.Exit.tempFile) }
        let out: (read: Int32, write: Int32)
        do throws(SystemError) { out = try Spawn.pipe() } catch { exit(QueueHandOff.Exit.pipe) }
        let pid: pid_t
        do throws(SystemError) {
            pid = try Spawn.start(argv[0], arguments: argv, fds: [.init(input, at: 0), .init(out.write, at: 1)],
                                  keepStandard: true, directory: "/")
        } catch {
            Sys.close(input); Sys.close(out.read); Sys.close(out.write)
            return (nil, [])
        }
        Sys.close(input)
        Sys.close(out.write)
        let deadline = now() + Double(timeoutSeconds)
        var output: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var timedOut = false
        while true {
            let left = deadline - now()
            if left <= 0 { timedOut = true; break }
            var p = pollfd(fd: out.read, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(left * 1000, 1_000_000)) + 1)
            if r < 0 { if errno == EINTR { continue }; timedOut = true; break }
            if r == 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(out.read, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; break }
            if n == 0 { break }
            output.append(contentsOf: buf[0..<n])
        }
        Sys.close(out.read)
        if timedOut {
            kill(pid, SIGKILL)
            _ = try? Spawn.wait(pid)
            return (nil, [])
        }
        // Output ended: the filter is exiting; wait for it within the time left.
        while true {
            var status: Int32 = 0
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid {
                switch Spawn.decode(status) {
                case .exited(let c): return (c, output)
                default: return (nil, [])
                }
            }
            if w < 0 && errno != EINTR { return (nil, []) }
            if now() > deadline { kill(pid, SIGKILL); _ = try? Spawn.wait(pid); return (nil, []) }
            usleep(2000)
        }
    }

    /// Starts the next queue program with this message and envelope and waits for it.
    static func queue(_ program: [String], message: [UInt8], envelope: [UInt8]) -> Int32 {
        guard let m = QueueHandOff.memoryFile([message]) else { return QueueHandOff.Exit.tempFile }
        let e: (read: Int32, write: Int32)
        do throws(SystemError) { e = try Spawn.pipe() } catch { return QueueHandOff.Exit.pipe }
        let pid: pid_t
        do throws(SystemError) {
            pid = try Spawn.start(program[0], arguments: program, fds: [.init(m, at: 0), .init(e.read, at: 1)],
                                  keepStandard: true, directory: "/")
        } catch {
            return QueueHandOff.Exit.exec
        }
        Sys.close(m)
        Sys.close(e.read)
        _ = try? Sys.write(e.write, envelope)
        Sys.close(e.write)
        switch try? Spawn.wait(pid) {
        case .exited(let c)?: return c
        case .signaled?: return QueueHandOff.Exit.crashed
        default: return QueueHandOff.Exit.waitSurprise
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
