//! The thin I/O loop that drives a [`Scheduler`] over pcid's control connection.
//!
//! One thread, no helper threads, one wait: the loop polls the scheduler,
//! hands every message it wants sent to the port (which queues them; see
//! [`ControlPort`]), then waits for pcid's answers no later than the
//! scheduler's next wake-up. Once an answer arrives it takes every other
//! answer already there without waiting before it polls the scheduler
//! again, so a burst of 256 `BeginAck`s becomes one step of the scheduler
//! and one burst of `Finish`es.

use std::time::{Duration, Instant};

use pcid_interface::protocol::{ControlMessage, DeviceInfo, ParticipantInfo};

use crate::ms;
use crate::plan::{Plan, PlanError};
use crate::report::Report;
use crate::scheduler::{Config, Handled, Progress, ProgressKind, Scheduler};

/// Request id used for the initial `ListDevices`.
pub const LIST_REQUEST_ID: u32 = 1;
/// Request id used for the initial `ListParticipants`.
pub const LIST_PARTICIPANTS_ID: u32 = 2;

/// Error reported by a [`ControlPort`].
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// pcid closed the connection.
    #[error("pcid closed the control connection")]
    Closed,
    /// Any other transport or decoding failure.
    #[error("{0}")]
    Other(String),
}

/// The control connection to pcid, as the loop needs it.
pub trait ControlPort {
    /// Sends one message, or queues it: a port may hold messages back until
    /// the next [`recv`](Self::recv), which must write them before (or
    /// while) it waits. Must not wait for pcid.
    fn send(&mut self, msg: &ControlMessage) -> Result<(), PortError>;
    /// Waits up to `timeout` for one message; `Ok(None)` when none arrived.
    /// `Duration::ZERO` takes only what has already arrived.
    fn recv(&mut self, timeout: Duration) -> Result<Option<ControlMessage>, PortError>;
}

/// Most answers taken without waiting before the scheduler is polled again.
const BATCH: usize = 1024;

/// Errors that stop shutdownd before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// pcid closed the connection before answering `ListDevices`: it refuses
    /// peers of another uid that way (and logs why).
    #[error("pcid closed the control connection before answering ListDevices (pcid serves only its own uid; its log gives the reason)")]
    ListClosed,
    /// Sending `ListDevices` or reading its answer failed.
    #[error("cannot list devices: {0}")]
    List(#[source] PortError),
    /// pcid did not answer a listing request (`ListDevices`,
    /// `ListParticipants`) in time.
    #[error("pcid did not answer {request} within {timeout:?}")]
    ListTimeout {
        /// The request.
        request: &'static str,
        /// How long shutdownd waited.
        timeout: Duration,
    },
    /// pcid answered `ListDevices` with an error.
    #[error("pcid refused ListDevices: {0}")]
    ListRefused(String),
    /// The device list cannot be scheduled.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Asks pcid for its device list, waiting at most `timeout`.
pub fn list_devices(
    port: &mut dyn ControlPort,
    timeout: Duration,
) -> Result<Vec<DeviceInfo>, RunError> {
    let id = LIST_REQUEST_ID;
    ask(
        port,
        ControlMessage::ListDevices { id },
        "ListDevices",
        timeout,
        |msg| match msg {
            ControlMessage::Devices { id: i, devices } if *i == id => Some(Ok(devices.clone())),
            ControlMessage::Error { id: i, message } if *i == id || *i == 0 => {
                Some(Err(RunError::ListRefused(message.clone())))
            }
            _ => None,
        },
    )
}

/// Asks pcid for its participants, waiting at most `timeout`. A pcid that
/// does not know the request (it answers `Error`) has none: an empty list,
/// with a warning.
pub fn list_participants(
    port: &mut dyn ControlPort,
    timeout: Duration,
) -> Result<Vec<ParticipantInfo>, RunError> {
    let id = LIST_PARTICIPANTS_ID;
    let request = ControlMessage::ListParticipants { id };
    ask(
        port,
        request,
        "ListParticipants",
        timeout,
        |msg| match msg {
            ControlMessage::Participants {
                id: i,
                participants,
            } if *i == id => Some(Ok(participants.clone())),
            ControlMessage::Error { id: i, message } if *i == id || *i == 0 => {
                log::warn!("pcid lists no participants ({message}); going on without them");
                Some(Ok(Vec::new()))
            }
            _ => None,
        },
    )
}

/// Sends `request` (named `name` in errors) and waits at most `timeout` for
/// the message `answer` takes; other messages are logged and ignored.
fn ask<T>(
    port: &mut dyn ControlPort,
    request: ControlMessage,
    name: &'static str,
    timeout: Duration,
    mut answer: impl FnMut(&ControlMessage) -> Option<Result<T, RunError>>,
) -> Result<T, RunError> {
    let start = Instant::now();
    port.send(&request).map_err(list_error)?;
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(RunError::ListTimeout {
                request: name,
                timeout,
            });
        }
        if let Some(msg) = port.recv(left).map_err(list_error)? {
            match answer(&msg) {
                Some(result) => return result,
                None => {
                    log::warn!("ignoring message while waiting for the answer to {name}: {msg:?}")
                }
            }
        }
    }
}

fn list_error(e: PortError) -> RunError {
    match e {
        PortError::Closed => RunError::ListClosed,
        other => RunError::List(other),
    }
}

/// Runs the shutdown of `devices` with `config` over `port`, calling `progress`
/// with one line of text per step worth showing. Returns the final report.
///
/// A lost connection does not fail the run: devices still waiting get
/// `no-response` naming the cause, and the report is returned.
pub fn run_shutdown(
    port: &mut dyn ControlPort,
    devices: Vec<DeviceInfo>,
    config: Config,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, RunError> {
    run_shutdown_since(port, devices, config, Instant::now(), progress)
}

/// Like [`run_shutdown`], with the global deadline counted from `started`
/// (e.g. the moment the process started, so that connecting to pcid and
/// listing the devices count against it too).
pub fn run_shutdown_since(
    port: &mut dyn ControlPort,
    devices: Vec<DeviceInfo>,
    config: Config,
    started: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, RunError> {
    run_shutdown_with_clock(port, devices, config, &|| started.elapsed(), progress)
}

/// Like [`run_shutdown`], with time taken from `now` (time since any origin;
/// the global deadline counts from its value when the run starts). The loop
/// never waits on `port` past the scheduler's next wake-up, which is never
/// past the global deadline.
pub fn run_shutdown_with_clock(
    port: &mut dyn ControlPort,
    devices: Vec<DeviceInfo>,
    config: Config,
    now: &dyn Fn() -> Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, RunError> {
    run_plan_with_clock(port, Plan::new(devices)?, config, now, progress)
}

/// Like [`run_shutdown_with_clock`], for a plan that may hold participants
/// ([`Plan::with_participants`]).
pub fn run_plan_with_clock(
    port: &mut dyn ControlPort,
    plan: Plan,
    config: Config,
    now: &dyn Fn() -> Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, RunError> {
    for cycle in plan.cycle_labels() {
        log::error!(
            "dependency cycle {}; ordering inside it ignored",
            cycle.join(" -> ")
        );
    }
    for note in plan.unresolved() {
        log::warn!("{note}; ignored for ordering");
    }
    let mut s = Scheduler::new(plan, config, now());
    loop {
        let out = s.poll(now());
        let mut lost = None;
        for msg in &out {
            if let Err(e) = port.send(msg) {
                lost = Some(format!("lost the control connection to pcid: {e}"));
                break;
            }
        }
        if let Some(reason) = lost {
            log::error!("{reason}");
            s.abort(now(), &reason);
        }
        emit_progress(&mut s, progress);
        let Some(wake) = s.next_wakeup() else { break };
        let timeout = wake.saturating_sub(now());
        if timeout.is_zero() {
            continue;
        }
        let mut wait = timeout;
        for _ in 0..BATCH {
            match port.recv(wait) {
                Ok(Some(msg)) => match s.handle(now(), msg) {
                    Handled::Applied => {}
                    Handled::Ignored(why) => log::warn!("{why}"),
                    Handled::AfterOutcome(what) => log::debug!("{what}"),
                },
                Ok(None) => break,
                Err(e) => {
                    let reason = format!("lost the control connection to pcid: {e}");
                    log::error!("{reason}");
                    s.abort(now(), &reason);
                    break;
                }
            }
            // The rest of what already arrived, without waiting.
            wait = Duration::ZERO;
        }
    }
    emit_progress(&mut s, progress);
    Ok(Report::from_scheduler(&s, now()))
}

fn emit_progress(s: &mut Scheduler, progress: &mut dyn FnMut(&str)) {
    let events = s.take_progress();
    let origin = s.first_send().unwrap_or(s.start());
    let sent: Vec<&Progress> = events
        .iter()
        .filter(|p| matches!(p.kind, ProgressKind::BeginSent | ProgressKind::ShutdownSent))
        .collect();
    if sent.len() > 1 {
        let count = |kind: ProgressKind, participant: bool| {
            sent.iter()
                .filter(|p| {
                    p.kind == kind
                        && s.records()[p.device].subject.participant_id().is_some() == participant
                })
                .count()
        };
        let at = sent[0].at.saturating_sub(origin);
        let mut parts = Vec::new();
        for (n, what) in [
            (
                count(ProgressKind::BeginSent, true),
                "Begin to {} participant(s)",
            ),
            (
                count(ProgressKind::BeginSent, false),
                "Begin to {} device(s)",
            ),
            (
                count(ProgressKind::ShutdownSent, true),
                "Shutdown to {} one-phase participant(s)",
            ),
            (
                count(ProgressKind::ShutdownSent, false),
                "Shutdown to {} one-phase device(s)",
            ),
        ] {
            if n > 0 {
                parts.push(what.replace("{}", &n.to_string()));
            }
        }
        progress(&format!(
            "[{:>9.1} ms] sent {}",
            ms(at),
            parts.join(" and ")
        ));
    }
    for p in &events {
        let r = &s.records()[p.device];
        let at = ms(p.at.saturating_sub(origin));
        let who = match r.subject.address() {
            Some(a) => format!("{a} {}", r.subject.name()),
            None => r.subject.label(),
        };
        let line = match p.kind {
            ProgressKind::BeginSent | ProgressKind::ShutdownSent if sent.len() == 1 => {
                let what = if p.kind == ProgressKind::BeginSent {
                    "Begin"
                } else {
                    "Shutdown"
                };
                format!("[{at:>9.1} ms] {who}: {what} sent")
            }
            ProgressKind::BeginAcked => format!(
                "[{at:>9.1} ms] {who}: BeginAck, budget {:.1} ms",
                ms(r.budget.unwrap_or_default())
            ),
            ProgressKind::Done(outcome) => {
                let mut l = format!("[{at:>9.1} ms] {who}: {}", outcome.as_str());
                if let Some(e) = r.elapsed {
                    l.push_str(&format!(" (driver measured {:.1} ms)", ms(e)));
                }
                if !r.detail.is_empty() {
                    l.push_str(" — ");
                    l.push_str(&r.detail);
                }
                l
            }
            _ => continue,
        };
        progress(&line);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use pcid_interface::function::PciAddress;
    use pcid_interface::protocol::{DriverState, ShutdownSupport};

    use super::*;
    use crate::clocked_pcid::{ack, ClockedPcid};

    fn device(i: u8) -> DeviceInfo {
        DeviceInfo {
            address: PciAddress {
                segment: 0,
                bus: 1,
                device: i,
                function: 0,
            },
            parent: None,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
            pid: 100 + u32::from(i),
            state: DriverState::Running,
        }
    }

    /// pcid answering every request 1 ms later, except that device 0 never
    /// answers Finish.
    fn pcid(clock: Rc<Cell<Duration>>) -> ClockedPcid {
        ClockedPcid::new(
            clock,
            Duration::from_millis(1),
            Box::new(|msg| match *msg {
                ControlMessage::Finish { address, .. } if address.device == 0 => None,
                _ => ack(msg, Duration::from_millis(4000)),
            }),
        )
    }

    #[test]
    fn a_listing_pcid_never_answers_names_its_request() {
        let silent = || ClockedPcid::new(Rc::default(), Duration::ZERO, Box::new(|_| None));
        let timeout = Duration::from_millis(20);
        let e = list_devices(&mut silent(), timeout).unwrap_err();
        assert_eq!(e.to_string(), "pcid did not answer ListDevices within 20ms");
        let e = list_participants(&mut silent(), timeout).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pcid did not answer ListParticipants within 20ms"
        );
    }

    #[test]
    fn the_loop_never_waits_past_the_global_deadline() {
        let clock = Rc::new(Cell::new(Duration::from_secs(7)));
        let mut pcid = pcid(Rc::clone(&clock));
        let config = Config {
            global_deadline: Duration::from_millis(1500),
            ..Config::default()
        };
        let start = clock.get();
        let report = run_shutdown_with_clock(
            &mut pcid,
            (0..3).map(device).collect(),
            config,
            &|| clock.get(),
            &mut |_| {},
        )
        .unwrap();
        assert!(
            pcid.latest_wait_end <= start + Duration::from_millis(1500),
            "waited until {:?}",
            pcid.latest_wait_end - start
        );
        assert_eq!(clock.get(), start + Duration::from_millis(1500));
        let outcomes: Vec<&str> = report.devices.iter().map(|d| d.outcome.as_str()).collect();
        assert_eq!(outcomes, ["no-response", "clean", "clean"]);
        // Times from the first Begin, sent at once: the deadline is at 1500 ms.
        assert_eq!(report.deadline_at_ms, 1500.0);
        assert_eq!(report.deadline_reached_ms, Some(1500.0));
        assert_eq!(report.total_ms, 1500.0);
        assert_eq!(report.kept_deadline(), Ok(()));
    }
}
