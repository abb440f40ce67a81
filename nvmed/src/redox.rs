//! nvmed on Redox: start-up as a Redox driver daemon, BAR0 and DMA through
//! `pcid_hw::redox`, and the privilege drop. Used by the shipped `nvmed` and
//! by its test build (`nvmed-test`), so both start and reach the hardware
//! the same way.
//!
//! On Redox, drivers are started by Redox's pcid-spawner: it opens the
//! function's channel, uses it for Redox's own requests (configuration,
//! enable), hands the fd over in `PCID_CLIENT_CHANNEL` and waits for the
//! process it started to exit. So nvmed daemonizes as Redox's drivers do:
//!
//! * [`daemonize`] forks (`pcid_interface::redox::daemon`) before anything
//!   else. The process pcid-spawner started exits 0 once the child is ready,
//!   non-zero if the child gives up first; the child serves on.
//! * [`open_hardware`] maps BAR0 — as pcid's `Welcome` describes it
//!   (`FunctionBackend::Redox { bars, .. }`, checked by
//!   [`crate::service::redox_bar0`]) — uncacheable through physmap and opens
//!   the DMA allocator. pcid enabled memory space and bus mastering when the
//!   channel was opened.
//! * After the controller is up and `Ready` was sent,
//!   [`crate::service::ready_to_serve`] drops privileges (`setrens(0, 0)`:
//!   every mapping, DMA buffer and the channel with its event queue and timer
//!   stay usable; after it only the `memory` and `pipe` schemes can be
//!   opened, and all of nvmed's DMA memory is allocated during bring-up) and
//!   then signals readiness.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::Mutex;

use pcid_hw::redox::{MemoryType, PhysMap, RedoxDmaAllocator};
use pcid_interface::function::PciAddress;
use pcid_interface::redox::daemon::{self, DaemonError, Readiness};
use pcid_interface::redox::Bar;

use crate::service::{redox_bar0, Bar0Error, HardwareError, DRIVER_NAME};

/// Readiness handle of this process's daemon, set by [`daemonize`] and taken
/// by [`ready`]. A process runs one daemon.
static READINESS: Mutex<Option<Readiness>> = Mutex::new(None);

/// Forks into the background as Redox's drivers do and runs `run` in the
/// daemon (the child); its exit code becomes the daemon's exit status (0 for
/// success, 1 otherwise). The started process exits once the daemon is
/// ready ([`crate::service::ready_to_serve`]) or gone.
///
/// Call it first thing in `main`, before any thread is started. Returns
/// only if the readiness pipe or the fork failed.
pub fn daemonize(run: impl FnOnce() -> ExitCode) -> Result<Infallible, DaemonError> {
    daemon::run(DRIVER_NAME, move |readiness| {
        *READINESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(readiness);
        if run() == ExitCode::SUCCESS {
            0
        } else {
            1
        }
    })
}

/// Maps BAR0 of the function at `address`, found in the BARs pcid sent in
/// `Welcome`, and opens the DMA allocator. Both need the privileges the
/// daemon drops once it is ready.
pub fn open_hardware(
    address: PciAddress,
    bars: &[Bar],
) -> Result<(PhysMap, RedoxDmaAllocator), HardwareError> {
    let bar0 = redox_bar0(bars)?;
    let len = usize::try_from(bar0.size).map_err(|_| Bar0Error::OutOfRange {
        address: bar0.address,
        size: bar0.size,
    })?;
    let regs = PhysMap::map(bar0.address, len, MemoryType::Uncacheable)
        .map_err(HardwareError::backend("map BAR0 through physmap"))?;
    let dma = RedoxDmaAllocator::new().map_err(HardwareError::backend("set up DMA memory"))?;
    log::info!(
        "{address}: BAR0 {:#x}+{:#x} mapped",
        bar0.address,
        bar0.size
    );
    Ok((regs, dma))
}

/// After `Ready`: drops privileges, then tells whoever started the daemon
/// that it is ready. Failures are logged; the driver keeps serving.
pub(crate) fn ready(address: PciAddress) {
    if let Err(e) = pcid_interface::privileges::drop_privileges() {
        log::error!("{address}: {e}");
    }
    let readiness = READINESS.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(readiness) = readiness {
        if let Err(e) = readiness.ready() {
            log::error!("{address}: {e}");
        }
    }
}
