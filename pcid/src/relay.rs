//! The relay: pcid's bookkeeping of driver processes and shutdown requests.
//!
//! [`Relay`] is a pure state machine: the runtime ([`crate::daemon`]) feeds it
//! [`Input`]s (a message from a driver's channel, a channel that closed, a
//! process that exited, a control client's request, the passing of time) and
//! carries out the [`Output`]s it returns (send to a driver, send to a client,
//! close a driver's channel, announce readiness, exit). It never blocks and
//! never reads a clock: time is passed in, so every rule below is unit-tested
//! with synthetic instants.
//!
//! Rules:
//! * A driver's channel only ever speaks for its own function: the channel a
//!   message arrived on ([`DriverId`]) decides the device, never its content.
//! * Driver start: `Hello` → pcid answers `Welcome` (the function) → `Ready`.
//!   A driver that sends no `Hello` before its hello deadline is treated as
//!   [`ShutdownSupport::None`] (a driver not linking the protocol) and still
//!   listed. A driver is *settled* once it sent `Ready`, went away, passed its
//!   hello deadline without `Hello`, or passed its ready deadline; when all are
//!   settled, [`Output::Ready`] is emitted once.
//! * `Begin`/`Finish` go to two-phase drivers; `Shutdown` (one step) to
//!   one-phase and two-phase drivers (the latter run begin then finish).
//! * Requests (`Begin`, `Finish`, `Shutdown`) are relayed with a sequence
//!   number counted per driver channel (1, 2, …; wrapping from 2^32−1 to 1), so
//!   a driver sees `Finish` = its `Begin` + 1; the acks are relayed back with
//!   the client's request id.
//!   Requests to different devices are independent: nothing waits on another
//!   driver.
//! * One shutdown session at a time: the first client to send a shutdown
//!   request owns the session until it disconnects; shutdown requests from any
//!   other client get `DeviceError { kind: Busy }`.
//! * A driver that breaks the protocol (undecodable frame, message in the wrong
//!   direction, duplicate `Hello`/`Ready`, an ack with the wrong sequence number
//!   or with no request outstanding) is logged naming its device and is sent
//!   `Error(seq, "protocol violation: …")` naming the violation (seq of the
//!   offending message, 0 when it has none or could not be decoded); then its
//!   channel is closed and its outstanding request fails with
//!   `ProtocolViolation`. From then on every request for the device is
//!   answered `ProtocolViolation` with the same text, whether the process is
//!   still alive or not. Other drivers are unaffected.
//! * A driver may send `Error` on its own (seq 0, or a seq with no request
//!   outstanding): it is logged and changes nothing.
//! * A driver whose process exits or whose channel closes fails its outstanding
//!   request with `DriverDied`. Either way every connected client also gets an
//!   unsolicited `DeviceError { id: 0, .. }` event, once per driver. Messages a
//!   driver sent before exiting are still relayed: after a process is reaped
//!   its channel is read to end of file (at most [`DRIVER_EXIT_WAIT`]), and a channel
//!   that closes first waits as long for the exit status. A driver
//!   exiting after its final `FinishAck` is normal and reported to nobody.
//! * Drivers come in two kinds. A *spawned* driver ([`Relay::add_driver`],
//!   Linux and the simulated machine) is a process pcid started; it has
//!   start deadlines as above. An *opened* channel ([`Relay::add_opened`],
//!   Redox, where Redox's pcid-spawner starts drivers) is presumed to be a
//!   driver that does not speak this protocol (support `none`) until it says
//!   `Hello`; it has no start deadlines. An opened channel that closes
//!   without having said `Hello` is forgotten ([`Relay::retire`]): the device
//!   list shows the functions whose channel is open, plus drivers of this
//!   protocol that died (so their death is reported).
//! * **Participants** ([`Relay::add_participant`]) are daemons that are not
//!   PCI drivers — a file system, a volume manager — and take part in the
//!   shutdown ahead of the devices they depend on. A participant channel
//!   carries the driver-channel protocol, except that its first frame is
//!   `Register` (name, support, providers), answered `Registered` with the
//!   participant's id; there is no `Welcome` and no `Ready`. Control clients
//!   list participants (`ListParticipants`) and send them `ParticipantBegin`
//!   / `ParticipantFinish` / `ParticipantShutdown`, relayed exactly as
//!   requests for devices are (same phases, sequence numbers, violations,
//!   deaths). Names are unique among live participants; a channel that does
//!   not register within the hello deadline is closed and forgotten.
//!   Participants play no part in pcid's readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use pcid_interface::function::{PciAddress, PciFunction};
use pcid_interface::protocol::{
    ControlMessage, DeviceErrorKind, DeviceInfo, DriverMessage, DriverState, FinishOutcome,
    ParticipantInfo, Provider, ShutdownSupport, PROTOCOL_VERSION,
};

/// How long pcid waits for the second half of a driver's exit: after its
/// process was reaped, for end of file on its channel (the messages it sent
/// just before exiting); after its channel closed, for its exit status.
pub const DRIVER_EXIT_WAIT: Duration = Duration::from_millis(500);

/// Index of a driver in the relay (the order drivers were added).
pub type DriverId = usize;
/// Identifier of a control connection, chosen by the runtime.
pub type ClientId = u64;

/// Deadlines for driver start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartDeadlines {
    /// Time from spawn to `Hello`; after it the driver counts as not linking the protocol.
    pub hello: Duration,
    /// Time from spawn to `Ready`; after it the driver counts as settled anyway.
    pub ready: Duration,
}

impl Default for StartDeadlines {
    fn default() -> Self {
        Self {
            hello: Duration::from_secs(5),
            ready: Duration::from_secs(60),
        }
    }
}

/// Something that happened, fed to [`Relay::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A decoded message arrived on a driver's channel.
    DriverMessage {
        /// The channel it arrived on.
        driver: DriverId,
        /// The message.
        message: DriverMessage,
    },
    /// Bytes on a driver's channel could not be decoded (garbage, truncated
    /// frame, oversize length, unknown version or type).
    DriverBadFrame {
        /// The channel.
        driver: DriverId,
        /// What was wrong.
        error: String,
    },
    /// A driver's channel reached end of file or failed.
    DriverChannelClosed {
        /// The channel.
        driver: DriverId,
    },
    /// A driver process exited (it has been reaped).
    DriverExited {
        /// The driver.
        driver: DriverId,
        /// Exit status as text, e.g. `exit status: 3` or `signal: 9 (SIGKILL)`.
        status: String,
    },
    /// A control client connected (its peer credentials were accepted).
    ClientConnected {
        /// The client.
        client: ClientId,
    },
    /// A decoded control message arrived.
    ClientMessage {
        /// The client.
        client: ClientId,
        /// The message.
        message: ControlMessage,
    },
    /// A control frame could not be decoded.
    ClientBadFrame {
        /// The client.
        client: ClientId,
        /// What was wrong.
        error: String,
        /// Whether frame boundaries are lost (the connection must be closed).
        fatal: bool,
    },
    /// A control client disconnected.
    ClientClosed {
        /// The client.
        client: ClientId,
    },
    /// Time passed (deadline checks only).
    Tick,
}

/// Something the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a message on a driver's channel.
    ToDriver {
        /// The driver.
        driver: DriverId,
        /// The message.
        message: DriverMessage,
    },
    /// Close a driver's channel (after a protocol violation).
    CloseDriver {
        /// The driver.
        driver: DriverId,
    },
    /// Send a message to a control client.
    ToClient {
        /// The client.
        client: ClientId,
        /// The message.
        message: ControlMessage,
    },
    /// Close a control connection.
    CloseClient {
        /// The client.
        client: ClientId,
    },
    /// Every driver is settled (emitted once).
    Ready {
        /// Drivers that sent `Ready`.
        ready: usize,
        /// Drivers spawned.
        total: usize,
    },
    /// The shutdown session ended and pcid was asked to exit after it.
    Exit,
}

/// What a channel speaks for: a PCI function's device, or a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The driver of this function.
    Function(PciAddress),
    /// The participant with this id.
    Participant(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Function(a) => write!(f, "{a}"),
            Target::Participant(id) => write!(f, "participant #{id}"),
        }
    }
}

impl Target {
    fn begin_ack(self, id: u32, budget: Duration) -> ControlMessage {
        match self {
            Target::Function(address) => ControlMessage::BeginAck {
                id,
                address,
                budget,
            },
            Target::Participant(participant) => ControlMessage::ParticipantBeginAck {
                id,
                participant,
                budget,
            },
        }
    }

    fn finish_ack(
        self,
        id: u32,
        outcome: FinishOutcome,
        elapsed: Duration,
        detail: String,
    ) -> ControlMessage {
        match self {
            Target::Function(address) => ControlMessage::FinishAck {
                id,
                address,
                outcome,
                elapsed,
                detail,
            },
            Target::Participant(participant) => ControlMessage::ParticipantFinishAck {
                id,
                participant,
                outcome,
                elapsed,
                detail,
            },
        }
    }

    fn error(self, id: u32, kind: DeviceErrorKind, message: String) -> ControlMessage {
        match self {
            Target::Function(address) => ControlMessage::DeviceError {
                id,
                address,
                kind,
                message,
            },
            Target::Participant(participant) => ControlMessage::ParticipantError {
                id,
                participant,
                kind,
                message,
            },
        }
    }
}

/// Participant ids pcid hands out stay below this (ids with the top bit set
/// are left to control clients for participants of their own).
pub const MAX_PARTICIPANT_ID: u32 = 0x7FFF_FFFF;

/// Why a driver is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gone {
    Exited(String),
    ChannelClosed,
    Violation(String),
}

impl Gone {
    fn kind(&self) -> DeviceErrorKind {
        match self {
            Gone::Violation(_) => DeviceErrorKind::ProtocolViolation,
            Gone::Exited(_) | Gone::ChannelClosed => DeviceErrorKind::DriverDied,
        }
    }

    fn describe(&self, who: &str) -> String {
        match self {
            Gone::Exited(status) => format!("{who} process exited ({status})"),
            Gone::ChannelClosed => format!("{who} closed its channel"),
            Gone::Violation(m) => format!("{who} broke the protocol: {m}"),
        }
    }
}

/// Who asked for the request a driver is working on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Requester {
    client: ClientId,
    id: u32,
    seq: u32,
}

/// Where a driver is in the shutdown sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    BeginSent(Requester),
    Begun,
    FinishSent(Requester),
    ShutdownSent(Requester),
    Done,
}

impl Phase {
    fn outstanding(&self) -> Option<Requester> {
        match *self {
            Phase::BeginSent(r) | Phase::FinishSent(r) | Phase::ShutdownSent(r) => Some(r),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Phase::Idle => "no shutdown request yet",
            Phase::BeginSent(_) => "Begin in flight",
            Phase::Begun => "Begin acknowledged",
            Phase::FinishSent(_) => "Finish in flight",
            Phase::ShutdownSent(_) => "Shutdown in flight",
            Phase::Done => "shutdown finished",
        }
    }
}

/// How a driver came to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// pcid spawned the process.
    Spawned,
    /// Someone opened the function's channel (Redox).
    Opened,
    /// A participant channel (not a PCI driver).
    Participant,
}

#[derive(Debug, Clone)]
struct Driver {
    origin: Origin,
    /// Forgotten: not listed, never addressed again.
    retired: bool,
    /// What the channel speaks for.
    target: Target,
    /// The function (drivers only).
    function: Option<PciFunction>,
    /// What a participant depends on (from `Register`).
    providers: Vec<Provider>,
    /// Program name from the match table; replaced by `Hello`'s name.
    name: String,
    pid: u32,
    hello_deadline: Instant,
    ready_deadline: Instant,
    /// `Some` once `Hello` arrived (or the hello deadline passed: `None` support).
    support: Option<ShutdownSupport>,
    hello_received: bool,
    ready: bool,
    gone: Option<Gone>,
    phase: Phase,
    /// The channel reported end of file.
    channel_closed: bool,
    /// The process was reaped; the channel may still hold its last messages.
    exited: Option<(String, Instant)>,
    /// The channel closed while the process was not reaped yet: wait this
    /// long for its exit status.
    closed_wait: Option<Instant>,
    /// Sequence number of the next request on this driver's channel.
    next_seq: u32,
}

impl Driver {
    /// "driver" or "participant", for messages.
    fn who(&self) -> &'static str {
        match self.origin {
            Origin::Participant => "participant",
            _ => "driver",
        }
    }

    /// How log lines name it: the function's address, or the participant's
    /// name and id.
    fn label(&self) -> String {
        match self.target {
            Target::Function(a) => a.to_string(),
            Target::Participant(id) if self.name.is_empty() => format!("participant #{id}"),
            Target::Participant(id) => format!("participant {} (#{id})", self.name),
        }
    }

    fn settled(&self, now: Instant) -> bool {
        self.origin == Origin::Participant
            || self.ready
            || self.retired
            || self.gone.is_some()
            || now >= self.ready_deadline
            || (!self.hello_received && now >= self.hello_deadline)
    }

    fn state(&self) -> DriverState {
        if self.gone.is_some() {
            DriverState::Gone
        } else if self.support.is_some() {
            DriverState::Running
        } else {
            DriverState::Starting
        }
    }
}

/// Relay configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayConfig {
    /// Start-up deadlines.
    pub deadlines: StartDeadlines,
    /// Emit [`Output::Exit`] when the client owning a shutdown session disconnects.
    pub exit_after_shutdown: bool,
}

/// The relay state machine. See the module documentation.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    drivers: Vec<Driver>,
    by_address: BTreeMap<PciAddress, DriverId>,
    by_participant: BTreeMap<u32, DriverId>,
    next_participant: u32,
    clients: BTreeSet<ClientId>,
    session_owner: Option<ClientId>,
    ready_emitted: bool,
}

impl Relay {
    /// An empty relay.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            drivers: Vec::new(),
            by_address: BTreeMap::new(),
            by_participant: BTreeMap::new(),
            next_participant: 1,
            clients: BTreeSet::new(),
            session_owner: None,
            ready_emitted: false,
        }
    }

    /// Register a driver process spawned at `now` for `function`.
    pub fn add_driver(
        &mut self,
        function: PciFunction,
        name: String,
        pid: u32,
        now: Instant,
    ) -> DriverId {
        let id = self.drivers.len();
        self.by_address.insert(function.address, id);
        self.drivers.push(Driver {
            origin: Origin::Spawned,
            retired: false,
            target: Target::Function(function.address),
            function: Some(function),
            providers: Vec::new(),
            name,
            pid,
            hello_deadline: now + self.config.deadlines.hello,
            ready_deadline: now + self.config.deadlines.ready,
            support: None,
            hello_received: false,
            ready: false,
            gone: None,
            phase: Phase::Idle,
            channel_closed: false,
            exited: None,
            closed_wait: None,
            next_seq: 1,
        });
        id
    }

    /// Register the channel of `function`, opened at `now` by process `pid`
    /// (Redox). It counts as a driver without shutdown support until it
    /// says `Hello`; `name` is listed until then. A previous driver of the
    /// same function is retired first (see [`Relay::retire`]).
    pub fn add_opened(
        &mut self,
        function: PciFunction,
        name: String,
        pid: u32,
        now: Instant,
    ) -> (DriverId, Vec<Output>) {
        let out = match self.by_address.get(&function.address) {
            Some(&old) => self.retire(old),
            None => Vec::new(),
        };
        let id = self.drivers.len();
        self.by_address.insert(function.address, id);
        self.drivers.push(Driver {
            origin: Origin::Opened,
            retired: false,
            target: Target::Function(function.address),
            function: Some(function),
            providers: Vec::new(),
            name,
            pid,
            hello_deadline: now,
            ready_deadline: now,
            support: Some(ShutdownSupport::None),
            hello_received: false,
            ready: false,
            gone: None,
            phase: Phase::Idle,
            channel_closed: false,
            exited: None,
            closed_wait: None,
            next_seq: 1,
        });
        (id, out)
    }

    /// Registers a participant channel, opened (or accepted) at `now` by
    /// process `pid` (0 if unknown). It is listed once it sends `Register`;
    /// one that does not register within the hello deadline is closed and
    /// forgotten.
    pub fn add_participant(&mut self, pid: u32, now: Instant) -> DriverId {
        let id = self.drivers.len();
        let participant = self.next_participant;
        self.next_participant = if participant >= MAX_PARTICIPANT_ID {
            1
        } else {
            participant + 1
        };
        self.by_participant.insert(participant, id);
        self.drivers.push(Driver {
            origin: Origin::Participant,
            retired: false,
            target: Target::Participant(participant),
            function: None,
            providers: Vec::new(),
            name: String::new(),
            pid,
            hello_deadline: now + self.config.deadlines.hello,
            ready_deadline: now,
            support: None,
            hello_received: false,
            ready: false,
            gone: None,
            phase: Phase::Idle,
            channel_closed: false,
            exited: None,
            closed_wait: None,
            next_seq: 1,
        });
        id
    }

    /// Whether a channel is a participant's.
    pub fn is_participant(&self, driver: DriverId) -> bool {
        self.drivers
            .get(driver)
            .is_some_and(|d| d.origin == Origin::Participant)
    }

    /// What a channel speaks for.
    pub fn target(&self, driver: DriverId) -> Option<Target> {
        self.drivers.get(driver).map(|d| d.target)
    }

    /// How log lines name a channel.
    pub fn label(&self, driver: DriverId) -> String {
        self.drivers
            .get(driver)
            .map_or_else(|| format!("channel #{driver}"), Driver::label)
    }

    /// The participant list as `ListParticipants` returns it: registered
    /// participants, gone ones included (so their death is reported).
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.drivers
            .iter()
            .filter(|d| d.origin == Origin::Participant && d.hello_received && !d.retired)
            .filter_map(|d| match d.target {
                Target::Participant(id) => Some(ParticipantInfo {
                    id,
                    name: d.name.clone(),
                    support: d.support.unwrap_or(ShutdownSupport::None),
                    pid: d.pid,
                    state: d.state(),
                    providers: d.providers.clone(),
                }),
                Target::Function(_) => None,
            })
            .collect()
    }

    /// Whether the driver has said `Hello`.
    pub fn said_hello(&self, driver: DriverId) -> bool {
        self.drivers.get(driver).is_some_and(|d| d.hello_received)
    }

    /// Records the process last seen speaking on a driver's channel.
    pub fn set_pid(&mut self, driver: DriverId, pid: u32) {
        if let Some(d) = self.drivers.get_mut(driver) {
            d.pid = pid;
        }
    }

    /// Forgets a driver: it leaves the device list and its address is free
    /// for a new driver. A driver of this protocol that is not gone yet is
    /// first reported gone (its channel closed), as on any other close; one
    /// that never said `Hello` leaves silently.
    pub fn retire(&mut self, driver: DriverId) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(d) = self.drivers.get(driver) else {
            return out;
        };
        if d.retired {
            return out;
        }
        let target = d.target;
        if d.hello_received && d.gone.is_none() {
            self.gone(driver, Gone::ChannelClosed, &mut out);
        }
        if let Some(d) = self.drivers.get_mut(driver) {
            d.retired = true;
            d.closed_wait = None;
            d.exited = None;
        }
        match target {
            Target::Function(address) => {
                if self.by_address.get(&address) == Some(&driver) {
                    self.by_address.remove(&address);
                }
            }
            Target::Participant(id) => {
                if self.by_participant.get(&id) == Some(&driver) {
                    self.by_participant.remove(&id);
                }
            }
        }
        out
    }

    /// Number of drivers (retired ones included).
    pub fn driver_count(&self) -> usize {
        self.drivers.len()
    }

    /// Address of a driver's function (`None` for a participant).
    pub fn address(&self, driver: DriverId) -> Option<PciAddress> {
        self.drivers
            .get(driver)
            .and_then(|d| d.function.as_ref())
            .map(|f| f.address)
    }

    /// Whether the driver is gone (exited, channel closed or cut off).
    pub fn is_gone(&self, driver: DriverId) -> bool {
        self.drivers.get(driver).is_none_or(|d| d.gone.is_some())
    }

    /// The device list as `ListDevices` returns it.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.drivers
            .iter()
            .filter(|d| !d.retired)
            .filter_map(|d| {
                let function = d.function.as_ref()?;
                Some(DeviceInfo {
                    address: function.address,
                    parent: function.parent,
                    driver: d.name.clone(),
                    support: d.support.unwrap_or(ShutdownSupport::None),
                    pid: d.pid,
                    state: d.state(),
                })
            })
            .collect()
    }

    /// The earliest instant at which a [`Input::Tick`] would change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.drivers
            .iter()
            .filter(|d| d.gone.is_none() && !d.retired)
            .flat_map(|d| {
                let hello = (!d.hello_received && d.support.is_none()).then_some(d.hello_deadline);
                let ready = (d.origin != Origin::Participant && !d.ready && !self.ready_emitted)
                    .then_some(d.ready_deadline);
                let exit = d.exited.as_ref().map(|(_, grace)| *grace);
                hello
                    .into_iter()
                    .chain(ready)
                    .chain(exit)
                    .chain(d.closed_wait)
            })
            .min()
    }

    /// Process one input at time `now`, returning what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::DriverMessage { driver, message } => {
                self.driver_message(driver, message, &mut out)
            }
            Input::DriverBadFrame { driver, error } => {
                self.violation(driver, 0, format!("undecodable frame: {error}"), &mut out)
            }
            Input::DriverChannelClosed { driver } if self.is_participant(driver) => {
                // No process of pcid's to wait for: the participant is gone now
                // (or, never registered, simply forgotten).
                if let Some(d) = self.drivers.get_mut(driver) {
                    d.channel_closed = true;
                    if d.hello_received {
                        self.gone(driver, Gone::ChannelClosed, &mut out);
                    } else {
                        out.extend(self.retire(driver));
                    }
                }
            }
            Input::DriverChannelClosed { driver } => {
                if let Some(d) = self.drivers.get_mut(driver) {
                    d.channel_closed = true;
                    match d.exited.take() {
                        Some((status, _)) => self.gone(driver, Gone::Exited(status), &mut out),
                        // Usually the process is exiting: wait (bounded) for its
                        // status, which says more than "closed its channel".
                        None if d.gone.is_none() => d.closed_wait = Some(now + DRIVER_EXIT_WAIT),
                        None => {}
                    }
                }
            }
            Input::DriverExited { driver, status } => {
                if let Some(d) = self.drivers.get_mut(driver) {
                    if d.channel_closed || d.gone.is_some() {
                        d.closed_wait = None;
                        self.gone(driver, Gone::Exited(status), &mut out);
                    } else {
                        // Messages the driver sent before exiting may still be
                        // in its channel: wait for end of file (bounded).
                        d.exited = Some((status, now + DRIVER_EXIT_WAIT));
                    }
                }
            }
            Input::ClientConnected { client } => {
                self.clients.insert(client);
            }
            Input::ClientMessage { client, message } => {
                self.client_message(client, message, &mut out)
            }
            Input::ClientBadFrame {
                client,
                error,
                fatal,
            } => {
                log::warn!("control client {client}: bad frame: {error}");
                out.push(Output::ToClient {
                    client,
                    message: ControlMessage::Error {
                        id: 0,
                        message: format!("undecodable frame: {error}"),
                    },
                });
                if fatal {
                    out.push(Output::CloseClient { client });
                    self.client_closed(client, &mut out);
                }
            }
            Input::ClientClosed { client } => self.client_closed(client, &mut out),
            Input::Tick => {}
        }
        self.check_deadlines(now, &mut out);
        out
    }

    fn check_deadlines(&mut self, now: Instant, out: &mut Vec<Output>) {
        let overdue: Vec<(DriverId, String)> = self
            .drivers
            .iter_mut()
            .enumerate()
            .filter_map(|(id, d)| match &d.exited {
                Some((_, grace)) if now >= *grace => d.exited.take().map(|(s, _)| (id, s)),
                _ => None,
            })
            .collect();
        for (id, status) in overdue {
            // The channel stays open after the process died (a child of the
            // driver holds it): stop reading it.
            out.push(Output::CloseDriver { driver: id });
            self.gone(id, Gone::Exited(status), out);
        }
        let closed: Vec<DriverId> = self
            .drivers
            .iter_mut()
            .enumerate()
            .filter_map(|(id, d)| match d.closed_wait {
                Some(grace) if now >= grace => {
                    d.closed_wait = None;
                    Some(id)
                }
                _ => None,
            })
            .collect();
        for id in closed {
            // The process lives on without its channel.
            self.gone(id, Gone::ChannelClosed, out);
        }
        let unregistered: Vec<DriverId> = self
            .drivers
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.origin == Origin::Participant
                    && !d.retired
                    && !d.hello_received
                    && now >= d.hello_deadline
            })
            .map(|(id, _)| id)
            .collect();
        for id in unregistered {
            log::warn!(
                "{}: no Register within {:?}; closing the channel",
                self.label(id),
                self.config.deadlines.hello
            );
            out.push(Output::CloseDriver { driver: id });
            out.extend(self.retire(id));
        }
        for d in &mut self.drivers {
            if d.origin != Origin::Participant
                && d.gone.is_none()
                && !d.retired
                && !d.hello_received
                && d.support.is_none()
                && now >= d.hello_deadline
            {
                log::warn!(
                    "{}: {} sent no Hello within its start deadline; treating it as a driver \
                     without shutdown support",
                    d.label(),
                    d.name
                );
                d.support = Some(ShutdownSupport::None);
            }
        }
        if !self.ready_emitted && self.drivers.iter().all(|d| d.settled(now)) {
            self.ready_emitted = true;
            let ready = self.drivers.iter().filter(|d| d.ready).count();
            for d in self
                .drivers
                .iter()
                .filter(|d| !d.ready && d.origin == Origin::Spawned)
            {
                let why = match &d.gone {
                    Some(g) => g.describe(d.who()),
                    None => "no Ready before its start deadline".to_string(),
                };
                log::warn!("{}: {} not ready: {why}", d.label(), d.name);
            }
            out.push(Output::Ready {
                ready,
                total: self
                    .drivers
                    .iter()
                    .filter(|d| d.origin != Origin::Participant)
                    .count(),
            });
        }
    }

    fn driver_message(&mut self, id: DriverId, message: DriverMessage, out: &mut Vec<Output>) {
        let live_names: BTreeSet<String> = self
            .drivers
            .iter()
            .enumerate()
            .filter(|(i, d)| {
                *i != id
                    && d.origin == Origin::Participant
                    && d.hello_received
                    && d.gone.is_none()
                    && !d.retired
            })
            .map(|(_, d)| d.name.clone())
            .collect();
        let Some(d) = self.drivers.get_mut(id) else {
            return;
        };
        if d.gone.is_some() || d.retired {
            // Messages already queued when the channel was cut off.
            return;
        }
        let target = d.target;
        let label = d.label();
        let participant = d.origin == Origin::Participant;
        match message {
            DriverMessage::Hello { .. } if participant => self.violation(
                id,
                0,
                "Hello on a participant channel (participants send Register)".to_string(),
                out,
            ),
            DriverMessage::Hello {
                version,
                driver,
                support,
            } => {
                if d.hello_received {
                    return self.violation(id, 0, "second Hello".to_string(), out);
                }
                if version == 0 {
                    return self.violation(id, 0, "Hello with protocol version 0".to_string(), out);
                }
                if d.support.is_some() && d.origin == Origin::Spawned {
                    log::warn!(
                        "{label}: Hello from {driver} arrived after its start deadline; accepting it"
                    );
                }
                d.hello_received = true;
                d.support = Some(support);
                if !driver.is_empty() {
                    d.name = driver;
                }
                log::info!(
                    "{label}: driver {} (pid {}) speaks protocol v{version}, shutdown support {support:?}",
                    d.name,
                    d.pid
                );
                let Some(function) = d.function.clone() else {
                    return;
                };
                out.push(Output::ToDriver {
                    driver: id,
                    message: DriverMessage::Welcome {
                        version: version.min(PROTOCOL_VERSION),
                        function,
                    },
                });
            }
            DriverMessage::Register { .. } if !participant => self.violation(
                id,
                0,
                "Register on a driver channel (drivers send Hello)".to_string(),
                out,
            ),
            DriverMessage::Register {
                version,
                name,
                support,
                providers,
            } => {
                if d.hello_received {
                    return self.violation(id, 0, "second Register".to_string(), out);
                }
                if version == 0 {
                    return self.violation(
                        id,
                        0,
                        "Register with protocol version 0".to_string(),
                        out,
                    );
                }
                if name.is_empty() {
                    return self.violation(id, 0, "Register with an empty name".to_string(), out);
                }
                if live_names.contains(&name) {
                    return self.violation(
                        id,
                        0,
                        format!("participant name {name:?} is in use by a live participant"),
                        out,
                    );
                }
                d.hello_received = true;
                d.ready = true;
                d.support = Some(support);
                d.name = name;
                d.providers = providers;
                let Target::Participant(pid_id) = d.target else {
                    return;
                };
                log::info!(
                    "{}: registered (pid {}), protocol v{version}, shutdown support {support:?}, \
                     depends on {}",
                    d.label(),
                    d.pid,
                    describe_providers(&d.providers)
                );
                out.push(Output::ToDriver {
                    driver: id,
                    message: DriverMessage::Registered {
                        version: version.min(PROTOCOL_VERSION),
                        id: pid_id,
                    },
                });
            }
            DriverMessage::Ready if participant => self.violation(
                id,
                0,
                "Ready on a participant channel (Register is all it sends)".to_string(),
                out,
            ),
            DriverMessage::Ready => {
                if !d.hello_received {
                    return self.violation(id, 0, "Ready before Hello".to_string(), out);
                }
                if d.ready {
                    return self.violation(id, 0, "second Ready".to_string(), out);
                }
                d.ready = true;
                log::info!("{label}: {} ready", d.name);
            }
            DriverMessage::BeginAck { seq, budget } => match d.phase {
                Phase::BeginSent(r) if r.seq == seq => {
                    d.phase = Phase::Begun;
                    self.reply(r.client, target.begin_ack(r.id, budget), out);
                }
                Phase::BeginSent(r) => self.violation(
                    id,
                    seq,
                    format!("BeginAck with sequence number {seq}, expected {}", r.seq),
                    out,
                ),
                phase => self.violation(
                    id,
                    seq,
                    format!("unexpected BeginAck (seq {seq}): {}", phase.describe()),
                    out,
                ),
            },
            DriverMessage::FinishAck {
                seq,
                outcome,
                elapsed,
                detail,
            } => match d.phase {
                Phase::FinishSent(r) | Phase::ShutdownSent(r) if r.seq == seq => {
                    d.phase = Phase::Done;
                    self.reply(
                        r.client,
                        target.finish_ack(r.id, outcome, elapsed, detail),
                        out,
                    );
                }
                Phase::FinishSent(r) | Phase::ShutdownSent(r) => self.violation(
                    id,
                    seq,
                    format!("FinishAck with sequence number {seq}, expected {}", r.seq),
                    out,
                ),
                phase => self.violation(
                    id,
                    seq,
                    format!("unexpected FinishAck (seq {seq}): {}", phase.describe()),
                    out,
                ),
            },
            DriverMessage::Error { seq, message } => match d.phase.outstanding() {
                Some(r) if r.seq == seq => {
                    log::warn!("{label}: {} refused request {seq}: {message}", d.name);
                    d.phase = match d.phase {
                        Phase::FinishSent(_) => Phase::Begun,
                        _ => Phase::Idle,
                    };
                    let who = d.who();
                    self.reply(
                        r.client,
                        target.error(
                            r.id,
                            DeviceErrorKind::NotSupported,
                            format!("{who} refused the request: {message}"),
                        ),
                        out,
                    );
                }
                _ => log::warn!(
                    "{label}: {} reports an error (seq {seq}): {message}",
                    d.name
                ),
            },
            DriverMessage::Welcome { .. }
            | DriverMessage::Registered { .. }
            | DriverMessage::Begin { .. }
            | DriverMessage::Finish { .. }
            | DriverMessage::Shutdown { .. } => {
                let seq = pcid_interface::wire::WireMessage::seq(&message);
                let who = d.who();
                self.violation(
                    id,
                    seq,
                    format!("pcid-to-{who} message {} sent by the {who}", message.name()),
                    out,
                );
            }
        }
    }

    /// The driver on `id` broke the protocol with the message numbered `seq`
    /// (0: none or unknown): tell it why, close its channel, fail its request.
    fn violation(&mut self, id: DriverId, seq: u32, what: String, out: &mut Vec<Output>) {
        let Some(d) = self.drivers.get(id) else {
            return;
        };
        if d.gone.is_some() {
            return;
        }
        log::error!(
            "{}: protocol violation by {} (pid {}): {what}; closing its channel",
            d.label(),
            d.name,
            d.pid
        );
        if !d.channel_closed {
            out.push(Output::ToDriver {
                driver: id,
                message: DriverMessage::Error {
                    seq,
                    message: violation_text(&what),
                },
            });
        }
        out.push(Output::CloseDriver { driver: id });
        self.gone(id, Gone::Violation(what), out);
    }

    fn gone(&mut self, id: DriverId, why: Gone, out: &mut Vec<Output>) {
        let Some(d) = self.drivers.get_mut(id) else {
            return;
        };
        let label = d.label();
        if d.gone.is_some() {
            if let Gone::Exited(status) = why {
                log::info!("{label}: {} exited ({status})", d.name);
            }
            return;
        }
        let target = d.target;
        let kind = why.kind();
        let message = why.describe(d.who());
        if d.phase == Phase::Done && kind == DeviceErrorKind::DriverDied {
            // Drivers end after their final FinishAck: not a failure.
            log::info!("{label}: {} finished shutdown; {message}", d.name);
            d.gone = Some(why);
            return;
        }
        if kind == DeviceErrorKind::DriverDied {
            log::error!("{label}: {} (pid {}): {message}", d.name, d.pid);
        }
        let outstanding = d.phase.outstanding();
        d.gone = Some(why);
        if let Some(r) = outstanding {
            self.reply(r.client, target.error(r.id, kind, message.clone()), out);
        }
        for &client in &self.clients {
            out.push(Output::ToClient {
                client,
                message: target.error(0, kind, message.clone()),
            });
        }
    }

    fn reply(&self, client: ClientId, message: ControlMessage, out: &mut Vec<Output>) {
        if self.clients.contains(&client) {
            out.push(Output::ToClient { client, message });
        }
    }

    fn client_closed(&mut self, client: ClientId, out: &mut Vec<Output>) {
        if !self.clients.remove(&client) {
            return;
        }
        if self.session_owner == Some(client) {
            self.session_owner = None;
            log::info!("shutdown session of control client {client} ended");
            if self.config.exit_after_shutdown {
                out.push(Output::Exit);
            }
        }
    }

    fn client_message(&mut self, client: ClientId, message: ControlMessage, out: &mut Vec<Output>) {
        if !self.clients.contains(&client) {
            return;
        }
        let (id, target, request) = match message {
            ControlMessage::ListDevices { id } => {
                out.push(Output::ToClient {
                    client,
                    message: ControlMessage::Devices {
                        id,
                        devices: self.devices(),
                    },
                });
                return;
            }
            ControlMessage::ListParticipants { id } => {
                out.push(Output::ToClient {
                    client,
                    message: ControlMessage::Participants {
                        id,
                        participants: self.participants(),
                    },
                });
                return;
            }
            ControlMessage::Begin {
                id,
                address,
                kind,
                deadline,
            } => (
                id,
                Target::Function(address),
                Request::Begin { kind, deadline },
            ),
            ControlMessage::Finish {
                id,
                address,
                deadline,
            } => (id, Target::Function(address), Request::Finish { deadline }),
            ControlMessage::Shutdown {
                id,
                address,
                kind,
                deadline,
            } => (
                id,
                Target::Function(address),
                Request::Shutdown { kind, deadline },
            ),
            ControlMessage::ParticipantBegin {
                id,
                participant,
                kind,
                deadline,
            } => (
                id,
                Target::Participant(participant),
                Request::Begin { kind, deadline },
            ),
            ControlMessage::ParticipantFinish {
                id,
                participant,
                deadline,
            } => (
                id,
                Target::Participant(participant),
                Request::Finish { deadline },
            ),
            ControlMessage::ParticipantShutdown {
                id,
                participant,
                kind,
                deadline,
            } => (
                id,
                Target::Participant(participant),
                Request::Shutdown { kind, deadline },
            ),
            other => {
                let id = other.id();
                out.push(Output::ToClient {
                    client,
                    message: ControlMessage::Error {
                        id,
                        message: format!("{} is not a request", other.name()),
                    },
                });
                return;
            }
        };
        let error = |kind, message: String| Output::ToClient {
            client,
            message: target.error(id, kind, message),
        };
        match self.session_owner {
            Some(owner) if owner != client => {
                out.push(error(
                    DeviceErrorKind::Busy,
                    format!("another shutdown session (control client {owner}) is in progress"),
                ));
                return;
            }
            _ => {}
        }
        let found = match target {
            Target::Function(address) => self.by_address.get(&address),
            Target::Participant(p) => self.by_participant.get(&p),
        }
        .copied()
        .filter(|&d| {
            // An unregistered participant channel is nobody yet.
            self.drivers
                .get(d)
                .is_some_and(|d| d.origin != Origin::Participant || d.hello_received)
        });
        let Some(driver) = found else {
            out.push(error(
                DeviceErrorKind::UnknownDevice,
                match target {
                    Target::Function(address) => format!("no driver serves {address}"),
                    Target::Participant(p) => format!("no participant #{p} is registered"),
                },
            ));
            return;
        };
        if self.session_owner.is_none() {
            log::info!("control client {client} starts a shutdown session");
            self.session_owner = Some(client);
        }
        let Some(d) = self.drivers.get_mut(driver) else {
            return;
        };
        let seq = d.next_seq;
        if let Some(g) = &d.gone {
            out.push(error(g.kind(), g.describe(d.who())));
            return;
        }
        let support = d.support;
        let requester = Requester { client, id, seq };
        let (phase, message) = match (request, d.phase, support) {
            (Request::Begin { kind, deadline }, Phase::Idle, Some(ShutdownSupport::TwoPhase)) => (
                Phase::BeginSent(requester),
                DriverMessage::Begin {
                    seq,
                    kind,
                    deadline,
                },
            ),
            (Request::Finish { deadline }, Phase::Begun, Some(ShutdownSupport::TwoPhase)) => (
                Phase::FinishSent(requester),
                DriverMessage::Finish { seq, deadline },
            ),
            (
                Request::Shutdown { kind, deadline },
                Phase::Idle,
                Some(ShutdownSupport::OnePhase | ShutdownSupport::TwoPhase),
            ) => (
                Phase::ShutdownSent(requester),
                DriverMessage::Shutdown {
                    seq,
                    kind,
                    deadline,
                },
            ),
            (request, phase, support) => {
                let why = match support {
                    None => format!("{} has not said Hello yet", d.name),
                    Some(ShutdownSupport::None) => {
                        format!("{} does not support shutdown", d.name)
                    }
                    Some(s) if !request.fits(s) => format!(
                        "{} declared {} shutdown; {} does not apply",
                        d.name,
                        s.name(),
                        request.name()
                    ),
                    Some(_) => format!(
                        "{} is out of phase for {}: {}",
                        request.name(),
                        d.name,
                        phase.describe()
                    ),
                };
                out.push(error(DeviceErrorKind::NotSupported, why));
                return;
            }
        };
        d.next_seq = d.next_seq.wrapping_add(1).max(1);
        d.phase = phase;
        log::debug!(
            "{}: relaying {} seq {seq} (request {id} of client {client})",
            d.label(),
            message.name()
        );
        out.push(Output::ToDriver { driver, message });
    }
}

/// "every device", "0000:00:01.0, participant lvm", "nothing".
fn describe_providers(providers: &[Provider]) -> String {
    if providers.is_empty() {
        return "nothing".to_string();
    }
    providers
        .iter()
        .map(|p| match p {
            Provider::Device(a) => a.to_string(),
            Provider::Participant(n) => format!("participant {n}"),
            Provider::AllDevices => "every device".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Copy)]
enum Request {
    Begin {
        kind: pcid_interface::protocol::ShutdownKind,
        deadline: Duration,
    },
    Finish {
        deadline: Duration,
    },
    Shutdown {
        kind: pcid_interface::protocol::ShutdownKind,
        deadline: Duration,
    },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Begin { .. } => "Begin",
            Request::Finish { .. } => "Finish",
            Request::Shutdown { .. } => "Shutdown",
        }
    }

    fn fits(&self, support: ShutdownSupport) -> bool {
        match self {
            Request::Begin { .. } | Request::Finish { .. } => support == ShutdownSupport::TwoPhase,
            Request::Shutdown { .. } => support != ShutdownSupport::None,
        }
    }
}

/// The text of the `Error` pcid sends a driver before closing its channel
/// over `what`, cut to the protocol's text limit.
fn violation_text(what: &str) -> String {
    let mut text = format!("protocol violation: {what}; pcid closes this channel");
    if text.len() > pcid_interface::wire::MAX_TEXT_LEN {
        let mut end = pcid_interface::wire::MAX_TEXT_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests;
