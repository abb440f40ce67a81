//! Starting a daemon the way Redox starts them.
//!
//! * [`run`] forks through `redox_daemon`: the process init (or pcid) started
//!   waits until the daemon calls [`Readiness::ready`], then exits with
//!   status 0. Redox's legacy init scripts, `type = "oneshot"` units and
//!   pcid-spawner all wait for that exit, so "started" means "ready".
//! * Newer init passes a pipe fd in `INIT_NOTIFY` to `type = "notify"`
//!   services and waits for one byte on it; [`Readiness::ready`] writes it
//!   too. The variable is captured and removed at start-up so that processes
//!   the daemon spawns (drivers) never inherit a stale fd number.
//! * [`drop_privileges`] is `setrens(0, 0)`: after it the process can no
//!   longer open new resources (files, schemes), only use what it holds.
//!   Drivers call it once their hardware is mapped, as Redox drivers do.

use std::fmt;

/// Environment variable through which newer Redox init passes its readiness pipe.
pub const INIT_NOTIFY: &str = "INIT_NOTIFY";

/// Errors of daemon start-up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `redox_daemon` could not fork or the readiness pipe failed.
    #[error("daemon start-up: {0}")]
    Daemon(String),
    /// Writing the readiness byte to `INIT_NOTIFY` failed.
    #[error("notifying init through fd {fd}: {source}")]
    Notify {
        /// The fd from `INIT_NOTIFY`.
        fd: usize,
        /// The error.
        source: std::io::Error,
    },
    /// `setrens(0, 0)` failed.
    #[error("setrens(0, 0): {0}")]
    Setrens(std::io::Error),
}

/// The handle a daemon uses to say it is ready (consumed by the first call).
pub struct Readiness {
    daemon: redox_daemon::Daemon,
    init_notify: Option<usize>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("init_notify", &self.init_notify)
            .finish()
    }
}

impl Readiness {
    /// Signals readiness: the waiting parent exits with status 0, and init's
    /// `INIT_NOTIFY` pipe (if any) gets one byte and is closed.
    pub fn ready(self) -> Result<(), DaemonError> {
        let parent = self
            .daemon
            .ready()
            .map_err(|e| DaemonError::Daemon(e.to_string()));
        if let Some(fd) = self.init_notify {
            libredox::call::write(fd, &[0]).map_err(|e| DaemonError::Notify {
                fd,
                source: e.into(),
            })?;
            let _ = libredox::call::close(fd);
        }
        parent
    }
}

/// Takes `INIT_NOTIFY` out of the environment, returning its fd number.
fn take_init_notify() -> Option<usize> {
    let value = std::env::var(INIT_NOTIFY).ok();
    std::env::remove_var(INIT_NOTIFY);
    let fd = value?.trim().parse::<usize>().ok()?;
    // 0, 1 and 2 are stdio, never a readiness pipe.
    (fd > 2).then_some(fd)
}

/// Forks into the background; `body` runs in the daemon and returns its exit
/// status. The calling process waits until `body` calls
/// [`Readiness::ready`] and then exits 0; if the daemon exits before that,
/// the caller exits with an error.
///
/// Call it first thing in `main`, before any thread is started (it forks and
/// edits the environment).
pub fn run(body: impl FnOnce(Readiness) -> i32) -> Result<(), DaemonError> {
    let init_notify = take_init_notify();
    let Err(err) = redox_daemon::Daemon::new(move |daemon| {
        let status = body(Readiness {
            daemon,
            init_notify,
        });
        std::process::exit(status)
    });
    Err(DaemonError::Daemon(err.to_string()))
}

/// `setrens(0, 0)`: no new resources can be opened after this.
pub fn drop_privileges() -> Result<(), DaemonError> {
    libredox::call::setrens(0, 0)
        .map(|_| ())
        .map_err(|e| DaemonError::Setrens(e.into()))
}
