import XCTest
@testable import Scheduler

/// Table tests of the scheduling core on a fake clock: no sleeps, no files.
final class SchedulerTests: XCTestCase {
    func job(_ id: MessageID, _ c: Channel, birth: Time, sender: String = "s@x", rcpts: [String]) -> LoadedJob {
        var off = 0
        let rs = rcpts.map { r -> LoadedJob.Recipient in
            defer { off += r.utf8.count + 2 }
            return .init(offset: off, address: Array(r.utf8))
        }
        return LoadedJob(key: JobKey(id, c), birth: birth, sender: Array(sender.utf8), recipients: rs)
    }

    func starts(_ a: [SchedulerAction]) -> [Delivery] {
        a.compactMap { if case let .start(d) = $0 { return d }; return nil }
    }

    func loads(_ a: [SchedulerAction]) -> [JobKey] {
        a.compactMap { if case let .load(k) = $0 { return k }; return nil }
    }

    func testRetryScheduleMatchesQmailTables() {
        // Local: attempts near birth + 0, 100, 400, 900, 1600 s; remote 0, 400, 1600, 3600.
        let birth: Time = 1_000_000
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth, channel: .local), birth + 100)
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth + 100, channel: .local), birth + 400)
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth + 400, channel: .local), birth + 900)
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth + 899, channel: .local), birth + 1521) // isqrt(899)=29 → 39²
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth, channel: .remote), birth + 400)
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth + 400, channel: .remote), birth + 1600)
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth + 1600, channel: .remote), birth + 3600)
        // Birth in the future (clock skew) counts as zero age.
        XCTAssertEqual(RetrySchedule.nextRetry(birth: birth, now: birth - 50, channel: .local), birth + 100)
        XCTAssertEqual(RetrySchedule.isqrt(1_000_000_000_000), 1_000_000)
    }

    func testConcurrencyIsNeverExceededAndFreedSlotsAreReused() {
        var s = Scheduler(config: SchedulerConfig(concurrencyLocal: 2))
        let now: Time = 5000
        for id: MessageID in 1...5 { _ = s.add(id, channels: [.local: now]) }
        var started: [Delivery] = []
        var actions = s.step(now: now)
        // Load jobs one at a time as the engine would.
        while let k = loads(actions).first {
            actions = s.jobLoaded(k, job(k.id, .local, birth: now, rcpts: ["u\(k.id)@l"]), now: now)
            started += starts(actions)
        }
        XCTAssertEqual(started.count, 2)
        XCTAssertEqual(s.inFlight[0], 2)
        let (_, after) = s.finished(started[0].number, DeliveryReport(.success, "did 1+0+0\n"), now: now)
        XCTAssertTrue(after.contains(.markDone(JobKey(started[0].key.id, .local), offset: 0)))
        XCTAssertTrue(after.contains(.channelDone(started[0].key)))
        XCTAssertTrue(after.contains(.messageDone(started[0].key.id)))
        XCTAssertEqual(loads(after).count, 1, "a freed slot opens the next job")
        XCTAssertLessThanOrEqual(s.inFlight[0], 2)
    }

    func testOneJobWithManyRecipientsWaitsForSlots() {
        var s = Scheduler(config: SchedulerConfig(concurrencyLocal: 2))
        _ = s.add(7, channels: [.local: 0])
        let k = loads(s.step(now: 0))[0]
        let a = s.jobLoaded(k, job(7, .local, birth: 0, rcpts: ["a@l", "b@l", "c@l"]), now: 0)
        let first = starts(a)
        XCTAssertEqual(first.map { String(decoding: $0.recipient.address, as: UTF8.self) }, ["a@l", "b@l"])
        let (_, b) = s.finished(first[0].number, DeliveryReport(.success, "ok"), now: 1)
        XCTAssertEqual(starts(b).map { String(decoding: $0.recipient.address, as: UTF8.self) }, ["c@l"])
        XCTAssertFalse(b.contains { if case .messageDone = $0 { return true }; return false })
    }

    func testDeferralIsRetriedOnScheduleThenExpiresIntoABounce() {
        let birth: Time = 1_000_000
        var config = SchedulerConfig()
        config.queueLifetime = 3600
        var s = Scheduler(config: config)
        _ = s.add(9, channels: [.local: birth])
        var now = birth
        var attempts: [Time] = []
        var finalReport: DeliveryReport?
        var finalActions: [SchedulerAction] = []
        for _ in 0..<50 {
            guard let k = loads(s.step(now: now)).first else {
                now = s.nextWakeup()!
                continue
            }
            attempts.append(now)
            let d = starts(s.jobLoaded(k, job(9, .local, birth: birth, rcpts: ["x@l"]), now: now))[0]
            let (report, actions) = s.finished(d.number, DeliveryReport(.deferral, "try later\n"), now: now)
            if report.kind == .failure { finalReport = report; finalActions = actions; break }
            XCTAssertTrue(actions.contains(.reschedule(k, at: RetrySchedule.nextRetry(birth: birth, now: now, channel: .local))))
        }
        // 0, 100, 400, … 3600 (birth+lifetime reached) then one last try after expiry at 4900.
        XCTAssertEqual(attempts.map { $0 - birth }, [0, 100, 400, 900, 1600, 2500, 3600, 4900])
        XCTAssertEqual(finalReport, DeliveryReport(.failure, "try later\n" + lifetimeExpiredSentence))
        XCTAssertEqual(finalActions.prefix(4), [
            .addBounce(9, recipient: Array("x@l".utf8), report: Array(("try later\n" + lifetimeExpiredSentence).utf8)),
            .markDone(JobKey(9, .local), offset: 0), .channelDone(JobKey(9, .local)), .messageDone(9)])
    }

    func testBounceLifetimeAppliesToTheEmptySenderOnly() {
        var s = Scheduler(config: SchedulerConfig(queueLifetime: 10_000, bounceLifetime: 100))
        _ = s.add(1, channels: [.local: 500])
        _ = s.add(2, channels: [.local: 500])
        var reports: [MessageID: DeliveryReport.Kind] = [:]
        var actions = s.step(now: 500)
        while let k = loads(actions).first {
            let sender = k.id == 1 ? "" : "#@[]"
            actions = s.jobLoaded(k, job(k.id, .local, birth: 0, sender: sender, rcpts: ["r@l"]), now: 500)
            for d in starts(actions) {
                let (r, more) = s.finished(d.number, DeliveryReport(.deferral, "no"), now: 500)
                reports[d.key.id] = r.kind
                actions += more
            }
            actions = actions.filter { if case let .load(l) = $0 { return l != k }; return false }
        }
        XCTAssertEqual(reports[1], .failure, "empty sender: bouncelifetime 100 s passed")
        XCTAssertEqual(reports[2], .deferral, "#@[] uses queuelifetime")
    }

    func testMessageIsDoneOnlyWhenBothChannelsAre() {
        var s = Scheduler(config: SchedulerConfig())
        _ = s.add(3, channels: [.local: 0, .remote: 0])
        var actions = s.step(now: 0)
        var deliveries: [Delivery] = []
        for k in loads(actions) {
            let j = job(3, k.channel, birth: 0, rcpts: [k.channel == .local ? "l@here" : "r@there"])
            deliveries += starts(s.jobLoaded(k, j, now: 0))
        }
        XCTAssertEqual(deliveries.count, 2)
        let local = deliveries.first { $0.key.channel == .local }!
        let remote = deliveries.first { $0.key.channel == .remote }!
        actions = s.finished(local.number, DeliveryReport(.failure, "no such user"), now: 1).actions
        XCTAssertTrue(actions.contains(.channelDone(JobKey(3, .local))))
        XCTAssertFalse(actions.contains(.messageDone(3)))
        actions = s.finished(remote.number, DeliveryReport(.success, "ok"), now: 2).actions
        XCTAssertTrue(actions.contains(.messageDone(3)))
    }

    func testHoldAndHupAndAlarm() {
        var s = Scheduler(config: SchedulerConfig(holdLocal: true))
        _ = s.add(4, channels: [.local: 0])
        XCTAssertEqual(s.step(now: 10), [])
        XCTAssertNil(s.nextWakeup(), "a held channel wakes nobody")
        s.reconfigure(SchedulerConfig())
        XCTAssertEqual(loads(s.step(now: 10)), [JobKey(4, .local)])
        // ALRM pulls a far retry forward.
        _ = s.add(5, channels: [.remote: 99_999])
        XCTAssertEqual(s.retryAllNow(now: 20), [.reschedule(JobKey(5, .remote), at: 20)])
        XCTAssertEqual(loads(s.step(now: 20)), [JobKey(5, .remote)])
    }

    func testConcurrencyZeroHoldsAndLoweringNeverOverruns() {
        var s = Scheduler(config: SchedulerConfig(concurrencyLocal: 3))
        _ = s.add(1, channels: [.local: 0])
        let k = loads(s.step(now: 0))[0]
        let d = starts(s.jobLoaded(k, job(1, .local, birth: 0, rcpts: ["a@l", "b@l", "c@l", "d@l"]), now: 0))
        XCTAssertEqual(d.count, 3)
        s.reconfigure(SchedulerConfig(concurrencyLocal: 1))
        let after = s.finished(d[0].number, DeliveryReport(.success, "ok"), now: 1).actions
        XCTAssertEqual(starts(after).count, 0, "still 2 in flight, above the new limit of 1")
        _ = s.finished(d[1].number, DeliveryReport(.success, "ok"), now: 1)
        let more = s.finished(d[2].number, DeliveryReport(.success, "ok"), now: 1).actions
        XCTAssertEqual(starts(more).count, 1)
        XCTAssertEqual(s.inFlight[0], 1)
    }

    func testMissingFilesAreForgotten() {
        var s = Scheduler(config: SchedulerConfig())
        _ = s.add(8, channels: [.remote: 0])
        let k = loads(s.step(now: 0))[0]
        XCTAssertEqual(s.jobLoaded(k, nil, now: 0), [.forget(k), .messageDone(8)])
        XCTAssertTrue(s.isIdle)
    }

    func testRestoreBulkLoadsInTimeOrder() {
        var s = Scheduler(config: SchedulerConfig(concurrencyRemote: 1))
        s.restore((1...1000).map { (JobKey(MessageID($0), .remote), Time(2000 - $0)) })
        XCTAssertEqual(loads(s.step(now: 1000)), [JobKey(1000, .remote)])
        XCTAssertEqual(s.queuedCount, 999)
        XCTAssertEqual(s.nextWakeup(), nil, "the one slot is being loaded")
    }

    func testNoRecipientsLeftClosesAtOnce() {
        var s = Scheduler(config: SchedulerConfig())
        _ = s.add(6, channels: [.local: 0])
        let k = loads(s.step(now: 0))[0]
        let a = s.jobLoaded(k, job(6, .local, birth: 0, rcpts: []), now: 0)
        XCTAssertEqual(Array(a.prefix(2)), [.channelDone(k), .messageDone(6)])
    }

    func testRemoteRecipientsAtOneDomainShareASlot() {
        var s = Scheduler(config: SchedulerConfig(concurrencyRemote: 1))
        _ = s.add(11, channels: [.remote: 0])
        let k = loads(s.step(now: 0))[0]
        let a = s.jobLoaded(k, job(11, .remote, birth: 0, rcpts: ["a@x.example", "b@y.example", "c@X.example"]), now: 0)
        let first = starts(a)
        XCTAssertEqual(first.map { String(decoding: $0.recipient.address, as: UTF8.self) }, ["a@x.example", "c@X.example"])
        XCTAssertEqual(s.inFlight[1], 1)
        let (_, b) = s.finished(first[0].number, DeliveryReport(.success, "ok"), now: 0)
        XCTAssertEqual(starts(b).count, 0, "the slot is busy until the whole group reports")
        let (_, c) = s.finished(first[1].number, DeliveryReport(.success, "ok"), now: 0)
        XCTAssertEqual(starts(c).map { String(decoding: $0.recipient.address, as: UTF8.self) }, ["b@y.example"])
        let (_, d) = s.finished(starts(c)[0].number, DeliveryReport(.success, "ok"), now: 0)
        XCTAssertTrue(d.contains(.messageDone(11)))
        XCTAssertEqual(s.inFlight[1], 0)
    }

    func testDrainStartsNothingNewAndRequeuesUnstartedRecipients() {
        var s = Scheduler(config: SchedulerConfig(concurrencyLocal: 1))
        _ = s.add(1, channels: [.local: 0])
        _ = s.add(2, channels: [.local: 0])
        let k = loads(s.step(now: 0))[0]
        let d = starts(s.jobLoaded(k, job(1, .local, birth: 0, rcpts: ["a@l", "b@l"]), now: 0))
        XCTAssertEqual(d.count, 1)
        XCTAssertEqual(s.drain(now: 0), [])
        let (_, after) = s.finished(d[0].number, DeliveryReport(.success, "ok"), now: 0)
        XCTAssertEqual(starts(after), [], "nothing new after TERM")
        XCTAssertEqual(loads(after), [])
        XCTAssertTrue(after.contains(.reschedule(JobKey(1, .local), at: 100)), "b@l waits in the queue")
        XCTAssertTrue(s.isIdle)
    }

    func testLoadFailureIsRetriedLater() {
        var s = Scheduler(config: SchedulerConfig())
        _ = s.add(5, channels: [.local: 0])
        let k = loads(s.step(now: 0))[0]
        XCTAssertEqual(s.jobLoadFailed(k, retryAt: 123), [.reschedule(k, at: 123)])
        XCTAssertEqual(s.step(now: 100), [])
        XCTAssertEqual(loads(s.step(now: 123)), [k])
    }

    func testOneSlowDomainCannotTakeEveryRemoteSlot() {
        var config = SchedulerConfig(concurrencyRemote: 5)
        config.remotePerDomain = 2
        var s = Scheduler(config: config)
        for id: MessageID in 1...6 { _ = s.add(id, channels: [.remote: 0]) }
        var started: [Delivery] = []
        var loaded: [JobKey] = []
        var actions = s.step(now: 0)
        while let k = loads(actions).first {
            loaded.append(k)
            let rcpt = k.id <= 4 ? "u\(k.id)@slow.example" : "u\(k.id)@other.example"
            actions = s.jobLoaded(k, job(k.id, .remote, birth: 0, rcpts: [rcpt]), now: 0)
            started += starts(actions)
        }
        let names = started.map { String(decoding: $0.recipient.address, as: UTF8.self) }
        XCTAssertEqual(names.filter { $0.hasSuffix("slow.example") }.count, 2)
        XCTAssertEqual(names.filter { $0.hasSuffix("other.example") }.count, 2)
        XCTAssertEqual(loaded.count, 6, "each job is loaded once")
        // Jobs 3 and 4 are parked on the slow domain: not due every second, only
        // when a slot frees (or after the safety interval).
        XCTAssertEqual(s.scheduledTime(JobKey(3, .remote)), Scheduler.slotPatience)
        XCTAssertEqual(s.scheduledTime(JobKey(4, .remote)), Scheduler.slotPatience)
        XCTAssertEqual(s.step(now: 1), [], "nothing to load while the slow domain is full")
        // One slow delivery ends: exactly one parked job, the oldest, is due now.
        let slow = started.first { String(decoding: $0.recipient.address, as: UTF8.self).hasSuffix("slow.example") }!
        let (_, after) = s.finished(slow.number, DeliveryReport(.success, "ok"), now: 5)
        XCTAssertEqual(loads(after), [JobKey(3, .remote)])
        XCTAssertEqual(s.scheduledTime(JobKey(4, .remote)), Scheduler.slotPatience, "the other stays parked")
        let more = s.jobLoaded(JobKey(3, .remote), job(3, .remote, birth: 0, rcpts: ["u3@slow.example"]), now: 5)
        XCTAssertEqual(starts(more).map { $0.key }, [JobKey(3, .remote)])
    }

    func testParkedJobIsDueAtOnceWhenItsDomainFreedDuringThePass() {
        var config = SchedulerConfig(concurrencyRemote: 5)
        config.remotePerDomain = 1
        var s = Scheduler(config: config)
        _ = s.add(1, channels: [.remote: 0])
        _ = s.add(2, channels: [.remote: 0])
        var a = s.step(now: 0)
        XCTAssertEqual(loads(a), [JobKey(1, .remote)])
        a = s.jobLoaded(JobKey(1, .remote), job(1, .remote, birth: 0, rcpts: ["a@slow.example"]), now: 0)
        let first = starts(a)[0]
        XCTAssertEqual(loads(a), [JobKey(2, .remote)])
        // Job 2 has a recipient at the full domain and one elsewhere; the first ends while 2 is open.
        a = s.jobLoaded(JobKey(2, .remote), job(2, .remote, birth: 0, rcpts: ["b@slow.example", "c@other.example"]), now: 0)
        let other = starts(a)
        XCTAssertEqual(other.map { String(decoding: $0.recipient.address, as: UTF8.self) }, ["c@other.example"])
        _ = s.finished(first.number, DeliveryReport(.success, "ok"), now: 1)
        let (_, end) = s.finished(other[0].number, DeliveryReport(.success, "ok"), now: 1)
        XCTAssertTrue(end.contains(.reschedule(JobKey(2, .remote), at: 1)), "the slot is free already: due now, not parked")
    }

    /// A remote scheduler with one slot per domain, jobs 1…n for `slow.example` loaded and job 1 started.
    func parkedScheduler(_ n: MessageID) -> (Scheduler, Delivery) {
        var config = SchedulerConfig(concurrencyRemote: 5)
        config.remotePerDomain = 1
        var s = Scheduler(config: config)
        for id: MessageID in 1...n { _ = s.add(id, channels: [.remote: 0]) }
        var first: Delivery? = nil
        var a = s.step(now: 0)
        while let k = loads(a).first {
            a = s.jobLoaded(k, job(k.id, .remote, birth: 0, rcpts: ["u\(k.id)@slow.example"]), now: 0)
            if first == nil { first = starts(a).first }
        }
        return (s, first!)
    }

    func testAParkedJobLoadedEarlierIsNotWokenAgainBeforeItsRetry() {
        var (s, first) = parkedScheduler(3)
        // ALRM: every queued job is due now; job 2 is loaded while the domain is full and parks again.
        _ = s.retryAllNow(now: 1)
        var a = s.step(now: 1)
        XCTAssertEqual(loads(a), [JobKey(2, .remote)])
        a = s.jobLoaded(JobKey(2, .remote), job(2, .remote, birth: 0, rcpts: ["u2@slow.example"]), now: 1)
        XCTAssertEqual(loads(a), [JobKey(3, .remote)], "job 3 is due too, and parks again")
        a = s.jobLoaded(JobKey(3, .remote), job(3, .remote, birth: 0, rcpts: ["u3@slow.example"]), now: 1)
        XCTAssertEqual(a, [.reschedule(JobKey(3, .remote), at: 1 + Scheduler.slotPatience)])
        // The slot frees; job 2 is woken (oldest); its delivery is deferred: it closes at its retry time.
        let (_, b) = s.finished(first.number, DeliveryReport(.success, "ok"), now: 2)
        XCTAssertEqual(loads(b), [JobKey(2, .remote)])
        let c = s.jobLoaded(JobKey(2, .remote), job(2, .remote, birth: 0, rcpts: ["u2@slow.example"]), now: 2)
        let d2 = starts(c)[0]
        let (_, e) = s.finished(d2.number, DeliveryReport(.deferral, "later"), now: 3)
        let retry = s.scheduledTime(JobKey(2, .remote))!
        XCTAssertGreaterThan(retry, 100, "qmail's retry time")
        // The freed slot goes to job 3, never to job 2 through a stale entry.
        XCTAssertEqual(loads(e), [JobKey(3, .remote)])
        XCTAssertEqual(s.scheduledTime(JobKey(2, .remote)), retry)
    }

    func testParkingAgainDoesNotGrowTheWaitingList() {
        var (s, _) = parkedScheduler(3)
        for round in 1...5 {
            // ALRM (or the safety interval): both parked jobs are loaded and park again.
            let now = Time(round)
            _ = s.retryAllNow(now: now)
            var a = s.step(now: now)
            while let k = loads(a).first {
                a = s.jobLoaded(k, job(k.id, .remote, birth: 0, rcpts: ["u\(k.id)@slow.example"]), now: now)
            }
        }
        XCTAssertEqual(s.slotWaiters[Array("slow.example".utf8)]?.count, 2, "each job once")
    }

    func testAWakeSpentOnAVanishedJobGoesToTheNext() {
        var (s, first) = parkedScheduler(3)
        let (_, b) = s.finished(first.number, DeliveryReport(.success, "ok"), now: 2)
        XCTAssertEqual(loads(b), [JobKey(2, .remote)])
        // Job 2's files are gone: the slot is offered to job 3 at once.
        let c = s.jobLoaded(JobKey(2, .remote), nil, now: 2)
        XCTAssertEqual(loads(c), [JobKey(3, .remote)])
    }

    func testLiftingThePerDomainLimitWakesParkedJobs() {
        var (s, _) = parkedScheduler(3)
        var config = s.config
        config.remotePerDomain = 0
        s.reconfigure(config)
        let a = s.step(now: 5)
        XCTAssertEqual(loads(a), [JobKey(2, .remote)])
        let b = s.jobLoaded(JobKey(2, .remote), job(2, .remote, birth: 0, rcpts: ["u2@slow.example"]), now: 5)
        XCTAssertEqual(starts(b).count, 1)
        XCTAssertEqual(loads(b), [JobKey(3, .remote)])
    }

    func testVerpSenderIsRewrittenPerRecipientAndNotGrouped() {
        func v(_ s: String, _ r: String) -> String { String(decoding: Verp.sender(Array(s.utf8), for: Array(r.utf8)), as: UTF8.self) }
        XCTAssertEqual(v("owner-@lists.example-@[]", "joe@home.example"), "owner-joe=home.example@lists.example")
        XCTAssertEqual(v("owner-@lists.example-@[]", "joe"), "owner-@lists.example-@[]", "no @ in the recipient")
        XCTAssertEqual(v("plain@lists.example", "joe@home.example"), "plain@lists.example")
        XCTAssertEqual(v("-@[]", "joe@home.example"), "-@[]", "no @ before the suffix")
        XCTAssertEqual(v("a@b@c-@[]", "x@y@z"), "a@bx@y=z@c", "the last @ of each, as qmail's senderadd")
        var s = Scheduler(config: SchedulerConfig())
        _ = s.add(9, channels: [.remote: 0])
        let k = loads(s.step(now: 0))[0]
        let a = s.jobLoaded(k, job(9, .remote, birth: 0, sender: "owner-@l.example-@[]", rcpts: ["a@d.example", "b@d.example"]), now: 0)
        let d = starts(a)
        XCTAssertEqual(d.map { String(decoding: $0.sender, as: UTF8.self) }, ["owner-a=d.example@l.example", "owner-b=d.example@l.example"])
        XCTAssertEqual(s.inFlight[Channel.remote.rawValue], 2, "one slot (and one SMTP transaction) each")
    }

    func testReportParsing() {
        XCTAssertEqual(DeliveryReport(bytes: Array("Kok".utf8)), DeliveryReport(.success, "ok"))
        XCTAssertEqual(DeliveryReport(bytes: Array("Zlater".utf8))?.kind, .deferral)
        XCTAssertEqual(DeliveryReport(bytes: Array("Dno".utf8))?.kind, .failure)
        XCTAssertNil(DeliveryReport(bytes: Array("Xwhat".utf8)))
        XCTAssertNil(DeliveryReport(bytes: []))
    }
}
