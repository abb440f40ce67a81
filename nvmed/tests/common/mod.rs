//! Shared helpers: the real driver against the simulated controller on a fake clock.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use nvme_sim::{SimConfig, SimController, SimDma};
use nvmed::{Controller, NvmeError, Options};
use pcid_hw::{Clock, FakeClock};

/// The driver type the tests use.
pub type SimDriver = Controller<SimController, SimDma, Arc<FakeClock>>;

/// A simulated controller and the fake clock it shares with the driver.
pub struct Rig {
    pub clock: Arc<FakeClock>,
    pub sim: SimController,
}

impl Rig {
    pub fn new(config: SimConfig) -> Self {
        let _ = env_logger::builder().is_test(true).try_init();
        let clock = Arc::new(FakeClock::new());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let sim = SimController::with_label(config, dyn_clock, "sim").expect("valid sim config");
        Self { clock, sim }
    }

    pub fn bring_up(&self) -> Result<SimDriver, NvmeError> {
        self.bring_up_with(Options::default())
    }

    pub fn bring_up_with(&self, options: Options) -> Result<SimDriver, NvmeError> {
        Controller::bring_up(
            "0000:00:04.0",
            self.sim.clone(),
            self.sim.dma(),
            self.clock.clone(),
            options,
        )
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }
}

impl Drop for Rig {
    /// Every test also checks the DMA lifetime rule: by the time the rig goes
    /// (after the driver it served), the model saw no memory freed while in
    /// use and no late access to freed or reused memory.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let violations = self.sim.dma_violations();
        assert!(
            violations.is_empty(),
            "DMA lifetime violations: {}",
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// A config with the given TOML body.
pub fn config(toml: &str) -> SimConfig {
    SimConfig::from_toml_str(toml).expect("valid sim TOML")
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}
