//! A register-level model of an NVMe controller, for testing the `nvmed`
//! driver without hardware and for running it on the simulated machine.
//!
//! [`SimController`] implements [`pcid_hw::RegisterIo`] as BAR0 of the
//! controller; [`SimDma`] (from [`SimController::dma`]) implements
//! [`pcid_hw::DmaAllocator`] with buffers at fake bus addresses that the model
//! resolves when it reads queues, PRP lists and data. Nothing runs in the
//! background: a doorbell write processes the queue synchronously, inside
//! `write32`, and time-dependent state (CSTS.RDY after enable, CSTS.SHST after
//! a shutdown notification) is computed from the [`pcid_hw::Clock`] whenever a
//! register is read, so tests with [`pcid_hw::FakeClock`] are deterministic.
//!
//! ```
//! use std::sync::Arc;
//! use nvme_sim::{SimConfig, SimController};
//! use pcid_hw::{DmaAllocator, FakeClock, RegisterIo};
//!
//! // A device model file, as pcid's simulated bus names it in PCID_SIM_MODEL.
//! let config = SimConfig::from_toml_str("serial = \"SIM0001\"\nshutdown_latency_ms = 4500\n")?;
//! let clock = Arc::new(FakeClock::new());
//! let bar0 = SimController::with_label(config, clock.clone(), "0000:00:04.0")?;
//! let dma = bar0.dma();
//! let _queue_page = dma.allocate(4096)?;
//! assert_eq!(bar0.read32(0x08), 0x0001_0400); // VS: 1.4.0
//! assert_eq!(bar0.read32(0x1C) & 1, 1); // CSTS.RDY: firmware left it enabled
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is modelled (NVMe Base Specification 1.4 section numbers):
//!
//! * registers (§3.1): CAP (MQES, CQR=1, TO, DSTRD, CSS=NVM, MPSMIN=MPSMAX=0,
//!   i.e. 4 KiB pages only), VS 1.4.0, INTMS/INTMC, CC with its writable bits,
//!   CSTS (RDY, CFS, SHST), AQA, ASQ, ACQ, and the doorbells at stride
//!   `4 << DSTRD`;
//! * controller reset and enable (§7.6.1, §7.3): CC.EN 0→1 validates CC
//!   (CSS = NVM, MPS = 0, AMS = 0, IOSQES = 6, IOCQES = 4) and AQA — invalid
//!   settings set CSTS.CFS and RDY never rises; CC.EN 1→0 deletes every queue
//!   and clears CFS and SHST;
//! * admin commands (§5): Identify (CNS 00h, 01h, 02h), Set/Get Features
//!   (Number of Queues, Volatile Write Cache), Create/Delete I/O SQ/CQ with the
//!   spec's checks, Get Log Page (01h–03h, zero-filled), Abort (never aborts),
//!   Asynchronous Event Request (held, never completed);
//! * NVM commands (§6): Read, Write (with FUA), Flush, with PRP1/PRP2 and PRP
//!   lists walked page by page;
//! * shutdown (§7.6.2): CC.SHN = 01b or 10b makes CSTS.SHST read 01b for the
//!   configured latency, then 10b; a normal shutdown writes the volatile cache
//!   back when it completes; commands are no longer processed until a reset.
//!
//! Choices where the spec leaves room:
//!
//! * an invalid doorbell write (no such queue, value ≥ queue size, or a CQ
//!   head that passes the tail) is ignored, logged and counted in
//!   [`SimStats::invalid_doorbell_writes`]; doorbell writes while the
//!   controller is not ready, is in fatal status or has been told to shut down
//!   are ignored and counted in [`SimStats::ignored_doorbell_writes`];
//! * a queue entry the model cannot fetch or post (its bus address is not
//!   mapped) is a fatal controller error: CSTS.CFS = 1;
//! * an abrupt shutdown discards the volatile write cache unless
//!   [`SimConfig::abrupt_flushes_cache`] is set;
//! * a reset (CC.EN 1→0) keeps the write cache; a power cut
//!   ([`SimController::power_cut`]) or dropping the model loses it;
//! * with `read_latency_ms` / `write_latency_ms`, a Read / Write is fetched
//!   at once but transfers its data and completes later, at the first
//!   register access after its time has come; deleting its SQ or a reset
//!   abandons it.
//!
//! The model checks the driver's handling of DMA memory: freeing memory the
//! controller may still access, and a late command's transfer into memory
//! freed or reused since, are recorded ([`SimController::dma_violations`];
//! see [`SimDma`]).

#![warn(missing_docs)]

mod config;
mod controller;
mod dma;
mod store;

use std::path::PathBuf;

pub use config::{ConfigError, DmaLayout, Fault, SimConfig, StartState, UnknownFault};
pub use controller::{SimController, SimStats};
pub use dma::{DmaViolation, DmaViolationKind, SimDma, SimDmaBuffer};

/// Errors from creating or inspecting a simulated controller.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error("simulated controller configuration: {0}")]
    Config(#[from] ConfigError),
    /// The backing file cannot be opened, sized, read or written.
    #[error("backing file {path}: {source}")]
    Backing {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace medium cannot be read.
    #[error("namespace medium: {0}")]
    Medium(#[source] std::io::Error),
    /// A block range outside the namespace was requested.
    #[error("blocks {lba}+{count} are outside the namespace of {blocks} blocks")]
    OutOfRange {
        /// First block.
        lba: u64,
        /// Number of blocks.
        count: u64,
        /// Namespace size in blocks.
        blocks: u64,
    },
}
