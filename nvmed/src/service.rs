//! What the `nvmed` daemon does around a [`Controller`], shared by the shipped
//! binary and by test builds of the daemon.
//!
//! The shipped `nvmed` binary (`src/main.rs`) connects to pcid, opens the
//! function's hardware (Linux sysfs or Redox), then calls [`bring_up`], sends
//! `Ready` and serves the shutdown protocol with [`ShutdownService`]. It
//! contains nothing else: no simulated controller, no self-test, no write
//! workload — nothing that writes what the block user did not ask for.
//!
//! Test builds (the `nvmed-test` binary of the `shutdown_tests` crate, used
//! on the simulated machine and in the QEMU guest) run the same functions with
//! the simulated backend and their data checks added between bring-up and
//! `Ready`.

use std::sync::Arc;
use std::time::Duration;

use log::info;
use pcid_hw::{Clock, DmaAllocator, HwError, RegisterIo};
use pcid_interface::driver::{Deadline, FinishReport, ServeOutcome, ShutdownHandler};
use pcid_interface::function::PciFunction;
use pcid_interface::protocol::{FinishOutcome, ShutdownKind, ShutdownSupport};

use crate::{Controller, NvmeError, Options, ShutdownOutcome};

/// Name the driver gives in `Hello`.
pub const DRIVER_NAME: &str = "nvmed";

/// Hardware of a function could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct HardwareError {
    /// What was being done, e.g. "map BAR0".
    pub step: &'static str,
    /// The backend's error.
    #[source]
    pub source: HwError,
}

/// Opens a Linux PCI function through sysfs: enables memory space and bus
/// mastering, maps BAR0 and sets up locked DMA memory (needs root).
#[cfg(target_os = "linux")]
pub fn open_linux(
    sysfs_path: &str,
) -> Result<(pcid_hw::linux::SysfsBar, pcid_hw::linux::LockedDmaAllocator), HardwareError> {
    use pcid_hw::linux::{enable_device, LockedDmaAllocator, SysfsBar};
    let hw = |step: &'static str| move |source| HardwareError { step, source };
    enable_device(sysfs_path).map_err(hw("enable memory space and bus mastering"))?;
    let bar = SysfsBar::open(sysfs_path, 0).map_err(hw("map BAR0"))?;
    let dma = LockedDmaAllocator::new().map_err(hw("set up DMA memory"))?;
    Ok((bar, dma))
}

/// Brings the controller of `function` up with the default [`Options`] and
/// logs a one-line summary naming the PCI address.
pub fn bring_up<R, D, C>(
    function: &PciFunction,
    regs: R,
    dma: D,
    clock: C,
) -> Result<Controller<R, D, C>, NvmeError>
where
    R: RegisterIo,
    D: DmaAllocator,
    C: Clock,
{
    let address = function.address.to_string();
    let ctrl = Controller::bring_up(address.clone(), regs, dma, clock, Options::default())?;
    let info = ctrl.info();
    let namespaces: Vec<String> = ctrl
        .namespaces()
        .iter()
        .map(|n| format!("ns{} {} x {} B", n.nsid, n.blocks, n.block_size))
        .collect();
    info!(
        "{address}: NVMe {} serial {:?} model {:?} firmware {:?}, RTD3E {} us, VWC {}, max transfer {} B, {}",
        info.version,
        info.serial,
        info.model,
        info.firmware,
        info.rtd3e_us,
        if info.volatile_write_cache { "yes" } else { "no" },
        info.max_transfer_bytes,
        if namespaces.is_empty() {
            "no namespaces".to_string()
        } else {
            namespaces.join(", ")
        }
    );
    Ok(ctrl)
}

/// The shutdown protocol's view of a controller: `Begin` →
/// [`Controller::begin_within`], `Finish` → [`Controller::finish`].
pub struct ShutdownService<R: RegisterIo, D: DmaAllocator, C: Clock> {
    ctrl: Arc<Controller<R, D, C>>,
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> ShutdownService<R, D, C> {
    /// Serves `ctrl`.
    pub fn new(ctrl: Arc<Controller<R, D, C>>) -> Self {
        Self { ctrl }
    }

    /// The controller served.
    pub fn controller(&self) -> &Arc<Controller<R, D, C>> {
        &self.ctrl
    }
}

/// Share of a `Begin` deadline kept for sending `BeginAck`: a tenth, at most
/// this much (PROTOCOL.md §7, "margin").
pub const BEGIN_ACK_MARGIN_MAX: Duration = Duration::from_millis(100);

impl<R: RegisterIo, D: DmaAllocator, C: Clock> ShutdownHandler for ShutdownService<R, D, C> {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::TwoPhase
    }

    fn begin(&mut self, kind: ShutdownKind, deadline: Deadline) -> Result<Duration, String> {
        info!("{}: shutdown begin ({kind:?})", self.ctrl.name());
        // Keep a little of pcid's deadline for sending BeginAck.
        let remaining = deadline.remaining();
        let margin = (remaining / 10).min(BEGIN_ACK_MARGIN_MAX);
        self.ctrl
            .begin_within(remaining.saturating_sub(margin))
            .map(|r| r.budget)
            .map_err(|e| e.to_string())
    }

    fn finish(&mut self, deadline: Deadline) -> FinishReport {
        info!(
            "{}: I/O while serving (completions polled): {}",
            self.ctrl.name(),
            self.ctrl.io_stats()
        );
        match self.ctrl.finish(deadline.remaining()) {
            Ok(report) => {
                let outcome = protocol_outcome(report.outcome);
                FinishReport::new(outcome, report.duration, report.to_string())
            }
            Err(e) => FinishReport::new(FinishOutcome::Failed, Duration::ZERO, e.to_string()),
        }
    }
}

/// The protocol's outcome for the library's richer one: a controller that
/// reported fatal status or vanished is a failed shutdown.
pub fn protocol_outcome(outcome: ShutdownOutcome) -> FinishOutcome {
    match outcome {
        ShutdownOutcome::Clean => FinishOutcome::Clean,
        ShutdownOutcome::Abrupt => FinishOutcome::Abrupt,
        ShutdownOutcome::TimedOut { .. } => FinishOutcome::TimedOut,
        ShutdownOutcome::ControllerFatal | ShutdownOutcome::DeviceGone => FinishOutcome::Failed,
    }
}

/// Logs how serving the protocol ended.
pub fn log_serve_outcome(address: &str, outcome: &ServeOutcome) {
    match outcome {
        ServeOutcome::Finished(report) => info!(
            "{address}: shutdown finished: {:?} after {:.3} s ({})",
            report.outcome,
            report.elapsed.as_secs_f64(),
            report.detail
        ),
        ServeOutcome::Closed => info!("{address}: pcid closed the channel; exiting"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::ShutdownStatus;

    #[test]
    fn outcomes_map_to_the_protocol() {
        assert_eq!(
            protocol_outcome(ShutdownOutcome::Clean),
            FinishOutcome::Clean
        );
        assert_eq!(
            protocol_outcome(ShutdownOutcome::Abrupt),
            FinishOutcome::Abrupt
        );
        for escalated in [false, true] {
            assert_eq!(
                protocol_outcome(ShutdownOutcome::TimedOut {
                    escalated,
                    last_status: ShutdownStatus::Occurring
                }),
                FinishOutcome::TimedOut
            );
        }
        assert_eq!(
            protocol_outcome(ShutdownOutcome::ControllerFatal),
            FinishOutcome::Failed
        );
        assert_eq!(
            protocol_outcome(ShutdownOutcome::DeviceGone),
            FinishOutcome::Failed
        );
    }
}
