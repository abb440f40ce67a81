//! Bring-up against a BAR whose registers read random values: the driver
//! ends every wait at its deadline with a typed error (or comes up), never
//! panics and never loops forever on the fake clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nvme_sim::{SimConfig, SimController};
use nvmed::{Controller, Options};
use pcid_hw::{Clock, FakeClock, RegisterIo};
use proptest::prelude::*;

/// Registers that read values from a script (cycled) and ignore writes.
struct RandomBar {
    values: Vec<u32>,
    next: AtomicUsize,
}

impl RegisterIo for RandomBar {
    fn size(&self) -> usize {
        0x4000
    }
    fn read32(&self, _offset: usize) -> u32 {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.values[i % self.values.len()]
    }
    fn write32(&self, _offset: usize, _value: u32) {}
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        Just(0u32),
        Just(u32::MAX),
        Just(1u32),
        Just(0b1001u32),
        Just(0x0020_0000u32),
        Just(0x0F01_07FFu32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_register_values_never_panic(values in proptest::collection::vec(interesting_u32(), 1..40)) {
        let clock = Arc::new(FakeClock::new());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        // Only its DMA memory is used.
        let sim = SimController::new(SimConfig::default(), dyn_clock).unwrap();
        let bar = RandomBar { values, next: AtomicUsize::new(0) };
        let options = Options {
            command_timeout: Duration::from_millis(50),
            ready_timeout_fallback: Duration::from_secs(1),
            ..Options::default()
        };
        let r = Controller::bring_up("0000:00:0a.0", bar, sim.dma(), clock.clone(), options);
        if let Err(e) = &r {
            let _ = e.to_string();
        }
        // Two CSTS.RDY waits (each ≤ CAP.TO ≤ 127.5 s, plus one before the
        // reset) and six admin commands of 50 ms at most.
        prop_assert!(clock.now() <= Duration::from_millis(3 * 127_500 + 6 * 50));
        if let Ok(ctrl) = r {
            let _ = ctrl.write(1, 0, &[0u8; 512]);
            if ctrl.begin().is_ok() {
                let _ = ctrl.finish(Duration::from_millis(10)).unwrap();
            }
        }
    }
}
