//! Channel I/O on Redox.
//!
//! On Redox a driver's channel is a handle to pcid's scheme,
//! `/scheme/pci/<SSSS>-<BB>--<DD>.<F>/channel`, opened by pcid and inherited
//! by the driver under the fd number in `PCID_CLIENT_CHANNEL`; shutdownd's
//! control connection is a handle to `/scheme/pci/control`. Both carry the
//! same [`crate::wire`] frames as the Unix sockets used elsewhere, with the
//! semantics `PROTOCOL.md` ("Transport on Redox") specifies:
//!
//! * `write` hands pcid whole or partial frames and never blocks;
//! * `read` returns queued bytes, `EAGAIN` when nothing is queued, and 0
//!   (end of file) once pcid closed the channel and the queue is drained;
//! * the handle raises `EVENT_READ` whenever pcid queued bytes or closed it,
//!   which is how pcid notifies a driver of `Begin`/`Finish` without a
//!   pending request.
//!
//! The functions here are the Redox side of the socket operations used by
//! [`super::Channel`]; waits use an event queue and a `/scheme/time` timer.
//! The fds are plain file descriptors held in the channel's stream slot; a
//! Unix socket (Redox has them too) works through the same calls.
//!
//! This module takes ownership of the inherited fd number, the one operation
//! here that needs `unsafe`.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use super::{AdoptError, Channel, ControlChannel};
use crate::wire::WireMessage;

fn raw(fd: BorrowedFd<'_>) -> usize {
    // Valid descriptors are non-negative.
    fd.as_raw_fd() as usize
}

/// Makes `fd` non-blocking: a Unix socket used through this module must not
/// block. The kernel forwards `F_GETFL`/`F_SETFL` to the scheme behind the
/// fd; a scheme that does not implement `fcntl` (answers `EOPNOTSUPP` or
/// `ENOSYS`) is accepted as it is, since pcid's scheme never blocks a read
/// anyway (PROTOCOL.md §11.3: `EAGAIN` when nothing is queued).
fn set_nonblocking(fd: usize) -> io::Result<()> {
    let unsupported =
        |e: &syscall::Error| e.errno == syscall::EOPNOTSUPP || e.errno == syscall::ENOSYS;
    let flags = match syscall::fcntl(fd, syscall::F_GETFL, 0) {
        Ok(flags) => flags,
        Err(e) if unsupported(&e) => {
            log::debug!("fd {fd}: the scheme has no fcntl; its reads must not block");
            return Ok(());
        }
        Err(e) => return Err(io::Error::from_raw_os_error(e.errno)),
    };
    match syscall::fcntl(fd, syscall::F_SETFL, flags | syscall::O_NONBLOCK) {
        Ok(_) => Ok(()),
        Err(e) if unsupported(&e) => {
            log::debug!("fd {fd}: the scheme refuses F_SETFL; its reads must not block");
            Ok(())
        }
        Err(e) => Err(io::Error::from_raw_os_error(e.errno)),
    }
}

/// Writes without blocking; `WouldBlock` when the peer cannot take more now.
pub(super) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    libredox::call::write(raw(fd), buf).map_err(io::Error::from)
}

/// Reads without blocking; `Ok(0)` is end of file (pcid closed the channel).
pub(super) fn recv_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    libredox::call::read(raw(fd), buf).map_err(io::Error::from)
}

/// What a channel waits with: an event queue subscribed to the channel fd
/// and a timer, opened when the channel is made (before any privilege drop)
/// and reused by every wait.
#[derive(Debug)]
pub(super) struct Waiter(crate::redox::event::Waiter);

impl Waiter {
    /// Opens the event queue and timer and subscribes `fd`.
    pub(super) fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        crate::redox::event::Waiter::new(raw(fd)).map(Self)
    }

    /// Waits until the fd raises `EVENT_READ`, at most `timeout` (`None`: no
    /// limit). `Ok(false)` means the time ran out; the caller re-checks its
    /// deadline. `_fd` is the fd subscribed in [`Waiter::new`]. With
    /// `writable` (bytes are queued for the peer) the wait is at most a
    /// millisecond, after which the caller writes again (see
    /// [`wait_writable`]).
    pub(super) fn wait(
        &mut self,
        _fd: BorrowedFd<'_>,
        writable: bool,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let timeout = if writable {
            Some(timeout.map_or(WRITE_RETRY, |t| t.min(WRITE_RETRY)))
        } else {
            timeout
        };
        self.0.wait_readable(timeout)
    }
}

/// How long a wait for writability lasts before the caller writes again.
const WRITE_RETRY: Duration = Duration::from_millis(1);

/// pcid's scheme accepts every write at once (frames are processed as they
/// arrive), so a channel handle is always writable. For a Unix socket this
/// returns after a short pause and the caller retries until its deadline.
pub(super) fn wait_writable(_fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    std::thread::sleep(timeout.min(WRITE_RETRY));
    Ok(true)
}

/// Serialises the window in which a channel fd is inheritable.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Spawns `cmd` with `child_end` inherited as the child's pcid channel: a
/// duplicate without close-on-exec is made for the spawn, its number put in
/// `PCID_CLIENT_CHANNEL`, and closed again right after (see the Unix
/// version). pcid on Redox uses [`spawn_with_fd`] with scheme handles instead.
pub fn spawn_with_channel<M: WireMessage>(
    cmd: &mut Command,
    child_end: Channel<M>,
) -> io::Result<Child> {
    let child = spawn_with_fd(cmd, raw(std::os::fd::AsFd::as_fd(&child_end)));
    drop(child_end);
    child
}

/// Spawns `cmd` with a duplicate of `fd` (without close-on-exec) as its pcid
/// channel, named in `PCID_CLIENT_CHANNEL`. The duplicate is closed in this
/// process when the call returns; `fd` itself is left to the caller.
pub fn spawn_with_fd(cmd: &mut Command, fd: usize) -> io::Result<Child> {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // `dup` with an empty path duplicates the handle; the copy is not close-on-exec.
    let inheritable = libredox::call::dup(fd, b"").map_err(io::Error::from)?;
    cmd.env(crate::PCID_CLIENT_CHANNEL, inheritable.to_string());
    let child = cmd.spawn();
    let _ = libredox::call::close(inheritable);
    child
}

/// Takes ownership of the channel fd named by `var` (a handle to pcid's
/// scheme, or any open fd pcid chose) through [`super::adopt`]: checks it is
/// open, then makes it close-on-exec and non-blocking.
pub(super) fn adopt_from_env(var: &'static str) -> Result<OwnedFd, AdoptError> {
    super::adopt::adopt_from_env(
        var,
        |fd| {
            if let Err(e) = libredox::call::fstat(fd as usize) {
                return Err(if e.errno() == syscall::EBADF {
                    AdoptError::NotOpen { var, fd }
                } else {
                    AdoptError::Io {
                        var,
                        fd,
                        source: e.into(),
                    }
                });
            }
            // SAFETY: `fd` was just shown to be open; pcid passed it to this
            // process for exactly this purpose (named by `var`). The
            // once-per-process guard of `super::adopt` and the removal of
            // `var` there make this the only owner in the process.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        },
        |_, fd| {
            let io_err = |source: io::Error| AdoptError::Io { var, fd, source };
            let ufd = fd as usize;
            syscall::fcntl(ufd, syscall::F_SETFD, syscall::O_CLOEXEC)
                .map_err(|e| io_err(io::Error::from_raw_os_error(e.errno)))?;
            set_nonblocking(ufd).map_err(io_err)
        },
    )
}

impl<M: WireMessage> Channel<M> {
    /// Adopts the channel fd a driver process inherited from pcid, named by
    /// the environment variable [`PCID_CLIENT_CHANNEL`](crate::PCID_CLIENT_CHANNEL).
    ///
    /// On Redox the fd is a handle to pcid's scheme. It is made
    /// close-on-exec and non-blocking, and the variable is removed, so it is
    /// adopted only once and not passed on to the driver's own children. The
    /// event queue and timer every later wait uses are opened here, so call
    /// it before dropping privileges.
    pub fn from_env() -> Result<Self, AdoptError> {
        let fd = adopt_from_env(crate::PCID_CLIENT_CHANNEL)?;
        let raw_fd = fd.as_raw_fd();
        Self::try_from_stream(UnixStream::from(fd)).map_err(|source| AdoptError::Io {
            var: crate::PCID_CLIENT_CHANNEL,
            fd: raw_fd,
            source,
        })
    }
}

/// Where pcid serves its control endpoint on Redox.
pub const CONTROL_PATH: &str = "/scheme/pci/control";
/// Where a participant opens its channel to pcid on Redox (PROTOCOL.md §14).
pub const PARTICIPANT_PATH: &str = "/scheme/pci/participant";

/// Errors of the control endpoint on Redox.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// pcid's scheme does not exist: pcid is not running.
    #[error("pcid is not running: no control endpoint at {}", path.display())]
    NotRunning {
        /// The path.
        path: PathBuf,
    },
    /// Any other OS error (e.g. `EACCES` for a caller that is not root).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A participant's side of pcid's participant endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ParticipantClient;

impl ParticipantClient {
    /// Opens a participant channel (`/scheme/pci/participant` unless told
    /// otherwise; uid 0 only). Each open is a new channel. Open it before
    /// dropping privileges: its event queue and timer are opened here too.
    pub fn connect(path: impl AsRef<Path>) -> Result<super::DriverChannel, ControlError> {
        open_channel(path.as_ref())
    }
}

/// shutdownd's side of the control endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ControlClient;

impl ControlClient {
    /// Opens pcid's control endpoint (`/scheme/pci/control` unless told
    /// otherwise). pcid accepts only callers with uid 0.
    pub fn connect(path: impl AsRef<Path>) -> Result<ControlChannel, ControlError> {
        open_channel(path.as_ref())
    }
}

/// Opens a handle to pcid's scheme at `path` as a channel of `M`.
fn open_channel<M: WireMessage>(path: &Path) -> Result<Channel<M>, ControlError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(ControlError::Io {
                op: "opening",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let fd = OwnedFd::from(file);
    set_nonblocking(fd.as_raw_fd() as usize).map_err(|source| ControlError::Io {
        op: "setting O_NONBLOCK on",
        path: path.to_path_buf(),
        source,
    })?;
    Channel::try_from_stream(UnixStream::from(fd)).map_err(|source| ControlError::Io {
        op: "opening an event queue and a timer for",
        path: path.to_path_buf(),
        source,
    })
}
