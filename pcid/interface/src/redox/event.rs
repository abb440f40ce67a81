//! Waiting on Redox: event queues and monotonic timers.
//!
//! Redox has no `poll`; a process subscribes file descriptors to an event
//! queue (`redox_event`) and reads events from it. A deadline is a file too:
//! a handle to `/scheme/time/<CLOCK_MONOTONIC>` reads as the current time and,
//! after a time is written to it, becomes readable (raises `EVENT_READ`) once
//! that time has passed. [`Timer`] wraps such a handle; [`wait_readable`]
//! waits for one fd with an optional timeout.

use std::io;
use std::time::Duration;

use ::event::{EventFlags, EventQueue};
use libredox::flag;
use libredox::Fd;

fn to_io(err: libredox::error::Error) -> io::Error {
    io::Error::from(err)
}

/// A one-shot monotonic timer (`/scheme/time/<CLOCK_MONOTONIC>`).
pub struct Timer {
    fd: Fd,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").field("fd", &self.fd.raw()).finish()
    }
}

impl Timer {
    /// Opens a timer handle (close-on-exec).
    pub fn new() -> io::Result<Self> {
        let path = format!("/scheme/time/{}", syscall::CLOCK_MONOTONIC);
        let fd = Fd::open(&path, flag::O_CLOEXEC | flag::O_RDWR, 0).map_err(to_io)?;
        Ok(Self { fd })
    }

    /// The current monotonic time as the time scheme reports it.
    pub fn now(&self) -> io::Result<syscall::TimeSpec> {
        let mut now = syscall::TimeSpec::default();
        let n = self.fd.read(&mut now).map_err(to_io)?;
        if n != std::mem::size_of::<syscall::TimeSpec>() {
            return Err(io::Error::other(format!(
                "time scheme returned {n} bytes for a timespec"
            )));
        }
        Ok(now)
    }

    /// Makes the timer fire `after` from now (replacing an earlier arming).
    pub fn arm_after(&self, after: Duration) -> io::Result<()> {
        let now = self.now()?;
        let when = add(now, after);
        self.fd.write(&when).map_err(to_io)?;
        Ok(())
    }

    /// The timer's file descriptor, for subscribing to an event queue.
    pub fn raw_fd(&self) -> usize {
        self.fd.raw()
    }
}

/// `ts + d`, saturating far in the future.
fn add(ts: syscall::TimeSpec, d: Duration) -> syscall::TimeSpec {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let mut tv_sec = ts.tv_sec.saturating_add(secs);
    let mut tv_nsec = i64::from(ts.tv_nsec) + i64::from(d.subsec_nanos());
    if tv_nsec >= 1_000_000_000 {
        tv_nsec -= 1_000_000_000;
        tv_sec = tv_sec.saturating_add(1);
    }
    syscall::TimeSpec {
        tv_sec,
        // In 0..1e9 after the carry above, so it fits in i32.
        tv_nsec: tv_nsec as i32,
    }
}

/// Waits until `fd` is readable or `timeout` passes (`None`: no limit).
///
/// Returns `Ok(true)` when `fd` raised `EVENT_READ`, `Ok(false)` when the
/// timeout passed first. Subscribing reports a readiness that already holds
/// (pcid's scheme answers `fevent` with its current state), so data that
/// arrived before the call is not missed.
pub fn wait_readable(fd: usize, timeout: Option<Duration>) -> io::Result<bool> {
    const FD: usize = 0;
    const TIMER: usize = 1;
    let queue = EventQueue::<usize>::new().map_err(to_io)?;
    queue.subscribe(fd, FD, EventFlags::READ).map_err(to_io)?;
    let _timer = match timeout {
        Some(t) => {
            let timer = Timer::new()?;
            timer.arm_after(t)?;
            queue
                .subscribe(timer.raw_fd(), TIMER, EventFlags::READ)
                .map_err(to_io)?;
            Some(timer)
        }
        None => None,
    };
    loop {
        let event = queue.next_event().map_err(to_io)?;
        match event.user_data {
            FD => return Ok(true),
            TIMER => return Ok(false),
            _ => continue,
        }
    }
}
