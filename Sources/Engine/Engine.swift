#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemIO
import Workers
import QueueFormat
import QueueStore
import QueueClient
import ControlFiles
import Scheduler
import LocalDelivery
import Bounce
import RemoteDelivery
import RateControl

/// How a front end configures the engine: `qmail-send`, `qmta-send` (and
/// `slowq-send`) are the same services with different settings.
public struct EngineOptions: Sendable {
    public var program: String
    public var queueDir: String
    public var names: QueueNames
    public var sync: SyncPolicy
    public var control: ControlDirectory
    public var qmailHome: String
    public var defaultDelivery: String
    /// Keep running until TERM (qmail-send, `qmta-send -d`); false = one pass.
    public var daemon: Bool
    /// An external qmail-remote-compatible program for the remote channel;
    /// nil = the in-process SMTP client.
    public var remoteProgram: String?
    public var ossified: Int64
    public var logFD: Int32
    /// Per-domain rate control (slowq-send; qmail-send with RATELIMIT_DIR set).
    public var rateDirectory: RateDirectory? = nil
    /// External spawners (`qmta-send -l` / `-r`): program and arguments.
    public var localSpawner: [String]? = nil
    public var remoteSpawner: [String]? = nil
    /// qmail's privilege split (started as root): helpers as their users, then
    /// the engine as qmails. Nil: one process, as whoever started it.
    public var privilegeSplit: PrivilegeSplit? = nil
    /// The time source (tests drive the engine with a fake clock).
    public var clock: @Sendable () -> Int64 = { Int64(Glibc.time(nil)) }

    public init(program: String, queueDir: String, names: QueueNames, sync: SyncPolicy, control: ControlDirectory,
                qmailHome: String, defaultDelivery: String, daemon: Bool, remoteProgram: String?,
                ossified: Int64 = 129600, logFD: Int32 = 1) {
        self.program = program
        self.queueDir = queueDir
        self.names = names
        self.sync = sync
        self.control = control
        self.qmailHome = qmailHome
        self.defaultDelivery = defaultDelivery
        self.daemon = daemon
        self.remoteProgram = remoteProgram
        self.ossified = ossified
        self.logFD = logFD
    }
}

/// The delivery engine: one loop that notices mail (inotify, trigger),
/// preprocesses todo entries, asks the `Scheduler` what to deliver, runs local
/// and remote deliveries on worker threads, records results in the queue files
/// and the LMDB schedule, injects bounces, and logs like qmail-send.
public final class Engine {
    let options: EngineOptions
    var files: QueueFiles
    let log: EngineLog
    var controls: EngineControls
    var rewriter: AddressRewriter
    var scheduler: Scheduler
    let store: ScheduleStore
    var local: LocalWorker
    var remote: ExternalRemoteWorker?
    var smtp: SMTPWorker?
    var remoteBatch: [Delivery] = []
    var bounce: BounceWorker
    let deliveries: WorkerPool<EngineEvent>
    let chores: WorkerPool<EngineEvent>
    var watcher: TodoWatcher!
    var spawners: [ExternalSpawner?] = [nil, nil]
    var signalRead: Int32 = -1
    var mutexFD: Int32 = -1

    var todoInFlight = Set<UInt64>()
    var todoWanted = Set<UInt64>()
    /// Wanted todo ids not yet handed to a chore thread, in arrival order.
    var todoQueue: [UInt64] = []
    var todoFailedAt: [UInt64: Time] = [:]
    var bounceInFlight = Set<UInt64>()
    var doneRetry: [UInt64: Time] = [:]
    /// Jobs as preprocessing just wrote them, for the scheduler's first load: their
    /// files are not read back. Bounded; past the bound the files are read.
    var preloaded: [JobKey: LoadedJob] = [:]
    static let preloadLimit = 20_000
    /// Messages this process preprocessed and has not yet tried to remove: their
    /// files are known (todo/ and intd/ are gone, the mess file is theirs), so
    /// ending them needs no look at the folders.
    var fresh = Set<UInt64>()
    /// markDone writes skipped because the channel file is removed next; written
    /// after all if that removal fails.
    var skippedMarks: [JobKey: [Int]] = [:]
    var reconcileNext = 0
    var reconcileDone = false
    var nextTodoScan: Time = 0
    /// When todo/ was last listed, and whether a trigger asked for a listing since.
    var lastTodoScan: Time = 0
    var triggerScanWanted = false
    /// Where the receivers read how far behind the engine is (FlowControl).
    var flow: FlowControl.Publisher?
    var nextCleanup: Time = 0
    var exiting = false
    var nextReap: Time = 0
    var cleanupNext = 0
    /// Names of the info/ split folder being reconciled, a few thousand per turn.
    var reconcilePending: [String] = []
    var deliveryRecipients: [Int: (MessageID, [UInt8])] = [:]
    /// The job and channel-file offset of each delivery in flight, for its report in
    /// the schedule's `reports` (what qmail-qread --json shows).
    var deliveryTargets: [Int: (JobKey, Int)] = [:]
    /// Messages an operator removed (qmail-rm) before they were preprocessed: when
    /// preprocessing ends, their recipients are marked done instead of delivered.
    var doomed = Set<UInt64>()
    /// Messages an operator holds (qmail-qctl hold): not delivered until released.
    var held = Set<UInt64>()
    var warningInFlight = Set<UInt64>()
    let rateCache = RatePolicyCache()

    func clock() -> Time { options.clock() }
    /// Milliseconds for the rate limiter, consistent with `clock()`.
    func clockMS() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let real = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
        return (clock() - Int64(ts.tv_sec)) * 1000 + real
    }
    var queueName: String { String(options.queueDir.split(separator: "/").last ?? "queue") }

    public struct StartError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(options: EngineOptions) throws {
        self.options = options
        files = QueueFiles(root: options.queueDir, names: options.names, sync: options.sync)
        log = EngineLog(fd: options.logFD)
        let queueName = String(options.queueDir.split(separator: "/").last ?? "queue")
        do { controls = try EngineControls.load(from: options.control, queueName: queueName) } catch {
            throw StartError(message: "alert: cannot start: unable to read controls: \(error)")
        }
        rewriter = AddressRewriter(controls: controls)
        scheduler = Scheduler(config: Engine.schedulerConfig(controls))
        let assign: AssignTable
        do { assign = try AssignTable.load(qmailHome: options.qmailHome) } catch {
            throw StartError(message: "alert: cannot start: \(options.qmailHome)/users/assign: \(error)")
        }
        local = LocalWorker(assign: assign, defaultDelivery: options.defaultDelivery)
        remote = options.remoteProgram.map { ExternalRemoteWorker(program: $0) }
        bounce = BounceWorker(settings: Engine.bounceSettings(controls, program: options.program, control: options.control))

        // One exclusive lock per queue: a second engine refuses to start.
        mutexFD = Glibc.open(options.queueDir + "/lock/sendmutex", O_RDWR | O_CLOEXEC)
        if mutexFD == -1 {
            throw StartError(message: "alert: cannot start: unable to open mutex \(options.queueDir)/lock/sendmutex: \(SystemError("open").reason)")
        }
        if qs_flock_exclusive_nb(mutexFD) == -1 {
            throw StartError(message: "alert: cannot start: \(options.program) is already running on \(options.queueDir)")
        }
        var localSpec = options.localSpawner, remoteSpec = options.remoteSpawner
        if let split = options.privilegeSplit {
            localSpec = [split.localSpawner, options.defaultDelivery]
            remoteSpec = [split.remoteSpawner]
        }
        for (i, spec) in [localSpec, remoteSpec].enumerated() {
            guard let spec, let program = spec.first else { continue }
            let sp: ExternalSpawner
            let credentials = i == Channel.remote.rawValue ? options.privilegeSplit?.remote : nil
            do { sp = try ExternalSpawner(program: program, arguments: Array(spec.dropFirst()), queueDir: options.queueDir,
                                          names: options.names, credentials: credentials) } catch {
                throw StartError(message: "\(error)")
            }
            spawners[i] = sp
        }
        if let split = options.privilegeSplit {
            do {
                files.cleaner = try QueueCleaner(program: split.cleanerProgram, queueDir: options.queueDir, credentials: split.cleaner)
                try split.prepareEngineFiles(queueDir: options.queueDir)
                try split.dropToEngineUser()
            } catch {
                throw StartError(message: "alert: cannot start: unable to split by privilege: \(error)")
            }
        }
        // As the engine's user (after the split): the spares are its files.
        files.spares = SpareFiles(queueDir: options.queueDir)
        files.sharedSync = try? SharedSync(queueDir: options.queueDir)
        // In one process the engine removes mess and intd files itself: into the
        // daemon's ring (SpareSlots); split, qmail-clean does it.
        if files.cleaner == nil { files.pidSpares = SpareSlots(root: options.queueDir) }
        if options.privilegeSplit == nil {
            do throws(SystemError) { try FlowControl.prepare(queueDir: options.queueDir, owner: nil) } catch {
                log.line("warning: no inflow control for the receivers: \(error)")
            }
        }
        flow = FlowControl.Publisher(queueDir: options.queueDir)
        if flow == nil && options.privilegeSplit != nil {
            log.line("warning: no inflow control for the receivers: unable to open \(options.queueDir)/\(FlowControl.fileName)")
        }
        do { store = try ScheduleStore(path: options.queueDir + "/lock/engine.lmdb") } catch {
            throw StartError(message: "alert: cannot start: unable to open the schedule \(options.queueDir)/lock/engine.lmdb: \(error)")
        }
        // The in-process SMTP client, unless remote deliveries go to QMAILREMOTE or an
        // external spawner (then nothing groups recipients: one delivery, one spawner slot).
        if remote == nil && spawners[Channel.remote.rawValue] == nil {
            let settings: SMTPSettings
            do { settings = try SMTPSettings.load(options.control) } catch {
                throw StartError(message: "alert: cannot start: unable to read controls: \(error)")
            }
            let hostStore = try? LMDBHostMemoryStore(env: store.env)
            smtp = SMTPWorker(client: SMTPClient(settings: settings, hosts: HostMemory(store: hostStore)))
        }
        if let dir = options.rateDirectory {
            var gate = RateGate(queueName: queueName)
            for (k, l) in store.loadLedgers() { gate.ledgers[k] = l }
            scheduler.rateGate = gate
            scheduler.ratePolicy = rateCache.lookup(dir)
        }
        let wake1 = try Spawn.pipe(), wake2 = try Spawn.pipe()
        _ = fcntl(wake1.read, F_SETFL, O_NONBLOCK); _ = fcntl(wake1.write, F_SETFL, O_NONBLOCK)
        _ = fcntl(wake2.read, F_SETFL, O_NONBLOCK); _ = fcntl(wake2.write, F_SETFL, O_NONBLOCK)
        deliveries = WorkerPool(threads: controls.concurrencyLocal + controls.concurrencyRemote, wakeFD: wake1.read, wakeWrite: wake1.write)
        chores = WorkerPool(threads: 4, wakeFD: wake2.read, wakeWrite: wake2.write)
        let notify = Sys.environment("TODO_NOTIFY") ?? "inotify"
        do { watcher = try TodoWatcher(root: options.queueDir, names: options.names, useInotify: notify != "trigger") } catch {
            throw StartError(message: "alert: cannot start: \(error)")
        }
    }

    /// Concurrency clamped to what each external spawner announced.
    func schedulerConfig(_ c: EngineControls) -> SchedulerConfig {
        var cfg = Engine.schedulerConfig(c)
        // Only the in-process SMTP client sends several recipients in one
        // transaction; rate control counts every recipient.
        if smtp == nil || options.rateDirectory != nil { cfg.remoteGroupLimit = 1 }
        for ch in Channel.allCases { if let sp = spawners[ch.rawValue] { cfg.concurrency[ch.rawValue] = min(cfg.concurrency[ch.rawValue], sp.limit) } }
        return cfg
    }

    static func schedulerConfig(_ c: EngineControls) -> SchedulerConfig {
        var cfg = SchedulerConfig(concurrencyLocal: c.concurrencyLocal, concurrencyRemote: c.concurrencyRemote,
                                  holdLocal: c.holdLocal, holdRemote: c.holdRemote,
                                  queueLifetime: Int64(c.queueLifetime), bounceLifetime: Int64(c.bounceLifetime))
        cfg.remotePerDomain = c.concurrencyRemoteDomain
        return cfg
    }

    static func bounceSettings(_ c: EngineControls, program: String, control: ControlDirectory) -> BounceSettings {
        var b = BounceSettings()
        b.program = program
        b.bounceFrom = c.bounceFrom
        b.bounceHost = c.bounceHost
        b.doubleBounceHost = c.doubleBounceHost
        b.doubleBounceTo = c.doubleBounceTo
        b.maxBytes = c.bounceMaxBytes
        b.subject = c.bounceSubject
        b.doubleSubject = c.doubleBounceSubject
        // An empty file is as none: qmail uses the custom text only when it has a length.
        b.message = (try? control.readRaw("bouncemessage")).flatMap { $0.isEmpty ? nil : $0 }
        b.doubleMessage = (try? control.readRaw("doublebouncemessage")).flatMap { $0.isEmpty ? nil : $0 }
        b.format = c.bounceFormat == "dsn" ? .dsn : .qsbmf
        b.delayWarning = Int64(c.delayWarning)
        return b
    }

    // MARK: the loop

    /// Runs until TERM (daemon) or until nothing is due (one pass). Returns the exit code.
    public func run() -> Int32 {
        start()
        while true {
            if let code = turn() { return code }
            wait(now: clock())
        }
    }

    var started = false

    /// Sets up signals, reads the schedule and the todo folder.
    public func start() {
        if started { return }
        started = true
        scheduler.reconfigure(schedulerConfig(controls))
        held = store.loadHeld()
        let sig = try! Spawn.pipe()
        _ = fcntl(sig.read, F_SETFL, O_NONBLOCK); _ = fcntl(sig.write, F_SETFL, O_NONBLOCK)
        signalRead = sig.read
        var sigs: [Int32] = [SIGTERM, SIGALRM, SIGHUP, SIGINT]
        qs_signals_to_pipe(sig.write, &sigs, Int32(sigs.count))
        qs_ignore_sigpipe()

        let now = clock()
        do {
            scheduler.restore(try store.loadAll())
        } catch {
            log.line("warning: unable to read the schedule: \(error); rebuilding it from the queue files")
        }
        for id in watcher.scan() { wantTodo(id) }
        prepareCommandFolder()
        processCommands()
        nextTodoScan = now + Time(max(10, controls.todoInterval))
        nextCleanup = now
        logStatus()
        log.flush()
    }

    /// One loop turn without waiting; returns the exit code when the engine is done.
    public func turn() -> Int32? {
            let now = clock()
            if scheduler.rateGate != nil { scheduler.nowMS = clockMS() }
            if now >= nextReap, let smtp {
                smtp.client.pool.reap(idleTimeout: smtp.client.settings.idleTimeout)
                nextReap = now + 10
            }
            handleSignals(now: now)
            let (ids, overflow) = watcher.readEvents()
            for id in ids { wantTodo(id) }
            // A byte on lock/trigger asks for the command folder and a scan of todo/.
            // With inotify the scan only catches what inotify could not see, so it runs
            // at most once a second however often clients pull the trigger (every
            // qmail-queue and every daemon batch does): a walk of todo/ per message
            // cost the engine a tenth of its CPU under load (docs/benchmarks.md).
            if watcher.drainTrigger() {
                processCommands()
                triggerScanWanted = true
            }
            if overflow || now >= nextTodoScan
                || (triggerScanWanted && (watcher.inotifyFD < 0 || now >= lastTodoScan + 1)) {
                for id in watcher.scan() { wantTodo(id) }
                triggerScanWanted = false
                lastTodoScan = now
                nextTodoScan = now + Time(max(10, controls.todoInterval))
            }
            startTodo(now: now)
            for event in chores.drain() + deliveries.drain() { handle(event, now: clock()) }
            for sp in spawners.compactMap({ $0 }) {
                for (number, report) in sp.collect() { handle(.delivered(number: number, report: report), now: clock()) }
                if !sp.alive {
                    // qmail-send dies here too: without its spawner nothing can be delivered.
                    log.line("alert: oh no! lost spawn connection! dying...")
                    persistRetryTimes()
                    log.flush()
                    return 111
                }
            }
            if let cleaner = files.cleaner, !cleaner.alive {
                log.line("alert: oh no! lost qmail-clean connection! dying...")
                persistRetryTimes()
                log.flush()
                return 111
            }
            if scheduler.rateGate != nil { scheduler.nowMS = clockMS() }
            if !exiting { execute(scheduler.step(now: clock()), now: clock()) }
            // Deliveries just started are logged before any slower housekeeping below.
            log.flush()
            if scheduler.rateGate != nil {
                for (k, l) in scheduler.rateGate!.takeChanges() { store.setLedger(k, l) }
                for e in rateCache.takeErrors() { log.line("warn: \(queueName) \(e); proceeding to deliver") }
            }
            retryDone(now: now)
            if !reconcileDone { reconcileStep(now: now) }
            // Ossified leftovers: one split folder of mess/ per turn, once the start-up
            // reconcile is done, then again every 76431 s (qmail's SLEEP_CLEANUP).
            if reconcileDone && now >= nextCleanup && !exiting {
                for id in files.cleanupOssified(splitFolder: cleanupNext, now: now, ossified: options.ossified) {
                    log.line("info: removed ossified message \(id)")
                }
                cleanupNext += 1
                if cleanupNext >= options.names.split {
                    files.cleanupStalePidFiles(now: now, ossified: options.ossified)
                    cleanupNext = 0
                    nextCleanup = now + 76431
                }
            }
            flushFinishing(now: now)
            drainSparesWhenIdle(now: now)
            // How many messages wait for their first delivery, for the receivers
            // (FlowControl). Not from a rate-controlled queue, which holds mail back on purpose.
            if scheduler.rateGate == nil {
                flow?.publish(todoQueue.count + todoInFlight.count + preloaded.count)
            }
            commitSchedule(force: exiting)
            // Ledgers drate changed under us (-R, --import) replace ours at once.
            for (k, l) in store.takeForeignLedgers() { scheduler.rateGate?.ledgers[k] = l }
            log.flush()

            if exiting && scheduler.isIdle && deliveries.pending == 0 && chores.pending == 0 {
                finishUp()
                log.line("status: exiting")
                log.flush()
                return 0
            }
            if !options.daemon && isQuiet(now: clock()) {
                let waiting = scheduler.waitingCount(after: clock()) + doneRetry.count
                finishUp()
                log.line("info: \(options.program): no pending deliveries; \(waiting) job\(waiting == 1 ? "" : "s") wait\(waiting == 1 ? "s" : "") for a later retry. quitting...")
                log.flush()
                return 0
            }
            return nil
    }

    /// A clean end (TERM, or the end of a one-pass run): retry times into the
    /// channel files, the helpers stopped, both spare pools emptied, connections closed.
    func finishUp() {
        persistRetryTimes()
        for sp in spawners.compactMap({ $0 }) { sp.finish() }
        dropSpares()
        files.cleaner?.finish()
        smtp?.client.pool.closeAll()
    }

    /// Schedule changes are written at most every `commitInterval` ms (at once when
    /// leaving): the queue files stay the truth, so a crash loses only hints (a retry
    /// comes early, a ledger forgets a few deliveries), and under load one transaction
    /// carries the changes of many loop turns instead of two flushes per turn.
    static let commitInterval: Int64 = 200
    var lastCommitMS: Int64 = 0

    func commitSchedule(force: Bool) {
        guard store.hasPending else { return }
        let now = Engine.monotonicMS()
        if !force && now - lastCommitMS < Engine.commitInterval { return }
        lastCommitMS = now
        do { try store.commit() } catch {
            log.line("alert: unable to write the schedule: \(error)")
        }
    }

    static func monotonicMS() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Waits for mail, a report, a signal or the next due time (at most `limit` seconds).
    public func waitForWork(limit: Time = 60) { wait(now: clock(), limit: limit) }

    /// Asks the engine to finish (as TERM does).
    public func requestExit() {
        if exiting { return }
        exiting = true
        do { let now = clock(); execute(scheduler.drain(now: now), now: now) }
    }

    /// When the spare files were first seen with no message work to do.
    var sparesIdleSince: Time? = nil

    /// No message in the engine's hands for a second or more: the spare info and
    /// channel files are unlinked, so an idle queue holds no files (SpareFiles).
    func drainSparesWhenIdle(now: Time) {
        guard let spares = files.spares, spares.count > 0,
              scheduler.isIdle, deliveries.pending == 0, chores.pending == 0, todoQueue.isEmpty, todoInFlight.isEmpty
        else { sparesIdleSince = nil; return }
        guard let since = sparesIdleSince else { sparesIdleSince = now; return }
        if now - since >= 1 { dropSpares(); sparesIdleSince = nil }
    }

    /// Both pools: the info and channel files, and the mess and intd files in `pid/`.
    func dropSpares() {
        files.spares?.drain()
        if let cleaner = files.cleaner { try? cleaner.dropSpares() } else { files.pidSpares?.drop() }
    }

    /// Nothing in flight, nothing due, nothing to preprocess or bounce.
    func isQuiet(now: Time) -> Bool {
        guard scheduler.isIdle, !scheduler.hasThrottledJobs, deliveries.pending == 0, chores.pending == 0, todoWanted.isEmpty,
              todoInFlight.isEmpty, bounceInFlight.isEmpty, reconcileDone, nextCleanup > now else { return false }
        if let t = scheduler.nextWakeup(), t <= now { return false }
        if let t = doneRetry.values.min(), t <= now { return false }
        return true
    }

    func wait(now: Time, limit: Time = 60) {
        var timeout: Time = limit
        if let t = scheduler.nextWakeup() { timeout = min(timeout, max(0, t - now)) }
        if let t = doneRetry.values.min() { timeout = min(timeout, max(0, t - now)) }
        timeout = min(timeout, max(0, nextTodoScan - now))
        if triggerScanWanted { timeout = min(timeout, max(0, lastTodoScan + 1 - now)) }
        if let since = sparesIdleSince { timeout = min(timeout, max(0, since + 1 - now)) }
        if !exiting, let t = todoFailedAt.values.min() { timeout = min(timeout, max(0, t + 60 - now)) }
        // (While exiting, neither todo nor the cleanup runs: waiting for reports must not spin.)
        if !reconcileDone || (!exiting && (!todoQueue.isEmpty || nextCleanup <= now)) { timeout = 0 }
        var fds = [pollfd(fd: signalRead, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: watcher.inotifyFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: watcher.triggerFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: deliveries.wakeFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: chores.wakeFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: spawners[0]?.resultsFD ?? -1, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: spawners[1]?.resultsFD ?? -1, events: Int16(POLLIN), revents: 0)]
        var ms = Int32(min(timeout * 1000 + (timeout > 0 ? 5 : 0), 60_000))
        if store.hasPending {
            ms = min(ms, Int32(max(0, lastCommitMS + Engine.commitInterval - Engine.monotonicMS())))
        }
        _ = poll(&fds, nfds_t(fds.count), ms)
    }

    // MARK: signals

    func handleSignals(now: Time) {
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            let n = read(signalRead, &buf, buf.count)
            if n <= 0 { break }
            for s in buf[0..<n] {
                switch Int32(s) {
                case SIGTERM:
                    if !exiting {
                        log.line("status: got TERM; finishing deliveries in progress")
                        exiting = true
                        execute(scheduler.drain(now: now), now: now)
                    }
                case SIGALRM:
                    log.line("info: got ALRM; retrying every queued message now")
                    execute(scheduler.retryAllNow(now: now), now: now)
                    for k in doneRetry.keys { doneRetry[k] = now }
                    // todo entries that failed (a full disk, say) go back in line too.
                    for k in todoFailedAt.keys { todoFailedAt[k] = now - 60 }
                case SIGHUP:
                    reload()
                default: break
                }
            }
        }
    }

    /// HUP: re-read the controls; concurrency, holds and routing apply at once.
    func reload() {
        let queueName = String(options.queueDir.split(separator: "/").last ?? "queue")
        let new: EngineControls
        do { new = try EngineControls.load(from: options.control, queueName: queueName) } catch {
            log.line("alert: unable to reread controls: \(error)")
            return
        }
        if new.holdLocal != controls.holdLocal { log.line(new.holdLocal ? "info: local deliveries temporarily held" : "info: local deliveries resumed") }
        if new.holdRemote != controls.holdRemote { log.line(new.holdRemote ? "info: remote deliveries temporarily held" : "info: remote deliveries resumed") }
        controls = new
        rewriter = AddressRewriter(controls: new)
        scheduler.reconfigure(schedulerConfig(new))
        deliveries.ensure(threads: new.concurrencyLocal + new.concurrencyRemote)
        bounce.settings = Engine.bounceSettings(new, program: options.program, control: options.control)
        rateCache.clear()
        if scheduler.rateGate != nil {
            // drate (-R, --import, -t) changes the ledgers in LMDB. Ours are written there at the
            // end of every turn and HUP is handled at the start of one, so LMDB holds all of ours:
            // take the stored ledgers as they are now.
            var fresh: [String: DomainLedger] = [:]
            for (k, l) in store.loadLedgers() { fresh[k] = l }
            scheduler.rateGate!.ledgers = fresh
            // Concurrency limits are learnt again from the new definitions: jobs parked on
            // one are woken and admitted (or parked) under the limit as it is now.
            scheduler.rateGate!.concurrencyLimit.removeAll()
            let now = clock()
            execute(scheduler.recheckThrottled(now: now), now: now)
        }
        if let assign = try? AssignTable.load(qmailHome: options.qmailHome) { local.assign = assign }
        else { log.line("alert: unable to reread \(options.qmailHome)/users/assign; keeping the old table") }
        if let smtp {
            // smtproutes, helohost, timeouts and TLS settings: new deliveries use them; idle
            // connections (greeted under the old settings) are closed.
            do {
                smtp.client.settings = try SMTPSettings.load(options.control)
                smtp.client.pool.closeAll()
            } catch {
                log.line("alert: unable to reread the SMTP controls: \(error); keeping the old ones")
            }
        }
        log.line("info: got HUP; controls reread")
        logStatus()
    }

    // MARK: todo

    /// A todo entry seen by inotify, a scan or the trigger (each id is queued once).
    func wantTodo(_ id: UInt64) {
        if todoWanted.insert(id).inserted { todoQueue.append(id) }
    }

    /// Hands queued todo entries to the chore threads. Work is proportional to
    /// what arrived, never a walk over every message waiting in todo/.
    func startTodo(now: Time) {
        if exiting { return }
        if !todoFailedAt.isEmpty {
            // A todo entry that failed goes back in line a minute later.
            for (id, failed) in todoFailedAt where now >= failed + 60 {
                todoFailedAt[id] = nil
                if todoWanted.contains(id) { todoQueue.append(id) }
            }
        }
        if todoQueue.isEmpty { return }
        var taken = Set<UInt64>()
        let ready = todoQueue.filter { todoWanted.contains($0) && !todoInFlight.contains($0) && taken.insert($0).inserted }
        todoQueue.removeAll(keepingCapacity: true)
        // In groups of up to `todoGroup`: each group's files are made durable by one
        // flush and its todo entries removed in one exchange with qmail-clean. A
        // flush writes every metadata block dirtied since the last one, so fewer,
        // larger groups write less; a lone message is a group of one.
        var start = 0
        while start < ready.count {
            let group = Array(ready[start..<min(start + Engine.todoGroup, ready.count)])
            start += group.count
            for id in group { todoInFlight.insert(id) }
            let files = self.files
            let rewriter = self.rewriter
            chores.submit {
                .preprocessedMany(files.preprocessMany(group) { rcpt in
                    switch rewriter.route(rcpt) {
                    case .local(let a): return (true, a)
                    case .remote(let a): return (false, a)
                    }
                })
            }
        }
    }

    /// The most todo entries one chore thread preprocesses together.
    static let todoGroup = 16

    // MARK: events

    func handle(_ event: EngineEvent, now: Time) {
        switch event {
        case let .preprocessedMany(results):
            for (id, result) in results { handle(.preprocessed(id, result), now: now) }
        case let .preprocessed(id, result):
            todoInFlight.remove(id)
            switch result {
            case .success(let p):
                todoWanted.remove(id)
                todoFailedAt[id] = nil
                log.line("new msg \(id)")
                log.line("info msg \(id): bytes \(p.size) from <\(EngineLog.safe(p.sender))> qp \(p.qp.isEmpty ? "0" : EngineLog.safe(p.qp)) uid \(p.uid.isEmpty ? "0" : EngineLog.safe(p.uid))")
                var channels: [Channel: Time] = [:]
                if p.hasLocal { channels[.local] = now }
                if p.hasRemote { channels[.remote] = now }
                fresh.insert(id)
                let condemned = doomed.remove(id) != nil
                if condemned { condemn(id, records: [.local: p.localRecords, .remote: p.remoteRecords]) }
                for (c, records) in [(Channel.local, p.localRecords), (.remote, p.remoteRecords)] where !records.isEmpty && !condemned {
                    if preloaded.count >= Engine.preloadLimit { break }
                    preloaded[JobKey(id, c)] = LoadedJob(key: JobKey(id, c), birth: p.birth, sender: p.sender, qqeh: p.qqeh,
                                                         envHeaders: p.envHeaders,
                                                         recipients: records.map { .init(offset: $0.offset, address: $0.address) })
                }
                for (c, t) in channels { store.set(JobKey(id, c), t) }
                execute(scheduler.add(id, channels: channels), now: now)
            case .failure(let e):
                if !Sys.exists(files.path(.todo, id)) { todoWanted.remove(id); return }
                todoFailedAt[id] = now
                log.line("warning: trouble with todo/\(id): \(e); will try again later")
            }
        case let .warned(id, outcome):
            warningInFlight.remove(id)
            switch outcome {
            case .queued(let qp): log.line("delay warning msg \(id) qp \(qp)")
            case .failed(let why): log.line("warning: \(why)")
            default: break
            }
        case let .deliveredBatch(results):
            for (number, report) in results { handle(.delivered(number: number, report: report), now: now) }
        case let .delivered(number, report):
            let (final, actions) = scheduler.finished(number, report, now: now)
            let word = final.kind == .success ? "success" : final.kind == .failure ? "failure" : "deferral"
            log.line("delivery \(number): \(word): \(EngineLog.safe(final.text))")
            if let (key, offset) = deliveryTargets.removeValue(forKey: number) {
                store.recordReport(key, offset: offset, at: now, final)
            }
            if let (id, rcpt) = deliveryRecipients.removeValue(forKey: number), final.kind == .deferral {
                considerDelayWarning(id, recipient: rcpt, report: final.text, now: now)
            }
            logStatus()
            execute(actions, now: now)
        case let .bounced(id, outcome):
            bounceInFlight.remove(id)
            switch outcome {
            case .queued(let qp):
                log.line("bounce msg \(id) qp \(qp)")
                if (try? Sys.unlinkIfPresent(files.path(.bounce, id))) == nil {
                    log.line("warning: unable to unlink bounce/\(id)")
                    doneRetry[id] = now + 123
                    return
                }
                finishMessage(id, now: now)
            case .discarded(let line):
                log.line(line)
                _ = try? Sys.unlinkIfPresent(files.path(.bounce, id))
                finishMessage(id, now: now)
            case .none:
                finishMessage(id, now: now)
            case .failed(let why):
                log.line("warning: \(EngineLog.lineSafe(why))")
                doneRetry[id] = now + 123
            }
        }
    }

    /// One `Action: delayed` warning per message, once it has waited `delaywarning` seconds.
    func considerDelayWarning(_ id: UInt64, recipient: [UInt8], report: [UInt8], now: Time) {
        let after = bounce.settings.delayWarning
        guard after > 0, !warningInFlight.contains(id), let info = try? files.info(id), now - info.birth >= after,
              !store.wasWarned(id) else { return }
        warningInFlight.insert(id)
        store.markWarned(id)
        let worker = DelayWarningWorker(settings: bounce.settings), files = self.files
        chores.submit { .warned(id, worker.warn(id, recipient: recipient, report: report, files: files)) }
    }

    func execute(_ actions: [SchedulerAction], now: Time) {
        executeActions(actions, now: now)
        flushRemoteBatch()
    }

    /// Recipients of one message for one domain started together share one SMTP transaction.
    func flushRemoteBatch() {
        guard let smtp, !remoteBatch.isEmpty else { return }
        var groups: [(key: String, items: [Delivery])] = []
        var index: [String: Int] = [:]
        for d in remoteBatch {
            let r = String(decoding: d.recipient.address, as: UTF8.self)
            let domain = r.lastIndex(of: "@").map { r[r.index(after: $0)...].lowercased() } ?? r
            // One transaction per message, domain and envelope sender (a VERP sender differs per recipient).
            let key = "\(d.key.id) \(domain) \(String(decoding: d.sender, as: UTF8.self))"
            if let i = index[key] { groups[i].items.append(d) } else { index[key] = groups.count; groups.append((key, [d])) }
        }
        remoteBatch.removeAll()
        for g in groups {
            let mess = files.path(.mess, g.items[0].key.id)
            // At most 100 recipients per SMTP transaction.
            var rest = g.items[...]
            while !rest.isEmpty {
                let batch = rest.prefix(100).map(\.work)
                rest = rest.dropFirst(100)
                deliveries.submit { .deliveredBatch(smtp.deliver(batch, messagePath: mess)) }
            }
        }
    }

    func executeActions(_ actions: [SchedulerAction], now: Time) {
        var queue = actions[...]
        while let a = queue.popFirst() {
            switch a {
            case .load(let key):
                // An id still in todo/ is being (re)preprocessed: a stale schedule entry must not
                // read its half-written channel file; preprocessing schedules the job (qmail's pqadd).
                if todoWanted.contains(key.id) { queue += scheduler.jobLoaded(key, nil, now: now); continue }
                if held.contains(key.id) {
                    // Read from its files when released: a held message is not waiting for a
                    // slot, so it must not count in what the receivers see (FlowControl).
                    preloaded[key] = nil
                    queue += scheduler.jobLoadFailed(key, retryAt: now + 3600)
                    continue
                }
                if let job = preloaded.removeValue(forKey: key) { queue += scheduler.jobLoaded(key, job, now: now); continue }
                switch load(key) {
                case .loaded(let job): queue += scheduler.jobLoaded(key, job, now: now)
                case .gone: queue += scheduler.jobLoaded(key, nil, now: now)
                case .unreadable: queue += scheduler.jobLoadFailed(key, retryAt: now + 123)
                }
            case .start(let d):
                log.line("starting delivery \(d.number): msg \(d.key.id) to \(d.key.channel.name) \(EngineLog.safe(d.recipient.address))")
                if bounce.settings.delayWarning > 0 { deliveryRecipients[d.number] = (d.key.id, d.recipient.address) }
                deliveryTargets[d.number] = (d.key, d.recipient.offset)
                logStatus()
                let mess = files.path(.mess, d.key.id)
                if let sp = spawners[d.key.channel.rawValue] {
                    if !sp.send(d) && sp.alive {
                        log.line("alert: no free spawner slot; deferring delivery \(d.number)")
                        // As a report: the slot is freed and the delivery line is logged.
                        handle(.delivered(number: d.number, report: DeliveryReport(.deferral, "no free spawner slot")), now: now)
                    }
                    // A dead spawner: the delivery is not reported (its retry time stays as
                    // it was); the loop dies at its next turn and a restart tries it at once.

                } else if d.key.channel == .local {
                    let worker = local
                    deliveries.submit { .delivered(number: d.number, report: worker.deliver(d.work, messagePath: mess)) }
                } else if let worker = remote {
                    deliveries.submit { .delivered(number: d.number, report: worker.deliver(d.work, messagePath: mess)) }
                } else {
                    remoteBatch.append(d)
                }
            case let .markDone(key, offset):
                // The channel file is unlinked next: marking it first would be a write for
                // nothing (neither is synced, so a crash between them is the same either way).
                if queue.contains(.channelDone(key)) {
                    skippedMarks[key, default: []].append(offset)
                    continue
                }
                markDone(key, offset)
            case let .addBounce(id, recipient, report):
                let r = Array(rewriter.stripPrepend(String(decoding: recipient, as: UTF8.self)).utf8)
                while true {
                    do { try files.appendBounce(id, recipient: r, report: report); break } catch {
                        log.line("alert: unable to append to bounce message; HELP! sleeping...")
                        log.flush()
                        sleep(10)
                    }
                }
            case let .reschedule(key, at):
                // What a restart reads: a job parked for a domain's slot is due at once.
                store.set(key, scheduler.isParked(key) ? min(at, now) : at)
            case .channelDone(let key):
                preloaded[key] = nil
                let marks = skippedMarks.removeValue(forKey: key) ?? []
                do {
                    try files.removeChannel(key.id, local: key.channel == .local)
                    store.remove(key)
                    store.clearReports(key)
                } catch {
                    for offset in marks { markDone(key, offset) }
                    log.line("warning: unable to unlink \(files.names.path(key.channel == .local ? .local : .remote, key.id)); will try again later")
                    // The job comes back in 123 s (qmail's SLEEP_SYSFAIL): every recipient is D by then,
                    // so the pass ends at once and tries the unlink again.
                    store.set(key, now + 123)
                    queue += scheduler.add(key.id, channels: [key.channel: now + 123])
                }
            case .messageDone(let id):
                messageDone(id, now: now)
            case .forget(let key):
                preloaded[key] = nil
                store.remove(key)
                store.clearReports(key)
            case .log(let line):
                log.line(line)
            }
        }
    }

    func markDone(_ key: JobKey, _ offset: Int) {
        do { try files.markDone(key.id, local: key.channel == .local, offset: offset) } catch {
            log.line("warning: trouble marking \(files.names.path(key.channel == .local ? .local : .remote, key.id)); message will be delivered twice!")
        }
    }

    enum Load { case loaded(LoadedJob), gone, unreadable }

    /// Reads a job's info and channel file. A missing channel file means the
    /// job is finished; a missing info file with a channel file, or a read
    /// error, is retried later (qmail-send's 123-second pqfail).
    func load(_ key: JobKey) -> Load {
        let name = files.names.path(key.channel == .local ? .local : .remote, key.id)
        do {
            guard let records = try files.channelRecords(key.id, local: key.channel == .local) else { return .gone }
            guard let info = try files.info(key.id) else {
                log.line("warning: unable to stat info/\(key.id); will try again later")
                return .unreadable
            }
            let pending = records.filter { !$0.done }.map { LoadedJob.Recipient(offset: $0.offset, address: $0.address) }
            return .loaded(LoadedJob(key: key, birth: info.birth, sender: info.sender, qqeh: info.qqeh, envHeaders: info.envHeaders, recipients: pending))
        } catch is RecipientRecord.ParseError {
            log.line("warning: unknown record type in \(name)!")
            return .unreadable
        } catch {
            log.line("warning: trouble reading \(name); will try again later")
            return .unreadable
        }
    }

    /// Both channels finished: inject the bounce if there is one, then remove.
    func messageDone(_ id: UInt64, now: Time) {
        if bounceInFlight.contains(id) { return }
        // A channel the scheduler still holds (its file could not be unlinked) is not done.
        if scheduler.knowsMessage(id) { return }
        if !fresh.contains(id),
           Sys.exists(files.path(.local, id)) || Sys.exists(files.path(.remote, id)) || Sys.exists(files.path(.todo, id)) {
            return
        }
        if files.hasBounce(id) {
            bounceInFlight.insert(id)
            doneRetry[id] = nil
            let worker = bounce, files = self.files
            chores.submit { .bounced(id, worker.inject(id, files: files)) }
            return
        }
        finishMessage(id, now: now)
    }

    func finishMessage(_ id: UInt64, now: Time) {
        // Only a first attempt takes the short way: after a failed one, the mess
        // file's inode may already be free and in use by a new message.
        let own = fresh.remove(id) != nil
        // Split by privilege, removals wait for the end of the loop turn and go to
        // qmail-clean together: one exchange per turn instead of one per message.
        if files.cleaner != nil { finishing.append((id, own)); return }
        do {
            try files.removeMessage(id, preprocessedHere: own)
            removed(id)
        } catch {
            notRemoved(id, error, now: now)
        }
    }

    /// Messages finished in this loop turn, waiting for `flushFinishing`.
    var finishing: [(id: UInt64, preprocessedHere: Bool)] = []

    func flushFinishing(now: Time) {
        guard !finishing.isEmpty else { return }
        let batch = finishing
        finishing = []
        for (m, error) in zip(batch, files.removeMessages(batch)) {
            if let error { notRemoved(m.id, error, now: now) } else { removed(m.id) }
        }
    }

    func removed(_ id: UInt64) {
        doneRetry[id] = nil
        if bounce.settings.delayWarning > 0 { store.clearWarned(id) }
        log.line("end msg \(id)")
    }

    func notRemoved(_ id: UInt64, _ error: Error, now: Time) {
        log.line("warning: unable to remove message \(id): \(error); will try again later")
        doneRetry[id] = now + 123
    }

    func retryDone(now: Time) {
        for (id, t) in doneRetry where t <= now {
            doneRetry[id] = nil
            messageDone(id, now: now)
        }
    }

    /// Start-up: messages in info/ that the schedule does not know (a crash
    /// before the schedule was written, a queue from classic qmail) are added,
    /// one split folder per loop turn so the first deliveries are not delayed.
    func reconcileStep(now: Time) {
        let folder = options.names.split
        if reconcilePending.isEmpty {
            if reconcileNext >= folder { reconcileDone = true; return }
            reconcilePending = (try? Sys.listDirectory(options.queueDir + "/info/\(reconcileNext)")) ?? []
            reconcileNext += 1
        }
        let batch = reconcilePending.suffix(4000)
        reconcilePending.removeLast(batch.count)
        for name in batch {
            guard let id = QueueNames.parseID(name.utf8) else { continue }
            if todoWanted.contains(id) || Sys.exists(files.path(.todo, id)) { continue }
            var channels: [Channel: Time] = [:]
            var any = false
            for c in Channel.allCases {
                let p = files.channelPath(id, local: c == .local)
                guard let st = try? Sys.stat(p) else { continue }
                any = true
                if scheduler.knows(JobKey(id, c)) { continue }
                // classic qmail-send stores the next retry in the file's mtime.
                let t = min(Time(st.st_mtim.tv_sec), now + 86400 * 7)
                channels[c] = max(t, 0)
            }
            if !any && !scheduler.knowsMessage(id) {
                // Finished since the folder was listed (its info file is gone with it): already ended.
                if !Sys.exists(files.path(.info, id)) { continue }
                messageDone(id, now: now)
                continue
            }
            for (c, t) in channels { store.set(JobKey(id, c), t) }
            if !channels.isEmpty { execute(scheduler.add(id, channels: channels), now: now) }
        }
        if reconcilePending.isEmpty && reconcileNext >= folder { reconcileDone = true }
    }

    /// Writes each queued job's next attempt into its channel file's mtime, as
    /// classic qmail-send does at exit, so classic qmail can take the queue over.
    func persistRetryTimes() {
        let now = clock()
        for (key, queued) in scheduler.queuedJobs {
            let t = scheduler.isParked(key) ? min(queued, now) : queued
            var times = [timespec(tv_sec: Int(t), tv_nsec: 0), timespec(tv_sec: Int(t), tv_nsec: 0)]
            _ = Glibc.utimensat(AT_FDCWD, files.channelPath(key.id, local: key.channel == .local), &times, 0)
        }
        try? store.commit()
    }

    /// Slots in use of each channel, as qmail-send's del_status: a remote group (the
    /// recipients of one message at one domain, one SMTP transaction) is one slot.
    func logStatus() {
        let c = scheduler.config, used = scheduler.inFlight
        log.line("status: local \(used[0])/\(c.concurrency[0]) remote \(used[1])/\(c.concurrency[1])")
    }
}


extension Delivery {
    /// What the delivery helpers need of a scheduled delivery.
    var work: WorkItem {
        WorkItem(number: number, messageID: key.id, recipient: recipient.address, sender: sender, qqeh: qqeh, envHeaders: envHeaders)
    }
}
