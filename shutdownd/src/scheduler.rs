//! The shutdown scheduler: a state machine polled with the current time.
//!
//! The scheduler does no I/O and reads no clock. The caller (see [`crate::run`])
//! feeds it the messages pcid sends ([`Scheduler::handle`]), calls
//! [`Scheduler::poll`] to get the messages to send, and sleeps at most until
//! [`Scheduler::next_wakeup`]. Times are [`Duration`]s since any origin the
//! caller picks, so unit tests drive it with a fake clock.
//!
//! # Two-phase mode (the default)
//! On the first poll every device that is free to start gets its first message:
//! `Begin` for a two-phase driver, `Shutdown` for a one-phase driver (a one-phase
//! driver's whole shutdown is that single message, so it runs concurrently with
//! everybody else's). Nothing waits for an answer before every first message is
//! out. Each `BeginAck` is answered with `Finish` on the next poll, with a
//! deadline derived from the budget the driver announced
//! ([`Config::finish_deadline`]).
//!
//! Consumers come before their providers ([`crate::plan`]): a participant
//! (a file system) before the disk it registered, a device before its parent
//! bridge. A provider gets its `Begin` only after every consumer has a final
//! outcome (its `FinishAck`, or a timeout, or its driver dying). The Linux
//! asynchronous shutdown series lost exactly this ordering; here a bridge
//! never begins while a child behind it is still shutting down, and a disk
//! never begins while the file system on it is still writing. Everything not
//! ordered runs at once.
//!
//! Participants are asked through pcid with the `Participant*` messages
//! (PROTOCOL.md §14); participant ids with the top bit set are the caller's
//! own (see [`crate::run`]), handled like any other.
//!
//! # Sequential mode
//! One device at a time, children first: `Begin`, wait for `BeginAck`, `Finish`,
//! wait for `FinishAck`, then the next device. This is what kernels do today and
//! serves as the baseline.
//!
//! # Deadlines
//! * A `Begin` (or one-phase `Shutdown`) carries [`Config::begin_timeout`]
//!   (resp. [`Config::one_phase_timeout`]); a `Finish` carries the derived finish
//!   deadline. Each is clamped so that it ends before the global deadline.
//! * The scheduler waits for the answer until the deadline it sent plus
//!   [`Config::ack_grace`] (time for the reply to travel back), never past the
//!   global deadline. No answer by then: outcome `no-response`.
//! * At the global deadline ([`Config::global_deadline`], counted from
//!   [`Scheduler::new`]) every device without an outcome gets `no-response`, and
//!   the scheduler is done. The caller therefore finishes within the global
//!   deadline plus its own processing time.
//!
//! Devices whose driver declared no shutdown support get `not-supported` without
//! any message; a driver that never announced itself gets `no-response`. A
//! device pcid lists as *gone* still gets its first message, like any other:
//! pcid answers it at once with what happened to the driver — `driver-died`
//! with its exit status, or `protocol-violation` naming the violation of a
//! driver that may well still be running — so the outcome says what happened,
//! whether the driver went away before the device list was taken or after.
//!
//! A `DeviceError` answering a request concludes the device (`not-supported`
//! for a refusal, `failed` for a protocol violation, `driver-died`, …) and
//! nothing more is sent to it: in particular a refused `Begin` is not retried
//! as a one-phase `Shutdown`.

use std::collections::HashMap;
use std::time::Duration;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{
    ControlMessage, DeviceErrorKind, DriverState, FinishOutcome, ShutdownKind, ShutdownSupport,
};

use crate::ms;
use crate::plan::{Plan, Subject};

/// How devices are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Begin every device, then collect the finishes (children before parents).
    TwoPhase,
    /// Begin and finish one device at a time (today's kernels; the baseline).
    Sequential,
}

impl Mode {
    /// Name used in reports: `two-phase` or `sequential`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TwoPhase => "two-phase",
            Mode::Sequential => "sequential",
        }
    }
}

/// Scheduler settings. [`Config::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Two-phase or sequential.
    pub mode: Mode,
    /// Poweroff or reboot (passed on to drivers).
    pub kind: ShutdownKind,
    /// Bound on the whole shutdown, from [`Scheduler::new`]. Default 120 s
    /// (large enough for the sequential baseline of 16 drives at 4.5 s).
    pub global_deadline: Duration,
    /// Deadline sent with `Begin` for the driver to answer `BeginAck`. Default 2 s.
    pub begin_timeout: Duration,
    /// Deadline sent with a one-phase `Shutdown`. Default 10 s.
    pub one_phase_timeout: Duration,
    /// Finish deadline = max(budget × `finish_factor_percent` / 100 + `finish_margin`,
    /// `finish_floor`). Default 150 %.
    pub finish_factor_percent: u32,
    /// See `finish_factor_percent`. Default 500 ms.
    pub finish_margin: Duration,
    /// See `finish_factor_percent`. Default 1 s.
    pub finish_floor: Duration,
    /// Extra time the scheduler waits for an answer after the deadline it sent,
    /// for the answer to travel back through pcid. Default 250 ms.
    pub ack_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::TwoPhase,
            kind: ShutdownKind::Poweroff,
            global_deadline: Duration::from_secs(120),
            begin_timeout: Duration::from_secs(2),
            one_phase_timeout: Duration::from_secs(10),
            finish_factor_percent: 150,
            finish_margin: Duration::from_millis(500),
            finish_floor: Duration::from_secs(1),
            ack_grace: Duration::from_millis(250),
        }
    }
}

impl Config {
    /// The finish deadline for a device that announced `budget`, before clamping
    /// by the global deadline: max(budget × factor + margin, floor).
    pub fn finish_deadline(&self, budget: Duration) -> Duration {
        let scaled = budget.saturating_mul(self.finish_factor_percent) / 100;
        scaled
            .saturating_add(self.finish_margin)
            .max(self.finish_floor)
    }
}

/// Final result for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The driver reported a completed normal shutdown.
    Clean,
    /// The driver escalated to an abrupt shutdown.
    Abrupt,
    /// The driver reported that the device did not finish before its deadline.
    TimedOut,
    /// The driver or pcid reported a failure (see the detail).
    Failed,
    /// No answer before the scheduler's deadline.
    NoResponse,
    /// The driver process exited or closed its channel.
    DriverDied,
    /// The driver takes no part in shutdown.
    NotSupported,
}

impl Outcome {
    /// Name used in reports, e.g. `timed-out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::Abrupt => "abrupt",
            Outcome::TimedOut => "timed-out",
            Outcome::Failed => "failed",
            Outcome::NoResponse => "no-response",
            Outcome::DriverDied => "driver-died",
            Outcome::NotSupported => "not-supported",
        }
    }

    /// Whether this outcome counts as success for the exit status
    /// (`clean`, or `not-supported`: nothing was expected of the device).
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Clean | Outcome::NotSupported)
    }
}

impl From<FinishOutcome> for Outcome {
    fn from(o: FinishOutcome) -> Self {
        match o {
            FinishOutcome::Clean => Outcome::Clean,
            FinishOutcome::Abrupt => Outcome::Abrupt,
            FinishOutcome::TimedOut => Outcome::TimedOut,
            FinishOutcome::Failed => Outcome::Failed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    AwaitBeginAck { id: u32, until: Duration },
    BeginAcked,
    AwaitFinishAck { id: u32, until: Duration },
    Done,
}

/// What the scheduler knows about one device or participant. Times are on
/// the caller's clock.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// The device or participant as pcid listed it.
    pub subject: Subject,
    /// Budget from `BeginAck`.
    pub budget: Option<Duration>,
    /// When `Begin` (or one-phase `Shutdown`) was sent.
    pub begin_sent: Option<Duration>,
    /// Deadline carried by that `Begin` / `Shutdown`.
    pub begin_deadline: Option<Duration>,
    /// When `BeginAck` arrived.
    pub begin_ack: Option<Duration>,
    /// When `Finish` was sent.
    pub finish_sent: Option<Duration>,
    /// Deadline carried by `Finish`.
    pub finish_deadline: Option<Duration>,
    /// When `FinishAck` arrived.
    pub finish_ack: Option<Duration>,
    /// Shutdown time measured by the driver (from `FinishAck`).
    pub elapsed: Option<Duration>,
    /// Final outcome, once known.
    pub outcome: Option<Outcome>,
    /// When the outcome became known.
    pub done_at: Option<Duration>,
    /// Driver's or scheduler's explanation (may be empty).
    pub detail: String,
    phase: Phase,
}

/// A step worth telling the user about, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressKind {
    /// `Begin` was sent.
    BeginSent,
    /// A one-phase `Shutdown` was sent.
    ShutdownSent,
    /// `BeginAck` arrived (budget in the record).
    BeginAcked,
    /// `Finish` was sent.
    FinishSent,
    /// The device has its final outcome.
    Done(Outcome),
}

/// One progress event: what happened to which device (index into
/// [`Scheduler::records`]) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// When it happened (caller's clock).
    pub at: Duration,
    /// Index of the device.
    pub device: usize,
    /// What happened.
    pub kind: ProgressKind,
}

/// What [`Scheduler::handle`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The message advanced a device.
    Applied,
    /// The message did not match anything outstanding (late, duplicate, unknown
    /// id, wrong address); the text says why. The caller logs it as a warning.
    Ignored(String),
    /// An event about a device whose outcome is already recorded, such as its
    /// driver exiting after its `FinishAck`: expected, logged at debug level.
    AfterOutcome(String),
}

/// The scheduler. See the module documentation.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    plan: Plan,
    records: Vec<DeviceRecord>,
    start: Duration,
    global_end: Duration,
    first_send: Option<Duration>,
    finished_at: Option<Duration>,
    /// When a poll first found the global deadline passed (with devices open).
    deadline_reached: Option<Duration>,
    next_id: u32,
    outstanding: HashMap<u32, usize>,
    progress: Vec<Progress>,
}

impl Scheduler {
    /// Creates a scheduler for `plan`; `now` starts the global deadline.
    pub fn new(plan: Plan, config: Config, now: Duration) -> Self {
        let records = plan
            .subjects()
            .iter()
            .map(|subject| DeviceRecord {
                subject: subject.clone(),
                budget: None,
                begin_sent: None,
                begin_deadline: None,
                begin_ack: None,
                finish_sent: None,
                finish_deadline: None,
                finish_ack: None,
                elapsed: None,
                outcome: None,
                done_at: None,
                detail: String::new(),
                phase: Phase::Pending,
            })
            .collect();
        let global_end = now.saturating_add(config.global_deadline);
        let mut s = Self {
            config,
            plan,
            records,
            start: now,
            global_end,
            first_send: None,
            finished_at: None,
            deadline_reached: None,
            next_id: 1,
            outstanding: HashMap::new(),
            progress: Vec::new(),
        };
        for i in 0..s.records.len() {
            let subject = &s.records[i].subject;
            match (subject.state(), subject.support()) {
                // pcid answers the request with why the driver is gone.
                (DriverState::Gone, _) => {}
                (DriverState::Starting, _) => s.conclude(
                    i,
                    now,
                    Outcome::NoResponse,
                    "driver never announced its shutdown support".into(),
                ),
                (DriverState::Running, ShutdownSupport::None) => s.conclude(
                    i,
                    now,
                    Outcome::NotSupported,
                    "no shutdown support declared (or the driver never spoke the protocol)".into(),
                ),
                _ => {}
            }
        }
        s
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plan in use.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Per-subject state, indexed like [`Plan::subjects`].
    pub fn records(&self) -> &[DeviceRecord] {
        &self.records
    }

    /// When the scheduler was created (origin of the global deadline).
    pub fn start(&self) -> Duration {
        self.start
    }

    /// When the first `Begin`/`Shutdown` was sent, if any was.
    pub fn first_send(&self) -> Option<Duration> {
        self.first_send
    }

    /// When the last device got its outcome, once all have one.
    pub fn finished_at(&self) -> Option<Duration> {
        self.finished_at
    }

    /// When the global deadline passes (on the caller's clock).
    pub fn global_end(&self) -> Duration {
        self.global_end
    }

    /// The first time (a poll, a message or an abort) the scheduler saw the
    /// global deadline passed while devices were still without an outcome —
    /// they all got one at that moment; `None` if every device had its
    /// outcome before.
    pub fn deadline_reached(&self) -> Option<Duration> {
        self.deadline_reached
    }

    /// True when every device has an outcome.
    pub fn is_done(&self) -> bool {
        self.records.iter().all(|r| r.phase == Phase::Done)
    }

    /// Takes the progress events recorded since the last call.
    pub fn take_progress(&mut self) -> Vec<Progress> {
        std::mem::take(&mut self.progress)
    }

    /// The latest time the caller may sleep until before calling [`Scheduler::poll`]
    /// again if no message arrives; `None` once done.
    pub fn next_wakeup(&self) -> Option<Duration> {
        if self.is_done() {
            return None;
        }
        let mut t = self.global_end;
        for r in &self.records {
            match r.phase {
                Phase::AwaitBeginAck { until, .. } | Phase::AwaitFinishAck { until, .. } => {
                    t = t.min(until)
                }
                // Work to do right away.
                Phase::BeginAcked => t = t.min(self.start),
                Phase::Pending | Phase::Done => {}
            }
        }
        Some(t)
    }

    /// Advances time to `now`: applies timeouts and the global deadline, and
    /// returns the messages to send to pcid, in order.
    pub fn poll(&mut self, now: Duration) -> Vec<ControlMessage> {
        let mut out = Vec::new();
        if self.is_done() {
            return out;
        }
        self.observe(now);
        for i in 0..self.records.len() {
            match self.records[i].phase {
                Phase::AwaitBeginAck { until, .. } if now >= until => {
                    let what = if self.records[i].subject.support() == ShutdownSupport::OnePhase {
                        "FinishAck to Shutdown"
                    } else {
                        "BeginAck"
                    };
                    let detail = self.wait_detail(what, self.records[i].begin_deadline, until);
                    self.conclude(i, now, Outcome::NoResponse, detail);
                }
                Phase::AwaitFinishAck { until, .. } if now >= until => {
                    let detail =
                        self.wait_detail("FinishAck", self.records[i].finish_deadline, until);
                    self.conclude(i, now, Outcome::NoResponse, detail);
                }
                _ => {}
            }
        }
        if now >= self.global_end {
            self.conclude_open_at_deadline(now);
            return out;
        }
        for i in 0..self.records.len() {
            if self.records[i].phase == Phase::BeginAcked {
                out.push(self.send_finish(i, now));
            }
        }
        match self.config.mode {
            Mode::TwoPhase => {
                for k in 0..self.plan.order().len() {
                    let i = self.plan.order()[k];
                    if self.records[i].phase == Phase::Pending && self.consumers_done(i) {
                        out.push(self.send_first(i, now));
                    }
                }
            }
            Mode::Sequential => {
                let busy = self
                    .records
                    .iter()
                    .any(|r| !matches!(r.phase, Phase::Pending | Phase::Done));
                if !busy {
                    let next = self
                        .plan
                        .order()
                        .iter()
                        .copied()
                        .find(|&i| self.records[i].phase == Phase::Pending);
                    if let Some(i) = next {
                        out.push(self.send_first(i, now));
                    }
                }
            }
        }
        out
    }

    /// Applies a message received from pcid at time `now`.
    ///
    /// When `now` is at or past the global deadline, the message is applied
    /// and every device still without an outcome gets `no-response` at once
    /// (as [`Scheduler::poll`] would): once shutdownd has seen the deadline
    /// pass, it waits for nothing more.
    pub fn handle(&mut self, now: Duration, msg: ControlMessage) -> Handled {
        self.observe(now);
        let handled = self.handle_message(now, msg);
        if now >= self.global_end {
            self.conclude_open_at_deadline(now);
        }
        handled
    }

    /// Notes the first time the deadline is seen passed with devices open.
    fn observe(&mut self, now: Duration) {
        if now >= self.global_end && !self.is_done() {
            self.deadline_reached.get_or_insert(now);
        }
    }

    /// Gives every device without an outcome `no-response` for the global
    /// deadline.
    fn conclude_open_at_deadline(&mut self, now: Duration) {
        let limit = ms(self.config.global_deadline);
        for i in 0..self.records.len() {
            let detail = match self.records[i].phase {
                Phase::Done => continue,
                Phase::Pending => {
                    format!("not started: global deadline of {limit} ms passed first")
                }
                Phase::BeginAcked => {
                    format!("global deadline of {limit} ms passed before Finish")
                }
                Phase::AwaitBeginAck { .. } | Phase::AwaitFinishAck { .. } => {
                    format!("global deadline of {limit} ms passed while waiting for an answer")
                }
            };
            self.conclude(i, now, Outcome::NoResponse, detail);
        }
    }

    fn handle_message(&mut self, now: Duration, msg: ControlMessage) -> Handled {
        match msg {
            ControlMessage::BeginAck {
                id,
                address,
                budget,
            } => self.begin_ack(now, id, Key::Device(address), budget),
            ControlMessage::ParticipantBeginAck {
                id,
                participant,
                budget,
            } => self.begin_ack(now, id, Key::Participant(participant), budget),
            ControlMessage::FinishAck {
                id,
                address,
                outcome,
                elapsed,
                detail,
            } => self.finish_ack(now, id, Key::Device(address), outcome, elapsed, detail),
            ControlMessage::ParticipantFinishAck {
                id,
                participant,
                outcome,
                elapsed,
                detail,
            } => self.finish_ack(
                now,
                id,
                Key::Participant(participant),
                outcome,
                elapsed,
                detail,
            ),
            ControlMessage::DeviceError {
                id,
                address,
                kind,
                message,
            } => self.error(now, id, Key::Device(address), kind, message),
            ControlMessage::ParticipantError {
                id,
                participant,
                kind,
                message,
            } => self.error(now, id, Key::Participant(participant), kind, message),
            ControlMessage::Error { id, message } => match self.outstanding.get(&id).copied() {
                Some(i) if id != 0 => {
                    self.conclude(i, now, Outcome::Failed, format!("pcid: {message}"));
                    Handled::Applied
                }
                _ => Handled::Ignored(format!("pcid reported an error (request {id}): {message}")),
            },
            other => Handled::Ignored(format!("unexpected message from pcid: {other:?}")),
        }
    }

    fn begin_ack(&mut self, now: Duration, id: u32, key: Key, budget: Duration) -> Handled {
        let i = match self.match_reply(id, key, "BeginAck") {
            Ok(i) => i,
            Err(why) => return Handled::Ignored(why),
        };
        match self.records[i].phase {
            Phase::AwaitBeginAck { id: want, .. }
                if want == id && self.records[i].subject.support() == ShutdownSupport::TwoPhase =>
            {
                self.outstanding.remove(&id);
                let r = &mut self.records[i];
                r.budget = Some(budget);
                r.begin_ack = Some(now);
                r.phase = Phase::BeginAcked;
                self.progress.push(Progress {
                    at: now,
                    device: i,
                    kind: ProgressKind::BeginAcked,
                });
                Handled::Applied
            }
            _ => Handled::Ignored(format!(
                "{key}: BeginAck (request {id}) does not answer a Begin in progress"
            )),
        }
    }

    fn finish_ack(
        &mut self,
        now: Duration,
        id: u32,
        key: Key,
        outcome: FinishOutcome,
        elapsed: Duration,
        detail: String,
    ) -> Handled {
        let i = match self.match_reply(id, key, "FinishAck") {
            Ok(i) => i,
            Err(why) => return Handled::Ignored(why),
        };
        let one_phase = self.records[i].subject.support() == ShutdownSupport::OnePhase;
        match self.records[i].phase {
            Phase::AwaitFinishAck { id: want, .. } if want == id => {}
            Phase::AwaitBeginAck { id: want, .. } if want == id && one_phase => {}
            _ => {
                return Handled::Ignored(format!(
                "{key}: FinishAck (request {id}) does not answer a Finish or Shutdown in progress"
            ))
            }
        }
        self.outstanding.remove(&id);
        let r = &mut self.records[i];
        r.finish_ack = Some(now);
        r.elapsed = Some(elapsed);
        self.conclude(i, now, outcome.into(), detail);
        Handled::Applied
    }

    fn error(
        &mut self,
        now: Duration,
        id: u32,
        key: Key,
        kind: DeviceErrorKind,
        message: String,
    ) -> Handled {
        let i = if id == 0 {
            match self.records.iter().position(|r| Key::of(&r.subject) == key) {
                Some(i) => i,
                None => {
                    return Handled::Ignored(format!(
                        "{key}: error event for something not in the list: {message}"
                    ))
                }
            }
        } else {
            match self.match_reply(id, key, "DeviceError") {
                Ok(i) => i,
                Err(why) => return Handled::Ignored(why),
            }
        };
        if self.records[i].phase == Phase::Done {
            return Handled::AfterOutcome(format!(
                "{key}: error after its outcome was recorded: {message}"
            ));
        }
        let (outcome, what) = match kind {
            DeviceErrorKind::DriverDied => (Outcome::DriverDied, "driver died"),
            DeviceErrorKind::NotSupported => (Outcome::NotSupported, "not supported"),
            DeviceErrorKind::ProtocolViolation => (Outcome::Failed, "protocol violation"),
            DeviceErrorKind::UnknownDevice => (Outcome::Failed, "pcid knows no such device"),
            DeviceErrorKind::Busy => (Outcome::Failed, "pcid is busy with another shutdown"),
        };
        let what = match (&self.records[i].subject, kind) {
            (Subject::Participant(_), DeviceErrorKind::DriverDied) => "participant went away",
            (Subject::Participant(_), DeviceErrorKind::UnknownDevice) => {
                "pcid knows no such participant"
            }
            _ => what,
        };
        let detail = if message.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {message}")
        };
        self.conclude(i, now, outcome, detail);
        Handled::Applied
    }

    /// Ends the run early (e.g. the connection to pcid was lost): every device
    /// without an outcome gets `no-response` with `reason`.
    pub fn abort(&mut self, now: Duration, reason: &str) {
        self.observe(now);
        for i in 0..self.records.len() {
            if self.records[i].phase != Phase::Done {
                self.conclude(i, now, Outcome::NoResponse, reason.to_string());
            }
        }
    }

    fn consumers_done(&self, i: usize) -> bool {
        self.plan
            .consumers(i)
            .iter()
            .all(|&c| self.records[c].phase == Phase::Done)
    }

    /// The chain that decided when the last outcome came: starting from the
    /// subject that finished last, each step back is the consumer that was
    /// the last to finish before its provider could begin. Listed first to
    /// last; empty before anything finished.
    pub fn critical_path(&self) -> Vec<usize> {
        let done = |i: usize| self.records[i].done_at;
        let Some(mut cur) = (0..self.records.len())
            .filter(|&i| done(i).is_some())
            .max_by_key(|&i| (done(i), std::cmp::Reverse(i)))
        else {
            return Vec::new();
        };
        let mut path = vec![cur];
        while let Some(gate) = self
            .plan
            .consumers(cur)
            .iter()
            .copied()
            .filter(|&c| done(c).is_some())
            .max_by_key(|&c| (done(c), std::cmp::Reverse(c)))
        {
            if path.contains(&gate) {
                break;
            }
            path.push(gate);
            cur = gate;
        }
        path.reverse();
        path
    }

    fn remaining(&self, now: Duration) -> Duration {
        self.global_end.saturating_sub(now)
    }

    fn alloc_id(&mut self, device: usize) -> u32 {
        let id = self.next_id;
        // Id 0 means "unsolicited" on the control channel; skip it on wrap-around.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.outstanding.insert(id, device);
        id
    }

    fn send_first(&mut self, i: usize, now: Duration) -> ControlMessage {
        let remaining = self.remaining(now);
        let one_phase = self.records[i].subject.support() == ShutdownSupport::OnePhase;
        let limit = if one_phase {
            self.config.one_phase_timeout
        } else {
            self.config.begin_timeout
        };
        let deadline = limit.min(remaining.saturating_sub(self.config.ack_grace));
        let until = now
            .saturating_add(deadline)
            .saturating_add(self.config.ack_grace)
            .min(self.global_end);
        let id = self.alloc_id(i);
        self.first_send.get_or_insert(now);
        let key = Key::of(&self.records[i].subject);
        let kind = self.config.kind;
        let r = &mut self.records[i];
        r.begin_sent = Some(now);
        r.begin_deadline = Some(deadline);
        r.phase = Phase::AwaitBeginAck { id, until };
        self.progress.push(Progress {
            at: now,
            device: i,
            kind: if one_phase {
                ProgressKind::ShutdownSent
            } else {
                ProgressKind::BeginSent
            },
        });
        match (key, one_phase) {
            (Key::Device(address), true) => ControlMessage::Shutdown {
                id,
                address,
                kind,
                deadline,
            },
            (Key::Device(address), false) => ControlMessage::Begin {
                id,
                address,
                kind,
                deadline,
            },
            (Key::Participant(participant), true) => ControlMessage::ParticipantShutdown {
                id,
                participant,
                kind,
                deadline,
            },
            (Key::Participant(participant), false) => ControlMessage::ParticipantBegin {
                id,
                participant,
                kind,
                deadline,
            },
        }
    }

    fn send_finish(&mut self, i: usize, now: Duration) -> ControlMessage {
        let budget = self.records[i].budget.unwrap_or_default();
        let deadline = self
            .config
            .finish_deadline(budget)
            .min(self.remaining(now).saturating_sub(self.config.ack_grace));
        let until = now
            .saturating_add(deadline)
            .saturating_add(self.config.ack_grace)
            .min(self.global_end);
        let id = self.alloc_id(i);
        let key = Key::of(&self.records[i].subject);
        let r = &mut self.records[i];
        r.finish_sent = Some(now);
        r.finish_deadline = Some(deadline);
        r.phase = Phase::AwaitFinishAck { id, until };
        self.progress.push(Progress {
            at: now,
            device: i,
            kind: ProgressKind::FinishSent,
        });
        match key {
            Key::Device(address) => ControlMessage::Finish {
                id,
                address,
                deadline,
            },
            Key::Participant(participant) => ControlMessage::ParticipantFinish {
                id,
                participant,
                deadline,
            },
        }
    }

    fn match_reply(&self, id: u32, key: Key, what: &str) -> Result<usize, String> {
        match self.outstanding.get(&id) {
            Some(&i) if Key::of(&self.records[i].subject) == key => Ok(i),
            Some(&i) => Err(format!(
                "{what} for request {id} names {key}, but request {id} went to {}",
                Key::of(&self.records[i].subject)
            )),
            None => Err(format!(
                "{key}: {what} for request {id}, which is not outstanding (late or duplicate)"
            )),
        }
    }

    fn wait_detail(&self, what: &str, sent: Option<Duration>, until: Duration) -> String {
        let clamped = until >= self.global_end;
        format!(
            "no {what} within {:.0} ms{}",
            ms(sent
                .unwrap_or_default()
                .saturating_add(self.config.ack_grace)),
            if clamped {
                " (clamped by the global deadline)"
            } else {
                ""
            }
        )
    }

    fn conclude(&mut self, i: usize, now: Duration, outcome: Outcome, detail: String) {
        let r = &mut self.records[i];
        if let Phase::AwaitBeginAck { id, .. } | Phase::AwaitFinishAck { id, .. } = r.phase {
            self.outstanding.remove(&id);
        }
        r.phase = Phase::Done;
        r.outcome = Some(outcome);
        r.done_at = Some(now);
        r.detail = detail;
        self.progress.push(Progress {
            at: now,
            device: i,
            kind: ProgressKind::Done(outcome),
        });
        if self.is_done() {
            self.finished_at = Some(now);
        }
    }
}

/// How pcid's messages name a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Device(PciAddress),
    Participant(u32),
}

impl Key {
    fn of(subject: &Subject) -> Self {
        match subject {
            Subject::Device(d) => Key::Device(d.address),
            Subject::Participant(p) => Key::Participant(p.id),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Device(a) => write!(f, "{a}"),
            Key::Participant(id) => write!(f, "participant #{id}"),
        }
    }
}

#[cfg(test)]
mod tests;
