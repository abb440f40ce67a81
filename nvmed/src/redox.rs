//! nvmed on Redox: start-up as a Redox driver daemon, BAR0 and DMA through
//! `pcid_hw::redox`, and the privilege drop.
//!
//! * [`main`] forks (`pcid_interface::redox::daemon`) before anything else; the process pcid
//!   spawned exits once the driver is ready ([`ready`]).
//! * [`open_hardware`] reads the function's BAR listing from pcid's scheme
//!   (`/scheme/pci/<function>/bars`), maps BAR0 uncacheable through physmap
//!   and opens the DMA allocator. pcid already enabled memory space and bus
//!   mastering when it opened the driver's channel.
//! * [`ready`] drops privileges (`setrens(0, 0)`: every mapping, DMA buffer and
//!   the channel stay usable, nothing new can be opened; all of nvmed's DMA
//!   memory is allocated during bring-up) and signals readiness.

use std::process::ExitCode;
use std::sync::Mutex;

use pcid_hw::redox::{MemoryType, PhysMap, RedoxDmaAllocator};
use pcid_hw::HwError;
use pcid_interface::function::PciFunction;
use pcid_interface::redox::daemon::{self, Readiness};
use pcid_interface::redox::{function_dir, parse_bars, BarKind, MAX_BARS_LEN};

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

/// Maps BAR0 of `function` and opens the DMA allocator.
pub fn open_hardware(function: &PciFunction) -> Result<(PhysMap, RedoxDmaAllocator), HwError> {
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
    let bar0 = bars
        .iter()
        .find(|b| b.index == 0 && b.kind != BarKind::Io)
        .ok_or_else(|| {
            os(
                format!("BAR0 of {}", function.address),
                std::io::ErrorKind::NotFound,
                format!("no memory BAR0 in {path}"),
            )
        })?;
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
