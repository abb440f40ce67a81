//! Deadline-bounded polling with exponential back-off, and the schedule
//! of [`Controller::finish`](crate::Controller::finish)'s looks at
//! CSTS.SHST ([`ShutdownPolling`]).

use std::time::Duration;

use pcid_hw::Clock;

use crate::NvmeError;

/// Exponential back-off: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_micros(1));
        Self {
            next: initial,
            max: max.max(initial),
        }
    }

    /// The next delay to sleep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
}

/// When [`Controller::finish`](crate::Controller::finish) looks at CSTS.SHST
/// again: a schedule that sees a controller's completion quickly where that
/// is cheap and does not flood the CPU when hundreds of controllers wait at
/// once. `t` is the time since the CC.SHN=01b write, `B` the budget the
/// controller announced (RTD3E; 1 s when it reports none).
///
/// The delay before the next look is the smallest of
/// * **the start**: `B / start_ratio` (64) — or, when the controller
///   reports no RTD3E (and `B` is only a guess),
///   [`Options::poll_initial`](crate::Options::poll_initial) (50 µs) — at
///   least 50 µs, doubling with every look: a controller that announced a
///   short shutdown, or none, and is done within a millisecond is seen
///   within a fraction of one, while hundreds of controllers that announced
///   300 ms do not all look every few hundred microseconds while the rest
///   are still being told to begin;
/// * **the time waited and announced**: `max(floor, min(B / budget_ratio,
///   budget_cap), t / ratio)` (defaults 2 ms, 16, 250 ms, 16) — a
///   controller is seen at most a sixteenth of its own shutdown time, or of
///   the time it announced, late; the number of looks grows with the
///   logarithm of the wait, not with the wait (a controller done when it
///   said after 300 ms or 4.5 s: about 20 looks either way, where looking
///   every 2 ms takes 150 and 2250);
/// * **the budget**: `B − t` before the budget — one look exactly when the
///   controller said it would be done (not a cluster of looks closing in,
///   which hundreds of controllers with the same budget would all make at
///   the same moment) — and `max(near, (t − B) / 2)` (near: 250 µs) after
///   it, so a controller done when it said is seen then, and one a little
///   late within `near` of it;
///
/// and it is never shorter than `late_factor` (4) times the recent lateness
/// of this process's own wake-ups (a moving average of how much longer
/// than asked each sleep took), up to `max(late_cap, t / 8)` (16 ms). When
/// the CPUs are shared by many waiting drivers, each wake-up comes late,
/// and each driver then looks less often until the machine keeps up again;
/// with few drivers wake-ups are punctual and the schedule above holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShutdownPolling {
    /// The first delay is `B / start_ratio` (clamped to at least 1), at
    /// least `Options::poll_initial`, when the controller reported RTD3E.
    pub start_ratio: u32,
    /// Shortest interval of the "time waited and announced" rule.
    pub floor: Duration,
    /// That rule allows `B / budget_ratio` (clamped to at least 1) …
    pub budget_ratio: u32,
    /// … but at most this much …
    pub budget_cap: Duration,
    /// … or `t / ratio` (clamped to at least 1), whichever is longer.
    pub ratio: u32,
    /// Resolution around the budget.
    pub near: Duration,
    /// Looks at least this many times the recent wake-up lateness apart.
    pub late_factor: u32,
    /// The lateness rule never asks for more than `max(late_cap, t / 8)`.
    pub late_cap: Duration,
}

impl Default for ShutdownPolling {
    fn default() -> Self {
        Self {
            start_ratio: 64,
            floor: Duration::from_millis(2),
            budget_ratio: 16,
            budget_cap: Duration::from_millis(250),
            ratio: 16,
            near: Duration::from_micros(250),
            late_factor: 4,
            late_cap: Duration::from_millis(16),
        }
    }
}

/// The state of one `finish` wait under a [`ShutdownPolling`] schedule.
#[derive(Debug, Clone)]
pub(crate) struct ShutdownPoller {
    schedule: ShutdownPolling,
    budget: Duration,
    start: Backoff,
    /// [`Options::poll_initial`](crate::Options::poll_initial), where a
    /// restart begins.
    initial: Duration,
    /// Moving average of wake-up lateness.
    late: Duration,
    /// After [`restart`](Self::restart): start delays up to `floor` only.
    restarted: bool,
}

impl ShutdownPoller {
    /// A wait for a controller that announced `budget` (`reported`: from its
    /// RTD3E, not a default); the start delays begin at
    /// `budget / start_ratio`, or at `initial` when the budget was not
    /// reported, never below `initial`.
    pub(crate) fn new(
        schedule: ShutdownPolling,
        budget: Duration,
        reported: bool,
        initial: Duration,
    ) -> Self {
        let first = if reported {
            (budget / schedule.start_ratio.max(1)).max(initial)
        } else {
            initial
        };
        Self {
            schedule,
            budget,
            start: Backoff::new(first, Duration::MAX),
            initial,
            late: Duration::ZERO,
            restarted: false,
        }
    }

    /// The delay before the next look, `elapsed` after the CC.SHN write.
    pub(crate) fn next_delay(&mut self, elapsed: Duration) -> Duration {
        let s = &self.schedule;
        let start = self.start.next_delay();
        if self.restarted {
            return start.min(s.floor);
        }
        let announced = (self.budget / s.budget_ratio.max(1)).min(s.budget_cap);
        let waited = s.floor.max(announced).max(elapsed / s.ratio.max(1));
        let near = match self.budget.checked_sub(elapsed) {
            Some(left) if !left.is_zero() => left,
            _ => s.near.max((elapsed - self.budget) / 2),
        };
        let base = start.min(waited).min(near);
        let pushed_back = self
            .late
            .saturating_mul(s.late_factor)
            .min(s.late_cap.max(elapsed / 8));
        base.max(pushed_back)
    }

    /// Records that a sleep of `asked` took `took`.
    pub(crate) fn slept(&mut self, asked: Duration, took: Duration) {
        let late = took.saturating_sub(asked);
        // Three quarters of the old average, a quarter of the new sample.
        self.late = (self.late.saturating_mul(3) + late) / 4;
    }

    /// Starts again from the initial delay, doubling up to `floor` only:
    /// after escalating to an abrupt shutdown, which completes quickly and
    /// has only the deadline's reserve to do it in.
    pub(crate) fn restart(&mut self) {
        self.start = Backoff::new(self.initial, Duration::MAX);
        self.restarted = true;
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

    fn poller(budget_ms: u64) -> ShutdownPoller {
        ShutdownPoller::new(
            ShutdownPolling::default(),
            Duration::from_millis(budget_ms),
            true,
            Duration::from_micros(50),
        )
    }

    /// A controller that reports no RTD3E: the 1 s assumed for it.
    fn unreported() -> ShutdownPoller {
        ShutdownPoller::new(
            ShutdownPolling::default(),
            Duration::from_secs(1),
            false,
            Duration::from_micros(50),
        )
    }

    /// Looks (times after the CC.SHN write) until `until`, sleeping exactly.
    fn looks(p: &mut ShutdownPoller, until: Duration) -> Vec<Duration> {
        let mut t = Duration::ZERO;
        let mut v = vec![t];
        while t < until {
            let d = p.next_delay(t);
            assert!(d > Duration::ZERO);
            p.slept(d, d);
            t += d;
            v.push(t);
        }
        v
    }

    /// When a controller done at `done` is seen.
    fn seen_at(looks: &[Duration], done: Duration) -> Duration {
        *looks.iter().find(|&&t| t >= done).expect("seen")
    }

    /// The longest interval the schedule allows at `t` for budget `b`.
    fn allowed(b: Duration, t: Duration) -> Duration {
        Duration::from_millis(2)
            .max((b / 16).min(Duration::from_millis(250)))
            .max(t / 16)
    }

    #[test]
    fn the_start_is_quick_for_a_short_budget_or_none() {
        for mut p in [poller(2), unreported()] {
            let l = looks(&mut p, Duration::from_millis(2));
            let us: Vec<u128> = l.iter().take(5).map(|t| t.as_micros()).collect();
            assert_eq!(us, [0, 50, 150, 350, 750]);
            // Done after 0.3 ms: seen within 0.05 ms; after 1 ms: within 0.55 ms.
            assert!(seen_at(&l, Duration::from_micros(300)) <= Duration::from_micros(350));
            assert!(seen_at(&l, Duration::from_millis(1)) <= Duration::from_micros(1550));
        }
    }

    #[test]
    fn a_long_budget_starts_less_eagerly() {
        // 300 ms announced: the first delay is 300/64 ms, not 50 µs.
        let l = looks(&mut poller(300), Duration::from_millis(20));
        let us: Vec<u128> = l.iter().take(4).map(|t| t.as_micros()).collect();
        assert_eq!(us, [0, 4687, 14062, 32812]);
        let mut p = poller(4500);
        assert_eq!(
            p.next_delay(Duration::ZERO),
            Duration::from_nanos(70_312_500)
        );
    }

    #[test]
    fn looks_grow_with_the_logarithm_of_the_wait() {
        let long = looks(&mut poller(4500), Duration::from_millis(4600));
        assert!(long.len() < 45, "{} looks in 4.6 s", long.len());
        let short = looks(&mut poller(300), Duration::from_millis(320));
        assert!(short.len() < 40, "{} looks in 320 ms", short.len());
        let none = looks(&mut poller(0), Duration::from_millis(320));
        assert!(none.len() < 70, "{} looks in 320 ms", none.len());
        for (b, l) in [(4500, &long), (300, &short), (0, &none)] {
            for w in l.windows(2) {
                let (t, next) = (w[0], w[1]);
                assert!(
                    next - t <= allowed(Duration::from_millis(b), t),
                    "budget {b} ms: {t:?} -> {next:?}"
                );
            }
        }
    }

    #[test]
    fn a_controller_done_when_it_said_is_seen_within_the_near_resolution() {
        for budget in [1, 7, 300, 4500, 60_000] {
            let b = Duration::from_millis(budget);
            let l = looks(&mut poller(budget), b + Duration::from_millis(5));
            let seen = seen_at(&l, b);
            assert!(
                seen - b <= Duration::from_micros(250),
                "{budget} ms: {seen:?}"
            );
        }
    }

    #[test]
    fn an_early_or_late_controller_is_seen_within_what_the_schedule_allows() {
        for budget_ms in [300, 4500] {
            let b = Duration::from_millis(budget_ms);
            for done_ms in [20, 150, 290, 310, 450, 900, 4000, 9000] {
                let done = Duration::from_millis(done_ms);
                let l = looks(&mut poller(budget_ms), done + Duration::from_millis(300));
                let lag = seen_at(&l, done) - done;
                assert!(
                    lag <= allowed(b, done),
                    "budget {budget_ms} ms, done at {done_ms} ms, seen {lag:?} late"
                );
            }
        }
    }

    #[test]
    fn late_wake_ups_spread_the_looks_out_and_punctual_ones_bring_them_back() {
        let mut p = poller(300);
        let mut t = Duration::from_millis(50);
        // Every wake-up comes 2 ms late: the machine is busy.
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let d = p.next_delay(t);
            p.slept(d, d + Duration::from_millis(2));
            t += d + Duration::from_millis(2);
            last = d;
        }
        assert!(last >= Duration::from_millis(7), "{last:?}");
        // Capped: never more than max(16 ms, t / 8).
        let mut q = poller(300);
        for _ in 0..20 {
            q.slept(Duration::from_millis(1), Duration::from_secs(1));
        }
        assert_eq!(
            q.next_delay(Duration::from_millis(50)),
            Duration::from_millis(16)
        );
        assert_eq!(
            q.next_delay(Duration::from_millis(800)),
            Duration::from_millis(100)
        );
        // Punctual again: back to the schedule.
        for _ in 0..40 {
            let d = p.next_delay(t);
            p.slept(d, d);
            t += d;
        }
        assert!(p.next_delay(t) <= allowed(Duration::from_millis(300), t));
    }

    #[test]
    fn after_a_restart_the_looks_are_quick_again() {
        let mut p = poller(300);
        let t = Duration::from_secs(5);
        for _ in 0..20 {
            p.next_delay(t);
        }
        assert_eq!(p.next_delay(t), t / 16);
        p.restart();
        let d: Vec<u128> = (0..7).map(|_| p.next_delay(t).as_micros()).collect();
        assert_eq!(d, [50, 100, 200, 400, 800, 1600, 2000]);
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
