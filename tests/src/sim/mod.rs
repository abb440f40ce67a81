//! The simulated machine end to end: machine descriptions and the real
//! binaries (pcid, nvmed, the example drivers, shutdownd) run as processes.
//!
//! * [`machine`] writes machine descriptions;
//! * [`stack`] starts pcid on one, waits for readiness, runs shutdownd and
//!   stops everything.

pub mod machine;
pub mod stack;
