//! The driver-side helper: implement [`ShutdownHandler`], call [`connect`],
//! then [`DriverConnection::serve`].
//!
//! [`connect`] adopts the channel inherited from pcid, says `Hello` (driver
//! name and which shutdown it supports) and returns the [`PciFunction`] pcid
//! answers with. After its own bring-up the driver calls
//! [`DriverConnection::ready`], then [`DriverConnection::serve`] (or
//! [`DriverConnection::serve_in_background`]), which answers pcid's shutdown
//! requests by calling the handler:
//!
//! * `Begin(kind, deadline)` → [`ShutdownHandler::begin`] → `BeginAck(budget)`;
//! * `Finish(deadline)` → [`ShutdownHandler::finish`] → `FinishAck(outcome, elapsed)`;
//! * `Shutdown(kind, deadline)` (one-phase) → `begin` then `finish` → `FinishAck`.
//!
//! Anything out of order (`Finish` before `Begin`, a second `Begin`, a request
//! the declared support does not cover, a malformed frame) is answered with an
//! `Error` message naming the offending sequence number, and serving goes on.
//! `serve` returns once a `FinishAck` has been sent or pcid closes the channel.
//! Once the `FinishAck` is sent the serving thread lowers its own scheduling
//! priority (Linux: nice 19): the driver's teardown then never competes for
//! the CPU with drivers still shutting their devices down.
//!
//! A driver that only knows how to shut down in one step implements
//! [`OnePhaseShutdown`] and serves [`OnePhase`]`(driver)`.
//!
//! A **participant** — a daemon that is not a PCI driver but holds state for
//! devices, such as a file system — calls [`register`] instead of
//! [`connect`] (PROTOCOL.md §14): it names itself and what it depends on,
//! and then serves the same [`ShutdownHandler`] with
//! [`DriverConnection::serve`]. Its `Begin` comes before any of its
//! providers' (the file system is flushed before its disk shuts down).
//!
//! # Example
//!
//! A driver and, in a thread, the part of pcid it talks to:
//!
//! ```
//! use std::time::Duration;
//! use pcid_interface::driver::{self, Deadline, FinishReport, ServeOutcome, ShutdownHandler};
//! use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
//! use pcid_interface::protocol::*;
//! use pcid_interface::transport::{DriverChannel, TransportError};
//!
//! struct MyDevice;
//!
//! impl ShutdownHandler for MyDevice {
//!     fn support(&self) -> ShutdownSupport {
//!         ShutdownSupport::TwoPhase
//!     }
//!     fn begin(&mut self, _kind: ShutdownKind, _deadline: Deadline) -> Result<Duration, String> {
//!         // Stop taking work and start the device's shutdown; do not wait for it.
//!         Ok(Duration::from_millis(20)) // the time the device says it needs
//!     }
//!     fn finish(&mut self, _deadline: Deadline) -> FinishReport {
//!         // Wait (bounded by the deadline) until the device is done.
//!         FinishReport::new(FinishOutcome::Clean, Duration::from_millis(15), "done")
//!     }
//! }
//!
//! let (driver_end, mut pcid) = DriverChannel::pair()?;
//!
//! // pcid's side of the conversation.
//! let pcid_thread = std::thread::spawn(move || -> Result<Vec<DriverMessage>, TransportError> {
//!     let t = Some(Duration::from_secs(10)); // every wait is bounded
//!     let mut seen = vec![pcid.recv(t)?]; // Hello
//!     let function = PciFunction {
//!         address: PciAddress { segment: 0, bus: 0, device: 4, function: 0 },
//!         vendor: 0x1b36, device: 0x0010, class: 1, subclass: 8, interface: 2,
//!         revision: 2, parent: None,
//!         backend: FunctionBackend::Redox { bars: Vec::new(), legacy_irq: None },
//!     };
//!     pcid.send(&DriverMessage::Welcome { version: PROTOCOL_VERSION, function })?;
//!     seen.push(pcid.recv(t)?); // Ready
//!     pcid.send(&DriverMessage::Begin {
//!         seq: 1, kind: ShutdownKind::Poweroff, deadline: Duration::from_secs(1),
//!     })?;
//!     seen.push(pcid.recv(t)?); // BeginAck
//!     pcid.send(&DriverMessage::Finish { seq: 2, deadline: Duration::from_secs(1) })?;
//!     seen.push(pcid.recv(t)?); // FinishAck
//!     Ok(seen)
//! });
//!
//! // The driver.
//! let (mut conn, function) = driver::connect_over(
//!     driver_end, "exampled", ShutdownSupport::TwoPhase, driver::WELCOME_TIMEOUT)?;
//! assert_eq!(function.address.to_string(), "0000:00:04.0");
//! conn.ready()?; // after bringing the device up
//! let outcome = conn.serve(MyDevice)?;
//! assert!(matches!(outcome, ServeOutcome::Finished(ref r) if r.outcome == FinishOutcome::Clean));
//!
//! let seen = pcid_thread.join().expect("pcid thread")?;
//! assert!(matches!(seen[2], DriverMessage::BeginAck { seq: 1, .. }));
//! assert!(matches!(seen[3], DriverMessage::FinishAck { seq: 2, outcome: FinishOutcome::Clean, .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::function::{PciAddress, PciFunction};
use crate::protocol::{
    DriverMessage, FinishOutcome, Provider, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
};
use crate::transport::{DriverChannel, TransportError};

/// How long [`connect`] waits for pcid's `Welcome`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// A deadline as received from pcid: a duration counted from the moment the
/// request was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    received: Instant,
    allowed: Duration,
}

impl Deadline {
    /// A deadline `allowed` from now.
    pub fn new(allowed: Duration) -> Self {
        Self::starting_at(Instant::now(), allowed)
    }

    /// A deadline `allowed` after `received`.
    pub fn starting_at(received: Instant, allowed: Duration) -> Self {
        Self { received, allowed }
    }

    /// The time allowed, counted from receipt of the request.
    pub fn allowed(&self) -> Duration {
        self.allowed
    }

    /// When the request was received.
    pub fn received(&self) -> Instant {
        self.received
    }

    /// The instant the deadline expires (saturating far in the future).
    pub fn at(&self) -> Option<Instant> {
        self.received.checked_add(self.allowed)
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.allowed.saturating_sub(self.received.elapsed())
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// What a driver reports at the end of its device's shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// How it ended.
    pub outcome: FinishOutcome,
    /// Time the driver measured for the device's shutdown.
    pub elapsed: Duration,
    /// Human-readable detail, e.g. `"CSTS.SHST=10b after 4.50 s"`
    /// (truncated to [`crate::wire::MAX_TEXT_LEN`] bytes when sent).
    pub detail: String,
}

impl FinishReport {
    /// A report.
    pub fn new(outcome: FinishOutcome, elapsed: Duration, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            elapsed,
            detail: detail.into(),
        }
    }
}

/// What a driver implements to take part in two-phase shutdown.
pub trait ShutdownHandler {
    /// Which shutdown this driver supports (normally what it passed to
    /// [`connect`]).
    fn support(&self) -> ShutdownSupport;

    /// Phase one: stop taking new work, deal with what is queued, start the
    /// device's own shutdown **without waiting for it**, and return the time
    /// the device says it needs to finish (NVMe: RTD3E). Must return before
    /// `deadline`. An error is reported to pcid in the `FinishAck` that
    /// answers the following `Finish` (outcome `Failed`).
    fn begin(&mut self, kind: ShutdownKind, deadline: Deadline) -> Result<Duration, String>;

    /// Phase two: wait until the device has finished shutting down or
    /// `deadline` passes, whichever comes first, and report how it ended.
    fn finish(&mut self, deadline: Deadline) -> FinishReport;
}

/// A driver that shuts its device down in one step.
pub trait OnePhaseShutdown {
    /// Shut the device down completely within `deadline` and report how it ended.
    fn shutdown(&mut self, kind: ShutdownKind, deadline: Deadline) -> FinishReport;
}

/// Adapts a [`OnePhaseShutdown`] driver to [`ShutdownHandler`]; it declares
/// [`ShutdownSupport::OnePhase`], so pcid sends it a single `Shutdown`.
#[derive(Debug)]
pub struct OnePhase<T> {
    inner: T,
    report: Option<FinishReport>,
}

impl<T> OnePhase<T> {
    /// Wraps a one-phase driver.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            report: None,
        }
    }

    /// The wrapped driver.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: OnePhaseShutdown> ShutdownHandler for OnePhase<T> {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::OnePhase
    }

    fn begin(&mut self, kind: ShutdownKind, deadline: Deadline) -> Result<Duration, String> {
        self.report = Some(self.inner.shutdown(kind, deadline));
        Ok(Duration::ZERO)
    }

    fn finish(&mut self, _deadline: Deadline) -> FinishReport {
        self.report.take().unwrap_or_else(|| {
            FinishReport::new(
                FinishOutcome::Failed,
                Duration::ZERO,
                "finish without begin",
            )
        })
    }
}

/// A driver that takes no part in shutdown (declares [`ShutdownSupport::None`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoShutdown;

impl ShutdownHandler for NoShutdown {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::None
    }

    fn begin(&mut self, _kind: ShutdownKind, _deadline: Deadline) -> Result<Duration, String> {
        Err("driver does not support shutdown".into())
    }

    fn finish(&mut self, _deadline: Deadline) -> FinishReport {
        FinishReport::new(
            FinishOutcome::Failed,
            Duration::ZERO,
            "driver does not support shutdown",
        )
    }
}

/// Errors of the driver-side helper.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The inherited channel could not be adopted.
    #[error(transparent)]
    Adopt(#[from] crate::transport::AdoptError),
    /// The channel failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// pcid did not answer `Hello` in time.
    #[error("pcid did not answer Hello within {0:?}")]
    NoWelcome(Duration),
    /// pcid refused the driver (answered `Hello` with `Error`).
    #[error("pcid refused the driver: {0}")]
    Refused(String),
    /// pcid answered with a protocol version this driver does not speak.
    #[error("pcid speaks protocol version {theirs}, this driver {ours}")]
    Version {
        /// Version in `Welcome`.
        theirs: u16,
        /// [`PROTOCOL_VERSION`].
        ours: u16,
    },
    /// pcid sent something other than `Welcome` during the handshake.
    #[error("expected Welcome from pcid, got {0}")]
    Unexpected(String),
    /// pcid's participant endpoint cannot be reached.
    #[error("cannot reach pcid's participant endpoint: {0}")]
    Endpoint(#[from] crate::transport::ControlError),
}

/// How [`DriverConnection::serve`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeOutcome {
    /// Shutdown finished and `FinishAck` was sent.
    Finished(FinishReport),
    /// pcid closed the channel.
    Closed,
}

/// A driver's (or participant's) connection to pcid after the handshake.
#[derive(Debug)]
pub struct DriverConnection {
    channel: DriverChannel,
    support: ShutdownSupport,
    /// The function served (`None` for a participant).
    address: Option<PciAddress>,
    /// How log lines name the connection.
    label: String,
    ready_sent: bool,
}

/// Connects to pcid through the channel inherited in `PCID_CLIENT_CHANNEL`:
/// sends `Hello`, waits at most [`WELCOME_TIMEOUT`] for `Welcome`.
pub fn connect(
    driver: &str,
    support: ShutdownSupport,
) -> Result<(DriverConnection, PciFunction), DriverError> {
    connect_over(DriverChannel::from_env()?, driver, support, WELCOME_TIMEOUT)
}

/// Like [`connect`], over a given channel and with a given handshake timeout.
pub fn connect_over(
    mut channel: DriverChannel,
    driver: &str,
    support: ShutdownSupport,
    timeout: Duration,
) -> Result<(DriverConnection, PciFunction), DriverError> {
    channel.send(&DriverMessage::Hello {
        version: PROTOCOL_VERSION,
        driver: driver.to_owned(),
        support,
    })?;
    let deadline = Deadline::new(timeout);
    loop {
        let msg = match channel.recv(Some(deadline.remaining())) {
            Ok(m) => m,
            Err(TransportError::Timeout(_)) => return Err(DriverError::NoWelcome(timeout)),
            Err(TransportError::Malformed { seq, error }) if !error.is_stream_fatal() => {
                log::warn!("{driver}: malformed frame from pcid during handshake: {error}");
                channel.send(&DriverMessage::Error {
                    seq,
                    message: format!("malformed frame: {error}"),
                })?;
                continue;
            }
            Err(e) => {
                tell_version_error(&channel, &e);
                return Err(e.into());
            }
        };
        match msg {
            DriverMessage::Welcome { version, function } => {
                if version == 0 || version > PROTOCOL_VERSION {
                    let _ = channel.send(&DriverMessage::Error {
                        seq: 0,
                        message: format!(
                            "unsupported protocol version {version}, driver speaks {PROTOCOL_VERSION}"
                        ),
                    });
                    return Err(DriverError::Version {
                        theirs: version,
                        ours: PROTOCOL_VERSION,
                    });
                }
                log::debug!("{}: {driver} connected to pcid", function.address);
                let conn = DriverConnection {
                    channel,
                    support,
                    address: Some(function.address),
                    label: function.address.to_string(),
                    ready_sent: false,
                };
                return Ok((conn, function));
            }
            DriverMessage::Error { message, .. } => return Err(DriverError::Refused(message)),
            other => {
                let _ = channel.send(&DriverMessage::Error {
                    seq: crate::wire::WireMessage::seq(&other),
                    message: format!("expected Welcome, got {}", other.name()),
                });
                return Err(DriverError::Unexpected(other.name().to_owned()));
            }
        }
    }
}

/// Registers a participant with pcid (PROTOCOL.md §14): opens pcid's
/// participant endpoint (`path`: the socket given to pcid's `--participants`
/// on Linux, [`crate::transport::PARTICIPANT_PATH`] on Redox), sends
/// `Register` and waits at most [`WELCOME_TIMEOUT`] for `Registered`.
/// Returns the connection, to [`DriverConnection::serve`], and the
/// participant's id.
pub fn register(
    path: impl AsRef<std::path::Path>,
    name: &str,
    support: ShutdownSupport,
    providers: Vec<Provider>,
) -> Result<(DriverConnection, u32), DriverError> {
    let channel = crate::transport::ParticipantClient::connect(path)?;
    register_over(channel, name, support, providers, WELCOME_TIMEOUT)
}

/// Like [`register`], over a given channel and with a given timeout.
pub fn register_over(
    mut channel: DriverChannel,
    name: &str,
    support: ShutdownSupport,
    providers: Vec<Provider>,
    timeout: Duration,
) -> Result<(DriverConnection, u32), DriverError> {
    channel.send(&DriverMessage::Register {
        version: PROTOCOL_VERSION,
        name: name.to_owned(),
        support,
        providers,
    })?;
    let deadline = Deadline::new(timeout);
    let msg = match channel.recv(Some(deadline.remaining())) {
        Ok(m) => m,
        Err(TransportError::Timeout(_)) => return Err(DriverError::NoWelcome(timeout)),
        Err(e) => {
            tell_version_error(&channel, &e);
            return Err(e.into());
        }
    };
    match msg {
        DriverMessage::Registered { version, id } => {
            if version == 0 || version > PROTOCOL_VERSION {
                let _ = channel.send(&DriverMessage::Error {
                    seq: 0,
                    message: format!(
                        "unsupported protocol version {version}, participant speaks {PROTOCOL_VERSION}"
                    ),
                });
                return Err(DriverError::Version {
                    theirs: version,
                    ours: PROTOCOL_VERSION,
                });
            }
            log::debug!("participant {name}: registered with pcid as #{id}");
            Ok((
                DriverConnection {
                    channel,
                    support,
                    address: None,
                    label: format!("participant {name}"),
                    // Participants send no Ready.
                    ready_sent: true,
                },
                id,
            ))
        }
        DriverMessage::Error { message, .. } => Err(DriverError::Refused(message)),
        other => Err(DriverError::Unexpected(other.name().to_owned())),
    }
}

/// Before closing over a frame of an unsupported version, tells the peer why
/// (PROTOCOL.md §8); a failure to send is irrelevant since the channel closes.
fn tell_version_error(channel: &DriverChannel, e: &TransportError) {
    if let TransportError::Malformed {
        seq,
        error: error @ crate::wire::DecodeError::UnsupportedVersion { .. },
    } = e
    {
        let _ = channel.send(&DriverMessage::Error {
            seq: *seq,
            message: error.to_string(),
        });
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Called once the `FinishAck` is sent: what is left of the driver
/// (releasing its device, freeing memory, exiting) is on nobody's critical
/// path, while other drivers may still be shutting down their devices. The
/// calling thread takes the lowest scheduling priority (Linux: nice 19), so
/// a finished driver's teardown never takes CPU time from one that is still
/// working. A failure changes nothing and is ignored; elsewhere it does
/// nothing.
fn step_aside() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(None, 19);
    std::thread::yield_now();
}

/// Driver-side protocol phase.
#[derive(Debug)]
enum Phase {
    /// Serving; no shutdown request yet.
    Serving,
    /// `Begin` answered; `begin_error` holds a failed begin's message.
    Begun {
        seq: u32,
        begin_error: Option<String>,
    },
}

impl DriverConnection {
    /// The address of the function this connection serves (`None` for a
    /// participant).
    pub fn address(&self) -> Option<PciAddress> {
        self.address
    }

    /// The shutdown support declared in `Hello`.
    pub fn support(&self) -> ShutdownSupport {
        self.support
    }

    /// Tells pcid the device is up. Sent once; later calls do nothing (and a
    /// participant sends none).
    pub fn ready(&mut self) -> Result<(), DriverError> {
        if !self.ready_sent {
            self.channel.send(&DriverMessage::Ready)?;
            self.ready_sent = true;
        }
        Ok(())
    }

    fn send(&self, msg: &DriverMessage) -> Result<(), DriverError> {
        Ok(self.channel.send(msg)?)
    }

    fn reject(&self, seq: u32, message: String) -> Result<(), DriverError> {
        log::warn!("{}: {message}", self.label);
        self.send(&DriverMessage::Error {
            seq,
            message: clip(message, crate::wire::MAX_TEXT_LEN),
        })
    }

    fn finish_ack(&self, seq: u32, report: &FinishReport) -> Result<(), DriverError> {
        self.send(&DriverMessage::FinishAck {
            seq,
            outcome: report.outcome,
            elapsed: report.elapsed,
            detail: clip(report.detail.clone(), crate::wire::MAX_TEXT_LEN),
        })?;
        step_aside();
        Ok(())
    }

    /// Answers pcid's shutdown requests with `handler` until a `FinishAck`
    /// has been sent or pcid closes the channel. Sends `Ready` first if
    /// [`ready`](Self::ready) was not called.
    ///
    /// Waiting for pcid's next request has no time limit: a driver serves
    /// until told otherwise, and pcid closing the channel ends the wait.
    pub fn serve<H: ShutdownHandler>(
        mut self,
        mut handler: H,
    ) -> Result<ServeOutcome, DriverError> {
        self.ready()?;
        if handler.support() != self.support {
            log::warn!(
                "{}: handler supports {:?} but {:?} was declared; serving as declared",
                self.label,
                handler.support(),
                self.support
            );
        }
        let mut phase = Phase::Serving;
        loop {
            let msg = match self.channel.recv(None) {
                Ok(m) => m,
                Err(TransportError::Closed | TransportError::ClosedMidFrame { .. }) => {
                    log::info!("{}: pcid closed the channel", self.label);
                    return Ok(ServeOutcome::Closed);
                }
                Err(TransportError::Malformed { seq, error }) if !error.is_stream_fatal() => {
                    self.reject(seq, format!("malformed frame: {error}"))?;
                    continue;
                }
                Err(e) => {
                    tell_version_error(&self.channel, &e);
                    return Err(e.into());
                }
            };
            let received = Instant::now();
            match msg {
                DriverMessage::Begin {
                    seq,
                    kind,
                    deadline,
                } => {
                    if self.support != ShutdownSupport::TwoPhase {
                        self.reject(
                            seq,
                            format!("Begin refused: driver declared {:?} shutdown", self.support),
                        )?;
                        continue;
                    }
                    if let Phase::Begun { seq: first, .. } = phase {
                        self.reject(
                            seq,
                            format!("duplicate Begin (already begun by seq {first})"),
                        )?;
                        continue;
                    }
                    let deadline = Deadline::starting_at(received, deadline);
                    log::info!(
                        "{}: Begin {kind:?} seq {seq}, deadline {:?}",
                        self.label,
                        deadline.allowed()
                    );
                    let (budget, begin_error) = match handler.begin(kind, deadline) {
                        Ok(budget) => (budget, None),
                        Err(e) => {
                            log::error!("{}: begin failed: {e}", self.label);
                            (Duration::ZERO, Some(e))
                        }
                    };
                    self.send(&DriverMessage::BeginAck { seq, budget })?;
                    phase = Phase::Begun { seq, begin_error };
                }
                DriverMessage::Finish { seq, deadline } => {
                    let Phase::Begun { begin_error, .. } = &mut phase else {
                        self.reject(seq, "Finish before Begin".into())?;
                        continue;
                    };
                    let report = match begin_error.take() {
                        Some(e) => FinishReport::new(
                            FinishOutcome::Failed,
                            Duration::ZERO,
                            format!("begin failed: {e}"),
                        ),
                        None => handler.finish(Deadline::starting_at(received, deadline)),
                    };
                    log::info!(
                        "{}: Finish seq {seq}: {:?} after {:?} {}",
                        self.label,
                        report.outcome,
                        report.elapsed,
                        report.detail
                    );
                    self.finish_ack(seq, &report)?;
                    return Ok(ServeOutcome::Finished(report));
                }
                DriverMessage::Shutdown {
                    seq,
                    kind,
                    deadline,
                } => {
                    if self.support == ShutdownSupport::None {
                        self.reject(
                            seq,
                            "Shutdown refused: driver declared no shutdown support".into(),
                        )?;
                        continue;
                    }
                    if let Phase::Begun { seq: first, .. } = phase {
                        self.reject(seq, format!("Shutdown after Begin (seq {first})"))?;
                        continue;
                    }
                    let deadline = Deadline::starting_at(received, deadline);
                    log::info!("{}: Shutdown {kind:?} seq {seq}", self.label);
                    let report = match handler.begin(kind, deadline) {
                        Ok(_) => handler.finish(deadline),
                        Err(e) => FinishReport::new(
                            FinishOutcome::Failed,
                            received.elapsed(),
                            format!("shutdown failed: {e}"),
                        ),
                    };
                    self.finish_ack(seq, &report)?;
                    return Ok(ServeOutcome::Finished(report));
                }
                DriverMessage::Error { seq, message } => {
                    log::warn!(
                        "{}: pcid reports an error (seq {seq}): {message}",
                        self.label
                    );
                }
                other => {
                    let seq = crate::wire::WireMessage::seq(&other);
                    self.reject(seq, format!("unexpected {} from pcid", other.name()))?;
                }
            }
        }
    }

    /// Runs [`serve`](Self::serve) on a new thread.
    pub fn serve_in_background<H: ShutdownHandler + Send + 'static>(
        self,
        handler: H,
    ) -> std::io::Result<JoinHandle<Result<ServeOutcome, DriverError>>> {
        std::thread::Builder::new()
            .name(format!("pcid-channel {}", self.label))
            .spawn(move || self.serve(handler))
    }
}

#[cfg(test)]
mod tests;
