//! Where a controller is in its life (running, quiescing, notified), and what
//! the first phase of shutdown left for the second.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// The controller's lifecycle. It only moves forward:
/// `Running` → `Quiescing` → `Notified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Lifecycle {
    /// I/O is accepted.
    Running = 0,
    /// `begin` has started: new I/O is refused, the I/O queues are being
    /// flushed and deleted.
    Quiescing = 1,
    /// CC.SHN=01b has been written.
    Notified = 2,
}

impl Lifecycle {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Quiescing,
            // Only `LifecycleCell::set` stores values, all from this enum.
            _ => Self::Notified,
        }
    }
}

/// A [`Lifecycle`] readable without a lock (the I/O path checks it on every
/// request while `begin` may be changing it).
#[derive(Debug)]
pub(crate) struct LifecycleCell(AtomicU8);

impl LifecycleCell {
    /// A cell holding `state`.
    pub(crate) fn new(state: Lifecycle) -> Self {
        Self(AtomicU8::new(state as u8))
    }
    /// The current state.
    pub(crate) fn get(&self) -> Lifecycle {
        Lifecycle::from_u8(self.0.load(Ordering::SeqCst))
    }
    /// Moves to `state`.
    pub(crate) fn set(&self, state: Lifecycle) {
        self.0.store(state as u8, Ordering::SeqCst);
    }
}

/// What [`Controller::begin`](crate::Controller::begin) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginReport {
    /// Time the controller is expected to need to complete the shutdown:
    /// RTD3E, or [`crate::Options::default_shutdown_budget`] when RTD3E is 0.
    pub budget: Duration,
    /// RTD3E as reported by Identify Controller, µs (0 = not reported).
    pub rtd3e_us: u32,
    /// Whether every namespace was flushed (NVM Flush) before the queues
    /// were deleted; also true when the controller has no volatile write
    /// cache, which leaves nothing to flush.
    pub flushed: bool,
    /// Whether the I/O submission and completion queues were deleted.
    pub queues_deleted: bool,
    /// Clock time at which CC.SHN=01b was written.
    pub notified_at: Duration,
}

/// Bookkeeping between `begin` and `finish`; `Io` is the I/O path `begin`
/// takes out of service.
pub(crate) struct ShutdownState<Io> {
    /// The first `begin`'s report (a second call returns it).
    pub(crate) begin: Option<BeginReport>,
    /// When `begin` itself already saw CSTS.SHST=10b (a controller that
    /// completes shutdown inside the register write, like QEMU's).
    pub(crate) completed_at: Option<Duration>,
    /// The I/O path taken out of service by `begin`. Its memory stays
    /// allocated as long as the controller object lives and is freed after
    /// the reset that dropping the controller makes, so a controller that did
    /// not accept the queue deletion never writes to freed memory.
    pub(crate) retired_io: Option<Io>,
}

impl<Io> Default for ShutdownState<Io> {
    fn default() -> Self {
        Self {
            begin: None,
            completed_at: None,
            retired_io: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_round_trips_every_state() {
        let cell = LifecycleCell::new(Lifecycle::Running);
        for s in [
            Lifecycle::Running,
            Lifecycle::Quiescing,
            Lifecycle::Notified,
        ] {
            cell.set(s);
            assert_eq!(cell.get(), s);
        }
    }
}
