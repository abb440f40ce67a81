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
//! on the simulated machine, in the QEMU guest and on Redox) run the same
//! functions with the simulated backend and their data checks added between
//! bring-up and `Ready`.
//!
//! Opening hardware: [`open_linux`] (sysfs) on Linux, `crate::redox` on
//! Redox, whose BAR0 comes from pcid's `Welcome` ([`redox_bar0`], portable
//! so that it is tested on every host).

use std::sync::Arc;
use std::time::Duration;

use log::info;
use pcid_hw::{Clock, DmaAllocator, HwError, RegisterIo};
use pcid_interface::driver::{Deadline, FinishReport, ServeOutcome, ShutdownHandler};
use pcid_interface::function::PciFunction;
use pcid_interface::function::{Bar, BarKind};
use pcid_interface::protocol::{FinishOutcome, ShutdownKind, ShutdownSupport};

use crate::{Controller, NvmeError, Options, ShutdownOutcome};

/// Name the driver gives in `Hello`.
pub const DRIVER_NAME: &str = "nvmed";

/// Hardware of a function could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// The backend failed a step.
    #[error("{step}: {source}")]
    Backend {
        /// What was being done, e.g. "map BAR0".
        step: &'static str,
        /// The backend's error.
        #[source]
        source: HwError,
    },
    /// pcid's description of the function names no usable BAR0.
    #[error("BAR0 from pcid's Welcome: {0}")]
    Bar0(#[from] Bar0Error),
}

impl HardwareError {
    /// A [`HardwareError::Backend`] for `step`.
    pub fn backend(step: &'static str) -> impl FnOnce(HwError) -> Self {
        move |source| Self::Backend { step, source }
    }
}

/// Why the BARs pcid sent in `Welcome` (`FunctionBackend::Redox`) give no
/// usable BAR0, the controller's registers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bar0Error {
    /// No BAR in slot 0.
    #[error("the function has no BAR0")]
    Missing,
    /// Slot 0 is listed more than once.
    #[error("BAR0 is listed {count} times")]
    Duplicate {
        /// How often.
        count: usize,
    },
    /// BAR0 decodes I/O space.
    #[error("BAR0 decodes I/O space; the NVMe registers are memory-mapped")]
    Io,
    /// BAR0 has no address assigned.
    #[error("BAR0 has no address assigned (0)")]
    Unassigned,
    /// BAR0's size is not a power of two, or too small for the registers
    /// and the admin queue doorbells.
    #[error("BAR0 size {size:#x} is not a power of two of at least {min:#x}", min = BAR0_MIN_SIZE)]
    BadSize {
        /// The size pcid sent.
        size: u64,
    },
    /// BAR0 does not fit the address space.
    #[error("BAR0 {address:#x}+{size:#x} does not fit the address space")]
    OutOfRange {
        /// Base address.
        address: u64,
        /// Size.
        size: u64,
    },
}

/// Smallest BAR0 that holds the controller registers (0x000–0xFFF) and the
/// admin queue doorbells, which start at 0x1000 (NVMe Base Specification 1.4,
/// §3.1, "Offset 1000h: SQ0TDBL"). BAR sizes are powers of two.
pub const BAR0_MIN_SIZE: u64 = 0x2000;

/// BAR0 of a Redox function, the controller's registers (NVMe over PCIe:
/// MLBAR/MUBAR, BAR0 with BAR1 as its upper half), from the BARs pcid sent in
/// `Welcome`. The BARs are checked, since the wire format does not constrain
/// them: exactly one entry for slot 0, memory space, an address assigned, a
/// power-of-two size of at least [`BAR0_MIN_SIZE`], inside the address space.
pub fn redox_bar0(bars: &[Bar]) -> Result<Bar, Bar0Error> {
    let mut slot0 = bars.iter().filter(|b| b.index == 0);
    let bar = *slot0.next().ok_or(Bar0Error::Missing)?;
    let others = slot0.count();
    if others > 0 {
        return Err(Bar0Error::Duplicate { count: others + 1 });
    }
    if bar.kind == BarKind::Io {
        return Err(Bar0Error::Io);
    }
    if bar.address == 0 {
        return Err(Bar0Error::Unassigned);
    }
    if !bar.size.is_power_of_two() || bar.size < BAR0_MIN_SIZE {
        return Err(Bar0Error::BadSize { size: bar.size });
    }
    // The last byte's address: a 32-bit BAR decodes below 4 GiB, and the
    // whole window must be addressable here.
    let last = bar.address.checked_add(bar.size - 1);
    let limit = match bar.kind {
        BarKind::Memory32 { .. } => u64::from(u32::MAX),
        _ => u64::MAX,
    };
    match last {
        Some(last) if last <= limit && usize::try_from(last).is_ok() => Ok(bar),
        _ => Err(Bar0Error::OutOfRange {
            address: bar.address,
            size: bar.size,
        }),
    }
}

/// Opens a Linux PCI function through sysfs: enables memory space and bus
/// mastering, maps BAR0 and sets up locked DMA memory (needs root).
#[cfg(target_os = "linux")]
pub fn open_linux(
    sysfs_path: &str,
) -> Result<(pcid_hw::linux::SysfsBar, pcid_hw::linux::LockedDmaAllocator), HardwareError> {
    use pcid_hw::linux::{enable_device, LockedDmaAllocator, SysfsBar};
    let hw = HardwareError::backend;
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

/// Called once `Ready` was sent, before serving: drops privileges where Redox
/// drivers do. On Redox the daemon then tells whoever started it that it is
/// ready (`nvmed::redox`).
///
/// Everything the daemon will use must be open by then: the channel with
/// its event queue and timer, BAR0, the DMA allocator and its buffers, and
/// whatever a test build opens (its logs). On Redox the drop is
/// `setrens(0, 0)`; elsewhere it is only recorded
/// (`pcid_interface::privileges`), which makes any later open through
/// `pcid_interface` fail as on Redox, so the Linux process tests check the
/// order. Failures are logged with the PCI address; the driver keeps serving.
pub fn ready_to_serve(function: &PciFunction) {
    if let Err(e) = pcid_interface::privileges::drop_privileges() {
        log::error!("{}: {e}", function.address);
    }
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

    fn bar(index: u8, kind: BarKind, address: u64, size: u64) -> Bar {
        Bar {
            index,
            kind,
            address,
            size,
        }
    }

    const MEM64: BarKind = BarKind::Memory64 {
        prefetchable: false,
    };
    const MEM32: BarKind = BarKind::Memory32 {
        prefetchable: false,
    };

    #[test]
    fn bar0_is_taken_from_the_welcome_bars() {
        // A QEMU NVMe controller: BAR0 64-bit, 16 KiB; an MSI-X table BAR beside it.
        let qemu = [
            bar(0, MEM64, 0xFEBF_0000, 0x4000),
            bar(4, MEM32, 0xFEBF_4000, 0x1000),
        ];
        assert_eq!(redox_bar0(&qemu), Ok(qemu[0]));
        let high = [bar(0, MEM64, 0x8_0000_0000, 0x4000)];
        assert_eq!(redox_bar0(&high), Ok(high[0]));
        let pf = bar(
            0,
            BarKind::Memory32 { prefetchable: true },
            0xE000_0000,
            0x2000,
        );
        assert_eq!(redox_bar0(&[pf]), Ok(pf));
    }

    #[test]
    fn unusable_bar0_is_a_typed_error() {
        let cases: &[(&[Bar], Bar0Error)] = &[
            (&[], Bar0Error::Missing),
            (&[bar(2, MEM64, 0xFEBF_0000, 0x4000)], Bar0Error::Missing),
            (
                &[
                    bar(0, MEM64, 0xFEBF_0000, 0x4000),
                    bar(0, MEM64, 0xFEC0_0000, 0x4000),
                ],
                Bar0Error::Duplicate { count: 2 },
            ),
            (&[bar(0, BarKind::Io, 0xC000, 0x4000)], Bar0Error::Io),
            (&[bar(0, MEM64, 0, 0x4000)], Bar0Error::Unassigned),
            (
                &[bar(0, MEM64, 0xFEBF_0000, 0)],
                Bar0Error::BadSize { size: 0 },
            ),
            (
                &[bar(0, MEM64, 0xFEBF_0000, 0x3000)],
                Bar0Error::BadSize { size: 0x3000 },
            ),
            (
                &[bar(0, MEM64, 0xFEBF_0000, 0x1000)],
                Bar0Error::BadSize { size: 0x1000 },
            ),
            (
                &[bar(0, MEM64, u64::MAX - 0x1FFF + 1, 0x4000)],
                Bar0Error::OutOfRange {
                    address: u64::MAX - 0x1FFF + 1,
                    size: 0x4000,
                },
            ),
            (
                &[bar(0, MEM32, 0xFFFF_E000, 0x4000)],
                Bar0Error::OutOfRange {
                    address: 0xFFFF_E000,
                    size: 0x4000,
                },
            ),
        ];
        for (bars, expected) in cases {
            assert_eq!(redox_bar0(bars).as_ref(), Err(expected), "{bars:?}");
        }
        // The window ending exactly at the top of its address space is fine.
        let top32 = bar(0, MEM32, 0xFFFF_C000, 0x4000);
        assert_eq!(redox_bar0(&[top32]), Ok(top32));
        let top64 = bar(0, MEM64, u64::MAX - 0x3FFF, 0x4000);
        assert_eq!(redox_bar0(&[top64]), Ok(top64));
    }

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
