//! `shutdownd`: orchestrates the two-phase shutdown of every PCI device driver.
//!
//! shutdownd asks pcid for its device list, sends `Begin` to every two-phase
//! driver (and `Shutdown` to every one-phase driver) before waiting for any
//! device to finish, answers each `BeginAck` with `Finish`, enforces per-device
//! and global deadlines, and reports the outcome of every device.
//!
//! * [`cli`] — the command lines: shutdownd's own and, run under the name
//!   `shutdown`, that of Redox's `shutdown`;
//! * [`plan`] — children-before-parents ordering and cycle detection;
//! * [`scheduler`] — the pure state machine, polled with the current time;
//! * [`report`] — the human table and the JSON report;
//! * [`svg`] — the report drawn as a timeline picture;
//! * [`run`] — the I/O loop over pcid's control connection.

pub mod cli;
pub mod plan;
pub mod report;
pub mod run;
pub mod scheduler;
pub mod svg;

pub use plan::{Plan, PlanError};
pub use report::{DeviceReport, Report};
pub use run::{
    list_devices, run_shutdown, run_shutdown_since, run_shutdown_with_clock, ControlPort,
    PortError, RunError,
};
pub use scheduler::{Config, Mode, Outcome, Scheduler};

/// shutdownd's exit status, as `shutdownd --help`, the README and
/// `docs/fault-matrix.md` state it (a test keeps them the same).
pub const EXIT_STATUS: &str = "Exit status: 0 when every device ended `clean` or \
`not-supported`; 1 when the shutdown ran but some device ended otherwise; 2 for a usage \
error, when pcid cannot be reached or does not answer the device list, or when the JSON \
report or the picture cannot be written (on Redox, also when the power-off or reboot request that follows \
fails).";
