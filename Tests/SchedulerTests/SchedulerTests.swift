import XCTest
import Scheduler

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
        XCTAssertEqual(s.drain(), [])
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
        var started: [String] = []
        var actions = s.step(now: 0)
        while let k = loads(actions).first {
            let rcpt = k.id <= 4 ? "u\(k.id)@slow.example" : "u\(k.id)@other.example"
            actions = s.jobLoaded(k, job(k.id, .remote, birth: 0, rcpts: [rcpt]), now: 0)
            started += starts(actions).map { String(decoding: $0.recipient.address, as: UTF8.self) }
        }
        XCTAssertEqual(started.filter { $0.hasSuffix("slow.example") }.count, 2)
        XCTAssertEqual(started.filter { $0.hasSuffix("other.example") }.count, 2)
        XCTAssertEqual(s.scheduledTime(JobKey(3, .remote)), 1, "waits a second, not a retry interval")
    }

    func testReportParsing() {
        XCTAssertEqual(DeliveryReport(bytes: Array("Kok".utf8)), DeliveryReport(.success, "ok"))
        XCTAssertEqual(DeliveryReport(bytes: Array("Zlater".utf8))?.kind, .deferral)
        XCTAssertEqual(DeliveryReport(bytes: Array("Dno".utf8))?.kind, .failure)
        XCTAssertNil(DeliveryReport(bytes: Array("Xwhat".utf8)))
        XCTAssertNil(DeliveryReport(bytes: []))
    }
}
