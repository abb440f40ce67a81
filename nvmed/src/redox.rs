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
//! * [`serve_with_disk`] registers the controller's `disk.*` scheme
//!   (partition tables read first; [`crate::disk`], [`crate::redox_disk`]),
//!   sends `Ready`, serves the shutdown protocol on a thread of its own and
//!   the disk scheme on the calling thread. After the shutdown the scheme
//!   keeps answering — every data request with `ESHUTDOWN` — until the
//!   machine goes down: a scheme daemon that exits leaves requests already
//!   queued for it unanswered forever (kernel a919d26), so nvmed does not
//!   exit on Redox.
//! * After the controller is up and `Ready` was sent,
//!   [`crate::service::ready_to_serve`] drops privileges (`setrens(0, 0)`:
//!   every mapping, DMA buffer and the channel with its event queue and timer
//!   stay usable; after it only the `memory` and `pipe` schemes can be
//!   opened, and all of nvmed's DMA memory is allocated during bring-up) and
//!   then signals readiness.

use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use pcid_hw::{Clock, DmaAllocator, RegisterIo};
use pcid_interface::driver::{DriverConnection, DriverError, ServeOutcome, ShutdownHandler};
use pcid_interface::function::PciFunction;

use crate::disk::{scheme_name, DiskService};
use crate::Controller;

use pcid_hw::redox::{MemoryType, PhysMap, RedoxDmaAllocator};
use pcid_interface::function::Bar;
use pcid_interface::function::PciAddress;
use pcid_interface::redox::daemon::{self, DaemonError, Readiness};

use crate::service::{redox_bar0, Bar0Error, HardwareError, DRIVER_NAME};

/// Readiness handle of this process's daemon, set by [`daemonize`] and taken
/// by [`ready`]. A process runs one daemon.
static READINESS: Mutex<Option<Readiness>> = Mutex::new(None);

/// Forks into the background as Redox's drivers do and runs `run` in the
/// daemon (the child); its exit code becomes the daemon's exit status (0 for
/// success, 1 otherwise). The started process exits once the daemon is
/// ready (after its privilege drop, [`crate::service::ready_to_serve`]) or gone.
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

/// After the privilege drop ([`crate::service::ready_to_serve`]): tells
/// whoever started the daemon that it is ready. A failure is logged; the
/// driver keeps serving.
fn signal_ready(address: PciAddress) {
    let readiness = READINESS.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(readiness) = readiness {
        if let Err(e) = readiness.ready() {
            log::error!("{address}: {e}");
        }
    }
}

/// Why [`serve_with_disk`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The disk scheme could not be registered.
    #[error("registering the disk scheme {name}: {source}")]
    Register {
        /// The scheme's name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The channel to pcid failed.
    #[error("serving the shutdown protocol: {0}")]
    Channel(#[from] DriverError),
    /// The shutdown protocol's thread could not be started or panicked.
    #[error("the shutdown protocol's thread: {0}")]
    Thread(std::io::Error),
}

/// Registers the controller's disk scheme (`disk.pci-…-nvme`, Redox's name),
/// sends `Ready`, drops privileges and signals readiness
/// ([`crate::service::ready_to_serve`]), then serves the shutdown protocol
/// with `handler` on a thread of its own and the disk scheme here. Returns
/// only if the scheme is unmounted (then after the shutdown protocol ends).
pub fn serve_with_disk<R, D, C, H>(
    mut conn: DriverConnection,
    function: &PciFunction,
    ctrl: Arc<Controller<R, D, C>>,
    handler: H,
) -> Result<ServeOutcome, ServeError>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
    H: ShutdownHandler + Send + 'static,
{
    let address = function.address;
    let name = scheme_name(address);
    let mut disks = DiskService::new(ctrl, name.clone());
    // Creating a scheme needs the root namespace: before the privilege drop.
    let socket = crate::redox_disk::register(&name).map_err(|source| ServeError::Register {
        name: name.clone(),
        source,
    })?;
    log::info!(
        "{address}: serving {} as /scheme/{name}",
        disks.entry_names().join(", ")
    );
    conn.ready()?;
    let channel = conn
        .serve_in_background(handler)
        .map_err(ServeError::Thread)?;
    crate::service::ready_to_serve(function);
    signal_ready(address);
    let served = crate::redox_disk::serve(&socket, &mut disks);
    log::warn!(
        "{address}: the disk scheme ended ({}); serving the shutdown protocol only",
        match &served {
            Ok(()) => "unmounted".to_string(),
            Err(e) => e.to_string(),
        }
    );
    match channel.join() {
        Ok(result) => Ok(result?),
        Err(_) => Err(ServeError::Thread(std::io::Error::other("panicked"))),
    }
}
