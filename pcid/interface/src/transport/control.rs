//! pcid's control endpoint on Unix systems: a stream socket file with mode
//! 0600, whose peers are identified by `SO_PEERCRED`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{sys, Channel, ControlChannel, DriverChannel};
use crate::wire::WireMessage;

/// Errors of the control endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No pcid listens at the path: there is no socket file.
    #[error("pcid is not running: no control socket at {}", path.display())]
    NotRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// A socket file exists but nobody accepts on it (pcid died and left it behind).
    #[error("pcid is not running: nothing listens on the control socket {} (stale socket file)", path.display())]
    Stale {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process already listens at the path.
    #[error("another process is already listening on {}", path.display())]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket exists at the path; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// No connection arrived within the allowed time.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// Any other OS error, with the operation and path.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Credentials of a connected peer, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id of the peer when it connected.
    pub uid: u32,
    /// Effective group id of the peer when it connected.
    pub gid: u32,
    /// Process id of the peer.
    pub pid: u32,
}

impl PeerCred {
    /// Whether the peer runs as this process's effective user — the rule
    /// pcid applies to control clients.
    pub fn is_same_user(&self) -> bool {
        self.uid == rustix::process::geteuid().as_raw()
    }
}

pub(super) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(fd)?;
    Ok(PeerCred {
        uid: c.uid.as_raw(),
        gid: c.gid.as_raw(),
        pid: c.pid.as_raw_nonzero().get() as u32,
    })
}

/// pcid's listening control socket. The socket file is removed on drop.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlListener {
    /// Creates the control socket at `path` with mode 0600.
    ///
    /// A socket file left by a pcid that is gone (connecting to it is
    /// refused) is replaced; a live one gives [`ControlError::AlreadyRunning`];
    /// anything that is not a socket is left alone
    /// ([`ControlError::NotASocket`]).
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, ControlError> {
        let path = path.as_ref().to_path_buf();
        let io = |op, source| ControlError::Io {
            op,
            path: path.clone(),
            source,
        };
        let probe = std::fs::symlink_metadata(&path);
        match probe {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(&path) {
                Ok(_) => return Err(ControlError::AlreadyRunning { path: path.clone() }),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("removing stale control socket {}", path.display());
                    std::fs::remove_file(&path).map_err(|e| io("removing stale socket", e))?;
                }
                Err(e) => return Err(io("probing existing socket", e)),
            },
            Ok(_) => return Err(ControlError::NotASocket { path: path.clone() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting", e)),
        }
        let listener = UnixListener::bind(&path).map_err(|e| io("binding", e))?;
        // From here on the file is ours: remove it on any error (via Drop).
        let this = Self {
            listener,
            path: path.clone(),
        };
        // Restrict the socket before accepting anyone. Between bind and this
        // chmod a peer of another uid could connect; `accept` reports every
        // peer's uid, and pcid refuses those that are not its own.
        std::fs::set_permissions(&this.path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("setting mode 0600 on", e))?;
        this.listener
            .set_nonblocking(true)
            .map_err(|e| io("configuring", e))?;
        Ok(this)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one connection, waiting at most `timeout` (`None`: without
    /// limit), and returns it with the peer's credentials. The caller decides
    /// whether to serve the peer (pcid: [`PeerCred::is_same_user`]).
    pub fn accept(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(ControlChannel, PeerCred), ControlError> {
        self.accept_channel(timeout)
    }

    /// Like [`ControlListener::accept`], for a socket whose peers speak
    /// another message family (pcid's participant socket carries the
    /// driver-channel family).
    pub fn accept_channel<M: WireMessage>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Channel<M>, PeerCred), ControlError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| self.io("accepting on", e))?;
                    let cred = peer_cred(stream.as_fd())
                        .map_err(|e| self.io("reading peer credentials on", e))?;
                    return Ok((Channel::from_stream(stream), cred));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = match deadline {
                        None => None,
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return Err(ControlError::Timeout(timeout.unwrap_or_default()));
                            }
                            Some(d - now)
                        }
                    };
                    sys::wait_readable(self.listener.as_fd(), wait)
                        .map_err(|e| self.io("waiting on", e))?;
                }
                Err(e) => return Err(self.io("accepting on", e)),
            }
        }
    }

    fn io(&self, op: &'static str, source: io::Error) -> ControlError {
        ControlError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

impl AsFd for ControlListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("removing control socket {}: {e}", self.path.display());
            }
        }
    }
}

/// A participant's side of pcid's participant socket (PROTOCOL.md §14).
#[derive(Debug, Clone, Copy)]
pub struct ParticipantClient;

impl ParticipantClient {
    /// Connects to pcid's participant socket at `path` (errors as
    /// [`ControlClient::connect`]).
    pub fn connect(path: impl AsRef<Path>) -> Result<DriverChannel, ControlError> {
        connect_to_pcid(path.as_ref()).map(DriverChannel::from_stream)
    }
}

/// shutdownd's side of the control endpoint.
#[derive(Debug, Clone, Copy)]
pub struct ControlClient;

impl ControlClient {
    /// Connects to pcid's control socket at `path`.
    ///
    /// A missing socket file gives [`ControlError::NotRunning`] ("pcid is
    /// not running: no control socket at PATH"); a socket file nobody
    /// accepts on (connection refused) gives [`ControlError::Stale`].
    pub fn connect(path: impl AsRef<Path>) -> Result<ControlChannel, ControlError> {
        connect_to_pcid(path.as_ref()).map(ControlChannel::from_stream)
    }
}

/// Connects to one of pcid's sockets, telling a missing socket
/// ([`ControlError::NotRunning`]) from one nobody accepts on
/// ([`ControlError::Stale`]).
fn connect_to_pcid(path: &Path) -> Result<UnixStream, ControlError> {
    UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ControlError::NotRunning {
            path: path.to_path_buf(),
        },
        io::ErrorKind::ConnectionRefused => ControlError::Stale {
            path: path.to_path_buf(),
        },
        _ => ControlError::Io {
            op: "connecting to",
            path: path.to_path_buf(),
            source: e,
        },
    })
}
