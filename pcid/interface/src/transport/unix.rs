//! Adopting fds inherited by number (the channel fd from pcid, pcid's
//! `--ready-fd`): the one place in this crate that turns a raw fd number into
//! an owned descriptor.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use rustix::io::FdFlags;
use rustix::net::SocketType;

use super::AdoptError;

/// Adopts the channel fd named by `var` ([`super::adopt`]): it must be an
/// open stream socket; it is made close-on-exec.
pub(super) fn adopt_from_env(var: &'static str) -> Result<UnixStream, AdoptError> {
    let owned = super::adopt::adopt_from_env(
        var,
        |fd| check_and_adopt(var, fd),
        |owned, fd| {
            rustix::io::fcntl_setfd(owned, FdFlags::CLOEXEC).map_err(|e| AdoptError::Io {
                var,
                fd,
                source: e.into(),
            })
        },
    )?;
    Ok(UnixStream::from(owned))
}

fn check_and_adopt(var: &'static str, fd: i32) -> Result<OwnedFd, AdoptError> {
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; on a number
    // that is not an open descriptor it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(AdoptError::NotOpen { var, fd });
    }
    // SAFETY: `fd` was just shown to be open, and nothing in this function
    // closes it, so it stays open for the lifetime of `borrowed`.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let io = |e: rustix::io::Errno| AdoptError::Io {
        var,
        fd,
        source: e.into(),
    };
    let stat = rustix::fs::fstat(borrowed.as_fd()).map_err(io)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err(AdoptError::NotASocket { var, fd });
    }
    if rustix::net::sockopt::socket_type(borrowed).map_err(io)? != SocketType::STREAM {
        return Err(AdoptError::NotASocket { var, fd });
    }
    // SAFETY: `fd` is an open stream socket that pcid passed to this process
    // for exactly this purpose (named by `var`). The once-per-process guard
    // of `super::adopt` and the removal of `var` there make this the only
    // owner in the process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Numbers already adopted by [`adopt_inherited_fd`].
static ADOPTED_NUMBERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Takes ownership of descriptor `fd`, inherited from the parent and named on
/// the command line (pcid's `--ready-fd N`), and makes it close-on-exec so
/// that the processes this one spawns do not inherit it. Refuses 0–2 (stdio),
/// a number that is not an open descriptor, and a number adopted before.
pub fn adopt_inherited_fd(fd: i32) -> std::io::Result<OwnedFd> {
    use std::io::{Error, ErrorKind};
    if fd <= 2 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("fd {fd} is standard input, output or error"),
        ));
    }
    let mut adopted = ADOPTED_NUMBERS.lock().unwrap_or_else(|e| e.into_inner());
    if adopted.contains(&fd) {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("fd {fd} was adopted already"),
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor flags of `fd`; on a number
    // that is not an open descriptor it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("fd {fd} is not an open descriptor"),
        ));
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process by
    // its parent for the caller's use; ADOPTED_NUMBERS makes this the only
    // owner created through this function.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    adopted.push(fd);
    rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC)?;
    Ok(owned)
}
