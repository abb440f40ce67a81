//! Starting a daemon the way Redox starts them.
//!
//! * [`run`] forks. The process that was started (by init, by Redox's
//!   pcid-spawner or by pcid) waits until the daemon calls
//!   [`Readiness::ready`] and then exits with status 0; the daemon keeps
//!   running in the child. Redox's line-based init, pcid-spawner and pcid all
//!   wait for that exit, so "started" means "ready". If the daemon exits (or
//!   drops its [`Readiness`]) before it is ready, the waiting process exits
//!   with [`EXIT_NOT_READY`]; if the start deadline passes first, it kills the
//!   daemon and exits with [`EXIT_DEADLINE`].
//! * The readiness pipe is created close-on-exec: programs the daemon starts
//!   (pcid's drivers) never hold its write end, so a daemon that dies before
//!   it is ready is seen at once, whatever its children do.
//! * Newer Redox init passes a pipe fd in `INIT_NOTIFY` to `notify` services
//!   and waits for one byte on it; [`Readiness::ready`] writes it too. The
//!   variable is captured and removed from the environment when [`run`]
//!   starts, and the fd is made close-on-exec, so no child ever inherits it.
//! * [`drop_privileges`] is `setrens(0, 0)` on Redox (see
//!   [`crate::privileges`]): after it the process can open nothing new except
//!   in the `memory` and `pipe` schemes; every other scheme answers `ENODEV`.
//!   A daemon opens everything it will need (event queues, timers, hardware)
//!   before calling it.
//!
//! The module is portable to every Unix so that its start-up behaviour is
//! tested on Linux (`tests/daemon.rs` of this crate). `fork`, `poll` and
//! taking ownership of the `INIT_NOTIFY` fd are the operations here that need
//! `unsafe`.
#![allow(unsafe_code)]

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Environment variable through which newer Redox init passes its readiness pipe.
pub const INIT_NOTIFY: &str = "INIT_NOTIFY";

/// Exit status of the waiting process when the daemon went away (or dropped
/// its [`Readiness`]) before it was ready.
pub const EXIT_NOT_READY: i32 = 1;
/// Exit status of the waiting process when the start deadline passed; the
/// daemon is killed.
pub const EXIT_DEADLINE: i32 = 2;
/// Exit status of the waiting process when waiting itself failed.
pub const EXIT_WAIT_FAILED: i32 = 3;

/// Default start deadline of [`run`]: long enough for an NVMe controller that
/// takes its maximum `CAP.TO` (127.5 s) twice, once to reset and once to enable.
pub const DEFAULT_START_DEADLINE: Duration = Duration::from_secs(300);

/// Errors of daemon start-up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The readiness pipe could not be created.
    #[error("creating the readiness pipe: {0}")]
    Pipe(io::Error),
    /// `fork` failed.
    #[error("fork: {0}")]
    Fork(io::Error),
    /// Writing the readiness byte to the waiting process failed.
    #[error("signalling readiness to the process that started this one: {0}")]
    Readiness(io::Error),
    /// Writing the readiness byte to `INIT_NOTIFY` failed.
    #[error("notifying init through fd {fd}: {source}")]
    Notify {
        /// The fd from `INIT_NOTIFY`.
        fd: RawFd,
        /// The error.
        source: io::Error,
    },
    /// `INIT_NOTIFY` names no usable fd.
    #[error("{INIT_NOTIFY}={value:?}: {reason}")]
    InitNotify {
        /// The variable's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `setrens(0, 0)` failed.
    #[error("setrens(0, 0): {0}")]
    Setrens(io::Error),
}

/// The handle a daemon uses to say it is ready (consumed by the first call).
///
/// Dropping it without calling [`ready`](Self::ready) tells the waiting
/// process that start-up failed.
pub struct Readiness {
    /// Write end of the pipe the waiting parent reads; `None` when the
    /// process was not forked (see [`Readiness::detached`]).
    pipe: Option<OwnedFd>,
    /// Init's readiness pipe from `INIT_NOTIFY`.
    init_notify: Option<OwnedFd>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("pipe", &self.pipe.as_ref().map(AsRawFd::as_raw_fd))
            .field(
                "init_notify",
                &self.init_notify.as_ref().map(AsRawFd::as_raw_fd),
            )
            .finish()
    }
}

impl Readiness {
    /// A readiness handle for a process that was not forked: only
    /// `init_notify` (if any) is told.
    pub fn detached(init_notify: Option<OwnedFd>) -> Self {
        Self {
            pipe: None,
            init_notify,
        }
    }

    /// Signals readiness: the waiting parent exits with status 0, and init's
    /// `INIT_NOTIFY` pipe (if any) gets one byte. Both fds are closed.
    pub fn ready(mut self) -> Result<(), DaemonError> {
        let parent = match self.pipe.take() {
            Some(fd) => write_byte(&fd).map_err(DaemonError::Readiness),
            None => Ok(()),
        };
        if let Some(fd) = self.init_notify.take() {
            write_byte(&fd).map_err(|source| DaemonError::Notify {
                fd: fd.as_raw_fd(),
                source,
            })?;
        }
        parent
    }
}

fn write_byte(fd: &OwnedFd) -> io::Result<()> {
    loop {
        match rustix::io::write(fd, &[0]) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Makes `fd` close-on-exec.
fn set_cloexec(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(&fd)?;
    rustix::io::fcntl_setfd(&fd, flags | rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}

/// Takes `INIT_NOTIFY` out of the environment and returns the fd it names,
/// made close-on-exec. `Ok(None)` when the variable is not set. The variable
/// is removed in every case, so no child inherits a stale fd number.
///
/// Call it before any thread is started (it edits the environment).
pub fn take_init_notify() -> Result<Option<OwnedFd>, DaemonError> {
    let value = std::env::var_os(INIT_NOTIFY);
    std::env::remove_var(INIT_NOTIFY);
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    let bad = |reason: &str| DaemonError::InitNotify {
        value: value.clone(),
        reason: reason.to_string(),
    };
    let fd: RawFd = match value.trim().parse() {
        // 0, 1 and 2 are stdio, never a readiness pipe.
        Ok(fd) if fd > 2 => fd,
        _ => return Err(bad("not a file descriptor number above 2")),
    };
    // SAFETY: `fd` is only borrowed for the flag query; it is not closed here.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if rustix::io::fcntl_getfd(borrowed).is_err() {
        return Err(bad("no such open file descriptor"));
    }
    // SAFETY: the fd is open (checked above) and was handed to this process
    // by init for exactly this purpose; the variable naming it was removed
    // above, so nothing else in this process will claim it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned).map_err(|e| bad(&format!("making it close-on-exec: {e}")))?;
    Ok(Some(owned))
}

/// Forks into the background with [`DEFAULT_START_DEADLINE`]; see [`run_with`].
pub fn run(name: &str, body: impl FnOnce(Readiness) -> i32) -> Result<Infallible, DaemonError> {
    run_with(name, DEFAULT_START_DEADLINE, body)
}

/// Forks into the background; `body` runs in the daemon (the child) and
/// returns its exit status.
///
/// The calling process waits until `body` calls [`Readiness::ready`] and then
/// exits 0; if the daemon goes away first it exits with [`EXIT_NOT_READY`],
/// and if `start_deadline` passes first it kills the daemon and exits with
/// [`EXIT_DEADLINE`]. Either failure is reported on its standard error in
/// one line starting with `name`.
///
/// Call it first thing in `main`, before any thread is started (it forks and
/// edits the environment). Returns only if the pipe or the fork failed.
pub fn run_with(
    name: &str,
    start_deadline: Duration,
    body: impl FnOnce(Readiness) -> i32,
) -> Result<Infallible, DaemonError> {
    let init_notify = match take_init_notify() {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("{name}: ignoring {e}");
            None
        }
    };
    let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| DaemonError::Pipe(e.into()))?;
    // Nothing buffered may be written twice, once by each half.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: called before the process starts threads (documented
    // precondition of this function), so the child is a complete copy of a
    // single-threaded process and may run arbitrary code. Both halves only
    // touch fds they own after the fork.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(DaemonError::Fork(io::Error::last_os_error())),
        0 => {
            drop(read_end);
            let status = body(Readiness {
                pipe: Some(write_end),
                init_notify,
            });
            std::process::exit(status)
        }
        child => {
            drop(write_end);
            // Only the daemon tells init it is ready.
            drop(init_notify);
            let code = match wait_ready(&read_end, start_deadline) {
                Ok(Waited::Ready) => 0,
                Ok(Waited::Closed) => {
                    eprintln!("{name}: start-up failed: the daemon exited before it was ready");
                    EXIT_NOT_READY
                }
                Ok(Waited::Deadline) => {
                    eprintln!(
                        "{name}: start-up failed: not ready within {:.1} s; stopping it",
                        start_deadline.as_secs_f64()
                    );
                    // SAFETY: plain syscall on the pid this process just forked.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                    EXIT_DEADLINE
                }
                Err(e) => {
                    eprintln!("{name}: start-up: waiting for readiness: {e}");
                    EXIT_WAIT_FAILED
                }
            };
            // The daemon owns everything else this process had (buffers,
            // atexit handlers); this half only reports and leaves.
            // SAFETY: `_exit` ends the process at once; nothing here relies
            // on destructors or exit handlers running.
            unsafe { libc::_exit(code) }
        }
    }
}

/// What the waiting parent saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The readiness byte arrived.
    Ready,
    /// The pipe closed without it.
    Closed,
    /// The deadline passed.
    Deadline,
}

/// Waits for one byte on `fd` until `deadline` from now.
fn wait_ready(fd: &OwnedFd, deadline: Duration) -> io::Result<Waited> {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Waited::Deadline);
        }
        // poll takes milliseconds as a C int; wait in slices of at most a minute.
        let ms = left.as_millis().clamp(1, 60_000) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        match rustix::io::read(fd, &mut byte) {
            Ok(0) => return Ok(Waited::Closed),
            Ok(_) => return Ok(Waited::Ready),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `setrens(0, 0)` ([`crate::privileges::drop_privileges`]): afterwards only
/// the `memory` and `pipe` schemes can be opened; every other open answers
/// `ENODEV`.
pub fn drop_privileges() -> Result<(), DaemonError> {
    crate::privileges::drop_privileges().map_err(|e| DaemonError::Setrens(e.0))
}
