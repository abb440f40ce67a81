//! The DMA lifetime rule (see `controller.rs`) against the simulated
//! controller, whose memory checks record any break of it — with negative
//! controls: the same scenarios with the rule switched off
//! (`Options::break_rules`, which exists only in this crate's unit-test
//! build) make the checks fire.

use std::sync::Arc;
use std::time::Duration;

use nvme_sim::{DmaViolationKind, SimConfig, SimController};
use pcid_hw::{Clock, FakeClock, RegisterIo};

use crate::controller::BreakRules;
use crate::{Controller, NvmeError, Options};

type Driver = Controller<SimController, nvme_sim::SimDma, Arc<FakeClock>>;

struct Rig {
    clock: Arc<FakeClock>,
    sim: SimController,
}

impl Rig {
    fn new(toml: &str) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let clock = Arc::new(FakeClock::new());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let config = SimConfig::from_toml_str(toml).expect("valid sim config");
        let sim = SimController::with_label(config, dyn_clock, "sim").expect("sim");
        Self { clock, sim }
    }

    fn bring_up(&self, break_rules: BreakRules) -> Result<Driver, NvmeError> {
        let options = Options {
            command_timeout: Duration::from_millis(100),
            break_rules,
            ..Options::default()
        };
        Controller::bring_up(
            "0000:00:04.0",
            self.sim.clone(),
            self.sim.dma(),
            self.clock.clone(),
            options,
        )
    }

    fn violations(&self) -> Vec<DmaViolationKind> {
        self.sim.dma_violations().iter().map(|v| v.kind).collect()
    }

    fn enabled(&self) -> bool {
        nvme_spec::Cc::from_bits(self.sim.read32(nvme_spec::regs::offset::CC)).en()
    }
}

const QUARANTINE_OFF: BreakRules = BreakRules {
    no_quarantine: true,
    no_reset_before_free: false,
};
const NO_RESET: BreakRules = BreakRules {
    no_quarantine: false,
    no_reset_before_free: true,
};

/// Reads take 300 ms, the driver waits 100 ms for a command.
const SLOW_READS: &str =
    "read_latency_ms = 300\nnamespace_blocks = 4096\nstart_state = \"disabled\"\n";

fn block_pattern(byte: u8) -> Vec<u8> {
    (0..4096u32).map(|i| byte ^ (i as u8)).collect()
}

/// A Read of LBA 0 times out; after its time has come (but before the model
/// has executed it), a Write of `B` to LBA 64 is issued — the Read executes
/// late, just before the Write is fetched. Returns what LBA 64 holds.
fn late_read_then_write(rig: &Rig, ctrl: &Driver) -> Vec<u8> {
    ctrl.write(1, 0, &block_pattern(0xA0)).expect("write A");
    let mut buf = vec![0u8; 4096];
    let e = ctrl.read(1, 0, &mut buf).unwrap_err();
    assert!(matches!(e, NvmeError::Timeout { step: "Read", .. }), "{e}");
    rig.clock.advance(Duration::from_millis(300));
    ctrl.write(1, 64, &block_pattern(0xB0)).expect("write B");
    let stats = rig.sim.stats();
    assert_eq!(
        (stats.deferred_commands, stats.deferred_commands_executed),
        (1, 1),
        "the late Read really executed"
    );
    rig.sim.read_visible(64, 8).expect("medium")
}

#[test]
fn a_command_completed_after_its_timeout_lands_in_quarantined_memory() {
    let rig = Rig::new(SLOW_READS);
    let ctrl = rig.bring_up(BreakRules::default()).expect("bring up");
    let b64 = late_read_then_write(&rig, &ctrl);
    assert_eq!(b64, block_pattern(0xB0), "the Write's data is intact");
    assert_eq!(rig.violations(), []);
    drop(ctrl);
    assert_eq!(rig.violations(), [], "released after a reset");
    assert!(!rig.enabled());
}

#[test]
fn negative_control_without_quarantine_the_late_read_corrupts_the_next_write() {
    let rig = Rig::new(SLOW_READS);
    let ctrl = rig.bring_up(QUARANTINE_OFF).expect("bring up");
    let b64 = late_read_then_write(&rig, &ctrl);
    assert!(
        rig.violations()
            .contains(&DmaViolationKind::DeviceAccessedReassignedMemory),
        "{:?}",
        rig.sim.dma_violations()
    );
    // And the damage is real: LBA 64 holds LBA 0's data.
    assert_eq!(b64, block_pattern(0xA0));
    drop(ctrl);
}

#[test]
fn dropping_the_controller_resets_it_before_its_memory_is_freed() {
    let rig = Rig::new(SLOW_READS);
    let ctrl = rig.bring_up(BreakRules::default()).expect("bring up");
    let resets = rig.sim.stats().resets;
    let mut buf = vec![0u8; 4096];
    assert!(ctrl.read(1, 0, &mut buf).is_err());
    drop(ctrl);
    assert_eq!(rig.sim.stats().resets, resets + 1);
    assert!(!rig.enabled());
    assert_eq!(rig.violations(), []);
    // The abandoned Read never executes after the reset.
    rig.clock.advance(Duration::from_secs(1));
    assert_eq!(rig.sim.stats().deferred_commands_executed, 0);
}

#[test]
fn negative_control_freeing_without_a_reset_is_caught() {
    let rig = Rig::new(SLOW_READS);
    let ctrl = rig.bring_up(NO_RESET).expect("bring up");
    let mut buf = vec![0u8; 4096];
    assert!(ctrl.read(1, 0, &mut buf).is_err());
    drop(ctrl);
    assert!(rig.enabled());
    assert!(
        rig.violations()
            .contains(&DmaViolationKind::FreedWhileInUse),
        "{:?}",
        rig.sim.dma_violations()
    );
    // The late Read now writes into freed memory, and that is caught too.
    rig.clock.advance(Duration::from_secs(1));
    let _ = rig.sim.stats();
    assert!(rig
        .violations()
        .contains(&DmaViolationKind::DeviceAccessedFreedMemory));
}

#[test]
fn a_bring_up_failing_after_enable_resets_before_freeing() {
    // CSTS.RDY never follows CC.EN=1 within CAP.TO.
    let rig = Rig::new("faults = [\"slow-ready\"]\ncap_to = 2\n");
    match rig.bring_up(BreakRules::default()) {
        Err(NvmeError::Timeout {
            step: "wait CSTS.RDY=1 after enable",
            ..
        }) => {}
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("bring-up should fail"),
    }
    assert!(!rig.enabled());
    assert_eq!(rig.violations(), []);

    let rig = Rig::new("faults = [\"slow-ready\"]\ncap_to = 2\n");
    assert!(rig.bring_up(NO_RESET).is_err());
    assert!(
        rig.violations()
            .contains(&DmaViolationKind::FreedWhileInUse),
        "the admin queues were freed while enabled: {:?}",
        rig.sim.dma_violations()
    );
}

#[test]
fn too_many_abandoned_commands_refuse_io_instead_of_reusing_memory() {
    let rig = Rig::new(SLOW_READS);
    let options = Options {
        command_timeout: Duration::from_millis(100),
        max_quarantined_commands: 2,
        ..Options::default()
    };
    let ctrl = Controller::bring_up(
        "0000:00:04.0",
        rig.sim.clone(),
        rig.sim.dma(),
        rig.clock.clone(),
        options,
    )
    .expect("bring up");
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        assert!(matches!(
            ctrl.read(1, 0, &mut buf),
            Err(NvmeError::Timeout { .. })
        ));
    }
    match ctrl.write(1, 8, &block_pattern(1)) {
        Err(NvmeError::Unusable { reason }) => {
            assert!(
                reason.contains("3 I/O commands did not complete"),
                "{reason}"
            )
        }
        other => panic!("expected Unusable, got {other:?}"),
    }
    // Shutdown still works, and releasing is clean.
    let begun = ctrl.begin().expect("begin");
    assert!(begun.queues_deleted);
    let report = ctrl.finish(Duration::from_secs(5)).expect("finish");
    assert!(report.outcome.is_clean(), "{report}");
    rig.clock.advance(Duration::from_secs(1));
    drop(ctrl);
    assert_eq!(rig.violations(), []);
}
