//! `nvmed`: an NVMe driver library with two-phase shutdown.
//!
//! [`Controller`] is generic over the hardware-access traits of `pcid_hw`
//! (register I/O, DMA memory, clock) and contains no `unsafe` code. It
//! brings a controller up from any state (including enabled, as firmware
//! leaves it), identifies it and its namespaces, creates one I/O queue pair,
//! and offers Read, Write and Flush with PRPs, split by MDTS. Shutdown is in
//! two phases: [`Controller::begin`] (quiesce, delete I/O queues, CC.SHN=01b,
//! return the RTD3E budget) and [`Controller::finish`] (poll CSTS.SHST within
//! a deadline, report outcome and measured duration).
//!
//! Every wait has a deadline taken from the controller (CAP.TO) or from
//! [`Options`]; every failure is an [`NvmeError`] naming the step.
//!
//! Around the controller, [`service`] holds what the daemon does (bring-up
//! with a summary line, the shutdown handler, opening Linux hardware, BAR0
//! from pcid's `Welcome`), and `redox` (on Redox) its start-up as a Redox
//! driver daemon and BAR0 through physmap, and [`daemon`] the process
//! around them (start, connect, serve). The shipped `nvmed` binary and its
//! test build (`nvmed-test`) are both made of these.
//!
//! ```no_run
//! # fn demo<R: pcid_hw::RegisterIo, D: pcid_hw::DmaAllocator, C: pcid_hw::Clock>(
//! #     regs: R, dma: D, clock: C) -> Result<(), nvmed::NvmeError> {
//! use std::time::Duration;
//! let ctrl = nvmed::Controller::bring_up("0000:00:04.0", regs, dma, clock, Default::default())?;
//! let ns = ctrl.namespaces()[0];
//! ctrl.write(ns.nsid, 0, &vec![0xAB; ns.block_size as usize])?;
//! ctrl.flush(ns.nsid)?;
//! let begun = ctrl.begin()?;
//! let report = ctrl.finish(begun.budget * 2)?;
//! assert!(report.outcome.is_clean());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod controller;
pub mod daemon;
pub mod disk;
#[cfg(test)]
mod dma_lifetime_tests;
mod error;
mod lifecycle;
pub mod partition;
mod poll;
mod queue;
#[cfg(target_os = "redox")]
pub mod redox;
#[cfg(target_os = "redox")]
pub mod redox_disk;
mod regs;
pub mod service;
mod shutdown;

pub use controller::{Controller, ControllerInfo, IoSession, IoStats, Namespace, Options};
pub use error::NvmeError;
pub use lifecycle::BeginReport;
pub use poll::ShutdownPolling;
pub use shutdown::{FinishObservation, ShutdownOutcome};

/// Locks a mutex, recovering the data if another thread panicked with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
