//! `shutdownd`: orchestrates the two-phase shutdown of every PCI device driver
//! and of the participants above them (file systems and other daemons that
//! hold state for devices).
//!
//! shutdownd asks pcid for its device and participant lists, sends `Begin`
//! to every two-phase subject (and `Shutdown` to every one-phase one) that
//! no consumer holds back before waiting for any to finish — participants
//! before the devices they depend on, devices before their bridges —
//! answers each `BeginAck` with `Finish`, enforces per-subject and global
//! deadlines, and reports every outcome, the order and the critical path.
//!
//! * [`cli`] — the command lines: shutdownd's own and, run under the name
//!   `shutdown`, that of Redox's `shutdown`;
//! * [`plan`] — consumers before providers (participants before their
//!   disks, devices before their bridges), cycle detection;
//! * [`local`] — participants shutdownd serves itself (Redox's kernel
//!   unmount of a file system scheme);
//! * [`scheduler`] — the pure state machine, polled with the current time;
//! * [`report`] — the human table and the JSON report;
//! * [`svg`] — the report drawn as a timeline picture;
//! * [`run`] — the I/O loop over pcid's control connection.

pub mod cli;
#[cfg(test)]
mod clocked_pcid;
pub mod local;
pub mod plan;
pub mod report;
pub mod run;
pub mod scheduler;
pub mod svg;

pub use plan::{Plan, PlanError, Subject};
pub use report::{DeviceReport, Report};
pub use run::{
    list_devices, list_participants, run_plan_with_clock, run_shutdown, run_shutdown_since,
    run_shutdown_with_clock, ControlPort, PortError, RunError,
};
pub use scheduler::{Config, Mode, Outcome, Scheduler};

/// A duration in milliseconds as shutdownd writes times — in the report, in
/// progress lines and in detail texts: microsecond resolution (0.001 ms).
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// shutdownd's exit status, as `shutdownd --help`, the README and
/// `docs/fault-matrix.md` state it (a test keeps them the same).
pub const EXIT_STATUS: &str = "Exit status: 0 when every device ended `clean` or \
`not-supported`; 1 when the shutdown ran but some device ended otherwise; 2 for a usage \
error, when pcid cannot be reached or does not answer the device list, or when the JSON \
report or the picture cannot be written (on Redox, also when the power-off or reboot request that follows \
fails).";
