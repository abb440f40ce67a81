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
//! * [`run`] — the I/O loop over pcid's control connection.

use std::time::Duration;

pub mod cli;
pub mod plan;
pub mod report;
pub mod run;
pub mod scheduler;

pub use plan::{Plan, PlanError};
pub use report::{DeviceReport, Report};
pub use run::{list_devices, run_shutdown, run_shutdown_since, ControlPort, PortError, RunError};
pub use scheduler::{Config, Mode, Outcome, Scheduler};

/// How late after the global deadline shutdownd may record the last outcome:
/// the scheduler never waits past the deadline, but the thread that sleeps
/// until it wakes up a little late (typically well under 5 ms). Tests allow
/// this much; the report's `total_ms` shows the actual figure.
pub const EXIT_GRACE: Duration = Duration::from_millis(100);
