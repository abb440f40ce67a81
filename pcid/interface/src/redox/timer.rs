//! Deadlines on a timer that can only add wake-ups.
//!
//! On Redox a handle to `/scheme/time/<CLOCK_MONOTONIC>` reads as the current
//! time, and each `TimeSpec` written to it **adds** a kernel timeout: when that
//! time passes, the handle raises `EVENT_READ`. Nothing replaces or cancels a
//! timeout already written (kernel a919d262, `context/timeout.rs`: a list of
//! pending timeouts, each removed only when it fires). Re-arming on every loop
//! therefore piles up timeouts, and every one of them later wakes the process.
//!
//! [`DeadlineTimer`] keeps that honest, independent of the OS: it remembers
//! which wake-ups are pending, writes a new one only when the deadline asked
//! for is earlier than every pending wake-up (a pending one at or before the
//! deadline will wake the waiter in time, and it asks again then), and treats
//! every wake-up as possibly stale: after one, the waiter compares its
//! deadline with the current time ([`DeadlineTimer::passed`]).
//!
//! Times are [`Duration`]s on the source's monotonic clock. The source is a
//! trait ([`TimeSource`]) so the logic is unit-tested with a fake clock; the
//! Redox source is `redox::event::TimeHandle`.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

/// A clock that can be read and asked for a wake-up at an absolute time.
pub trait TimeSource {
    /// The current time on the source's monotonic clock.
    fn now(&mut self) -> io::Result<Duration>;
    /// Adds a wake-up at `at` (absolute, on the same clock). Earlier wake-ups
    /// stay pending.
    fn add_wakeup(&mut self, at: Duration) -> io::Result<()>;
}

/// Most pending wake-ups remembered. Forgetting one is harmless: it costs at
/// most one more kernel timeout and one more (stale) wake-up.
pub const MAX_REMEMBERED: usize = 64;

/// What [`DeadlineTimer::wake_by`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arming {
    /// A new wake-up was added at the deadline.
    Armed,
    /// A pending wake-up at or before the deadline will do.
    AlreadyPending,
    /// The deadline has passed already: do not wait.
    Passed,
}

/// Deadlines over a [`TimeSource`] that can only add wake-ups.
#[derive(Debug)]
pub struct DeadlineTimer<S> {
    source: S,
    /// Wake-ups added and not yet known to have fired.
    pending: BTreeSet<Duration>,
}

impl<S: TimeSource> DeadlineTimer<S> {
    /// A timer over `source` with nothing pending.
    pub fn new(source: S) -> Self {
        Self {
            source,
            pending: BTreeSet::new(),
        }
    }

    /// The source's current time.
    pub fn now(&mut self) -> io::Result<Duration> {
        self.source.now()
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Wake-ups believed pending, earliest first.
    pub fn pending(&self) -> impl Iterator<Item = Duration> + '_ {
        self.pending.iter().copied()
    }

    /// Forgets wake-ups that are due by `now` (they have fired or are about to).
    fn prune(&mut self, now: Duration) {
        self.pending = self
            .pending
            .split_off(&now.saturating_add(Duration::from_nanos(1)));
    }

    /// Makes sure the source wakes the caller no later than `deadline`.
    ///
    /// Adds a wake-up only if none is pending at or before `deadline`. Call
    /// it again after every wake-up that came before the deadline.
    pub fn wake_by(&mut self, deadline: Duration) -> io::Result<Arming> {
        let now = self.source.now()?;
        self.prune(now);
        if deadline <= now {
            return Ok(Arming::Passed);
        }
        if self.pending.first().is_some_and(|&first| first <= deadline) {
            return Ok(Arming::AlreadyPending);
        }
        self.source.add_wakeup(deadline)?;
        self.pending.insert(deadline);
        while self.pending.len() > MAX_REMEMBERED {
            self.pending.pop_last();
        }
        Ok(Arming::Armed)
    }

    /// Like [`wake_by`](Self::wake_by) for a deadline `after` from now;
    /// returns the absolute deadline (saturating far in the future).
    pub fn wake_after(&mut self, after: Duration) -> io::Result<(Duration, Arming)> {
        let deadline = self.source.now()?.saturating_add(after);
        Ok((deadline, self.wake_by(deadline)?))
    }

    /// After a wake-up: whether `deadline` has passed. A wake-up can be stale
    /// (a timeout added for an earlier, since abandoned deadline); then this
    /// is `false` and the caller calls [`wake_by`](Self::wake_by) again.
    pub fn passed(&mut self, deadline: Duration) -> io::Result<bool> {
        let now = self.source.now()?;
        self.prune(now);
        Ok(now >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock moved by the test; records every wake-up added.
    #[derive(Debug, Default)]
    struct FakeClock {
        now: Duration,
        added: Vec<Duration>,
    }

    impl TimeSource for FakeClock {
        fn now(&mut self) -> io::Result<Duration> {
            Ok(self.now)
        }
        fn add_wakeup(&mut self, at: Duration) -> io::Result<()> {
            self.added.push(at);
            Ok(())
        }
    }

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn timer_at(now: u64) -> DeadlineTimer<FakeClock> {
        DeadlineTimer::new(FakeClock {
            now: millis(now),
            added: Vec::new(),
        })
    }

    #[test]
    fn a_later_deadline_reuses_the_pending_wakeup() {
        let mut t = timer_at(0);
        assert_eq!(t.wake_by(millis(100)).unwrap(), Arming::Armed);
        // The same loop asking again, or for a later time, adds nothing.
        assert_eq!(t.wake_by(millis(100)).unwrap(), Arming::AlreadyPending);
        assert_eq!(t.wake_by(millis(500)).unwrap(), Arming::AlreadyPending);
        assert_eq!(t.source().added, vec![millis(100)]);
    }

    #[test]
    fn an_earlier_deadline_adds_a_wakeup_and_both_stay_pending() {
        let mut t = timer_at(0);
        t.wake_by(millis(500)).unwrap();
        assert_eq!(t.wake_by(millis(100)).unwrap(), Arming::Armed);
        assert_eq!(t.source().added, vec![millis(500), millis(100)]);
        assert_eq!(
            t.pending().collect::<Vec<_>>(),
            vec![millis(100), millis(500)]
        );
    }

    #[test]
    fn a_stale_wakeup_is_not_taken_for_the_deadline() {
        let mut t = timer_at(0);
        // Armed for a deadline that was then abandoned (the message arrived).
        t.wake_by(millis(100)).unwrap();
        // A new wait with a later deadline relies on the pending wake-up...
        let deadline = millis(300);
        assert_eq!(t.wake_by(deadline).unwrap(), Arming::AlreadyPending);
        // ...which fires at 100: stale for this wait.
        t.source.now = millis(100);
        assert!(!t.passed(deadline).unwrap());
        // Asking again arms the real deadline (nothing is pending any more).
        assert_eq!(t.wake_by(deadline).unwrap(), Arming::Armed);
        t.source.now = millis(300);
        assert!(t.passed(deadline).unwrap());
        assert_eq!(t.source().added, vec![millis(100), millis(300)]);
        assert_eq!(t.pending().count(), 0);
    }

    #[test]
    fn a_passed_deadline_arms_nothing() {
        let mut t = timer_at(1000);
        assert_eq!(t.wake_by(millis(1000)).unwrap(), Arming::Passed);
        assert_eq!(t.wake_by(millis(10)).unwrap(), Arming::Passed);
        assert!(t.source().added.is_empty());
        assert!(t.passed(millis(1000)).unwrap());
    }

    #[test]
    fn a_loop_rearming_every_turn_adds_one_wakeup_per_earlier_deadline() {
        // pcid's event loop asks for its next deadline on every turn; the
        // deadline only moves when a relay deadline changes.
        let mut t = timer_at(0);
        let mut deadline = millis(5000);
        for turn in 0..1000u64 {
            t.source.now = millis(turn);
            if turn == 500 {
                deadline = millis(2000); // an earlier deadline appeared
            }
            t.wake_by(deadline).unwrap();
        }
        assert_eq!(t.source().added, vec![millis(5000), millis(2000)]);
    }

    #[test]
    fn wake_after_counts_from_now_and_saturates() {
        let mut t = timer_at(7);
        let (at, arming) = t.wake_after(millis(10)).unwrap();
        assert_eq!((at, arming), (millis(17), Arming::Armed));
        let (at, _) = t.wake_after(Duration::MAX).unwrap();
        assert_eq!(at, Duration::MAX);
    }

    #[test]
    fn remembered_wakeups_are_bounded() {
        let mut t = timer_at(0);
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            // Ever earlier deadlines: each one is armed.
            assert_eq!(t.wake_by(millis(100_000 - i)).unwrap(), Arming::Armed);
        }
        assert_eq!(t.pending().count(), MAX_REMEMBERED);
        // The earliest ones are the ones kept.
        assert_eq!(
            t.pending().next(),
            Some(millis(100_000 - (MAX_REMEMBERED as u64 + 9)))
        );
    }

    #[test]
    fn source_errors_are_returned() {
        struct Broken;
        impl TimeSource for Broken {
            fn now(&mut self) -> io::Result<Duration> {
                Ok(Duration::ZERO)
            }
            fn add_wakeup(&mut self, _at: Duration) -> io::Result<()> {
                Err(io::Error::other("no timer"))
            }
        }
        let mut t = DeadlineTimer::new(Broken);
        assert!(t.wake_by(millis(1)).is_err());
        // A failed arming is not remembered as pending.
        assert_eq!(t.pending().count(), 0);
    }
}
