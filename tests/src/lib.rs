//! `shutdown_tests`: end-to-end tests across real processes, the binaries that
//! drive them (`simulate`, the example drivers, the test build of the NVMe
//! driver), and benchmarks.
//!
//! On Linux everything is built. For Redox only [`nvme`] and the
//! `nvmed-test` binary are (the Redox boot test runs the test build there);
//! the rest drives the host and is gated to Linux, with its dependencies.

pub mod cli;
pub mod nvme;
#[cfg(target_os = "linux")]
pub mod picture;
#[cfg(target_os = "linux")]
pub mod sim;

#[cfg(target_os = "linux")]
pub mod qemu;
#[cfg(target_os = "linux")]
pub mod redox;
