import RateControl

/// A message's details as the engine loads them at pass start (info file and
/// the channel file), handed to the scheduler.
public struct LoadedJob: Sendable, Equatable {
    public struct Recipient: Sendable, Equatable {
        /// Offset of the record's `T` in the channel file (for markDone).
        public var offset: Int
        public var address: [UInt8]
        public init(offset: Int, address: [UInt8]) { self.offset = offset; self.address = address }
    }
    public var key: JobKey
    /// Birth time: the info file's mtime.
    public var birth: Time
    public var sender: [UInt8]
    public var qqeh: [UInt8]
    public var envHeaders: [UInt8]
    /// The recipients still marked `T`.
    public var recipients: [Recipient]

    public init(key: JobKey, birth: Time, sender: [UInt8], qqeh: [UInt8] = [], envHeaders: [UInt8] = [], recipients: [Recipient]) {
        self.key = key
        self.birth = birth
        self.sender = sender
        self.qqeh = qqeh
        self.envHeaders = envHeaders
        self.recipients = recipients
    }
}

/// One delivery the engine must run.
public struct Delivery: Sendable, Equatable {
    /// qmail's global delivery number (starts at 1), shown in the log.
    public var number: Int
    public var key: JobKey
    public var recipient: LoadedJob.Recipient
    public var sender: [UInt8]
    public var qqeh: [UInt8]
    public var envHeaders: [UInt8]

    public init(number: Int, key: JobKey, recipient: LoadedJob.Recipient, sender: [UInt8], qqeh: [UInt8], envHeaders: [UInt8]) {
        self.number = number
        self.key = key
        self.recipient = recipient
        self.sender = sender
        self.qqeh = qqeh
        self.envHeaders = envHeaders
    }
}

/// Decisions the scheduler hands to the engine, in the order to carry them out.
public enum SchedulerAction: Sendable, Equatable {
    /// Read info + channel file of this job and call `jobLoaded`.
    case load(JobKey)
    /// Start this delivery (log `starting delivery`).
    case start(Delivery)
    /// A recipient is finished: overwrite its `T` with `D`.
    case markDone(JobKey, offset: Int)
    /// Append this permanent failure to `bounce/<id>` (before markDone).
    case addBounce(MessageID, recipient: [UInt8], report: [UInt8])
    /// Persist the job's next attempt time.
    case reschedule(JobKey, at: Time)
    /// Every recipient of this channel is finished: unlink the channel file.
    case channelDone(JobKey)
    /// Both channels finished: bounce if needed, log `end msg`, remove the message.
    case messageDone(MessageID)
    /// Files of this job are gone: forget it.
    case forget(JobKey)
    /// A line for the log (rate control).
    case log(String)
}

/// The concurrency and lifetime settings the scheduler obeys.
public struct SchedulerConfig: Sendable, Equatable {
    public var concurrency: [Int]   // by Channel.rawValue
    public var hold: [Bool]
    public var queueLifetime: Int64
    public var bounceLifetime: Int64
    /// Remote recipients of one message at one domain share a delivery slot
    /// (they go in one SMTP transaction), up to this many.
    public var remoteGroupLimit: Int = 100
    /// At most this many remote delivery slots per destination domain, so one
    /// slow domain cannot take every slot (0 = no limit).
    public var remotePerDomain: Int = 0

    public init(concurrencyLocal: Int = 10, concurrencyRemote: Int = 20, holdLocal: Bool = false, holdRemote: Bool = false,
                queueLifetime: Int64 = 604800, bounceLifetime: Int64 = 604800) {
        concurrency = [concurrencyLocal, concurrencyRemote]
        hold = [holdLocal, holdRemote]
        self.queueLifetime = queueLifetime
        self.bounceLifetime = Swift.min(bounceLifetime, queueLifetime)
    }
}

/// qmail-send's scheduling core as a pure value: fed with messages, delivery
/// results and the time, it returns what to do. It never touches a file, so
/// retries, lifetimes and concurrency are table tests with a fake clock.
///
/// Per channel there is a priority queue of jobs by next attempt time, at most
/// one open "pass" (a job whose recipients are being started), and a number of
/// delivery slots. A job closes when all its started deliveries have reported:
/// finished recipients are marked done; if any is left the job goes back into
/// the queue at the retry time computed when its pass started.
public struct Scheduler: Sendable {
    public private(set) var config: SchedulerConfig
    var queues: [TimedHeap] = [TimedHeap(), TimedHeap()]
    /// Jobs waiting in a queue, by key → scheduled time (to find and re-time them).
    var queuedAt: [JobKey: Time] = [:]
    /// Jobs being loaded by the engine.
    var loading: [Channel: JobKey] = [:]
    /// Open jobs: pass running or deliveries in flight.
    var open: [JobKey: OpenJob] = [:]
    var pass: [Channel: JobKey] = [:]
    public private(set) var inFlight: [Int] = [0, 0]
    var deliveries: [Int: (key: JobKey, recipient: LoadedJob.Recipient, group: Int)] = [:]
    /// Deliveries still running in each slot-sharing group.
    var groupRemaining: [Int: Int] = [:]
    var nextGroup = 1
    /// Channels still pending for each message.
    var pendingChannels: [MessageID: Set<Channel>] = [:]
    var nextDeliveryNumber = 1
    /// TERM: no new job is opened and no new delivery started.
    public private(set) var draining = false
    /// Per-domain rate control (slowq-send): the limiter and where policies come from.
    public var rateGate: RateGate? = nil
    /// The policy for (domain, channel), nil when not rate controlled.
    public var ratePolicy: (@Sendable (String, Channel) -> DomainPolicy?)? = nil
    /// Milliseconds for the rate limiter (defaults to `now` × 1000).
    public var nowMS: Int64? = nil
    var ratedDeliveries: [Int: String] = [:]
    /// Jobs waiting for a rate or a domain slot, not for a retry.
    var throttled = Set<JobKey>()
    /// Jobs waiting for a domain's rate: sooner than their retry, or with every
    /// unfinished recipient only skipped for a rate or a slot.
    var rateWaiting = Set<JobKey>()
    /// Jobs parked until a slot of this domain frees, oldest first. Each freed
    /// slot wakes one of them, so a backlog for one domain costs one job load
    /// per slot, not a reload of every waiting job.
    var slotWaiters: [[UInt8]: JobFIFO] = [:]
    /// The domains each parked job waits on (no job is parked twice on one).
    /// Cleared when the job is loaded: FIFO entries of a job no longer
    /// waiting on that domain are skipped.
    var waitingOn: [JobKey: Set<[UInt8]>] = [:]
    /// Woken jobs not loaded yet, and for which domain: a domain's free slots
    /// minus its pending wakes is how many more parked jobs may be woken.
    var wokenFor: [JobKey: [UInt8]] = [:]
    /// The domains whose FIFO holds an entry for the job (each job at most once per FIFO).
    var inFIFO: [JobKey: Set<[UInt8]>] = [:]
    var wakesPending: [[UInt8]: Int] = [:]
    /// A parked job is also due this long after parking (a safety net).
    public static let slotPatience: Time = 60
    /// Some job waits only for its domain's rate or slots (qmta-send keeps going for it).
    public var hasThrottledJobs: Bool { !throttled.isEmpty }
    /// Remote slots in use per destination domain, and which domain each group holds.
    public private(set) var domainInFlight: [[UInt8]: Int] = [:]
    var groupDomain: [Int: [UInt8]] = [:]

    struct OpenJob: Sendable {
        var job: LoadedJob
        var retry: Time
        var dying: Bool
        var nextIndex = 0
        /// Recipients already started (grouping may start later ones early).
        var started = Set<Int>()
        /// The earliest time a rate-limited recipient of this job may go.
        var rateWait: Time? = nil
        /// Domains whose slots were all taken when a recipient's turn came.
        var slotDomains = Set<[UInt8]>()
        var skipped = 0
        var rateLogged = Set<String>()
        var refs = 0
        var unfinished: Int
    }

    public init(config: SchedulerConfig) {
        self.config = config
    }

    // MARK: feeding

    /// A message whose channel files exist, with each channel's next attempt.
    /// A message with no channel at all is done at once.
    public mutating func add(_ id: MessageID, channels: [Channel: Time]) -> [SchedulerAction] {
        if channels.isEmpty {
            if pendingChannels[id] == nil { return [.messageDone(id)] }
            return []
        }
        for (channel, time) in channels.sorted(by: { $0.key < $1.key }) {
            let key = JobKey(id, channel)
            if open[key] != nil || loading[channel] == key { continue }
            pendingChannels[id, default: []].insert(channel)
            enqueue(key, at: time)
        }
        return []
    }

    mutating func enqueue(_ key: JobKey, at time: Time) {
        if let old = queuedAt[key], old <= time { return }
        queuedAt[key] = time
        queues[key.channel.rawValue].insert(.init(time: time, key: key))
    }

    /// Bulk start-up load (a restart with a large queue): O(n).
    public mutating func restore(_ jobs: [(JobKey, Time)]) {
        var perChannel: [[TimedHeap.Entry]] = [[], []]
        for (key, t) in jobs {
            if queuedAt[key] != nil || open[key] != nil { continue }
            queuedAt[key] = t
            pendingChannels[key.id, default: []].insert(key.channel)
            perChannel[key.channel.rawValue].append(.init(time: t, key: key))
        }
        for c in Channel.allCases {
            perChannel[c.rawValue] += queues[c.rawValue].entries
            queues[c.rawValue].rebuild(perChannel[c.rawValue])
        }
    }

    public var queuedCount: Int { queuedAt.count }
    /// The job waits for a slot of a busy destination domain (not for a retry): after
    /// a restart every slot is free, so it is due at once.
    public func isParked(_ key: JobKey) -> Bool { waitingOn[key] != nil }
    /// The job is queued, being loaded, or open.
    public func knows(_ key: JobKey) -> Bool {
        queuedAt[key] != nil || open[key] != nil || loading[key.channel] == key
    }
    public func knowsMessage(_ id: MessageID) -> Bool { pendingChannels[id] != nil }
    /// A job of the message is open: a pass over its recipients runs or a delivery is in flight.
    public func isOpen(_ id: MessageID) -> Bool {
        Channel.allCases.contains { open[JobKey(id, $0)] != nil || loading[$0] == JobKey(id, $0) }
    }
    public var openCount: Int { open.count }
    public func isQueued(_ key: JobKey) -> Bool { queuedAt[key] != nil }
    public func scheduledTime(_ key: JobKey) -> Time? { queuedAt[key] }

    /// Pops stale heap entries (re-timed or removed jobs).
    mutating func peek(_ c: Channel) -> TimedHeap.Entry? {
        while let top = queues[c.rawValue].min {
            if queuedAt[top.key] == top.time { return top }
            queues[c.rawValue].popMin()
        }
        return nil
    }

    // MARK: stepping

    /// Opens due jobs and starts deliveries while slots are free.
    public mutating func step(now: Time) -> [SchedulerAction] {
        var actions: [SchedulerAction] = []
        if draining { return actions }
        if !slotWaiters.isEmpty { wakeFreeDomains(now: now, into: &actions) }
        for c in Channel.allCases {
            if config.hold[c.rawValue] { continue }
            continuePass(c, now: now, into: &actions)
            if pass[c] == nil, loading[c] == nil, inFlight[c.rawValue] < config.concurrency[c.rawValue],
               let top = peek(c), top.time <= now {
                queues[c.rawValue].popMin()
                queuedAt[top.key] = nil
                throttled.remove(top.key)
                rateWaiting.remove(top.key)
                waitingOn[top.key] = nil
                loading[c] = top.key
                actions.append(.load(top.key))
            }
        }
        return actions
    }

    /// The engine loaded the job `step` asked for (nil: its files are gone).
    public mutating func jobLoaded(_ key: JobKey, _ job: LoadedJob?, now: Time) -> [SchedulerAction] {
        guard loading[key.channel] == key else { return [] }
        loading[key.channel] = nil
        clearWake(key)   // started here, or parked again: either way this wake is spent
        guard let job else {
            // The channel file is gone (a crash after it was finished): if no
            // other channel is pending, the message itself is finished.
            pendingChannels[key.id]?.remove(key.channel)
            if pendingChannels[key.id]?.isEmpty ?? true {
                pendingChannels[key.id] = nil
                return [.forget(key), .messageDone(key.id)] + step(now: now)
            }
            return [.forget(key)] + step(now: now)
        }
        let lifetime = job.sender.isEmpty ? config.bounceLifetime : config.queueLifetime
        let retry = RetrySchedule.nextRetry(birth: job.birth, now: now, channel: key.channel)
        open[key] = OpenJob(job: job, retry: retry, dying: now > job.birth + lifetime, unfinished: job.recipients.count)
        pass[key.channel] = key
        var actions: [SchedulerAction] = []
        continuePass(key.channel, now: now, into: &actions)
        return actions + step(now: now)
    }

    mutating func continuePass(_ c: Channel, now: Time, into actions: inout [SchedulerAction]) {
        guard !draining, let key = pass[c], var job = open[key] else { return }
        while job.nextIndex < job.job.recipients.count && inFlight[c.rawValue] < config.concurrency[c.rawValue]
                && !config.hold[c.rawValue] {
            var policyKey: String? = nil
            if c == .remote && config.remotePerDomain > 0 {
                let domain = Scheduler.domain(job.job.recipients[job.nextIndex].address)
                if domainInFlight[domain, default: 0] >= config.remotePerDomain {
                    // This domain has all the slots it may use: the job waits for one to
                    // free, while the pass goes on with other recipients and other messages.
                    job.slotDomains.insert(domain)
                    job.started.insert(job.nextIndex)
                    job.skipped += 1
                    while job.nextIndex < job.job.recipients.count && job.started.contains(job.nextIndex) { job.nextIndex += 1 }
                    continue
                }
            }
            if rateGate != nil, let lookup = ratePolicy {
                let address = job.job.recipients[job.nextIndex].address
                let domain = String(decoding: Scheduler.domain(address), as: UTF8.self)
                if let policy = lookup(domain, c) {
                    switch rateGate!.admit(domain: domain, id: key.id, policy: policy, nowMS: nowMS ?? now * 1000) {
                    case .go(let line):
                        if let line { actions.append(.log(line)) }
                        policyKey = policy.key
                    case .broken(let line):
                        actions.append(.log(line))
                    case let .busy(policyKey, line):
                        // The definition's concurrency is full: park on it as on a domain's
                        // slot window; a finished delivery of the definition wakes one job.
                        if job.rateLogged.insert(domain).inserted { actions.append(.log(line)) }
                        job.slotDomains.insert(Scheduler.rateSlotKey(policyKey))
                        job.started.insert(job.nextIndex)
                        job.skipped += 1
                        while job.nextIndex < job.job.recipients.count && job.started.contains(job.nextIndex) { job.nextIndex += 1 }
                        continue
                    case let .wait(until, line):
                        // This recipient waits; the others of the pass go on. One line per domain and pass.
                        if job.rateLogged.insert(domain).inserted { actions.append(.log(line)) }
                        job.rateWait = min(job.rateWait ?? until, until)
                        job.started.insert(job.nextIndex)
                        job.skipped += 1
                        while job.nextIndex < job.job.recipients.count && job.started.contains(job.nextIndex) { job.nextIndex += 1 }
                        continue
                    }
                }
            }
            let group = nextGroup
            nextGroup += 1
            inFlight[c.rawValue] += 1
            var members = [job.nextIndex]
            if c == .remote {
                // Later recipients at the same domain join this slot.
                let domain = Scheduler.domain(job.job.recipients[job.nextIndex].address)
                var i = job.nextIndex + 1
                while i < job.job.recipients.count && members.count < config.remoteGroupLimit {
                    if Scheduler.domain(job.job.recipients[i].address) == domain { members.append(i) }
                    i += 1
                }
            }
            // A VERP sender is rewritten per recipient: no shared transaction.
            if policyKey != nil || Verp.isVerp(job.job.sender) { members = [job.nextIndex] }
            groupRemaining[group] = members.count
            if c == .remote && config.remotePerDomain > 0 {
                let domain = Scheduler.domain(job.job.recipients[members[0]].address)
                domainInFlight[domain, default: 0] += 1
                groupDomain[group] = domain
            }
            for idx in members {
                let r = job.job.recipients[idx]
                job.refs += 1
                let n = nextDeliveryNumber
                nextDeliveryNumber += 1
                if let policyKey { ratedDeliveries[n] = policyKey }
                deliveries[n] = (key, r, group)
                actions.append(.start(Delivery(number: n, key: key, recipient: r, sender: Verp.sender(job.job.sender, for: r.address),
                                               qqeh: job.job.qqeh, envHeaders: job.job.envHeaders)))
            }
            job.started.formUnion(members)
            while job.nextIndex < job.job.recipients.count && job.started.contains(job.nextIndex) { job.nextIndex += 1 }
        }
        open[key] = job
        if job.nextIndex >= job.job.recipients.count {
            pass[c] = nil
            if job.refs == 0 { closeJob(key, now: now, into: &actions) }
        }
    }

    /// A delivery reported. Returns the report as it will be logged (a
    /// deferral past the lifetime becomes a failure with the sentence added)
    /// and the actions.
    public mutating func finished(_ number: Int, _ report: DeliveryReport, now: Time) -> (report: DeliveryReport, actions: [SchedulerAction]) {
        guard let d = deliveries.removeValue(forKey: number), var job = open[d.key] else { return (report, []) }
        var report = report
        var actions: [SchedulerAction] = []
        if let policyKey = ratedDeliveries.removeValue(forKey: number) {
            rateGate?.finished(policyKey: policyKey, report: String(decoding: report.text, as: UTF8.self), deferred: report.kind == .deferral)
        }
        let left = (groupRemaining[d.group] ?? 1) - 1
        if left <= 0 {
            groupRemaining[d.group] = nil
            inFlight[d.key.channel.rawValue] -= 1
            if let domain = groupDomain.removeValue(forKey: d.group) {
                let n = (domainInFlight[domain] ?? 1) - 1
                domainInFlight[domain] = n > 0 ? n : nil
                // A slot of this domain is free: `step` below wakes the job parked longest on it.
            }
        } else {
            groupRemaining[d.group] = left
        }
        job.refs -= 1
        switch report.kind {
        case .success:
            actions.append(.markDone(d.key, offset: d.recipient.offset))
            job.unfinished -= 1
        case .failure:
            actions.append(.addBounce(d.key.id, recipient: d.recipient.address, report: report.text))
            actions.append(.markDone(d.key, offset: d.recipient.offset))
            job.unfinished -= 1
        case .deferral:
            if job.dying {
                var text = report.text
                text += Array(lifetimeExpiredSentence.utf8)
                report = DeliveryReport(.failure, text)
                actions.append(.addBounce(d.key.id, recipient: d.recipient.address, report: text))
                actions.append(.markDone(d.key, offset: d.recipient.offset))
                job.unfinished -= 1
            }
        }
        open[d.key] = job
        if job.refs == 0 && pass[d.key.channel] != d.key && job.nextIndex >= job.job.recipients.count {
            closeJob(d.key, now: now, into: &actions)
        }
        actions += step(now: now)
        return (report, actions)
    }

    /// For each domain with parked jobs: wake as many as it has free slots not
    /// already promised to a woken job. A wake that does not end in a start
    /// (the job's files are gone, its load failed, it went elsewhere) is
    /// cleared when the job is loaded, so the slot is offered again here.
    mutating func wakeFreeDomains(now: Time, into actions: inout [SchedulerAction]) {
        for d in Array(slotWaiters.keys) {
            var free = freeSlots(d)
            free -= wakesPending[d, default: 0]
            while free > 0, wakeSlotWaiter(d, now: now, into: &actions) { free -= 1 }
        }
    }

    /// The parking key of a rate definition's concurrency window: NUL and the
    /// definition's key (no domain starts with NUL).
    static func rateSlotKey(_ policyKey: String) -> [UInt8] { [0] + Array(policyKey.utf8) }

    /// Slots free behind a parking key: a domain's window (`concurrencyremotedomain`),
    /// or a rate definition's `concurrency`.
    func freeSlots(_ key: [UInt8]) -> Int {
        if key.first == 0 { return rateGate?.freeSlots(String(decoding: key.dropFirst(), as: UTF8.self)) ?? Int.max }
        return config.remotePerDomain > 0 ? config.remotePerDomain - domainInFlight[key, default: 0] : Int.max
    }

    /// Makes the oldest job still parked on `domain` due now; false when none is.
    /// Entries of jobs no longer waiting on it (loaded since, or gone) are dropped.
    mutating func wakeSlotWaiter(_ domain: [UInt8], now: Time, into actions: inout [SchedulerAction]) -> Bool {
        guard var fifo = slotWaiters.removeValue(forKey: domain) else { return false }
        var woke = false
        while let k = fifo.popFirst() {
            if var f = inFIFO[k] {
                f.remove(domain)
                inFIFO[k] = f.isEmpty ? nil : f
            }
            guard var on = waitingOn[k], on.remove(domain) != nil else { continue }
            waitingOn[k] = on.isEmpty ? nil : on
            guard let t = queuedAt[k] else { continue }
            if t > now {
                enqueue(k, at: now)
                actions.append(.reschedule(k, at: now))
            }
            clearWake(k)
            wokenFor[k] = domain
            wakesPending[domain, default: 0] += 1
            woke = true
            break
        }
        if !fifo.isEmpty { slotWaiters[domain] = fifo }
        return woke
    }

    mutating func clearWake(_ key: JobKey) {
        guard let d = wokenFor.removeValue(forKey: key) else { return }
        let n = wakesPending[d, default: 1] - 1
        wakesPending[d] = n > 0 ? n : nil
    }

    mutating func closeJob(_ key: JobKey, now: Time, into actions: inout [SchedulerAction]) {
        guard let job = open.removeValue(forKey: key) else { return }
        if job.unfinished <= 0 {
            actions.append(.channelDone(key))
            pendingChannels[key.id]?.remove(key.channel)
            if pendingChannels[key.id]?.isEmpty ?? true {
                pendingChannels[key.id] = nil
                actions.append(.messageDone(key.id))
            }
        } else {
            // Rate-limited recipients go when their domain allows; deferred ones on qmail's schedule.
            var at = job.rateWait.map { Swift.min($0, job.retry) } ?? job.retry
            var parked = false
            if !job.slotDomains.isEmpty {
                if job.slotDomains.contains(where: { freeSlots($0) > 0 }) {
                    at = now   // a slot freed while this pass was still open (or the limit was lifted)
                } else {
                    at = Swift.min(at, now + Scheduler.slotPatience)
                    parked = true
                    for d in job.slotDomains {
                        waitingOn[key, default: []].insert(d)
                        // A job parked again keeps its place (it has waited longest).
                        if inFIFO[key, default: []].insert(d).inserted { slotWaiters[d, default: JobFIFO()].append(key) }
                    }
                }
            }
            if at < job.retry || parked { throttled.insert(key) }
            // Waiting for a rate sooner than the retry, or with no recipient deferred by an
            // attempt (all were only skipped): a HUP may let it go at once.
            if job.rateWait != nil && (at < job.retry || job.skipped >= job.unfinished) { rateWaiting.insert(key) }
            enqueue(key, at: at)
            actions.append(.reschedule(key, at: at))
        }
    }

    static func domain(_ address: [UInt8]) -> [UInt8] {
        guard let at = address.lastIndex(of: UInt8(ascii: "@")) else { return [] }
        return address[(at + 1)...].map { ($0 >= 65 && $0 <= 90) ? $0 + 32 : $0 }
    }

    // MARK: control

    /// TERM: finish what runs, start nothing. Open passes end here; their
    /// recipients not yet started stay `T` and go back into the queue.
    public mutating func drain(now: Time) -> [SchedulerAction] {
        draining = true
        var actions: [SchedulerAction] = []
        for c in Channel.allCases {
            guard let key = pass.removeValue(forKey: c), var job = open[key] else { continue }
            job.nextIndex = job.job.recipients.count
            open[key] = job
            if job.refs == 0 { closeJob(key, now: now, into: &actions) }
        }
        return actions
    }

    /// The engine could not read the job's files (an I/O error, not absence):
    /// try again at `at`.
    public mutating func jobLoadFailed(_ key: JobKey, retryAt at: Time) -> [SchedulerAction] {
        guard loading[key.channel] == key else { return [] }
        loading[key.channel] = nil
        clearWake(key)
        enqueue(key, at: at)
        return [.reschedule(key, at: at)]
    }

    /// ALRM: every queued job is due now.
    public mutating func retryAllNow(now: Time) -> [SchedulerAction] {
        var actions: [SchedulerAction] = []
        for (key, t) in queuedAt.sorted(by: { $0.key < $1.key }) where t > now {
            queuedAt[key] = now
            queues[key.channel.rawValue].insert(.init(time: now, key: key))
            actions.append(.reschedule(key, at: now))
        }
        return actions
    }

    /// HUP with rate control (ledgers or definitions may have changed): jobs
    /// waiting for a rate, sooner than their retry, are checked again now.
    public mutating func recheckThrottled(now: Time) -> [SchedulerAction] {
        var actions: [SchedulerAction] = []
        // Not parked jobs (they follow their domain's slots), nor jobs with a deferred
        // recipient waiting for its retry (qmail's schedule stands).
        for key in rateWaiting.sorted() {
            guard let t = queuedAt[key], t > now else { continue }
            enqueue(key, at: now)
            actions.append(.reschedule(key, at: now))
        }
        return actions
    }

    /// HUP: new limits apply at once. A lower concurrency never stops a
    /// running delivery; a higher one is used from the next step.
    public mutating func reconfigure(_ new: SchedulerConfig) {
        config = new
    }

    /// When `step` next has something to do, if no report arrives first.
    /// (Mutating only to drop stale heap entries in place: a copy of a big heap would cost O(n).)
    public mutating func nextWakeup() -> Time? {
        if draining { return nil }   // TERM: nothing is started any more
        var best: Time? = nil
        for c in Channel.allCases where !config.hold[c.rawValue] && inFlight[c.rawValue] < config.concurrency[c.rawValue] && pass[c] == nil && loading[c] == nil {
            if let t = peek(c)?.time { best = best.map { Swift.min($0, t) } ?? t }
        }
        return best
    }

    /// Nothing is being delivered or loaded.
    public var isIdle: Bool {
        inFlight == [0, 0] && loading.isEmpty && pass.isEmpty && open.isEmpty
    }

    /// Jobs waiting for a later time (qmta-send's exit report).
    public func waitingCount(after now: Time) -> Int { queuedAt.values.filter { $0 > now }.count }

    /// Everything queued with its time (for shutdown persistence).
    public var queuedJobs: [(JobKey, Time)] { queuedAt.map { ($0.key, $0.value) } }
}
