//! nvmed on Redox: start-up as a Redox driver daemon, BAR0 and DMA through
//! `pcid_hw::redox`, and the privilege drop.
//!
//! On Redox, drivers are started by Redox's pcid-spawner: it opens the
//! function's channel, uses it for Redox's own requests (configuration,
//! enable), hands the fd over in `PCID_CLIENT_CHANNEL` and waits for the
//! process it started to exit. So nvmed daemonizes as Redox's drivers do:
//!
//! * [`main`] forks (`pcid_interface::redox::daemon`) before anything else.
//!   The process pcid-spawner started exits 0 once the child is ready
//!   ([`ready`]), non-zero if the child gives up first; the child serves on.
//! * [`open_hardware`] finds BAR0 ([`bar0_location`], the one place that
//!   knows where BARs come from), maps it uncacheable through physmap and
//!   opens the DMA allocator. pcid enabled memory space and bus mastering
//!   when the channel was opened.
//! * [`serve`] registers the controller's `disk.*` scheme (partition tables
//!   read first), sends `Ready`, serves the shutdown protocol on a thread of
//!   its own and the disk scheme on the calling thread. After the shutdown
//!   the scheme keeps answering — every data request with `ESHUTDOWN` — until
//!   the machine goes down: a scheme daemon that exits leaves requests
//!   already queued for it unanswered forever (kernel a919d26), so nvmed
//!   does not exit on Redox.
//! * [`ready`] runs after the controller is up and `Ready` was sent: it
//!   drops privileges (`setrens(0, 0)`: every mapping, DMA buffer and the
//!   channel with its event queue and timer stay usable; after it only the
//!   `memory` and `pipe` schemes can be opened, and all of nvmed's DMA memory
//!   is allocated during bring-up) and signals readiness.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use nvmed::disk::{scheme_name, DiskService};
use nvmed::service::{self, ShutdownService};
use nvmed::Controller;
use pcid_hw::{Clock, DmaAllocator, RegisterIo};
use pcid_interface::driver::DriverConnection;

use pcid_hw::redox::{MemoryType, PhysMap, RedoxDmaAllocator};
use pcid_hw::HwError;
use pcid_interface::function::PciFunction;
use pcid_interface::redox::daemon::{self, Readiness};
use pcid_interface::redox::{function_dir, memory_bar, parse_bars, Bar, MAX_BARS_LEN};

/// Readiness handle of this daemon, taken by [`ready`].
static READINESS: Mutex<Option<Readiness>> = Mutex::new(None);

/// Runs `run` in the forked daemon. Returns only if the fork failed.
pub fn main(run: fn() -> ExitCode) -> ExitCode {
    let started = daemon::run("nvmed", move |readiness| {
        *READINESS.lock().unwrap_or_else(|e| e.into_inner()) = Some(readiness);
        if run() == ExitCode::SUCCESS {
            0
        } else {
            1
        }
    });
    match started {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("nvmed: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn os(what: String, kind: std::io::ErrorKind, msg: String) -> HwError {
    HwError::Os {
        what,
        source: std::io::Error::new(kind, msg),
    }
}

/// Where BAR0 (the controller's registers) is. The one place that knows:
/// today it reads the function's BAR listing from pcid's scheme
/// (`/scheme/pci/<function>/bars`); when pcid's `Welcome` carries the BARs,
/// this takes them from `function` instead.
fn bar0_location(function: &PciFunction) -> Result<Bar, HwError> {
    let path = format!("{}/bars", function_dir(function.address));
    let text = std::fs::read_to_string(&path).map_err(|source| HwError::Os {
        what: format!("read {path}"),
        source,
    })?;
    if text.len() > MAX_BARS_LEN {
        return Err(os(
            format!("read {path}"),
            std::io::ErrorKind::InvalidData,
            format!("{} bytes, more than {MAX_BARS_LEN}", text.len()),
        ));
    }
    let bars = parse_bars(&text).map_err(|e| {
        os(
            format!("parse {path}"),
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        )
    })?;
    // NVMe: BAR0 (with BAR1 for its upper half) holds the controller registers
    // (NVMe Base Specification, §3.1.1 / PCI header MLBAR, MUBAR).
    memory_bar(&bars, 0).ok_or_else(|| {
        os(
            format!("BAR0 of {}", function.address),
            std::io::ErrorKind::NotFound,
            format!("no memory BAR0 in {path}"),
        )
    })
}

/// Maps BAR0 of `function` and opens the DMA allocator. Both need the
/// privileges nvmed drops in [`ready`].
pub fn open_hardware(function: &PciFunction) -> Result<(PhysMap, RedoxDmaAllocator), HwError> {
    let bar0 = bar0_location(function)?;
    let len = usize::try_from(bar0.size).map_err(|_| {
        os(
            format!("BAR0 of {}", function.address),
            std::io::ErrorKind::InvalidData,
            format!("size {:#x} does not fit the address space", bar0.size),
        )
    })?;
    let regs = PhysMap::map(bar0.address, len, MemoryType::Uncacheable)?;
    let dma = RedoxDmaAllocator::new()?;
    log::info!(
        "{}: BAR0 {:#x}+{:#x} mapped",
        function.address,
        bar0.address,
        bar0.size
    );
    Ok((regs, dma))
}

/// After bring-up: drops privileges, then tells whoever started nvmed that it
/// is ready. Failures are logged; the driver keeps serving.
pub fn ready(function: &PciFunction) {
    if let Err(e) = pcid_interface::privileges::drop_privileges() {
        log::error!("{}: {e}", function.address);
    }
    let readiness = READINESS.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(readiness) = readiness {
        if let Err(e) = readiness.ready() {
            log::error!("{}: {e}", function.address);
        }
    }
}

/// Registers the disk scheme, sends `Ready`, drops privileges, then serves
/// the shutdown protocol (on its own thread) and the disk scheme (here).
pub fn serve<R, D, C>(
    mut conn: DriverConnection,
    function: &PciFunction,
    ctrl: Controller<R, D, C>,
) -> Result<(), crate::Fatal>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
{
    let address = function.address.to_string();
    let ctrl = Arc::new(ctrl);
    let name = scheme_name(function.address);
    let mut disks = DiskService::new(Arc::clone(&ctrl), name.clone());
    // Creating a scheme needs the root namespace: before setrens.
    let socket = nvmed::redox_disk::register(&name).map_err(|source| crate::Fatal::Disk {
        address: address.clone(),
        what: "registering the disk scheme",
        source,
    })?;
    log::info!(
        "{address}: serving {} as /scheme/{name}",
        disks.entry_names().join(", ")
    );
    conn.ready().map_err(|source| crate::Fatal::Serve {
        address: address.clone(),
        source,
    })?;
    let channel = conn
        .serve_in_background(ShutdownService::new(Arc::clone(&ctrl)))
        .map_err(|source| crate::Fatal::Disk {
            address: address.clone(),
            what: "starting the shutdown protocol's thread",
            source,
        })?;
    ready(function);
    let served = nvmed::redox_disk::serve(&socket, &mut disks);
    log::warn!(
        "{address}: the disk scheme ended ({}); serving the shutdown protocol only",
        match &served {
            Ok(()) => "unmounted".to_string(),
            Err(e) => e.to_string(),
        }
    );
    match channel.join() {
        Ok(Ok(outcome)) => {
            service::log_serve_outcome(&address, &outcome);
            Ok(())
        }
        Ok(Err(source)) => Err(crate::Fatal::Serve { address, source }),
        Err(_) => Err(crate::Fatal::Disk {
            address,
            what: "the shutdown protocol's thread",
            source: std::io::Error::other("panicked"),
        }),
    }
}
