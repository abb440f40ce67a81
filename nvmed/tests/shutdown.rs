//! Two-phase shutdown against the model, on a fake clock.

mod common;

use std::time::Duration;

use common::{config, pattern, Rig};
use nvme_spec::ShutdownNotification;
use nvmed::{NvmeError, Options, ShutdownOutcome};
use pcid_hw::Clock;

/// Within a few milliseconds of the model's latency, for waits under 64 ms
/// and controllers done when they said: `Options::shutdown_polling` looks
/// at least every 2 ms then, and within 250 µs of the budget.
const SLACK: Duration = Duration::from_millis(3);

/// How late `finish` may see a controller done `latency` after the CC.SHN
/// write when that is not when its budget said (`ShutdownPolling::default()`):
/// a sixteenth of the time waited or of the budget (at most 250 ms),
/// whichever is longer, and at least 2 ms.
fn lag_bound(latency: Duration, budget: Duration) -> Duration {
    Duration::from_millis(2)
        .max(latency / 16)
        .max((budget / 16).min(Duration::from_millis(250)))
}

#[test]
fn finish_reports_clean_with_the_controllers_latency() {
    let rig = Rig::new(config("shutdown_latency_ms = 4500\nrtd3e_us = 5000000"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.write(1, 0, &pattern(4096, 9)).unwrap();

    let t0 = rig.now();
    let begun = ctrl.begin().unwrap();
    assert_eq!(begun.budget, Duration::from_secs(5));
    assert_eq!(begun.rtd3e_us, 5_000_000);
    assert!(begun.queues_deleted);
    // begin does not wait for the controller.
    assert_eq!(rig.now(), t0, "begin must not wait for CSTS.SHST");
    let stats = rig.sim.stats();
    assert_eq!(stats.shutdown_requested_at, Some(t0));
    assert_eq!(stats.shutdown_kind, Some(ShutdownNotification::Normal));
    assert_eq!(stats.shutdown_completed_at, None);

    let report = ctrl.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    let latency = Duration::from_millis(4500);
    assert!(report.duration >= latency, "{report:?}");
    // Done half a second before its RTD3E said.
    assert!(
        report.duration <= latency + lag_bound(latency, begun.budget),
        "{report:?}"
    );
    // Polling backs off instead of spinning, but keeps looking.
    assert!(report.polls > 10 && report.polls < 60, "{report:?}");
    assert_eq!(
        rig.sim.stats().shutdown_completed_at,
        Some(t0 + latency),
        "the model completed at its latency"
    );
    assert!(report.to_string().contains("CSTS.SHST=10b"));
}

#[test]
fn a_controller_done_when_its_rtd3e_said_is_seen_at_once() {
    // (latency, most looks): one every 2 ms would be 150 and 2250.
    for (ms, most) in [(300u64, 45u32), (4500, 60)] {
        let rig = Rig::new(config(&format!(
            "shutdown_latency_ms = {ms}\nrtd3e_us = {}",
            ms * 1000
        )));
        let ctrl = rig.bring_up().unwrap();
        let begun = ctrl.begin().unwrap();
        assert_eq!(begun.budget, Duration::from_millis(ms));
        let report = ctrl.finish(Duration::from_secs(10)).unwrap();
        assert_eq!(report.outcome, ShutdownOutcome::Clean);
        let latency = Duration::from_millis(ms);
        assert!(report.duration >= latency, "{report:?}");
        assert!(
            report.duration <= latency + Duration::from_micros(250),
            "{report:?}"
        );
        assert!(report.polls < most, "{report:?}");
    }
}

#[test]
fn duration_counts_from_begin_not_from_finish() {
    let rig = Rig::new(config("shutdown_latency_ms = 1000"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    // shutdownd begins every device before finishing any: time passes.
    rig.clock.advance(Duration::from_millis(600));
    let report = ctrl.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert!(report.duration >= Duration::from_millis(1000), "{report:?}");
    assert!(report.duration <= Duration::from_millis(1000) + SLACK);
    assert!(report.waited <= Duration::from_millis(400) + SLACK);
}

#[test]
fn first_look_is_immediate() {
    let rig = Rig::new(config("shutdown_latency_ms = 0"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let report = ctrl.finish(Duration::from_secs(1)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert_eq!(report.polls, 1);
    assert_eq!(report.duration, Duration::ZERO);

    // A controller that announced (RTD3E) and needs 1 ms is seen within the
    // first few looks, a fraction of a millisecond late.
    let rig = Rig::new(config("shutdown_latency_ms = 1\nrtd3e_us = 1000"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let report = ctrl.finish(Duration::from_secs(1)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert!(report.duration < Duration::from_micros(1600), "{report:?}");

    // One that reports no RTD3E (1 s assumed) and needs 1 ms: within the
    // 2 ms the schedule starts with then.
    let rig = Rig::new(config("shutdown_latency_ms = 1\nrtd3e_us = 0"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let report = ctrl.finish(Duration::from_secs(1)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert!(report.duration <= Duration::from_millis(2), "{report:?}");
}

#[test]
fn rtd3e_zero_gives_one_second_budget() {
    let rig = Rig::new(config("rtd3e_us = 0"));
    let ctrl = rig.bring_up().unwrap();
    assert_eq!(ctrl.begin().unwrap().budget, Duration::from_secs(1));
}

#[test]
fn begin_refuses_new_io_and_deletes_queues() {
    let rig = Rig::new(config("shutdown_latency_ms = 100"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.write(1, 0, &[1u8; 512]).unwrap();
    let io_before = rig.sim.stats().io_commands;
    let admin_before = rig.sim.stats().admin_commands;
    ctrl.begin().unwrap();
    assert!(ctrl.is_shutting_down());
    // Two admin commands: Delete I/O SQ, then Delete I/O CQ.
    assert_eq!(rig.sim.stats().admin_commands, admin_before + 2);
    assert_eq!(rig.sim.stats().error_completions, 0);
    assert!(matches!(
        ctrl.write(1, 0, &[2u8; 512]),
        Err(NvmeError::ShuttingDown)
    ));
    assert!(matches!(
        ctrl.read(1, 0, &mut [0u8; 512]),
        Err(NvmeError::ShuttingDown)
    ));
    assert!(matches!(ctrl.flush(1), Err(NvmeError::ShuttingDown)));
    assert_eq!(
        rig.sim.stats().io_commands,
        io_before,
        "nothing reached the device"
    );
    // begin is idempotent; finish works afterwards.
    let again = ctrl.begin().unwrap();
    assert!(again.queues_deleted);
    assert!(ctrl
        .finish(Duration::from_secs(1))
        .unwrap()
        .outcome
        .is_clean());
    assert!(matches!(
        ctrl.write(1, 0, &[2u8; 512]),
        Err(NvmeError::ShuttingDown)
    ));
}

#[test]
fn finish_before_begin_is_an_error() {
    let rig = Rig::new(config(""));
    let ctrl = rig.bring_up().unwrap();
    assert!(matches!(
        ctrl.finish(Duration::from_secs(1)),
        Err(NvmeError::NotBegun)
    ));
    ctrl.write(1, 0, &[0u8; 512]).unwrap();
}

#[test]
fn io_thread_and_shutdown_thread() {
    // The controller is shared between an I/O thread and the thread that
    // runs the shutdown protocol. Every write acknowledged before begin
    // returned is in the durable medium after a clean finish; after begin
    // every write is refused with ShuttingDown, never silently dropped.
    let rig = Rig::new(config(
        "volatile_write_cache = true\nshutdown_latency_ms = 50\nnamespace_blocks = 100000",
    ));
    let ctrl = std::sync::Arc::new(rig.bring_up().unwrap());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let io = {
        let ctrl = ctrl.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for lba in 0..100_000u64 {
                let block = pattern(512, (lba % 251) as u8);
                match ctrl.write(1, lba, &block) {
                    Ok(()) => acked.push(lba),
                    Err(NvmeError::ShuttingDown) => return (acked, Some(lba)),
                    Err(e) => panic!("unexpected error {e}"),
                }
                if lba == 20 {
                    let _ = started_tx.send(());
                }
            }
            (acked, None)
        })
    };
    started_rx.recv().unwrap();
    let begun = ctrl.begin().unwrap();
    assert!(begun.queues_deleted);
    let report = ctrl.finish(Duration::from_secs(2)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    let (acked, refused_at) = io.join().unwrap();
    let refused_at = refused_at.expect("the writer must have been refused");
    assert_eq!(
        acked.len() as u64,
        refused_at,
        "writes are in order, none lost"
    );
    assert!(acked.len() > 20);
    let durable = rig.sim.read_durable(0, refused_at).unwrap();
    for lba in acked {
        let at = lba as usize * 512;
        assert_eq!(
            &durable[at..at + 512],
            &pattern(512, (lba % 251) as u8)[..],
            "acknowledged block {lba} not durable"
        );
    }
    let _ = rig.clock.now();
}

#[test]
fn no_escalation_when_disabled() {
    let rig = Rig::new(config("faults = [\"shutdown-never-completes\"]"));
    let ctrl = rig
        .bring_up_with(Options {
            escalate_to_abrupt: false,
            ..Options::default()
        })
        .unwrap();
    ctrl.begin().unwrap();
    let start = rig.now();
    let report = ctrl.finish(Duration::from_millis(1500)).unwrap();
    assert_eq!(
        report.outcome,
        ShutdownOutcome::TimedOut {
            escalated: false,
            last_status: nvme_spec::ShutdownStatus::Occurring
        }
    );
    assert_eq!(rig.now() - start, Duration::from_millis(1500));
    assert_eq!(
        rig.sim.stats().shutdown_kind,
        Some(ShutdownNotification::Normal)
    );
}

#[test]
fn begin_within_does_not_wait_for_a_stuck_command() {
    // Real clock: an I/O thread is stuck in a write the controller never
    // completes (command timeout 3 s). begin_within(50 ms) must write the
    // shutdown notification without waiting for that write to time out.
    let cfg = config("faults = [\"drops-commands\"]\nshutdown_latency_ms = 20");
    let clock = pcid_hw::SystemClock::new();
    let sim_clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(clock);
    let sim = nvme_sim::SimController::new(cfg, sim_clock).unwrap();
    let ctrl = std::sync::Arc::new(
        nvmed::Controller::bring_up(
            "0000:00:06.0",
            sim.clone(),
            sim.dma(),
            clock,
            Options {
                command_timeout: Duration::from_secs(3),
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let ctrl = ctrl.clone();
        std::thread::spawn(move || {
            let r = ctrl.write(1, 0, &[3u8; 512]);
            let _ = done_tx.send(());
            r
        })
    };
    // Wait (bounded) until the controller has fetched the write.
    let t = std::time::Instant::now();
    while sim.stats().io_commands == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "write never submitted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let begun = ctrl.begin_within(Duration::from_millis(50)).unwrap();
    assert!(!begun.queues_deleted);
    assert!(
        done_rx.try_recv().is_err(),
        "begin returned only after the stuck write gave up"
    );
    assert!(sim.stats().shutdown_requested_at.is_some());
    let report = ctrl.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert!(matches!(
        writer.join().unwrap(),
        Err(NvmeError::Timeout { step: "Write", .. })
    ));
}

#[test]
fn instant_shutdown_is_timed_from_begin() {
    // Like QEMU: SHST=10b right after the CC.SHN write. begin's single look
    // records it, so a late finish does not inflate the measured duration.
    let rig = Rig::new(config("shutdown_latency_ms = 0"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    rig.clock.advance(Duration::from_millis(600));
    let report = ctrl.finish(Duration::from_secs(1)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    assert_eq!(report.duration, Duration::ZERO);
    assert_eq!(report.polls, 1);
}
