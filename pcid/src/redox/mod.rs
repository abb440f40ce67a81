//! pcid on Redox: a drop-in for Redox's own pcid.
//!
//! Redox's hwd runs `pcid` with no arguments and waits for it to daemonize;
//! then init runs Redox's pcid-spawner, which opens each function's channel
//! in the `pci` scheme, asks for its configuration with Redox's driver
//! interface and starts the matching driver with the channel. acpid reaches
//! configuration space through `/scheme/pci/access`. This pcid does all of
//! that the way Redox's pcid does, so Redox's own drivers run under it
//! unchanged, and additionally relays this project's shutdown protocol to
//! drivers that speak it (`pcid/interface/PROTOCOL.md`, "Transport on
//! Redox").
//!
//! Portable parts (compiled and unit-tested on every host):
//! * [`config_space`] — the access trait and the per-access choice between
//!   ECAM and the configuration ports;
//! * [`mcfg`] — the ACPI MCFG table (where ECAM is);
//! * [`enumerate`] — walking buses and bridges, sizing BARs, capabilities;
//! * [`driver_interface`] — Redox's driver interface: its messages, their
//!   bincode encoding, and what each request does;
//! * [`access`] — the `access` node acpid uses;
//! * [`state`] — the `pci` scheme's nodes, handles and channels;
//! * [`engine`] — scheme events to the shutdown relay and back (the
//!   runtime's logic, minus the OS).
//!
//! Redox-only parts (type-checked for `x86_64-unknown-redox`):
//! * `config` — mapping ECAM through physmap, the ports;
//! * `scheme` — the `redox_scheme` adaptor over [`state`];
//! * `runtime` — daemon start-up and the event loop.

pub mod access;
pub mod config_space;
pub mod driver_interface;
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
