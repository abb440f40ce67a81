//! The simulated machine end to end: machine descriptions and the real
//! binaries (pcid, nvmed, the example drivers, shutdownd) run as processes.
//!
//! * [`machine`] writes machine descriptions and their device models;
//! * [`models`] — the device models of simulated functions, which drivers
//!   find through pcid's `PCID_SIM_MODEL`;
//! * [`fault`] parses `--fault INDEX:KIND` and applies it to a machine;
//! * [`stack`] starts pcid on one, waits for readiness, runs shutdownd and
//!   stops everything;
//! * [`measure`] reads CPU time, peak RSS and thread counts of the stack's
//!   processes for the benchmark.

pub mod fault;
pub mod machine;
pub mod measure;
pub mod models;
pub mod stack;
