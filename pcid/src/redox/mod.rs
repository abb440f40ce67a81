//! pcid on Redox: configuration space, the `pci` scheme, the runtime.
//!
//! Portable parts (compiled and unit-tested on every host):
//! * [`mcfg`] — the ACPI MCFG table (where ECAM is);
//! * [`enumerate`] — walking buses and bridges, sizing BARs, enabling functions;
//! * [`state`] — the `pci` scheme's handles and framed channels;
//! * [`engine`] — scheme events to relay inputs, relay outputs to queued
//!   frames and notifications (the runtime's logic, minus the OS).
//!
//! Redox-only parts (type-checked for `x86_64-unknown-redox`):
//! * `config` — ECAM through physmap, else ports `0xCF8`/`0xCFC`;
//! * `scheme` — the `redox_scheme` adaptor over [`state`];
//! * `runtime` — daemon start-up, spawning drivers with their channel
//!   handles, the event loop driving [`crate::relay::Relay`], readiness.
//!
//! The channel semantics, including how pcid notifies a driver of
//! `Begin`/`Finish`, are specified in `pcid/interface/PROTOCOL.md`,
//! "Transport on Redox".

pub mod engine;
pub mod enumerate;
pub mod mcfg;
pub mod state;

#[cfg(target_os = "redox")]
mod config;
#[cfg(target_os = "redox")]
mod runtime;
#[cfg(target_os = "redox")]
mod scheme;

#[cfg(target_os = "redox")]
pub use runtime::{run, RedoxError};
