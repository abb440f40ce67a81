//! Waiting on Redox: event queues and monotonic timers.
//!
//! Redox has no `poll` of its own; a process subscribes file descriptors to
//! an event queue (`redox_event`) and reads events from it. A deadline is a
//! file too: a handle to `/scheme/time/<CLOCK_MONOTONIC>` reads as the
//! current time, and every time written to it adds a kernel timeout after
//! which the handle raises `EVENT_READ` ([`TimeHandle`]). Timeouts cannot be
//! replaced or cancelled, so [`Timer`] wraps the handle in the portable
//! [`DeadlineTimer`] (only earlier deadlines add a timeout; wake-ups may be
//! stale and are checked against the clock).
//!
//! [`Waiter`] is what a channel waits with: an event queue subscribed to the
//! channel's fd and to a [`Timer`], opened once when the channel is adopted —
//! before the driver drops privileges, after which neither `/scheme/event`
//! nor `/scheme/time` can be opened — and reused for every wait.

use std::io;
use std::time::Duration;

use ::event::{EventFlags, RawEventQueue};
use libredox::flag;
use libredox::Fd;

use super::timer::{Arming, DeadlineTimer, TimeSource};
use crate::privileges::before_open;

fn to_io(err: libredox::error::Error) -> io::Error {
    io::Error::from(err)
}

/// A handle to `/scheme/time/<CLOCK_MONOTONIC>` as a [`TimeSource`].
pub struct TimeHandle {
    fd: Fd,
}

impl std::fmt::Debug for TimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeHandle")
            .field("fd", &self.fd.raw())
            .finish()
    }
}

impl TimeHandle {
    /// Opens the handle (close-on-exec). Needs a namespace with the `time`
    /// scheme: open it before dropping privileges.
    pub fn open() -> io::Result<Self> {
        let path = format!("/scheme/time/{}", syscall::CLOCK_MONOTONIC);
        before_open(&path)?;
        let fd = Fd::open(&path, flag::O_CLOEXEC | flag::O_RDWR, 0).map_err(to_io)?;
        Ok(Self { fd })
    }

    /// The handle's file descriptor, for subscribing to an event queue.
    pub fn raw_fd(&self) -> usize {
        self.fd.raw()
    }
}

impl TimeSource for TimeHandle {
    fn now(&mut self) -> io::Result<Duration> {
        let mut now = syscall::TimeSpec::default();
        let n = self.fd.read(&mut now).map_err(to_io)?;
        if n != std::mem::size_of::<syscall::TimeSpec>() {
            return Err(io::Error::other(format!(
                "time scheme returned {n} bytes for a timespec"
            )));
        }
        let secs = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(now.tv_nsec).unwrap_or(0).min(999_999_999);
        Ok(Duration::new(secs, nanos))
    }

    fn add_wakeup(&mut self, at: Duration) -> io::Result<()> {
        let when = syscall::TimeSpec {
            tv_sec: i64::try_from(at.as_secs()).unwrap_or(i64::MAX),
            // Below 1e9, so it fits in i32.
            tv_nsec: at.subsec_nanos() as i32,
        };
        self.fd.write(&when).map_err(to_io)?;
        Ok(())
    }
}

/// A monotonic timer whose arming never piles up kernel timeouts (see the
/// module documentation).
#[derive(Debug)]
pub struct Timer {
    inner: DeadlineTimer<TimeHandle>,
}

impl Timer {
    /// Opens a timer handle (close-on-exec). Open it before dropping privileges.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            inner: DeadlineTimer::new(TimeHandle::open()?),
        })
    }

    /// The current monotonic time as the time scheme reports it.
    pub fn now(&mut self) -> io::Result<Duration> {
        self.inner.now()
    }

    /// Makes sure the timer raises `EVENT_READ` no later than `after` from
    /// now. A kernel timeout is added only when no pending one is early
    /// enough, so calling this on every turn of a loop is cheap; but the
    /// handle may also fire for an earlier deadline since abandoned, so a
    /// wake-up is only a reason to look at the clock.
    pub fn arm_after(&mut self, after: Duration) -> io::Result<()> {
        self.inner.wake_after(after).map(|_| ())
    }

    /// Like [`arm_after`](Self::arm_after) with an absolute deadline on the
    /// time scheme's clock ([`now`](Self::now)).
    pub fn wake_by(&mut self, deadline: Duration) -> io::Result<Arming> {
        self.inner.wake_by(deadline)
    }

    /// After a wake-up: whether `deadline` has passed.
    pub fn passed(&mut self, deadline: Duration) -> io::Result<bool> {
        self.inner.passed(deadline)
    }

    /// The timer's file descriptor, for subscribing to an event queue.
    pub fn raw_fd(&self) -> usize {
        self.inner.source().raw_fd()
    }
}

/// Event queue user data of the waited-for fd.
const FD: usize = 0;
/// Event queue user data of the timer.
const TIMER: usize = 1;

/// Waits for one fd to become readable, with deadlines: an event queue
/// subscribed to the fd and to a [`Timer`], opened together up front.
pub struct Waiter {
    queue: RawEventQueue,
    timer: Timer,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl Waiter {
    /// Opens an event queue and a timer and subscribes `fd` and the timer to
    /// the queue. Subscribing reports a readiness that already holds (pcid's
    /// scheme answers `fevent` with its current state), so data that arrived
    /// before is not missed.
    pub fn new(fd: usize) -> io::Result<Self> {
        before_open("/scheme/event")?;
        let queue = RawEventQueue::new().map_err(to_io)?;
        let timer = Timer::new()?;
        queue.subscribe(fd, FD, EventFlags::READ).map_err(to_io)?;
        queue
            .subscribe(timer.raw_fd(), TIMER, EventFlags::READ)
            .map_err(to_io)?;
        Ok(Self { queue, timer })
    }

    /// Waits until the fd raises `EVENT_READ` or `timeout` passes (`None`:
    /// no limit). `Ok(true)`: the fd raised an event (it may be stale: the
    /// caller reads and waits again on `EAGAIN`); `Ok(false)`: the time ran out.
    pub fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = match timeout {
            Some(t) => Some(self.timer.now()?.saturating_add(t)),
            None => None,
        };
        loop {
            if let Some(deadline) = deadline {
                if self.timer.wake_by(deadline)? == Arming::Passed {
                    return Ok(false);
                }
            }
            let event = self.queue.next_event().map_err(to_io)?;
            match event.user_data {
                FD => return Ok(true),
                TIMER => {
                    if let Some(deadline) = deadline {
                        if self.timer.passed(deadline)? {
                            return Ok(false);
                        }
                    }
                    // A stale wake-up; wait on.
                }
                _ => {}
            }
        }
    }
}
