//! Fake-clock tests of the scheduler: time only moves when a test says so.

use super::*;
use crate::report::Report;
use pcid_interface::protocol::DeviceInfo;

const MS: Duration = Duration::from_millis(1);

fn t(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn addr(i: usize) -> PciAddress {
    PciAddress {
        segment: 0,
        bus: 1 + (i / 32) as u8,
        device: (i % 32) as u8,
        function: 0,
    }
}

fn dev(i: usize, support: ShutdownSupport) -> DeviceInfo {
    DeviceInfo {
        address: addr(i),
        parent: None,
        driver: match support {
            ShutdownSupport::TwoPhase => "nvmed",
            ShutdownSupport::OnePhase => "legacyd",
            ShutdownSupport::None => "plaind",
        }
        .into(),
        support,
        pid: 100 + i as u32,
        state: DriverState::Running,
    }
}

fn nvme(n: usize) -> Vec<DeviceInfo> {
    (0..n).map(|i| dev(i, ShutdownSupport::TwoPhase)).collect()
}

fn sched(devices: Vec<DeviceInfo>, config: Config) -> Scheduler {
    Scheduler::new(Plan::new(devices).unwrap(), config, t(0))
}

fn begin_ack(msg: &ControlMessage, budget: Duration) -> ControlMessage {
    match msg {
        ControlMessage::Begin { id, address, .. } => ControlMessage::BeginAck {
            id: *id,
            address: *address,
            budget,
        },
        other => panic!("expected Begin, got {other:?}"),
    }
}

fn finish_ack(msg: &ControlMessage, outcome: FinishOutcome) -> ControlMessage {
    match msg {
        ControlMessage::Finish { id, address, .. }
        | ControlMessage::Shutdown { id, address, .. } => ControlMessage::FinishAck {
            id: *id,
            address: *address,
            outcome,
            elapsed: t(10),
            detail: String::new(),
        },
        other => panic!("expected Finish or Shutdown, got {other:?}"),
    }
}

fn address_of(msg: &ControlMessage) -> PciAddress {
    match msg {
        ControlMessage::Begin { address, .. }
        | ControlMessage::Finish { address, .. }
        | ControlMessage::Shutdown { address, .. } => *address,
        other => panic!("not a request: {other:?}"),
    }
}

fn deadline_of(msg: &ControlMessage) -> Duration {
    match msg {
        ControlMessage::Begin { deadline, .. }
        | ControlMessage::Finish { deadline, .. }
        | ControlMessage::Shutdown { deadline, .. } => *deadline,
        other => panic!("not a request: {other:?}"),
    }
}

fn outcomes(s: &Scheduler) -> Vec<Outcome> {
    s.records().iter().map(|r| r.outcome.unwrap()).collect()
}

#[test]
fn every_begin_goes_out_before_any_finish_is_awaited() {
    let mut s = sched(nvme(16), Config::default());
    let begins = s.poll(t(0));
    assert_eq!(begins.len(), 16);
    assert!(begins
        .iter()
        .all(|m| matches!(m, ControlMessage::Begin { .. })));
    // Acks arrive one by one; each is answered with Finish right away.
    let mut finishes = Vec::new();
    for (k, b) in begins.iter().enumerate() {
        let now = t(1 + k as u64);
        assert_eq!(s.handle(now, begin_ack(b, t(4500))), Handled::Applied);
        let out = s.poll(now);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], ControlMessage::Finish { .. }));
        assert_eq!(address_of(&out[0]), address_of(b));
        finishes.push(out[0].clone());
    }
    for f in &finishes {
        assert_eq!(
            s.handle(t(4520), finish_ack(f, FinishOutcome::Clean)),
            Handled::Applied
        );
    }
    assert!(s.is_done());
    assert!(s.poll(t(4520)).is_empty());
    assert_eq!(outcomes(&s), vec![Outcome::Clean; 16]);
    let report = Report::from_scheduler(&s, t(4520));
    assert_eq!(report.total_ms, 4520.0);
    let max_begin = report
        .devices
        .iter()
        .map(|d| d.begin_sent_ms.unwrap())
        .fold(0.0, f64::max);
    let min_finish = report
        .devices
        .iter()
        .map(|d| d.finish_ack_ms.unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(max_begin < min_finish);
    assert!(report.all_ok());
}

#[test]
fn finish_deadline_follows_the_budget_and_the_global_deadline() {
    let c = Config::default();
    assert_eq!(c.finish_deadline(t(4500)), t(7250));
    assert_eq!(c.finish_deadline(t(0)), t(1000));
    assert_eq!(c.finish_deadline(t(200)), t(1000));
    // A budget near the maximum representable value must not overflow.
    assert!(c.finish_deadline(Duration::from_micros(u64::MAX)) > t(0));

    let config = Config {
        global_deadline: t(3000),
        ..Config::default()
    };
    let mut s = sched(nvme(1), config);
    let b = s.poll(t(0)).remove(0);
    assert_eq!(deadline_of(&b), t(2000));
    s.handle(t(100), begin_ack(&b, t(4500)));
    let f = s.poll(t(100)).remove(0);
    // 7250 ms wanted, but only 2900 ms remain, minus the 250 ms reply grace.
    assert_eq!(deadline_of(&f), t(2650));
    assert_eq!(s.next_wakeup(), Some(t(3000)));
}

#[test]
fn missing_begin_ack_is_no_response_and_does_not_hold_up_others() {
    let mut s = sched(nvme(2), Config::default());
    let begins = s.poll(t(0));
    s.handle(t(1), begin_ack(&begins[1], t(200)));
    let f = s.poll(t(1)).remove(0);
    // Device 0 never answers: its wait ends at 2000 + 250 ms.
    assert_eq!(s.next_wakeup(), Some(t(1251)));
    s.handle(t(210), finish_ack(&f, FinishOutcome::Clean));
    assert!(s.poll(t(2249)).is_empty());
    assert!(!s.is_done());
    assert_eq!(s.next_wakeup(), Some(t(2250)));
    s.poll(t(2250));
    assert!(s.is_done());
    assert_eq!(outcomes(&s), vec![Outcome::NoResponse, Outcome::Clean]);
    assert!(
        s.records()[0].detail.contains("BeginAck"),
        "{}",
        s.records()[0].detail
    );
    assert_eq!(s.records()[0].done_at, Some(t(2250)));
    // A late ack changes nothing.
    assert!(matches!(
        s.handle(t(2300), begin_ack(&begins[0], t(1))),
        Handled::Ignored(_)
    ));
    assert_eq!(s.records()[0].outcome, Some(Outcome::NoResponse));
}

#[test]
fn missing_finish_ack_is_no_response_at_deadline_plus_grace() {
    let mut s = sched(nvme(1), Config::default());
    let b = s.poll(t(0)).remove(0);
    s.handle(t(5), begin_ack(&b, t(200)));
    let f = s.poll(t(5)).remove(0);
    assert_eq!(deadline_of(&f), t(1000));
    assert_eq!(s.next_wakeup(), Some(t(1255)));
    s.poll(t(1254));
    assert!(!s.is_done());
    s.poll(t(1255));
    assert_eq!(outcomes(&s), vec![Outcome::NoResponse]);
    assert!(s.records()[0].detail.contains("FinishAck"));
}

#[test]
fn driver_reported_outcomes_are_kept() {
    let mut s = sched(nvme(3), Config::default());
    let begins = s.poll(t(0));
    let mut fin = Vec::new();
    for b in &begins {
        s.handle(t(1), begin_ack(b, t(200)));
    }
    fin.extend(s.poll(t(1)));
    assert_eq!(fin.len(), 3);
    s.handle(t(1000), finish_ack(&fin[0], FinishOutcome::TimedOut));
    s.handle(t(1001), finish_ack(&fin[1], FinishOutcome::Abrupt));
    s.handle(t(1002), finish_ack(&fin[2], FinishOutcome::Failed));
    assert_eq!(
        outcomes(&s),
        vec![Outcome::TimedOut, Outcome::Abrupt, Outcome::Failed]
    );
    assert!(!Report::from_scheduler(&s, t(1002)).all_ok());
}

#[test]
fn global_deadline_ends_everything() {
    let config = Config {
        global_deadline: t(1500),
        ..Config::default()
    };
    let mut devices = nvme(3);
    devices[2].parent = Some(addr(1));
    let mut s = sched(devices, config);
    let begins = s.poll(t(0));
    // Device 2 is the child; device 1 waits for it. Devices 0 and 2 begin.
    assert_eq!(begins.len(), 2);
    assert_eq!(deadline_of(&begins[0]), t(1250));
    s.handle(t(10), begin_ack(&begins[0], t(4500)));
    let f = s.poll(t(10)).remove(0);
    assert_eq!(deadline_of(&f), t(1240));
    // Nothing ever answers. The scheduler never sleeps past the global deadline.
    let mut now = t(10);
    while let Some(w) = s.next_wakeup() {
        assert!(w <= t(1500), "wake-up {w:?} after the global deadline");
        now = w;
        s.poll(now);
    }
    assert!(now <= t(1500));
    assert!(s.is_done());
    assert_eq!(outcomes(&s), vec![Outcome::NoResponse; 3]);
    // Device 2 ran out of time on its own Begin wait (clamped to the global end),
    // releasing its parent with no time left.
    assert!(s.records().iter().all(|r| r.done_at.unwrap() <= t(1500)));
}

#[test]
fn sequential_mode_runs_one_device_at_a_time() {
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    let mut devices = nvme(2);
    devices.push(dev(2, ShutdownSupport::OnePhase));
    let mut s = sched(devices, config);
    let mut now = t(0);
    let mut order = Vec::new();
    for _ in 0..3 {
        let out = s.poll(now);
        assert_eq!(out.len(), 1, "exactly one device in flight: {out:?}");
        order.push(address_of(&out[0]));
        if let ControlMessage::Begin { .. } = out[0] {
            now += 2 * MS;
            s.handle(now, begin_ack(&out[0], t(100)));
            // While this device is in flight, nothing else starts.
            let f = s.poll(now);
            assert_eq!(f.len(), 1);
            assert!(matches!(f[0], ControlMessage::Finish { .. }));
            assert!(s.poll(now + t(50)).is_empty());
            now += t(100);
            s.handle(now, finish_ack(&f[0], FinishOutcome::Clean));
        } else {
            assert!(matches!(out[0], ControlMessage::Shutdown { .. }));
            assert!(s.poll(now + t(50)).is_empty());
            now += t(100);
            s.handle(now, finish_ack(&out[0], FinishOutcome::Clean));
        }
    }
    assert_eq!(order, vec![addr(0), addr(1), addr(2)]);
    assert!(s.is_done());
    let report = Report::from_scheduler(&s, now);
    assert_eq!(report.mode, "sequential");
    // Each device begins only after the previous one finished.
    for w in report.devices.windows(2) {
        assert!(w[1].begin_sent_ms.unwrap() >= w[0].finish_ack_ms.unwrap());
    }
}

#[test]
fn parent_begins_only_after_its_children_finish() {
    // 0 is a bridge with children 1 and 2; 3 is behind 1 (grandchild).
    let mut devices = nvme(5);
    devices[1].parent = Some(addr(0));
    devices[2].parent = Some(addr(0));
    devices[3].parent = Some(addr(1));
    let mut s = sched(devices, Config::default());
    let first: Vec<PciAddress> = s.poll(t(0)).iter().map(address_of).collect();
    // Leaves first: 2, 3 and the independent 4.
    assert_eq!(first, vec![addr(3), addr(2), addr(4)]);
    let recs = |s: &Scheduler, i: usize| s.records()[i].clone();
    // Finish device 3 (grandchild): that releases 1 but not 0.
    let b3 = ControlMessage::Begin {
        id: 1,
        address: addr(3),
        kind: ShutdownKind::Poweroff,
        deadline: t(2000),
    };
    s.handle(t(1), begin_ack(&b3, t(100)));
    let f3 = s.poll(t(1)).remove(0);
    s.handle(t(100), finish_ack(&f3, FinishOutcome::TimedOut));
    let out = s.poll(t(100));
    assert_eq!(
        out.iter().map(address_of).collect::<Vec<_>>(),
        vec![addr(1)]
    );
    assert!(recs(&s, 0).begin_sent.is_none());
    // Device 2 fails to answer its Begin; device 1 finishes; then 0 begins.
    let b1 = out[0].clone();
    s.handle(t(120), begin_ack(&b1, t(10)));
    let f1 = s.poll(t(120)).remove(0);
    s.handle(t(130), finish_ack(&f1, FinishOutcome::Clean));
    assert!(s.poll(t(130)).is_empty(), "device 2 still in flight");
    let out = s.poll(t(2250));
    assert_eq!(
        out.iter().map(address_of).collect::<Vec<_>>(),
        vec![addr(0)]
    );
    assert_eq!(recs(&s, 2).outcome, Some(Outcome::NoResponse));
    for child in [1, 2] {
        assert!(recs(&s, 0).begin_sent.unwrap() >= recs(&s, child).done_at.unwrap());
    }
}

#[test]
fn cycle_members_are_not_held_back() {
    let mut devices = nvme(3);
    devices[0].parent = Some(addr(1));
    devices[1].parent = Some(addr(0));
    devices[2].parent = Some(addr(2));
    let mut s = sched(devices, Config::default());
    assert_eq!(s.plan().cycles().len(), 2);
    assert_eq!(s.poll(t(0)).len(), 3);
    let report = Report::from_scheduler(&s, t(0));
    assert_eq!(report.cycles.len(), 2);
}

#[test]
fn one_phase_none_and_gone_devices() {
    let mut devices = vec![
        dev(0, ShutdownSupport::TwoPhase),
        dev(1, ShutdownSupport::OnePhase),
        dev(2, ShutdownSupport::None),
        dev(3, ShutdownSupport::TwoPhase),
        dev(4, ShutdownSupport::TwoPhase),
    ];
    devices[3].state = DriverState::Gone;
    devices[4].state = DriverState::Starting;
    let mut s = sched(devices, Config::default());
    let out = s.poll(t(0));
    // The gone device is asked too: pcid's answer says why it is gone.
    assert_eq!(out.len(), 3);
    assert!(matches!(out[0], ControlMessage::Begin { .. }));
    let ControlMessage::Shutdown { deadline, .. } = out[1] else {
        panic!("one-phase driver gets Shutdown: {:?}", out[1]);
    };
    assert_eq!(deadline, t(10_000));
    let ControlMessage::Begin { id: gone_id, .. } = out[2] else {
        panic!("gone device gets its Begin: {:?}", out[2]);
    };
    assert_eq!(address_of(&out[2]), addr(3));
    let answer = ControlMessage::DeviceError {
        id: gone_id,
        address: addr(3),
        kind: DeviceErrorKind::DriverDied,
        message: "driver process exited (exit status: 1)".into(),
    };
    assert_eq!(s.handle(t(1), answer), Handled::Applied);
    // A BeginAck is not a valid answer to Shutdown.
    let bogus = ControlMessage::BeginAck {
        id: 2,
        address: addr(1),
        budget: t(1),
    };
    assert!(matches!(s.handle(t(1), bogus), Handled::Ignored(_)));
    s.handle(t(300), finish_ack(&out[1], FinishOutcome::Clean));
    // Driver 0 dies during Begin (pcid's unsolicited event).
    let died = ControlMessage::DeviceError {
        id: 0,
        address: addr(0),
        kind: DeviceErrorKind::DriverDied,
        message: "exit status 1".into(),
    };
    assert_eq!(s.handle(t(400), died), Handled::Applied);
    assert!(s.is_done());
    assert_eq!(
        outcomes(&s),
        vec![
            Outcome::DriverDied,
            Outcome::Clean,
            Outcome::NotSupported,
            Outcome::DriverDied,
            Outcome::NoResponse
        ]
    );
    let report = Report::from_scheduler(&s, t(400));
    assert_eq!(report.devices[1].protocol, "one-phase");
    assert_eq!(report.devices[1].begin_sent_ms, Some(0.0));
    assert_eq!(report.devices[1].begin_ack_ms, None);
    assert_eq!(report.devices[1].finish_ack_ms, Some(300.0));
    assert_eq!(report.devices[2].begin_sent_ms, None);
    assert_eq!(report.devices[2].outcome, "not-supported");
    assert_eq!(report.total_ms, 400.0);
}

#[test]
fn a_gone_device_is_asked_so_that_a_live_violator_is_reported_as_one() {
    // pcid lists the device gone: its driver broke the protocol (and may
    // still be running). shutdownd does not guess "driver died".
    let mut devices = nvme(2);
    devices[1].state = DriverState::Gone;
    let mut s = sched(devices, Config::default());
    let out = s.poll(t(0));
    assert_eq!(out.len(), 2);
    let ControlMessage::Begin { id, .. } = out[1] else {
        panic!("{:?}", out[1]);
    };
    s.handle(
        t(1),
        ControlMessage::DeviceError {
            id,
            address: addr(1),
            kind: DeviceErrorKind::ProtocolViolation,
            message: "driver broke the protocol: second Hello".into(),
        },
    );
    let r = &s.records()[1];
    assert_eq!(r.outcome, Some(Outcome::Failed));
    assert_eq!(
        r.detail,
        "protocol violation: driver broke the protocol: second Hello"
    );
    // Nothing more goes to it.
    s.handle(t(2), begin_ack(&out[0], t(5)));
    let out = s.poll(t(3));
    assert!(out.iter().all(|m| address_of(m) == addr(0)), "{out:?}");
}

/// PROTOCOL.md §6.1: a refused Begin is `not-supported`, and no one-phase
/// Shutdown (or anything else) follows.
#[test]
fn a_refused_begin_is_not_supported_and_nothing_follows() {
    let mut s = sched(nvme(2), Config::default());
    let out = s.poll(t(0));
    let ControlMessage::Begin { id, .. } = out[0] else {
        panic!("{:?}", out[0]);
    };
    s.handle(
        t(1),
        ControlMessage::DeviceError {
            id,
            address: addr(0),
            kind: DeviceErrorKind::NotSupported,
            message: "driver refused the request: not now".into(),
        },
    );
    assert_eq!(s.records()[0].outcome, Some(Outcome::NotSupported));
    s.handle(t(2), begin_ack(&out[1], t(5)));
    let mut later = Vec::new();
    for ms in [3, 10, 1000, 5000] {
        later.extend(s.poll(t(ms)));
    }
    assert!(!later.is_empty());
    assert!(
        later.iter().all(|m| address_of(m) == addr(1)),
        "nothing more for the refusing device: {later:?}"
    );
}

#[test]
fn device_errors_map_to_outcomes() {
    let cases = [
        (DeviceErrorKind::NotSupported, Outcome::NotSupported),
        (DeviceErrorKind::ProtocolViolation, Outcome::Failed),
        (DeviceErrorKind::Busy, Outcome::Failed),
        (DeviceErrorKind::UnknownDevice, Outcome::Failed),
        (DeviceErrorKind::DriverDied, Outcome::DriverDied),
    ];
    for (kind, want) in cases {
        let mut s = sched(nvme(1), Config::default());
        let ControlMessage::Begin { id, address, .. } = s.poll(t(0)).remove(0) else {
            panic!("expected Begin");
        };
        let err = ControlMessage::DeviceError {
            id,
            address,
            kind,
            message: "x".into(),
        };
        assert_eq!(s.handle(t(1), err), Handled::Applied);
        assert_eq!(outcomes(&s), vec![want]);
    }
}

#[test]
fn mismatched_and_unknown_replies_are_ignored() {
    let mut s = sched(nvme(2), Config::default());
    let begins = s.poll(t(0));
    // Right id, wrong address.
    let ControlMessage::Begin { id, .. } = begins[0] else {
        panic!()
    };
    let wrong = ControlMessage::BeginAck {
        id,
        address: addr(1),
        budget: t(1),
    };
    assert!(matches!(s.handle(t(1), wrong), Handled::Ignored(_)));
    // Unknown id.
    let unknown = ControlMessage::BeginAck {
        id: 999,
        address: addr(0),
        budget: t(1),
    };
    assert!(matches!(s.handle(t(1), unknown), Handled::Ignored(_)));
    // FinishAck before Finish.
    let early = ControlMessage::FinishAck {
        id,
        address: addr(0),
        outcome: FinishOutcome::Clean,
        elapsed: t(0),
        detail: String::new(),
    };
    assert!(matches!(s.handle(t(1), early), Handled::Ignored(_)));
    // Duplicate BeginAck.
    assert_eq!(
        s.handle(t(2), begin_ack(&begins[0], t(1))),
        Handled::Applied
    );
    assert!(matches!(
        s.handle(t(3), begin_ack(&begins[0], t(1))),
        Handled::Ignored(_)
    ));
    assert!(s.records().iter().all(|r| r.outcome.is_none()));
}

#[test]
fn abort_gives_every_open_device_an_outcome() {
    let mut s = sched(nvme(3), Config::default());
    let begins = s.poll(t(0));
    s.handle(t(1), begin_ack(&begins[0], t(1)));
    let f = s.poll(t(1)).remove(0);
    s.handle(t(2), finish_ack(&f, FinishOutcome::Clean));
    s.abort(t(3), "lost the control connection to pcid");
    assert_eq!(
        outcomes(&s),
        vec![Outcome::Clean, Outcome::NoResponse, Outcome::NoResponse]
    );
    assert_eq!(s.next_wakeup(), None);
}

#[test]
fn all_unsupported_is_done_at_once() {
    let s = sched(vec![dev(0, ShutdownSupport::None)], Config::default());
    assert!(s.is_done());
    let report = Report::from_scheduler(&s, t(0));
    assert!(report.all_ok());
    assert_eq!(report.total_ms, 0.0);
}

#[test]
fn json_has_the_documented_shape() {
    let mut s = sched(vec![dev(0, ShutdownSupport::TwoPhase)], Config::default());
    let b = s.poll(t(0)).remove(0);
    s.handle(t(1), begin_ack(&b, t(4500)));
    let f = s.poll(t(1)).remove(0);
    s.handle(t(4501), finish_ack(&f, FinishOutcome::Clean));
    let json = Report::from_scheduler(&s, t(4501)).to_json().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["mode"], "two-phase");
    assert_eq!(v["kind"], "poweroff");
    assert_eq!(v["total_ms"], 4501.0);
    let d = &v["devices"][0];
    assert_eq!(d["address"], "0000:01:00.0");
    assert_eq!(d["driver"], "nvmed");
    assert_eq!(d["protocol"], "two-phase");
    assert_eq!(d["budget_ms"], 4500.0);
    assert_eq!(d["begin_sent_ms"], 0.0);
    assert_eq!(d["begin_ack_ms"], 1.0);
    assert_eq!(d["finish_ack_ms"], 4501.0);
    assert_eq!(d["outcome"], "clean");
    let table = Report::from_scheduler(&s, t(4501)).to_table();
    assert!(table.contains("0000:01:00.0"));
    assert!(table.contains("1 clean"));
}

#[test]
fn empty_device_list_is_done_at_once() {
    let mut s = sched(Vec::new(), Config::default());
    assert!(s.is_done());
    assert_eq!(s.next_wakeup(), None);
    assert!(s.poll(t(0)).is_empty());
    let report = Report::from_scheduler(&s, t(0));
    assert!(report.devices.is_empty());
    assert!(report.all_ok());
    assert!(report.to_table().contains("0 devices: none"));
}

#[test]
fn zero_global_deadline_sends_nothing_and_ends_at_once() {
    let config = Config {
        global_deadline: Duration::ZERO,
        ..Config::default()
    };
    let mut s = sched(nvme(2), config);
    assert!(s.poll(t(0)).is_empty());
    assert!(s.is_done());
    assert_eq!(outcomes(&s), vec![Outcome::NoResponse; 2]);
}

#[test]
fn a_message_seen_after_the_global_deadline_ends_the_wait_for_everyone() {
    let config = Config {
        global_deadline: t(1000),
        ..Config::default()
    };
    let mut s = sched(nvme(2), config);
    let out = s.poll(t(0));
    s.handle(t(1), begin_ack(&out[0], t(100)));
    s.handle(t(1), begin_ack(&out[1], t(100)));
    let fin = s.poll(t(2));
    // The machine stalls; shutdownd next looks at the clock at 1700 ms, with
    // device 0's FinishAck waiting.
    s.handle(t(1700), finish_ack(&fin[0], FinishOutcome::Clean));
    assert!(s.is_done());
    assert_eq!(outcomes(&s), vec![Outcome::Clean, Outcome::NoResponse]);
    assert_eq!(s.deadline_reached(), Some(t(1700)));
    let report = Report::from_scheduler(&s, t(1700));
    assert_eq!(report.deadline_at_ms, 1000.0);
    assert_eq!(report.deadline_reached_ms, Some(1700.0));
    assert_eq!(report.total_ms, 1700.0);
    assert_eq!(report.kept_deadline(), Ok(()));
}

#[test]
fn kept_deadline_reads_the_report_exactly() {
    let config = Config {
        global_deadline: t(1000),
        ..Config::default()
    };
    // Everything done before the deadline: no deadline seen.
    let mut s = sched(nvme(1), config.clone());
    let out = s.poll(t(0));
    s.handle(t(1), begin_ack(&out[0], t(1)));
    let fin = s.poll(t(1));
    s.handle(t(999), finish_ack(&fin[0], FinishOutcome::Clean));
    let mut report = Report::from_scheduler(&s, t(999));
    assert_eq!(report.deadline_reached_ms, None);
    assert_eq!(report.kept_deadline(), Ok(()));
    // A device concluded after the deadline without the deadline having
    // been seen, or after it was seen, or a deadline "seen" early: caught.
    report.devices[0].done_ms = Some(1000.5);
    assert!(report.kept_deadline().is_err());
    report.deadline_reached_ms = Some(1200.0);
    assert_eq!(report.kept_deadline(), Ok(()));
    report.devices[0].done_ms = Some(1200.5);
    assert!(report.kept_deadline().is_err());
    report.devices[0].done_ms = Some(800.0);
    report.deadline_reached_ms = Some(900.0);
    assert!(report.kept_deadline().is_err());
}

// --- participants, dependency order, critical path -------------------------

use pcid_interface::protocol::{ParticipantInfo, Provider};

fn fs(id: u32, name: &str, providers: Vec<Provider>) -> ParticipantInfo {
    ParticipantInfo {
        id,
        name: name.into(),
        support: ShutdownSupport::TwoPhase,
        pid: 50,
        state: DriverState::Running,
        providers,
    }
}

fn sched_with(devices: Vec<DeviceInfo>, parts: Vec<ParticipantInfo>, config: Config) -> Scheduler {
    Scheduler::new(
        Plan::with_participants(devices, parts).unwrap(),
        config,
        t(0),
    )
}

fn participant_of(msg: &ControlMessage) -> Option<u32> {
    match msg {
        ControlMessage::ParticipantBegin { participant, .. }
        | ControlMessage::ParticipantFinish { participant, .. }
        | ControlMessage::ParticipantShutdown { participant, .. } => Some(*participant),
        _ => None,
    }
}

fn p_begin_ack(msg: &ControlMessage, budget: Duration) -> ControlMessage {
    match msg {
        ControlMessage::ParticipantBegin {
            id, participant, ..
        } => ControlMessage::ParticipantBeginAck {
            id: *id,
            participant: *participant,
            budget,
        },
        other => panic!("expected ParticipantBegin, got {other:?}"),
    }
}

fn p_finish_ack(msg: &ControlMessage, outcome: FinishOutcome) -> ControlMessage {
    match msg {
        ControlMessage::ParticipantFinish {
            id, participant, ..
        } => ControlMessage::ParticipantFinishAck {
            id: *id,
            participant: *participant,
            outcome,
            elapsed: t(30),
            detail: "flushed and unmounted".into(),
        },
        other => panic!("expected ParticipantFinish, got {other:?}"),
    }
}

#[test]
fn a_file_system_is_done_before_its_disk_begins_and_other_disks_do_not_wait() {
    // Disk 0 holds the file system; disk 1 is unrelated.
    let mut s = sched_with(
        nvme(2),
        vec![fs(7, "file", vec![Provider::Device(addr(0))])],
        Config::default(),
    );
    let first = s.poll(t(0));
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        participant_of(&first[0]),
        Some(7),
        "the participant goes first"
    );
    assert_eq!(address_of(&first[1]), addr(1), "the unrelated disk at once");
    s.handle(t(1), p_begin_ack(&first[0], t(20)));
    let fin = s.poll(t(1));
    assert_eq!(fin.len(), 1);
    assert!(matches!(
        fin[0],
        ControlMessage::ParticipantFinish { participant: 7, .. }
    ));
    assert!(s.poll(t(20)).is_empty(), "disk 0 waits for the file system");
    s.handle(t(31), p_finish_ack(&fin[0], FinishOutcome::Clean));
    let out = s.poll(t(31));
    assert_eq!(
        out.iter().map(address_of).collect::<Vec<_>>(),
        vec![addr(0)]
    );
    let r = &s.records()[0];
    assert_eq!(r.outcome, Some(Outcome::Clean));
    assert_eq!(r.detail, "flushed and unmounted");
    assert!(s.records()[1].begin_sent.unwrap() >= r.done_at.unwrap());
}

#[test]
fn a_participant_that_hangs_is_cut_off_at_its_deadline_and_the_disks_still_shut_down() {
    let config = Config::default();
    let mut s = sched_with(
        nvme(2),
        vec![fs(7, "stuckfs", vec![Provider::AllDevices])],
        config.clone(),
    );
    let first = s.poll(t(0));
    assert_eq!(first.len(), 1, "both disks wait: {first:?}");
    // It acknowledges Begin but never finishes.
    s.handle(t(1), p_begin_ack(&first[0], t(0)));
    let fin = s.poll(t(1));
    let deadline = config.finish_deadline(t(0));
    assert_eq!(deadline_of_p(&fin[0]), deadline);
    let cut = t(1) + deadline + config.ack_grace;
    assert!(s.poll(cut - MS).is_empty(), "held until its deadline");
    let out = s.poll(cut);
    assert_eq!(out.len(), 2, "disks begin once it is cut off: {out:?}");
    assert_eq!(s.records()[0].outcome, Some(Outcome::NoResponse));
    for b in &out {
        s.handle(cut + MS, begin_ack(b, t(10)));
    }
    for f in s.poll(cut + MS) {
        s.handle(cut + t(5), finish_ack(&f, FinishOutcome::Clean));
    }
    assert!(s.is_done());
    assert_eq!(
        outcomes(&s),
        vec![Outcome::NoResponse, Outcome::Clean, Outcome::Clean]
    );
    let report = Report::from_scheduler(&s, cut + t(5));
    assert_eq!(report.devices[0].kind, "participant");
    assert_eq!(report.devices[1].waits_for, vec!["participant stuckfs"]);
    assert!(report.kept_deadline().is_ok());
}

fn deadline_of_p(msg: &ControlMessage) -> Duration {
    match msg {
        ControlMessage::ParticipantBegin { deadline, .. }
        | ControlMessage::ParticipantFinish { deadline, .. }
        | ControlMessage::ParticipantShutdown { deadline, .. } => *deadline,
        other => panic!("not a participant request: {other:?}"),
    }
}

#[test]
fn a_participant_that_goes_away_releases_its_providers() {
    let mut s = sched_with(
        nvme(1),
        vec![fs(3, "file", vec![Provider::Device(addr(0))])],
        Config::default(),
    );
    let first = s.poll(t(0));
    assert_eq!(
        s.handle(
            t(5),
            ControlMessage::ParticipantError {
                id: 0,
                participant: 3,
                kind: DeviceErrorKind::DriverDied,
                message: "participant closed its channel".into(),
            }
        ),
        Handled::Applied
    );
    assert!(first.len() == 1);
    assert_eq!(s.records()[0].outcome, Some(Outcome::DriverDied));
    assert!(s.records()[0].detail.starts_with("participant went away"));
    assert_eq!(
        s.poll(t(5)).iter().map(address_of).collect::<Vec<_>>(),
        vec![addr(0)]
    );
}

#[test]
fn a_chain_of_participants_runs_in_order_and_is_the_critical_path() {
    // file on lvm on disk 0; disk 0 behind bridge 1; disk 2 independent.
    let mut devices = nvme(3);
    devices[0].parent = Some(addr(1));
    let mut s = sched_with(
        devices,
        vec![
            fs(1, "file", vec![Provider::Participant("lvm".into())]),
            fs(2, "lvm", vec![Provider::Device(addr(0))]),
        ],
        Config::default(),
    );
    let mut now = t(0);
    let mut order = Vec::new();
    // Answer everything promptly, 10 ms per step, and record who began when.
    for _ in 0..20 {
        let out = s.poll(now);
        if s.is_done() {
            break;
        }
        for m in out {
            let label = participant_of(&m)
                .map(|p| format!("p{p}"))
                .unwrap_or_else(|| address_of(&m).to_string());
            let reply = match &m {
                ControlMessage::ParticipantBegin { .. } => {
                    order.push(label);
                    p_begin_ack(&m, t(5))
                }
                ControlMessage::ParticipantFinish { .. } => p_finish_ack(&m, FinishOutcome::Clean),
                ControlMessage::Begin { .. } => {
                    order.push(label);
                    begin_ack(&m, t(5))
                }
                _ => finish_ack(&m, FinishOutcome::Clean),
            };
            now += t(10);
            s.handle(now, reply);
        }
    }
    assert!(s.is_done());
    let pos = |l: &str| order.iter().position(|x| x == l).unwrap();
    let (disk0, bridge, disk2) = (
        addr(0).to_string(),
        addr(1).to_string(),
        addr(2).to_string(),
    );
    assert!(pos("p1") < pos("p2") && pos("p2") < pos(&disk0) && pos(&disk0) < pos(&bridge));
    assert!(
        pos(&disk2) < pos("p2"),
        "the independent disk does not wait: {order:?}"
    );
    let report = Report::from_scheduler(&s, now);
    assert_eq!(
        report.critical_path,
        vec![
            "participant file".to_string(),
            "participant lvm".to_string(),
            disk0.clone(),
            bridge.clone()
        ]
    );
    let table = report.to_table();
    assert!(
        table.contains("critical path: participant file -> participant lvm"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{bridge} after {disk0}")),
        "{table}"
    );
}

#[test]
fn a_dependency_cycle_is_reported_as_an_error_and_does_not_hang() {
    let mut s = sched_with(
        nvme(1),
        vec![
            fs(1, "a", vec![Provider::Participant("b".into())]),
            fs(
                2,
                "b",
                vec![Provider::Participant("a".into()), Provider::Device(addr(0))],
            ),
        ],
        Config::default(),
    );
    let first = s.poll(t(0));
    assert_eq!(
        first.len(),
        2,
        "both cycle members start at once: {first:?}"
    );
    let report = Report::from_scheduler(&s, t(0));
    assert_eq!(
        report.cycles,
        vec![vec!["participant a", "participant b", "participant a"]]
    );
    assert!(report
        .to_table()
        .contains("error: dependency cycle participant a -> participant b -> participant a"));
}

#[test]
fn participants_and_unknown_replies_do_not_mix_up() {
    let mut s = sched_with(nvme(1), vec![fs(9, "file", vec![])], Config::default());
    let first = s.poll(t(0));
    assert_eq!(first.len(), 2, "no providers: runs beside the disk");
    let pb = first.iter().find(|m| participant_of(m).is_some()).unwrap();
    // An answer naming another participant for the same request id.
    let ControlMessage::ParticipantBegin { id, .. } = pb else {
        unreachable!()
    };
    let wrong = ControlMessage::ParticipantBeginAck {
        id: *id,
        participant: 10,
        budget: t(1),
    };
    assert!(matches!(s.handle(t(1), wrong), Handled::Ignored(_)));
    // A device answer carrying the participant's request id.
    let crossed = ControlMessage::BeginAck {
        id: *id,
        address: addr(0),
        budget: t(1),
    };
    assert!(matches!(s.handle(t(1), crossed), Handled::Ignored(_)));
    assert_eq!(s.handle(t(2), p_begin_ack(pb, t(1))), Handled::Applied);
}

#[test]
fn a_drivers_outcome_keeps_its_protocol_name_in_the_report() {
    for o in [
        FinishOutcome::Clean,
        FinishOutcome::Abrupt,
        FinishOutcome::TimedOut,
        FinishOutcome::Failed,
    ] {
        assert_eq!(Outcome::from(o).as_str(), o.name());
    }
}
