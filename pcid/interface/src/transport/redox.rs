//! Channel I/O on Redox.
//!
//! pcid hands a driver its channel as an fd (named by `PCID_CLIENT_CHANNEL`,
//! as on Linux); on Redox that fd refers to pcid's scheme rather than a Unix
//! socket. This module holds the Redox side of the socket operations used by
//! [`super::Channel`]; it is type-checked for `x86_64-unknown-redox`.

use std::io;
use std::os::fd::BorrowedFd;
use std::process::{Child, Command};
use std::time::Duration;

use super::Channel;
use crate::wire::WireMessage;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "pcid channel I/O is not implemented on Redox yet",
    )
}

pub(super) fn send_nonblocking(_fd: BorrowedFd<'_>, _buf: &[u8]) -> io::Result<usize> {
    Err(unsupported())
}

pub(super) fn recv_nonblocking(_fd: BorrowedFd<'_>, _buf: &mut [u8]) -> io::Result<usize> {
    Err(unsupported())
}

pub(super) fn wait_readable(_fd: BorrowedFd<'_>, _timeout: Option<Duration>) -> io::Result<bool> {
    Err(unsupported())
}

pub(super) fn wait_writable(_fd: BorrowedFd<'_>, _timeout: Duration) -> io::Result<bool> {
    Err(unsupported())
}

/// Spawning a driver with an inherited channel is pcid's scheme's job on Redox.
pub fn spawn_with_channel<M: WireMessage>(
    _cmd: &mut Command,
    _child_end: Channel<M>,
) -> io::Result<Child> {
    Err(unsupported())
}
