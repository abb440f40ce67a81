//! Unix stream socket I/O for [`super::Channel`] (Linux and other non-Redox
//! Unix systems): non-blocking send/receive plus `poll` for bounded waits.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{RecvFlags, SendFlags};

use super::Channel;
use crate::wire::WireMessage;

/// Sends without blocking and without raising `SIGPIPE`.
pub(super) fn send_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        fd,
        buf,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?)
}

/// Receives without blocking; `Ok(0)` is end of stream.
pub(super) fn recv_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::net::recv(fd, buf, RecvFlags::DONTWAIT)?.0)
}

fn wait(fd: BorrowedFd<'_>, flags: PollFlags, timeout: Option<Duration>) -> io::Result<bool> {
    // Durations beyond what a timespec holds are as good as forever.
    let ts = timeout.and_then(|t| Timespec::try_from(t).ok());
    let mut fds = [PollFd::new(&fd, flags)];
    match poll(&mut fds, ts.as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Waits until `fd` is readable (or hung up), at most `timeout` (`None`:
/// without limit). `Ok(false)` means the time ran out or a signal
/// interrupted the wait; the caller re-checks its deadline.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    wait(fd, PollFlags::IN, timeout)
}

/// What a channel waits with. `poll` needs no resource of its own; the
/// waiter is still made when the channel is (through
/// [`before_open`](crate::privileges::before_open)), at the point where Redox
/// opens its event queue and timer, so the order is checked here too.
#[derive(Debug)]
pub(super) struct Waiter(());

impl Waiter {
    /// Makes the waiter for the socket `_fd`.
    pub(super) fn new(_fd: BorrowedFd<'_>) -> io::Result<Self> {
        crate::privileges::before_open("a channel waiter")?;
        Ok(Self(()))
    }

    /// Waits until `fd` is readable (or hung up) — or, with `writable`,
    /// also until it can take more bytes — at most `timeout`. `Ok(false)`:
    /// the time ran out or a signal interrupted the wait.
    pub(super) fn wait(
        &mut self,
        fd: BorrowedFd<'_>,
        writable: bool,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let flags = if writable {
            PollFlags::IN | PollFlags::OUT
        } else {
            PollFlags::IN
        };
        wait(fd, flags, timeout)
    }
}

/// Waits until the socket is writable, at most `timeout`.
pub(super) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    wait(fd, PollFlags::OUT, Some(timeout))
}

/// Serialises the window in which a channel fd is inheritable.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Spawns `cmd` with `child_end` inherited as the child's pcid channel.
///
/// A duplicate of the channel fd without close-on-exec is made right before
/// the spawn, its number put into the child's environment as
/// [`PCID_CLIENT_CHANNEL`](crate::PCID_CLIENT_CHANNEL), and closed right after,
/// all under a process-wide lock so two concurrent calls never leak one
/// child's channel into another child. `child_end` is closed in this process
/// when the call returns, so the channel reports `Closed` once the child exits.
///
/// Processes spawned in the same process *without* this function while it
/// runs could also inherit the duplicate; spawn every child of a process that
/// hands out channels through this function.
pub fn spawn_with_channel<M: WireMessage>(
    cmd: &mut Command,
    child_end: Channel<M>,
) -> io::Result<Child> {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // `dup` does not copy FD_CLOEXEC: the duplicate survives exec.
    let inheritable = rustix::io::dup(child_end.as_fd())?;
    cmd.env(
        crate::PCID_CLIENT_CHANNEL,
        inheritable.as_raw_fd().to_string(),
    );
    let child = cmd.spawn();
    drop(inheritable);
    drop(child_end);
    child
}
