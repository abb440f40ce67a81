//! Deadline-bounded polling with exponential back-off.

use std::time::Duration;

use pcid_hw::Clock;

use crate::NvmeError;

/// Exponential back-off: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_micros(1));
        Self {
            next: initial,
            initial,
            max: max.max(initial),
        }
    }

    /// The next delay to sleep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// Starts again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Polls `check` until it yields a value, sleeping with `backoff` between
/// looks. The first look is immediate; the last is at the deadline; then
/// [`NvmeError::Timeout`] naming `step`. Errors from `check` end the wait.
pub(crate) fn wait_for<C: Clock + ?Sized, T>(
    clock: &C,
    step: &'static str,
    timeout: Duration,
    mut backoff: Backoff,
    mut check: impl FnMut() -> Result<Option<T>, NvmeError>,
) -> Result<T, NvmeError> {
    let start = clock.now();
    let deadline = start.saturating_add(timeout);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        let now = clock.now();
        if now >= deadline {
            return Err(NvmeError::Timeout {
                step,
                waited: now.saturating_sub(start),
            });
        }
        clock.sleep(backoff.next_delay().min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcid_hw::FakeClock;

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_micros(100), Duration::from_millis(2));
        let d: Vec<_> = (0..7).map(|_| b.next_delay().as_micros()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_micros(100));
    }

    #[test]
    fn wait_for_times_out_exactly_at_the_deadline() {
        let clock = FakeClock::new();
        let mut looks = 0;
        let r: Result<(), _> = wait_for(
            &clock,
            "test step",
            Duration::from_millis(50),
            Backoff::new(Duration::from_micros(100), Duration::from_millis(5)),
            || {
                looks += 1;
                Ok(None)
            },
        );
        match r {
            Err(NvmeError::Timeout { step, waited }) => {
                assert_eq!(step, "test step");
                assert_eq!(waited, Duration::from_millis(50));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(clock.now(), Duration::from_millis(50));
        assert!(looks > 2);
    }

    #[test]
    fn wait_for_returns_on_first_success() {
        let clock = FakeClock::new();
        let r = wait_for(
            &clock,
            "x",
            Duration::from_secs(1),
            Backoff::new(Duration::from_micros(100), Duration::from_millis(5)),
            || Ok(Some(7)),
        );
        assert_eq!(r.unwrap(), 7);
        assert_eq!(clock.now(), Duration::ZERO);
    }
}
