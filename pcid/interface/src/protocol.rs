//! Shutdown protocol v1: message types.
//!
//! Two message families share one framing ([`crate::wire`]):
//! * [`DriverMessage`] travels on a driver's channel between pcid and the driver;
//! * [`ControlMessage`] travels on pcid's control endpoint between shutdownd and pcid.
//!
//! Durations on the wire are microseconds, relative to when the message is
//! received (processes do not share a clock origin).

use std::time::Duration;

use crate::function::{PciAddress, PciFunction};

/// Protocol version spoken by this crate.
pub const PROTOCOL_VERSION: u16 = 1;

/// What shutdown a driver supports, declared in [`DriverMessage::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownSupport {
    /// The driver does not take part in shutdown.
    None,
    /// The driver accepts a single [`DriverMessage::Shutdown`] and answers `FinishAck`.
    OnePhase,
    /// The driver accepts `Begin` then `Finish`.
    TwoPhase,
}

/// Why the machine is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownKind {
    /// Power off.
    Poweroff,
    /// Reboot.
    Reboot,
}

/// How a device's shutdown ended, as reported by its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishOutcome {
    /// The device completed a normal shutdown.
    Clean,
    /// The normal shutdown did not complete; the driver escalated to an abrupt one.
    Abrupt,
    /// The device did not complete shutdown before the deadline.
    TimedOut,
    /// Shutdown failed (controller fatal status, device gone, ...); see the detail text.
    Failed,
}

/// Messages on a driver's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverMessage {
    /// driver → pcid, first message: protocol version, driver name, supported shutdown.
    Hello {
        /// Highest protocol version the driver speaks.
        version: u16,
        /// Driver name, e.g. `nvmed`.
        driver: String,
        /// Which shutdown the driver supports.
        support: ShutdownSupport,
    },
    /// pcid → driver, answer to `Hello`: the function the driver serves.
    Welcome {
        /// Protocol version pcid will speak (≤ the driver's).
        version: u16,
        /// The function description.
        function: PciFunction,
    },
    /// driver → pcid: the device is up and the driver is serving it
    /// (sent once, after `Welcome` and the driver's own bring-up).
    Ready,
    /// pcid → driver: start shutting down, do not wait for completion.
    Begin {
        /// Sequence number chosen by pcid; echoed in the ack.
        seq: u32,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Time allowed for the driver to answer `BeginAck`.
        deadline: Duration,
    },
    /// driver → pcid: shutdown started.
    BeginAck {
        /// Sequence number of the `Begin`.
        seq: u32,
        /// Time the device says it needs to finish (NVMe: RTD3E).
        budget: Duration,
    },
    /// pcid → driver: wait for the device to finish shutting down.
    Finish {
        /// Sequence number chosen by pcid; echoed in the ack.
        seq: u32,
        /// Time allowed for the whole finish phase.
        deadline: Duration,
    },
    /// pcid → one-phase driver: shut down completely, then answer `FinishAck`.
    Shutdown {
        /// Sequence number chosen by pcid; echoed in the ack.
        seq: u32,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Time allowed.
        deadline: Duration,
    },
    /// driver → pcid: answer to `Finish` or `Shutdown`.
    FinishAck {
        /// Sequence number of the `Finish` / `Shutdown`.
        seq: u32,
        /// How it ended.
        outcome: FinishOutcome,
        /// Time the driver measured for the device's shutdown.
        elapsed: Duration,
        /// Human-readable detail (may be empty), e.g. "CSTS.SHST=10b after 4.50 s".
        detail: String,
    },
    /// Either direction: the peer sent something unexpected; the channel stays usable
    /// unless the error says otherwise.
    Error {
        /// Sequence number of the offending message, 0 if unknown.
        seq: u32,
        /// What was wrong.
        message: String,
    },
    /// participant → pcid, first message on a participant channel: a daemon
    /// that is not a PCI driver (a file system, …) takes part in shutdown
    /// ahead of the devices it depends on.
    Register {
        /// Highest protocol version the participant speaks.
        version: u16,
        /// Its name, unique among live participants (e.g. `file`).
        name: String,
        /// Which shutdown it supports.
        support: ShutdownSupport,
        /// What it depends on: it is asked to shut down, and must be done,
        /// before any of these begins.
        providers: Vec<Provider>,
    },
    /// pcid → participant, answer to `Register`.
    Registered {
        /// Protocol version pcid will speak (≤ the participant's).
        version: u16,
        /// The participant's id (requests for it on the control endpoint name it).
        id: u32,
    },
}

/// Something a participant depends on: its shutdown must end before theirs
/// begins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provider {
    /// The device of one PCI function (e.g. the disk a file system is on).
    Device(PciAddress),
    /// Another participant, by name (e.g. a volume manager under a file system).
    Participant(String),
    /// Every PCI device (when the participant cannot say which ones).
    AllDevices,
}

/// One entry of pcid's participant list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// The id pcid gave it.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// What it declared.
    pub support: ShutdownSupport,
    /// Process id (0 if unknown).
    pub pid: u32,
    /// Running, or gone (its channel closed).
    pub state: DriverState,
    /// What it depends on.
    pub providers: Vec<Provider>,
}

/// State of a driver process as pcid sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverState {
    /// Spawned, `Hello` not yet received.
    Starting,
    /// `Hello` received; the driver is serving.
    Running,
    /// The process exited or its channel closed.
    Gone,
}

/// One entry of pcid's device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Address of the function.
    pub address: PciAddress,
    /// Parent bridge, if any (for ordering children before parents).
    pub parent: Option<PciAddress>,
    /// Driver name from the match table (or `Hello`).
    pub driver: String,
    /// What the driver declared (`None` until `Hello`).
    pub support: ShutdownSupport,
    /// Driver process id.
    pub pid: u32,
    /// Driver state.
    pub state: DriverState,
}

/// Why pcid could not deliver a request to a device, or the device failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceErrorKind {
    /// No device with that address.
    UnknownDevice,
    /// The driver process exited or closed its channel.
    DriverDied,
    /// The driver broke the protocol (garbage, wrong sequence, out-of-phase ack).
    ProtocolViolation,
    /// The request does not fit the driver's declared support or current phase.
    NotSupported,
    /// Another shutdown is already in progress.
    Busy,
}

/// Messages on pcid's control endpoint (shutdownd ↔ pcid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// shutdownd → pcid: list devices with drivers.
    ListDevices {
        /// Request id chosen by the client, echoed in the answer.
        id: u32,
    },
    /// pcid → shutdownd: the device list.
    Devices {
        /// Request id.
        id: u32,
        /// All functions that have a driver process.
        devices: Vec<DeviceInfo>,
    },
    /// shutdownd → pcid: relay `Begin` to the device's driver.
    Begin {
        /// Request id.
        id: u32,
        /// Target device.
        address: PciAddress,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// shutdownd → pcid: relay `Finish`.
    Finish {
        /// Request id.
        id: u32,
        /// Target device.
        address: PciAddress,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// shutdownd → pcid: relay a one-phase `Shutdown`.
    Shutdown {
        /// Request id.
        id: u32,
        /// Target device.
        address: PciAddress,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// pcid → shutdownd: the driver answered `BeginAck`.
    BeginAck {
        /// Request id of the `Begin`.
        id: u32,
        /// Device.
        address: PciAddress,
        /// Budget the driver announced.
        budget: Duration,
    },
    /// pcid → shutdownd: the driver answered `FinishAck`.
    FinishAck {
        /// Request id of the `Finish` / `Shutdown`.
        id: u32,
        /// Device.
        address: PciAddress,
        /// Outcome.
        outcome: FinishOutcome,
        /// Time measured by the driver.
        elapsed: Duration,
        /// Detail text.
        detail: String,
    },
    /// pcid → shutdownd: a request for a device failed.
    DeviceError {
        /// Request id (0 for unsolicited events such as a driver dying).
        id: u32,
        /// Device.
        address: PciAddress,
        /// What went wrong.
        kind: DeviceErrorKind,
        /// Detail text.
        message: String,
    },
    /// Either direction: a malformed or unexpected message.
    Error {
        /// Request id, 0 if unknown.
        id: u32,
        /// What was wrong.
        message: String,
    },
    /// shutdownd → pcid: list the registered participants.
    ListParticipants {
        /// Request id.
        id: u32,
    },
    /// pcid → shutdownd: the participant list.
    Participants {
        /// Request id.
        id: u32,
        /// Every registered participant (gone ones included).
        participants: Vec<ParticipantInfo>,
    },
    /// shutdownd → pcid: relay `Begin` to a participant.
    ParticipantBegin {
        /// Request id.
        id: u32,
        /// The participant's id.
        participant: u32,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// shutdownd → pcid: relay `Finish` to a participant.
    ParticipantFinish {
        /// Request id.
        id: u32,
        /// The participant's id.
        participant: u32,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// shutdownd → pcid: relay a one-phase `Shutdown` to a participant.
    ParticipantShutdown {
        /// Request id.
        id: u32,
        /// The participant's id.
        participant: u32,
        /// Poweroff or reboot.
        kind: ShutdownKind,
        /// Deadline to pass on.
        deadline: Duration,
    },
    /// pcid → shutdownd: the participant answered `BeginAck`.
    ParticipantBeginAck {
        /// Request id of the `ParticipantBegin`.
        id: u32,
        /// The participant's id.
        participant: u32,
        /// Budget it announced.
        budget: Duration,
    },
    /// pcid → shutdownd: the participant answered `FinishAck`.
    ParticipantFinishAck {
        /// Request id of the `ParticipantFinish` / `ParticipantShutdown`.
        id: u32,
        /// The participant's id.
        participant: u32,
        /// Outcome.
        outcome: FinishOutcome,
        /// Time it measured.
        elapsed: Duration,
        /// Detail text.
        detail: String,
    },
    /// pcid → shutdownd: a request for a participant failed, or (id 0) the
    /// participant went away.
    ParticipantError {
        /// Request id (0 for unsolicited events).
        id: u32,
        /// The participant's id.
        participant: u32,
        /// What went wrong.
        kind: DeviceErrorKind,
        /// Detail text.
        message: String,
    },
}

impl ShutdownSupport {
    /// The name used in log lines, error texts and shutdownd's report:
    /// `two-phase`, `one-phase` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownSupport::TwoPhase => "two-phase",
            ShutdownSupport::OnePhase => "one-phase",
            ShutdownSupport::None => "none",
        }
    }
}

impl FinishOutcome {
    /// The name used in log lines and in shutdownd's report: `clean`,
    /// `abrupt`, `timed-out` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            FinishOutcome::Clean => "clean",
            FinishOutcome::Abrupt => "abrupt",
            FinishOutcome::TimedOut => "timed-out",
            FinishOutcome::Failed => "failed",
        }
    }
}

impl ShutdownKind {
    /// The name used on command lines and in shutdownd's report:
    /// `poweroff` or `reboot`.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownKind::Poweroff => "poweroff",
            ShutdownKind::Reboot => "reboot",
        }
    }
}

impl DriverMessage {
    /// The message's name as used in PROTOCOL.md and in log lines (`"BeginAck"`).
    pub fn name(&self) -> &'static str {
        match self {
            DriverMessage::Hello { .. } => "Hello",
            DriverMessage::Welcome { .. } => "Welcome",
            DriverMessage::Ready => "Ready",
            DriverMessage::Begin { .. } => "Begin",
            DriverMessage::BeginAck { .. } => "BeginAck",
            DriverMessage::Finish { .. } => "Finish",
            DriverMessage::Shutdown { .. } => "Shutdown",
            DriverMessage::FinishAck { .. } => "FinishAck",
            DriverMessage::Error { .. } => "Error",
            DriverMessage::Register { .. } => "Register",
            DriverMessage::Registered { .. } => "Registered",
        }
    }
}

impl ControlMessage {
    /// The message's name as used in PROTOCOL.md and in log lines (`"DeviceError"`).
    pub fn name(&self) -> &'static str {
        match self {
            ControlMessage::ListDevices { .. } => "ListDevices",
            ControlMessage::Devices { .. } => "Devices",
            ControlMessage::Begin { .. } => "Begin",
            ControlMessage::Finish { .. } => "Finish",
            ControlMessage::Shutdown { .. } => "Shutdown",
            ControlMessage::BeginAck { .. } => "BeginAck",
            ControlMessage::FinishAck { .. } => "FinishAck",
            ControlMessage::DeviceError { .. } => "DeviceError",
            ControlMessage::Error { .. } => "Error",
            ControlMessage::ListParticipants { .. } => "ListParticipants",
            ControlMessage::Participants { .. } => "Participants",
            ControlMessage::ParticipantBegin { .. } => "ParticipantBegin",
            ControlMessage::ParticipantFinish { .. } => "ParticipantFinish",
            ControlMessage::ParticipantShutdown { .. } => "ParticipantShutdown",
            ControlMessage::ParticipantBeginAck { .. } => "ParticipantBeginAck",
            ControlMessage::ParticipantFinishAck { .. } => "ParticipantFinishAck",
            ControlMessage::ParticipantError { .. } => "ParticipantError",
        }
    }

    /// The request id the message carries.
    pub fn id(&self) -> u32 {
        match self {
            ControlMessage::ListDevices { id }
            | ControlMessage::Devices { id, .. }
            | ControlMessage::Begin { id, .. }
            | ControlMessage::Finish { id, .. }
            | ControlMessage::Shutdown { id, .. }
            | ControlMessage::BeginAck { id, .. }
            | ControlMessage::FinishAck { id, .. }
            | ControlMessage::DeviceError { id, .. }
            | ControlMessage::Error { id, .. }
            | ControlMessage::ListParticipants { id }
            | ControlMessage::Participants { id, .. }
            | ControlMessage::ParticipantBegin { id, .. }
            | ControlMessage::ParticipantFinish { id, .. }
            | ControlMessage::ParticipantShutdown { id, .. }
            | ControlMessage::ParticipantBeginAck { id, .. }
            | ControlMessage::ParticipantFinishAck { id, .. }
            | ControlMessage::ParticipantError { id, .. } => *id,
        }
    }
}
