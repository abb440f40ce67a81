//! Every injected fault gives its typed outcome within its deadline (fake clock).

mod common;

use std::time::Duration;

use common::{config, Rig};
use nvme_sim::SimController;
use nvme_spec::regs::offset;
use nvme_spec::ShutdownNotification;
use nvme_spec::{Cc, ShutdownStatus};
use nvmed::{Controller, NvmeError, Options, ShutdownOutcome};
use pcid_hw::RegisterIo;

#[test]
fn shutdown_never_completes_times_out_at_the_deadline_and_escalates() {
    let rig = Rig::new(config("faults = [\"shutdown-never-completes\"]"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let start = rig.now();
    let deadline = Duration::from_secs(3);
    let report = ctrl.finish(deadline).unwrap();
    assert_eq!(
        report.outcome,
        ShutdownOutcome::TimedOut {
            escalated: true,
            last_status: ShutdownStatus::Occurring
        }
    );
    assert_eq!(rig.now() - start, deadline, "ends exactly at the deadline");
    assert_eq!(report.waited, deadline);
    assert_eq!(
        rig.sim.stats().shutdown_kind,
        Some(ShutdownNotification::Abrupt)
    );
    assert!(report.to_string().contains("escalated"));
}

#[test]
fn slow_normal_shutdown_is_escalated_to_abrupt() {
    // The normal shutdown would take 60 s; the abrupt one is immediate.
    let rig = Rig::new(config("shutdown_latency_ms = 60000\nabrupt_latency_ms = 0"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let start = rig.now();
    let report = ctrl.finish(Duration::from_secs(2)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Abrupt);
    // Escalation happens when only the abrupt reserve (10%) is left.
    assert!(rig.now() - start <= Duration::from_secs(2));
    assert!(rig.now() - start >= Duration::from_millis(1800));
    assert_eq!(
        rig.sim.stats().shutdown_kind,
        Some(ShutdownNotification::Abrupt)
    );
}

#[test]
fn fatal_status_is_reported_at_once() {
    let rig = Rig::new(config("faults = [\"fatal-status\"]"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let start = rig.now();
    let report = ctrl.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::ControllerFatal);
    assert!(rig.now() - start < Duration::from_millis(5));
}

#[test]
fn surprise_removal_during_shutdown_is_device_gone() {
    let rig = Rig::new(config("faults = [\"surprise-removal\"]"));
    let ctrl = rig.bring_up().unwrap();
    ctrl.begin().unwrap();
    let start = rig.now();
    let report = ctrl.finish(Duration::from_secs(5)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::DeviceGone);
    assert!(rig.now() - start < Duration::from_millis(5));
}

#[test]
fn surprise_removal_before_begin() {
    let rig = Rig::new(config(""));
    let ctrl = rig.bring_up().unwrap();
    rig.sim.surprise_remove();
    assert!(matches!(
        ctrl.read(1, 0, &mut [0u8; 512]),
        Err(NvmeError::DeviceGone { step: "Read" })
    ));
    assert!(matches!(ctrl.begin(), Err(NvmeError::DeviceGone { .. })));
}

#[test]
fn removed_device_fails_bring_up() {
    let rig = Rig::new(config(""));
    rig.sim.surprise_remove();
    assert!(matches!(
        rig.bring_up(),
        Err(NvmeError::DeviceGone { step: "read CAP" })
    ));
}

#[test]
fn slow_ready_times_out_at_cap_to() {
    let rig = Rig::new(config("faults = [\"slow-ready\"]\ncap_to = 4"));
    let start = rig.now();
    match rig.bring_up() {
        Err(NvmeError::Timeout { step, waited }) => {
            assert_eq!(step, "wait CSTS.RDY=1 after enable");
            assert_eq!(waited, Duration::from_secs(2), "CAP.TO = 4 x 500 ms");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("bring-up must fail"),
    }
    let elapsed = rig.now() - start;
    assert!(elapsed >= Duration::from_secs(2));
    assert!(elapsed < Duration::from_secs(2) + Duration::from_millis(5));
}

/// BAR0 whose CC writes are corrupted on the way (IOSQES forced to 7), as a
/// host bug or bit flip would: the controller must raise CFS on enable.
struct CorruptCc(SimController);

impl RegisterIo for CorruptCc {
    fn size(&self) -> usize {
        self.0.size()
    }
    fn read32(&self, offset: usize) -> u32 {
        self.0.read32(offset)
    }
    fn write32(&self, off: usize, value: u32) {
        let value = if off == offset::CC && Cc::from_bits(value).en() {
            Cc::from_bits(value).with_iosqes(7).into_bits()
        } else {
            value
        };
        self.0.write32(off, value)
    }
}

#[test]
fn invalid_settings_raising_cfs_are_controller_fatal() {
    let rig = Rig::new(config("cap_to = 10"));
    let start = rig.now();
    let r = Controller::bring_up(
        "0000:00:05.0",
        CorruptCc(rig.sim.clone()),
        rig.sim.dma(),
        rig.clock.clone(),
        Options::default(),
    );
    assert!(matches!(
        r,
        Err(NvmeError::ControllerFatal {
            step: "wait CSTS.RDY=1 after enable"
        })
    ));
    assert!(
        rig.now() - start < Duration::from_millis(5),
        "no wait for CAP.TO"
    );
    assert_eq!(rig.sim.stats().fatal_errors, 1);
}

#[test]
fn dropped_io_command_times_out() {
    let rig = Rig::new(config("faults = [\"drops-commands\"]"));
    let ctrl = rig
        .bring_up_with(Options {
            command_timeout: Duration::from_millis(800),
            ..Options::default()
        })
        .unwrap();
    let start = rig.now();
    match ctrl.write(1, 0, &[7u8; 512]) {
        Err(NvmeError::Timeout { step, waited }) => {
            assert_eq!(step, "Write");
            assert_eq!(waited, Duration::from_millis(800));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rig.now() - start, Duration::from_millis(800));
    // Shutdown still works: the queue deletion aborts nothing visible, the
    // notification is sent and completes.
    ctrl.begin().unwrap();
    assert!(ctrl
        .finish(Duration::from_secs(1))
        .unwrap()
        .outcome
        .is_clean());
}
