//! Two-phase shutdown (NVMe Base Specification 1.4, §7.6.2 "Shutdown").
//!
//! * [`Controller::begin`] stops new I/O, lets the command in flight
//!   complete, deletes the I/O submission queue and then the I/O completion
//!   queue, writes CC.SHN=01b and returns the time the controller says it
//!   needs (RTD3E). It never waits for CSTS.SHST.
//! * [`Controller::finish`] polls CSTS.SHST until it reads 10b or the
//!   deadline passes — a first look at once, then on the schedule of
//!   [`ShutdownPolling`](crate::ShutdownPolling): quick at first, never
//!   more than a sixty-fourth of the time already waited apart, closing in
//!   on the budget the controller announced, and spread out when the
//!   process's wake-ups come late (a machine busy with many waiting
//!   drivers) — and reports how it ended and how long the controller took,
//!   measured from the CC.SHN write.

use std::fmt;
use std::sync::TryLockError;
use std::time::Duration;

use log::{info, warn};
use nvme_spec::cmd::SubmissionEntry;
use nvme_spec::{ShutdownNotification, ShutdownStatus};
use pcid_hw::{Clock, DmaAllocator, RegisterIo};

use crate::controller::{Controller, IoPath};
use crate::lifecycle::{BeginReport, Lifecycle};
use crate::poll::{Backoff, ShutdownPoller};
use crate::{lock, NvmeError};

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// CSTS.SHST reached 10b after the normal shutdown notification.
    Clean,
    /// The normal shutdown did not complete in time; the driver wrote
    /// CC.SHN=10b (abrupt) and that completed (CSTS.SHST=10b).
    Abrupt,
    /// CSTS.SHST did not reach 10b before the deadline.
    TimedOut {
        /// Whether the driver escalated to an abrupt shutdown (CC.SHN=10b).
        escalated: bool,
        /// The last shutdown status read.
        last_status: ShutdownStatus,
    },
    /// The controller reported fatal status (CSTS.CFS=1).
    ControllerFatal,
    /// The registers read all-ones: the device is gone.
    DeviceGone,
}

impl ShutdownOutcome {
    /// Whether the controller completed a normal shutdown.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Clean)
    }
}

/// What [`Controller::finish`] observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishObservation {
    /// How the shutdown ended.
    pub outcome: ShutdownOutcome,
    /// From the CC.SHN=01b write in `begin` to the observation that ended
    /// the wait (CSTS.SHST=10b, CFS, all-ones, or the deadline).
    pub duration: Duration,
    /// Time spent inside `finish`.
    pub waited: Duration,
    /// Number of CSTS reads.
    pub polls: u32,
}

impl fmt::Display for FinishObservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        match self.outcome {
            ShutdownOutcome::Clean => write!(
                f,
                "CSTS.SHST=10b after {secs:.3} s ({} looks)",
                self.polls
            ),
            ShutdownOutcome::Abrupt => write!(
                f,
                "normal shutdown did not complete; abrupt shutdown (CC.SHN=10b) completed after {secs:.3} s"
            ),
            ShutdownOutcome::TimedOut {
                escalated,
                last_status,
            } => write!(
                f,
                "CSTS.SHST still {last_status:?} after {secs:.3} s{}",
                if escalated {
                    " (escalated to abrupt shutdown, CC.SHN=10b)"
                } else {
                    ""
                }
            ),
            ShutdownOutcome::ControllerFatal => {
                write!(f, "controller fatal status (CSTS.CFS=1) after {secs:.3} s")
            }
            ShutdownOutcome::DeviceGone => {
                write!(f, "device gone (registers read all-ones) after {secs:.3} s")
            }
        }
    }
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> Controller<R, D, C> {
    /// Whether shutdown has begun (new I/O is refused).
    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.get() != Lifecycle::Running
    }

    /// First phase of shutdown. Refuses new I/O from now on
    /// ([`NvmeError::ShuttingDown`]), waits for the request in progress (an
    /// accepted [`Controller::io`] request runs to its end; bounded by the
    /// command timeout), flushes every namespace when the controller has a
    /// volatile write cache (NVM Flush, so that completed writes are durable
    /// before anything else happens), deletes I/O submission queue 1 and
    /// then I/O completion queue 1, writes CC.SHN=01b, and returns the
    /// budget. Does not wait for the controller to finish. Calling it again
    /// returns the first report.
    ///
    /// A failure to delete the queues is logged and reported in
    /// [`BeginReport::queues_deleted`]; the shutdown notification is still
    /// written, since the controller flushes its cache on it either way.
    pub fn begin(&self) -> Result<BeginReport, NvmeError> {
        self.begin_inner(None)
    }

    /// Like [`Controller::begin`], but the quiescing steps (waiting for the
    /// command in flight, deleting the I/O queues) are cut short so that the
    /// shutdown notification is written within about `limit`; a step cut
    /// short is logged and shows as `queues_deleted: false`.
    pub fn begin_within(&self, limit: Duration) -> Result<BeginReport, NvmeError> {
        self.begin_inner(Some(limit))
    }

    /// Takes the I/O path out of service once the command in flight (if any)
    /// has completed, waiting until `end` at most. `Err(())` when the
    /// command did not complete in time.
    fn take_io_path(&self, end: Option<Duration>) -> Result<Option<IoPath<D::Buffer>>, ()> {
        let Some(end) = end else {
            // Every I/O command runs under this lock, so holding it means no
            // I/O command is outstanding; the wait is bounded by the command
            // timeout of the one in flight.
            return Ok(lock(&self.io).take());
        };
        let mut backoff = Backoff::new(self.options.poll_initial, self.options.poll_max);
        loop {
            match self.io.try_lock() {
                Ok(mut guard) => return Ok(guard.take()),
                Err(TryLockError::Poisoned(p)) => return Ok(p.into_inner().take()),
                Err(TryLockError::WouldBlock) => {}
            }
            let now = self.clock.now();
            if now >= end {
                return Err(());
            }
            self.clock.sleep(backoff.next_delay().min(end - now));
        }
    }

    /// Flushes every namespace through the retired I/O path, each command
    /// bounded by what is left of begin's limit. `true` when all completed.
    fn flush_all(&self, io: &mut IoPath<D::Buffer>, remaining: &dyn Fn() -> Duration) -> bool {
        if let Some(reason) = &io.disabled {
            warn!("{}: not flushing: {reason}", self.name);
            return false;
        }
        for ns in self.namespaces() {
            let mut ctx = self.wait_ctx();
            ctx.timeout = remaining().min(self.options.command_timeout);
            if let Err(e) = io
                .queue
                .execute(&ctx, "Flush", SubmissionEntry::flush(0, ns.nsid))
            {
                warn!(
                    "{}: flushing namespace {} before shutdown: {e}; the shutdown \
                     notification still asks the controller to flush its cache",
                    self.name, ns.nsid
                );
                return false;
            }
        }
        true
    }

    fn begin_inner(&self, limit: Option<Duration>) -> Result<BeginReport, NvmeError> {
        let mut st = lock(&self.shutdown);
        if let Some(report) = &st.begin {
            return Ok(report.clone());
        }
        let start = self.clock.now();
        let end = limit.map(|l| start.saturating_add(l));
        let remaining = || match end {
            Some(end) => end.saturating_sub(self.clock.now()),
            None => self.options.command_timeout,
        };
        self.lifecycle.set(Lifecycle::Quiescing);
        let mut queues_deleted = false;
        let mut flushed = !self.info.volatile_write_cache;
        match self.take_io_path(end) {
            Err(()) => warn!(
                "{}: the I/O request in progress did not complete in time; \
                 sending the shutdown notification without flushing or deleting the I/O queues",
                self.name
            ),
            Ok(None) => {}
            Ok(Some(mut io)) => {
                if !flushed {
                    flushed = self.flush_all(&mut io, &remaining);
                }
                let qid = io.queue.qid();
                let r = self
                    .admin_command_within(
                        "Delete I/O Submission Queue",
                        SubmissionEntry::delete_io_sq(0, qid),
                        remaining(),
                    )
                    .and_then(|_| {
                        self.admin_command_within(
                            "Delete I/O Completion Queue",
                            SubmissionEntry::delete_io_cq(0, qid),
                            remaining(),
                        )
                    });
                st.retired_io = Some(io);
                match r {
                    Ok(_) => queues_deleted = true,
                    Err(e @ NvmeError::DeviceGone { .. }) => return Err(e),
                    Err(e) => warn!(
                        "{}: {e}; sending the shutdown notification anyway",
                        self.name
                    ),
                }
            }
        }
        let csts = self.regs.csts("read CSTS before shutdown notification")?;
        if csts.cfs() {
            warn!(
                "{}: controller fatal status before shutdown notification",
                self.name
            );
        }
        let cc = self.regs.cc("write CC.SHN=01b")?;
        self.regs
            .set_cc(cc.with_shutdown(ShutdownNotification::Normal));
        let notified_at = self.clock.now();
        // One look (not a wait): a controller that completes at once is
        // timed from here rather than from whenever finish is called.
        // A device gone here is found by finish's first look.
        let csts = self.regs.csts("look at CSTS.SHST after CC.SHN=01b");
        if csts.is_ok_and(|c| c.shutdown_status() == ShutdownStatus::Complete) {
            st.completed_at = Some(self.clock.now());
        }
        self.lifecycle.set(Lifecycle::Notified);
        let budget = if self.info.rtd3e_us == 0 {
            self.options.default_shutdown_budget
        } else {
            Duration::from_micros(u64::from(self.info.rtd3e_us))
        };
        info!(
            "{}: shutdown begun (CC.SHN=01b{}{}); budget {:.3} s",
            self.name,
            if flushed && self.info.volatile_write_cache {
                ", namespaces flushed"
            } else {
                ""
            },
            if queues_deleted {
                ", I/O queues deleted"
            } else {
                ""
            },
            budget.as_secs_f64()
        );
        let report = BeginReport {
            budget,
            rtd3e_us: self.info.rtd3e_us,
            flushed,
            queues_deleted,
            notified_at,
        };
        st.begin = Some(report.clone());
        Ok(report)
    }

    /// Second phase of shutdown: polls CSTS.SHST until it reads 10b or
    /// `deadline` (relative to now) passes. The first look is immediate;
    /// later looks follow [`crate::Options::shutdown_polling`] (see
    /// [`ShutdownPolling`](crate::ShutdownPolling)), timed from the CC.SHN
    /// write and informed by the budget `begin` reported. With
    /// [`crate::Options::escalate_to_abrupt`], a shutdown still incomplete
    /// when only the abrupt reserve of the deadline is left is escalated to
    /// CC.SHN=10b. Fails only with [`NvmeError::NotBegun`].
    pub fn finish(&self, deadline: Duration) -> Result<FinishObservation, NvmeError> {
        let st = lock(&self.shutdown);
        let begun = st.begin.as_ref().ok_or(NvmeError::NotBegun)?;
        let notified_at = begun.notified_at;
        let budget = begun.budget;
        let completed_in_begin = st.completed_at;
        let start = self.clock.now();
        let end = start.saturating_add(deadline);
        let fraction = self.options.abrupt_reserve_fraction;
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let reserve = Duration::try_from_secs_f64(deadline.as_secs_f64() * fraction)
            .unwrap_or(Duration::ZERO)
            .min(self.options.abrupt_reserve_max)
            .min(deadline);
        let escalate_at = if self.options.escalate_to_abrupt {
            Some(end.saturating_sub(reserve))
        } else {
            None
        };
        let mut poller = ShutdownPoller::new(
            self.options.shutdown_polling,
            budget,
            begun.rtd3e_us != 0,
            self.options.poll_initial,
        );
        let mut escalated = false;
        let mut polls: u32 = 0;
        let (outcome, observed) = loop {
            let csts = self.regs.csts("poll CSTS.SHST");
            polls = polls.saturating_add(1);
            let now = self.clock.now();
            let Ok(csts) = csts else {
                // The only error of a register read: all-ones.
                break (ShutdownOutcome::DeviceGone, now);
            };
            if csts.cfs() {
                break (ShutdownOutcome::ControllerFatal, now);
            }
            let shst = csts.shutdown_status();
            if shst == ShutdownStatus::Complete {
                if escalated {
                    break (ShutdownOutcome::Abrupt, now);
                }
                break (ShutdownOutcome::Clean, completed_in_begin.unwrap_or(now));
            }
            if now >= end {
                break (
                    ShutdownOutcome::TimedOut {
                        escalated,
                        last_status: shst,
                    },
                    now,
                );
            }
            if escalate_at.is_some_and(|at| !escalated && now >= at) {
                let Ok(cc) = self.regs.cc("write CC.SHN=10b") else {
                    break (ShutdownOutcome::DeviceGone, now);
                };
                warn!(
                    "{}: normal shutdown incomplete after {:.3} s (SHST {shst:?}); escalating to abrupt shutdown",
                    self.name,
                    now.saturating_sub(notified_at).as_secs_f64()
                );
                self.regs
                    .set_cc(cc.with_shutdown(ShutdownNotification::Abrupt));
                escalated = true;
                poller.restart();
                continue;
            }
            let next_event = match escalate_at {
                Some(at) if !escalated => at.min(end),
                _ => end,
            };
            let delay = poller
                .next_delay(now.saturating_sub(notified_at))
                .min(next_event.saturating_sub(now));
            self.clock.sleep(delay);
            poller.slept(delay, self.clock.now().saturating_sub(now));
        };
        let report = FinishObservation {
            outcome,
            duration: observed.saturating_sub(notified_at),
            waited: self.clock.now().saturating_sub(start),
            polls,
        };
        if report.outcome.is_clean() {
            info!("{}: shutdown complete: {report}", self.name);
        } else {
            warn!("{}: shutdown did not complete cleanly: {report}", self.name);
        }
        Ok(report)
    }
}
