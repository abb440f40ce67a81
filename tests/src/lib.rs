//! `shutdown_tests`: end-to-end tests across real processes, the binaries that
//! drive them (`simulate`, the example drivers, the test build of the NVMe
//! driver), and benchmarks.

pub mod nvme;
pub mod picture;
pub mod sim;

#[cfg(target_os = "linux")]
pub mod qemu;
#[cfg(target_os = "linux")]
pub mod redox;
