//! `shutdown_tests`: end-to-end tests across real processes, the binaries that
//! drive them (`simulate`, the example drivers), and benchmarks.

pub mod sim;

#[cfg(target_os = "linux")]
pub mod qemu;
#[cfg(target_os = "linux")]
pub mod redox;
