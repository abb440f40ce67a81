//! The test build of the NVMe driver: `nvmed-test`.
//!
//! The shipped `nvmed` binary drives hardware and nothing else. The tests need
//! more: the simulated controller in-process (the simulated machine), and data
//! checks — a self-test that writes, flushes and reads back a pattern
//! ([`selftest`], `NVMED_SELFTEST=1`), and a write workload for the durability
//! tests ([`workload`], `NVMED_WORKLOAD=<dir>`). `nvmed-test` runs the same
//! library code as `nvmed` (`nvmed::service`: bring-up, the shutdown handler)
//! with those added, and says `Hello` under the same name.
//!
//! Test stacks run it in `nvmed`'s place without `nvmed` or pcid knowing:
//! pcid finds drivers by the match table's command name (`nvmed`), and the
//! stacks put a directory whose `nvmed` is this binary first on pcid's
//! `--driver-path` (`crate::sim::stack`); the QEMU guest packs it as
//! `/bin/nvmed` (`crate::qemu`). The variables reach it through pcid's
//! `--driver-env`, since pcid passes drivers only a minimal environment.
//!
//! This module and the `nvmed-test` binary also build for Redox (the rest of
//! the crate is Linux-only): there the test build starts and reaches the
//! controller exactly as `nvmed` does (`nvmed::redox`: daemonizing for
//! Redox's pcid-spawner, BAR0 from `Welcome` through physmap, `setrens`
//! after `Ready`), runs the self-test before `Ready`, and has no simulated
//! backend. Redox's pcid-spawner passes drivers its own environment, so the
//! variables come from init (`export`).

pub mod driver;
pub mod selftest;
pub mod workload;
