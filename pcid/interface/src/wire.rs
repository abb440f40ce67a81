//! Framing and encoding of [`crate::protocol`] messages. See `PROTOCOL.md`.
//!
//! Every message travels as one *frame*: a fixed 16-byte header followed by a
//! payload whose length the header states. All integers are little-endian.
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! | 0      | 4    | magic `b"PCID"` (`50 43 49 44`)                   |
//! | 4      | 2    | frame format version, [`WIRE_VERSION`] (1)        |
//! | 6      | 1    | message type ([`msg_type`])                       |
//! | 7      | 1    | flags, must be 0 in version 1                     |
//! | 8      | 4    | sequence number / request id (0 if none)          |
//! | 12     | 4    | payload length in bytes, ≤ [`MAX_PAYLOAD_LEN`]    |
//!
//! Decoding is done in the smoltcp manner: [`FrameHeader::parse`] checks the
//! header once, then the payload is read by a bounds-checked cursor. No input
//! makes the decoder panic or allocate more than the frame it was given; every
//! failure is a [`DecodeError`].
//!
//! Durations are encoded as `u64` microseconds (sub-microsecond parts are
//! truncated, durations above `u64::MAX` µs saturate). Strings are a `u16`
//! byte length followed by that many bytes of UTF-8, each field with its own
//! maximum length.

use std::time::Duration;

use crate::function::{Bar, BarKind};
use crate::function::{FunctionBackend, PciAddress, PciFunction};
use crate::protocol::{
    ControlMessage, DeviceErrorKind, DeviceInfo, DriverMessage, DriverState, FinishOutcome,
    ParticipantInfo, Provider, ShutdownKind, ShutdownSupport,
};

/// The four magic bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"PCID";
/// Frame format version written and accepted by this crate.
pub const WIRE_VERSION: u16 = 1;
/// Length of the frame header.
pub const HEADER_LEN: usize = 16;
/// Maximum length of a whole frame (header + payload): 64 KiB.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Maximum payload length (`MAX_FRAME_LEN - HEADER_LEN`).
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Maximum byte length of a driver name.
pub const MAX_NAME_LEN: usize = 255;
/// Maximum byte length of a detail or error text.
pub const MAX_TEXT_LEN: usize = 1024;
/// Maximum byte length of a filesystem path.
pub const MAX_PATH_LEN: usize = 4096;
/// Most providers one participant may name.
pub const MAX_PROVIDERS: usize = 256;

/// Message type codes (header byte 6).
///
/// Driver-channel messages use `0x01..=0x0B` (`0x0A`, `0x0B`: participant
/// registration), control-endpoint messages `0x41..=0x51` (`0x4A..=0x51`:
/// participants). A type from the other family is an unknown type.
pub mod msg_type {
    /// [`DriverMessage::Hello`](crate::protocol::DriverMessage::Hello).
    pub const HELLO: u8 = 0x01;
    /// [`DriverMessage::Welcome`](crate::protocol::DriverMessage::Welcome).
    pub const WELCOME: u8 = 0x02;
    /// [`DriverMessage::Ready`](crate::protocol::DriverMessage::Ready).
    pub const READY: u8 = 0x03;
    /// [`DriverMessage::Begin`](crate::protocol::DriverMessage::Begin).
    pub const BEGIN: u8 = 0x04;
    /// [`DriverMessage::BeginAck`](crate::protocol::DriverMessage::BeginAck).
    pub const BEGIN_ACK: u8 = 0x05;
    /// [`DriverMessage::Finish`](crate::protocol::DriverMessage::Finish).
    pub const FINISH: u8 = 0x06;
    /// [`DriverMessage::Shutdown`](crate::protocol::DriverMessage::Shutdown).
    pub const SHUTDOWN: u8 = 0x07;
    /// [`DriverMessage::FinishAck`](crate::protocol::DriverMessage::FinishAck).
    pub const FINISH_ACK: u8 = 0x08;
    /// [`DriverMessage::Error`](crate::protocol::DriverMessage::Error).
    pub const ERROR: u8 = 0x09;
    /// [`DriverMessage::Register`](crate::protocol::DriverMessage::Register).
    pub const REGISTER: u8 = 0x0A;
    /// [`DriverMessage::Registered`](crate::protocol::DriverMessage::Registered).
    pub const REGISTERED: u8 = 0x0B;

    /// [`ControlMessage::ListDevices`](crate::protocol::ControlMessage::ListDevices).
    pub const CTL_LIST_DEVICES: u8 = 0x41;
    /// [`ControlMessage::Devices`](crate::protocol::ControlMessage::Devices).
    pub const CTL_DEVICES: u8 = 0x42;
    /// [`ControlMessage::Begin`](crate::protocol::ControlMessage::Begin).
    pub const CTL_BEGIN: u8 = 0x43;
    /// [`ControlMessage::Finish`](crate::protocol::ControlMessage::Finish).
    pub const CTL_FINISH: u8 = 0x44;
    /// [`ControlMessage::Shutdown`](crate::protocol::ControlMessage::Shutdown).
    pub const CTL_SHUTDOWN: u8 = 0x45;
    /// [`ControlMessage::BeginAck`](crate::protocol::ControlMessage::BeginAck).
    pub const CTL_BEGIN_ACK: u8 = 0x46;
    /// [`ControlMessage::FinishAck`](crate::protocol::ControlMessage::FinishAck).
    pub const CTL_FINISH_ACK: u8 = 0x47;
    /// [`ControlMessage::DeviceError`](crate::protocol::ControlMessage::DeviceError).
    pub const CTL_DEVICE_ERROR: u8 = 0x48;
    /// [`ControlMessage::Error`](crate::protocol::ControlMessage::Error).
    pub const CTL_ERROR: u8 = 0x49;
    /// [`ControlMessage::ListParticipants`](crate::protocol::ControlMessage::ListParticipants).
    pub const CTL_LIST_PARTICIPANTS: u8 = 0x4A;
    /// [`ControlMessage::Participants`](crate::protocol::ControlMessage::Participants).
    pub const CTL_PARTICIPANTS: u8 = 0x4B;
    /// [`ControlMessage::ParticipantBegin`](crate::protocol::ControlMessage::ParticipantBegin).
    pub const CTL_PARTICIPANT_BEGIN: u8 = 0x4C;
    /// [`ControlMessage::ParticipantFinish`](crate::protocol::ControlMessage::ParticipantFinish).
    pub const CTL_PARTICIPANT_FINISH: u8 = 0x4D;
    /// [`ControlMessage::ParticipantShutdown`](crate::protocol::ControlMessage::ParticipantShutdown).
    pub const CTL_PARTICIPANT_SHUTDOWN: u8 = 0x4E;
    /// [`ControlMessage::ParticipantBeginAck`](crate::protocol::ControlMessage::ParticipantBeginAck).
    pub const CTL_PARTICIPANT_BEGIN_ACK: u8 = 0x4F;
    /// [`ControlMessage::ParticipantFinishAck`](crate::protocol::ControlMessage::ParticipantFinishAck).
    pub const CTL_PARTICIPANT_FINISH_ACK: u8 = 0x50;
    /// [`ControlMessage::ParticipantError`](crate::protocol::ControlMessage::ParticipantError).
    pub const CTL_PARTICIPANT_ERROR: u8 = 0x51;
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame does not start with [`MAGIC`].
    #[error("bad magic {found:02x?}, expected \"PCID\"")]
    BadMagic {
        /// The first four bytes received.
        found: [u8; 4],
    },
    /// The header names a frame format version this crate does not speak.
    #[error("unsupported frame version {version} (this side speaks {WIRE_VERSION})")]
    UnsupportedVersion {
        /// Version found in the header.
        version: u16,
    },
    /// The header announces a payload larger than [`MAX_PAYLOAD_LEN`].
    #[error("payload length {length} exceeds the maximum of {max}")]
    Oversize {
        /// Announced payload length.
        length: u32,
        /// The maximum.
        max: u32,
    },
    /// Fewer bytes than needed.
    #[error("truncated {what}: need {needed} bytes, have {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Bytes left over after the message (or after the announced frame).
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
    /// A message type that is not defined for this channel.
    #[error("unknown message type 0x{msg_type:02x}")]
    UnknownMessageType {
        /// The type byte.
        msg_type: u8,
    },
    /// Flags other than 0 (version 1 defines none).
    #[error("unsupported flags 0x{flags:02x}")]
    UnsupportedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A string field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// A string field is longer than its maximum.
    #[error("field {field} is {len} bytes long, the maximum is {max}")]
    StringTooLong {
        /// Field name.
        field: &'static str,
        /// Announced length.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// An enumeration byte has no defined meaning.
    #[error("field {field} has invalid value {value}")]
    InvalidEnumValue {
        /// Field name.
        field: &'static str,
        /// The value found.
        value: u8,
    },
    /// A PCI address with device > 31 or function > 7.
    #[error("invalid PCI address: device {device}, function {function}")]
    InvalidAddress {
        /// Device number found.
        device: u8,
        /// Function number found.
        function: u8,
    },
    /// A list longer than its maximum.
    #[error("{count} {what}, at most {max}")]
    TooMany {
        /// What the list holds.
        what: &'static str,
        /// Announced count.
        count: usize,
        /// Maximum.
        max: usize,
    },
}

impl DecodeError {
    /// Whether the byte stream can still be trusted after this error.
    ///
    /// Errors found in the header (bad magic, unsupported version, oversize
    /// length) mean frame boundaries are lost: the channel must be closed.
    /// Every other error concerns one complete frame that has been consumed;
    /// the receiver answers `Error` and carries on.
    pub fn is_stream_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::BadMagic { .. }
                | DecodeError::UnsupportedVersion { .. }
                | DecodeError::Oversize { .. }
        )
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is longer than its maximum.
    #[error("field {field} is {len} bytes long, the maximum is {max}")]
    StringTooLong {
        /// Field name.
        field: &'static str,
        /// Actual length.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The encoded frame would exceed [`MAX_FRAME_LEN`].
    #[error("encoded frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Encoded length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A PCI address with device > 31 or function > 7.
    #[error("invalid PCI address: device {device}, function {function}")]
    InvalidAddress {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// A Redox function with more than [`MAX_BARS`] BARs or a BAR index above 5.
    #[error("invalid BAR list: {0}")]
    InvalidBars(String),
    /// A list longer than its maximum.
    #[error("{count} {what}, at most {max}")]
    TooMany {
        /// What the list holds.
        what: &'static str,
        /// Count.
        count: usize,
        /// Maximum.
        max: usize,
    },
}

/// Most BARs a function has (and a `Welcome` may list).
pub const MAX_BARS: usize = 6;

/// Wire code of a BAR kind.
fn bar_kind_code(kind: BarKind) -> u8 {
    match kind {
        BarKind::Memory32 {
            prefetchable: false,
        } => 1,
        BarKind::Memory32 { prefetchable: true } => 2,
        BarKind::Memory64 {
            prefetchable: false,
        } => 3,
        BarKind::Memory64 { prefetchable: true } => 4,
        BarKind::Io => 5,
    }
}

/// BAR kind of a wire code.
fn bar_kind(code: u8) -> Option<BarKind> {
    Some(match code {
        1 => BarKind::Memory32 {
            prefetchable: false,
        },
        2 => BarKind::Memory32 { prefetchable: true },
        3 => BarKind::Memory64 {
            prefetchable: false,
        },
        4 => BarKind::Memory64 { prefetchable: true },
        5 => BarKind::Io,
        _ => return None,
    })
}

/// A parsed, checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte.
    pub msg_type: u8,
    /// Flags byte (0 in version 1; checked when the payload is decoded).
    pub flags: u8,
    /// Sequence number / request id.
    pub seq: u32,
    /// Payload length, ≤ [`MAX_PAYLOAD_LEN`].
    pub payload_len: u32,
}

impl FrameHeader {
    /// Checks magic, version and payload length of the first [`HEADER_LEN`]
    /// bytes of `buf`. Errors returned here are stream-fatal
    /// ([`DecodeError::is_stream_fatal`]) except `Truncated`.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                what: "frame header",
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let mut r = Reader::new(h);
        let magic = r.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        let version = r.u16("version")?;
        if version != WIRE_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let msg_type = r.u8("message type")?;
        let flags = r.u8("flags")?;
        let seq = r.u32("sequence")?;
        let payload_len = r.u32("payload length")?;
        if payload_len as usize > MAX_PAYLOAD_LEN {
            return Err(DecodeError::Oversize {
                length: payload_len,
                max: MAX_PAYLOAD_LEN as u32,
            });
        }
        Ok(Self {
            msg_type,
            flags,
            seq,
            payload_len,
        })
    }

    /// Total frame length (header + payload).
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
        out[6] = self.msg_type;
        out[7] = self.flags;
        out[8..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
    }
}

/// A message family that can travel in frames.
pub trait WireMessage: Sized {
    /// Encodes the message as one complete frame.
    fn encode(&self) -> Result<Vec<u8>, EncodeError>;

    /// Decodes the payload of a frame whose header was already checked.
    fn decode_payload(header: &FrameHeader, payload: &[u8]) -> Result<Self, DecodeError>;

    /// Decodes exactly one complete frame (header + payload, nothing more).
    fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        let header = FrameHeader::parse(frame)?;
        let payload = &frame[HEADER_LEN..];
        let want = header.payload_len as usize;
        if payload.len() < want {
            return Err(DecodeError::Truncated {
                what: "payload",
                needed: want,
                available: payload.len(),
            });
        }
        if payload.len() > want {
            return Err(DecodeError::TrailingBytes {
                extra: payload.len() - want,
            });
        }
        Self::decode_payload(&header, payload)
    }

    /// Sequence number / request id carried in the header (0 if none).
    fn seq(&self) -> u32;
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let available = self.remaining();
        if n > available {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn duration(&mut self, what: &'static str) -> Result<Duration, DecodeError> {
        Ok(Duration::from_micros(self.u64(what)?))
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u16(field)? as usize;
        if len > max {
            return Err(DecodeError::StringTooLong { field, len, max });
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(DecodeError::InvalidUtf8 { field }),
        }
    }

    fn address(&mut self) -> Result<PciAddress, DecodeError> {
        let segment = self.u16("address segment")?;
        let bus = self.u8("address bus")?;
        let device = self.u8("address device")?;
        let function = self.u8("address function")?;
        if device > 31 || function > 7 {
            return Err(DecodeError::InvalidAddress { device, function });
        }
        Ok(PciAddress {
            segment,
            bus,
            device,
            function,
        })
    }

    fn opt_address(&mut self, field: &'static str) -> Result<Option<PciAddress>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.address()?)),
            value => Err(DecodeError::InvalidEnumValue { field, value }),
        }
    }

    /// Reads a one-byte enumeration code (see [`WireCode`]).
    fn code<T: WireCode>(&mut self, field: &'static str) -> Result<T, DecodeError> {
        let value = self.u8(field)?;
        T::from_code(value).ok_or(DecodeError::InvalidEnumValue { field, value })
    }

    fn function(&mut self) -> Result<PciFunction, DecodeError> {
        let address = self.address()?;
        let vendor = self.u16("vendor")?;
        let device = self.u16("device")?;
        let class = self.u8("class")?;
        let subclass = self.u8("subclass")?;
        let interface = self.u8("interface")?;
        let revision = self.u8("revision")?;
        let parent = self.opt_address("parent")?;
        let backend = match self.u8("backend")? {
            1 => FunctionBackend::Simulated,
            2 => FunctionBackend::LinuxSysfs {
                sysfs_path: self.string("sysfs_path", MAX_PATH_LEN)?,
            },
            3 => {
                let count = self.u8("bar count")?;
                if usize::from(count) > MAX_BARS {
                    return Err(DecodeError::InvalidEnumValue {
                        field: "bar count",
                        value: count,
                    });
                }
                let mut bars = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let index = self.u8("bar index")?;
                    if usize::from(index) >= MAX_BARS {
                        return Err(DecodeError::InvalidEnumValue {
                            field: "bar index",
                            value: index,
                        });
                    }
                    let code = self.u8("bar kind")?;
                    let kind = bar_kind(code).ok_or(DecodeError::InvalidEnumValue {
                        field: "bar kind",
                        value: code,
                    })?;
                    bars.push(Bar {
                        index,
                        kind,
                        address: self.u64("bar address")?,
                        size: self.u64("bar size")?,
                    });
                }
                let legacy_irq = match self.u8("legacy irq")? {
                    0 => None,
                    1 => Some(self.u8("legacy irq")?),
                    value => {
                        return Err(DecodeError::InvalidEnumValue {
                            field: "legacy irq",
                            value,
                        })
                    }
                };
                FunctionBackend::Redox { bars, legacy_irq }
            }
            value => {
                return Err(DecodeError::InvalidEnumValue {
                    field: "backend",
                    value,
                })
            }
        };
        Ok(PciFunction {
            address,
            vendor,
            device,
            class,
            subclass,
            interface,
            revision,
            parent,
            backend,
        })
    }

    fn device_info(&mut self) -> Result<DeviceInfo, DecodeError> {
        let address = self.address()?;
        let parent = self.opt_address("parent")?;
        let support = self.code("support")?;
        let pid = self.u32("pid")?;
        let state = self.code("state")?;
        let driver = self.string("driver", MAX_NAME_LEN)?;
        Ok(DeviceInfo {
            address,
            parent,
            driver,
            support,
            pid,
            state,
        })
    }

    fn providers(&mut self) -> Result<Vec<Provider>, DecodeError> {
        let count = usize::from(self.u16("provider count")?);
        if count > MAX_PROVIDERS {
            return Err(DecodeError::TooMany {
                what: "providers",
                count,
                max: MAX_PROVIDERS,
            });
        }
        // Each provider takes at least one byte.
        let mut out = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            out.push(match self.u8("provider kind")? {
                1 => Provider::Device(self.address()?),
                2 => Provider::Participant(self.string("provider name", MAX_NAME_LEN)?),
                3 => Provider::AllDevices,
                value => {
                    return Err(DecodeError::InvalidEnumValue {
                        field: "provider kind",
                        value,
                    })
                }
            });
        }
        Ok(out)
    }

    fn participant_info(&mut self) -> Result<ParticipantInfo, DecodeError> {
        let id = self.u32("participant id")?;
        let support = self.code("support")?;
        let pid = self.u32("pid")?;
        let state = self.code("state")?;
        let name = self.string("name", MAX_NAME_LEN)?;
        let providers = self.providers()?;
        Ok(ParticipantInfo {
            id,
            name,
            support,
            pid,
            state,
            providers,
        })
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Frame builder: reserves the header, appends the payload, patches the length.
struct Writer {
    buf: Vec<u8>,
    msg_type: u8,
    seq: u32,
}

impl Writer {
    fn new(msg_type: u8, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.resize(HEADER_LEN, 0);
        Self { buf, msg_type, seq }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn duration(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn string(&mut self, field: &'static str, s: &str, max: usize) -> Result<(), EncodeError> {
        let len = s.len();
        if len > max || len > usize::from(u16::MAX) {
            return Err(EncodeError::StringTooLong { field, len, max });
        }
        self.u16(len as u16);
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn address(&mut self, a: &PciAddress) -> Result<(), EncodeError> {
        if a.device > 31 || a.function > 7 {
            return Err(EncodeError::InvalidAddress {
                device: a.device,
                function: a.function,
            });
        }
        self.u16(a.segment);
        self.u8(a.bus);
        self.u8(a.device);
        self.u8(a.function);
        Ok(())
    }

    fn opt_address(&mut self, a: &Option<PciAddress>) -> Result<(), EncodeError> {
        match a {
            None => self.u8(0),
            Some(a) => {
                self.u8(1);
                self.address(a)?;
            }
        }
        Ok(())
    }

    fn function(&mut self, f: &PciFunction) -> Result<(), EncodeError> {
        self.address(&f.address)?;
        self.u16(f.vendor);
        self.u16(f.device);
        self.u8(f.class);
        self.u8(f.subclass);
        self.u8(f.interface);
        self.u8(f.revision);
        self.opt_address(&f.parent)?;
        match &f.backend {
            FunctionBackend::Simulated => self.u8(1),
            FunctionBackend::LinuxSysfs { sysfs_path } => {
                self.u8(2);
                self.string("sysfs_path", sysfs_path, MAX_PATH_LEN)?;
            }
            FunctionBackend::Redox { bars, legacy_irq } => {
                self.u8(3);
                if bars.len() > MAX_BARS {
                    return Err(EncodeError::InvalidBars(format!(
                        "{} BARs, at most {MAX_BARS}",
                        bars.len()
                    )));
                }
                // At most 6 entries, checked above.
                self.u8(bars.len() as u8);
                for bar in bars {
                    if usize::from(bar.index) >= MAX_BARS {
                        return Err(EncodeError::InvalidBars(format!(
                            "BAR index {} (0..=5)",
                            bar.index
                        )));
                    }
                    self.u8(bar.index);
                    self.u8(bar_kind_code(bar.kind));
                    self.u64(bar.address);
                    self.u64(bar.size);
                }
                match legacy_irq {
                    None => self.u8(0),
                    Some(irq) => {
                        self.u8(1);
                        self.u8(*irq);
                    }
                }
            }
        }
        Ok(())
    }

    fn device_info(&mut self, d: &DeviceInfo) -> Result<(), EncodeError> {
        self.address(&d.address)?;
        self.opt_address(&d.parent)?;
        self.u8(d.support.code());
        self.u32(d.pid);
        self.u8(d.state.code());
        self.string("driver", &d.driver, MAX_NAME_LEN)
    }

    fn providers(&mut self, providers: &[Provider]) -> Result<(), EncodeError> {
        if providers.len() > MAX_PROVIDERS {
            return Err(EncodeError::TooMany {
                what: "providers",
                count: providers.len(),
                max: MAX_PROVIDERS,
            });
        }
        // At most MAX_PROVIDERS, checked above.
        self.u16(providers.len() as u16);
        for p in providers {
            match p {
                Provider::Device(a) => {
                    self.u8(1);
                    self.address(a)?;
                }
                Provider::Participant(name) => {
                    self.u8(2);
                    self.string("provider name", name, MAX_NAME_LEN)?;
                }
                Provider::AllDevices => self.u8(3),
            }
        }
        Ok(())
    }

    fn participant_info(&mut self, p: &ParticipantInfo) -> Result<(), EncodeError> {
        self.u32(p.id);
        self.u8(p.support.code());
        self.u32(p.pid);
        self.u8(p.state.code());
        self.string("name", &p.name, MAX_NAME_LEN)?;
        self.providers(&p.providers)
    }

    fn check_size(&self) -> Result<(), EncodeError> {
        if self.buf.len() > MAX_FRAME_LEN {
            return Err(EncodeError::FrameTooLarge {
                len: self.buf.len(),
                max: MAX_FRAME_LEN,
            });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        let len = self.buf.len();
        if len > MAX_FRAME_LEN {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        let header = FrameHeader {
            msg_type: self.msg_type,
            flags: 0,
            seq: self.seq,
            payload_len: (len - HEADER_LEN) as u32,
        };
        let mut h = [0u8; HEADER_LEN];
        header.emit(&mut h);
        self.buf[..HEADER_LEN].copy_from_slice(&h);
        Ok(self.buf)
    }
}

/// A protocol enumeration and its one-byte wire codes (PROTOCOL.md §2.2).
/// Code 0 is never valid, so a zeroed field is always caught.
trait WireCode: Sized + Copy {
    fn code(self) -> u8;
    fn from_code(code: u8) -> Option<Self>;
}

/// Declares the wire codes of an enumeration once, for both directions.
macro_rules! wire_codes {
    ($ty:ty { $($variant:ident = $code:literal),+ $(,)? }) => {
        impl WireCode for $ty {
            fn code(self) -> u8 {
                match self {
                    $(<$ty>::$variant => $code,)+
                }
            }
            fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(<$ty>::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_codes!(ShutdownKind { Poweroff = 1, Reboot = 2 });
wire_codes!(ShutdownSupport { None = 1, OnePhase = 2, TwoPhase = 3 });
wire_codes!(FinishOutcome { Clean = 1, Abrupt = 2, TimedOut = 3, Failed = 4 });
wire_codes!(DriverState { Starting = 1, Running = 2, Gone = 3 });
wire_codes!(DeviceErrorKind {
    UnknownDevice = 1,
    DriverDied = 2,
    ProtocolViolation = 3,
    NotSupported = 4,
    Busy = 5,
});

fn check_flags(header: &FrameHeader) -> Result<(), DecodeError> {
    if header.flags != 0 {
        return Err(DecodeError::UnsupportedFlags {
            flags: header.flags,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Driver channel
// ---------------------------------------------------------------------------

impl WireMessage for DriverMessage {
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        use msg_type::*;
        let mut w;
        match self {
            DriverMessage::Hello {
                version,
                driver,
                support,
            } => {
                w = Writer::new(HELLO, 0);
                w.u16(*version);
                w.u8(support.code());
                w.string("driver", driver, MAX_NAME_LEN)?;
            }
            DriverMessage::Welcome { version, function } => {
                w = Writer::new(WELCOME, 0);
                w.u16(*version);
                w.function(function)?;
            }
            DriverMessage::Ready => w = Writer::new(READY, 0),
            DriverMessage::Begin {
                seq,
                kind,
                deadline,
            } => {
                w = Writer::new(BEGIN, *seq);
                w.u8(kind.code());
                w.duration(*deadline);
            }
            DriverMessage::BeginAck { seq, budget } => {
                w = Writer::new(BEGIN_ACK, *seq);
                w.duration(*budget);
            }
            DriverMessage::Finish { seq, deadline } => {
                w = Writer::new(FINISH, *seq);
                w.duration(*deadline);
            }
            DriverMessage::Shutdown {
                seq,
                kind,
                deadline,
            } => {
                w = Writer::new(SHUTDOWN, *seq);
                w.u8(kind.code());
                w.duration(*deadline);
            }
            DriverMessage::FinishAck {
                seq,
                outcome,
                elapsed,
                detail,
            } => {
                w = Writer::new(FINISH_ACK, *seq);
                w.u8(outcome.code());
                w.duration(*elapsed);
                w.string("detail", detail, MAX_TEXT_LEN)?;
            }
            DriverMessage::Error { seq, message } => {
                w = Writer::new(ERROR, *seq);
                w.string("message", message, MAX_TEXT_LEN)?;
            }
            DriverMessage::Register {
                version,
                name,
                support,
                providers,
            } => {
                w = Writer::new(REGISTER, 0);
                w.u16(*version);
                w.u8(support.code());
                w.string("name", name, MAX_NAME_LEN)?;
                w.providers(providers)?;
            }
            DriverMessage::Registered { version, id } => {
                w = Writer::new(REGISTERED, 0);
                w.u16(*version);
                w.u32(*id);
            }
        }
        w.finish()
    }

    fn decode_payload(header: &FrameHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        use msg_type::*;
        let seq = header.seq;
        check_flags(header)?;
        let mut r = Reader::new(payload);
        let msg = match header.msg_type {
            HELLO => {
                let version = r.u16("version")?;
                let support = r.code("support")?;
                let driver = r.string("driver", MAX_NAME_LEN)?;
                DriverMessage::Hello {
                    version,
                    driver,
                    support,
                }
            }
            WELCOME => {
                let version = r.u16("version")?;
                let function = r.function()?;
                DriverMessage::Welcome { version, function }
            }
            READY => DriverMessage::Ready,
            BEGIN => {
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                DriverMessage::Begin {
                    seq,
                    kind,
                    deadline,
                }
            }
            BEGIN_ACK => DriverMessage::BeginAck {
                seq,
                budget: r.duration("budget")?,
            },
            FINISH => DriverMessage::Finish {
                seq,
                deadline: r.duration("deadline")?,
            },
            SHUTDOWN => {
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                DriverMessage::Shutdown {
                    seq,
                    kind,
                    deadline,
                }
            }
            FINISH_ACK => {
                let outcome = r.code("outcome")?;
                let elapsed = r.duration("elapsed")?;
                let detail = r.string("detail", MAX_TEXT_LEN)?;
                DriverMessage::FinishAck {
                    seq,
                    outcome,
                    elapsed,
                    detail,
                }
            }
            ERROR => DriverMessage::Error {
                seq,
                message: r.string("message", MAX_TEXT_LEN)?,
            },
            REGISTER => {
                let version = r.u16("version")?;
                let support = r.code("support")?;
                let name = r.string("name", MAX_NAME_LEN)?;
                let providers = r.providers()?;
                DriverMessage::Register {
                    version,
                    name,
                    support,
                    providers,
                }
            }
            REGISTERED => {
                let version = r.u16("version")?;
                let id = r.u32("participant id")?;
                DriverMessage::Registered { version, id }
            }
            other => return Err(DecodeError::UnknownMessageType { msg_type: other }),
        };
        r.finish()?;
        Ok(msg)
    }

    fn seq(&self) -> u32 {
        match self {
            DriverMessage::Hello { .. }
            | DriverMessage::Welcome { .. }
            | DriverMessage::Ready
            | DriverMessage::Register { .. }
            | DriverMessage::Registered { .. } => 0,
            DriverMessage::Begin { seq, .. }
            | DriverMessage::BeginAck { seq, .. }
            | DriverMessage::Finish { seq, .. }
            | DriverMessage::Shutdown { seq, .. }
            | DriverMessage::FinishAck { seq, .. }
            | DriverMessage::Error { seq, .. } => *seq,
        }
    }
}

// ---------------------------------------------------------------------------
// Control endpoint
// ---------------------------------------------------------------------------

impl WireMessage for ControlMessage {
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        use msg_type::*;
        let mut w;
        match self {
            ControlMessage::ListDevices { id } => w = Writer::new(CTL_LIST_DEVICES, *id),
            ControlMessage::Devices { id, devices } => {
                w = Writer::new(CTL_DEVICES, *id);
                let count =
                    u16::try_from(devices.len()).map_err(|_| EncodeError::FrameTooLarge {
                        len: devices.len(),
                        max: usize::from(u16::MAX),
                    })?;
                w.u16(count);
                for d in devices {
                    w.device_info(d)?;
                    if w.buf.len() > MAX_FRAME_LEN {
                        return Err(EncodeError::FrameTooLarge {
                            len: w.buf.len(),
                            max: MAX_FRAME_LEN,
                        });
                    }
                }
            }
            ControlMessage::Begin {
                id,
                address,
                kind,
                deadline,
            } => {
                w = Writer::new(CTL_BEGIN, *id);
                w.address(address)?;
                w.u8(kind.code());
                w.duration(*deadline);
            }
            ControlMessage::Finish {
                id,
                address,
                deadline,
            } => {
                w = Writer::new(CTL_FINISH, *id);
                w.address(address)?;
                w.duration(*deadline);
            }
            ControlMessage::Shutdown {
                id,
                address,
                kind,
                deadline,
            } => {
                w = Writer::new(CTL_SHUTDOWN, *id);
                w.address(address)?;
                w.u8(kind.code());
                w.duration(*deadline);
            }
            ControlMessage::BeginAck {
                id,
                address,
                budget,
            } => {
                w = Writer::new(CTL_BEGIN_ACK, *id);
                w.address(address)?;
                w.duration(*budget);
            }
            ControlMessage::FinishAck {
                id,
                address,
                outcome,
                elapsed,
                detail,
            } => {
                w = Writer::new(CTL_FINISH_ACK, *id);
                w.address(address)?;
                w.u8(outcome.code());
                w.duration(*elapsed);
                w.string("detail", detail, MAX_TEXT_LEN)?;
            }
            ControlMessage::DeviceError {
                id,
                address,
                kind,
                message,
            } => {
                w = Writer::new(CTL_DEVICE_ERROR, *id);
                w.address(address)?;
                w.u8(kind.code());
                w.string("message", message, MAX_TEXT_LEN)?;
            }
            ControlMessage::Error { id, message } => {
                w = Writer::new(CTL_ERROR, *id);
                w.string("message", message, MAX_TEXT_LEN)?;
            }
            ControlMessage::ListParticipants { id } => w = Writer::new(CTL_LIST_PARTICIPANTS, *id),
            ControlMessage::Participants { id, participants } => {
                w = Writer::new(CTL_PARTICIPANTS, *id);
                let count =
                    u16::try_from(participants.len()).map_err(|_| EncodeError::FrameTooLarge {
                        len: participants.len(),
                        max: usize::from(u16::MAX),
                    })?;
                w.u16(count);
                for p in participants {
                    w.participant_info(p)?;
                    w.check_size()?;
                }
            }
            ControlMessage::ParticipantBegin {
                id,
                participant,
                kind,
                deadline,
            } => {
                w = Writer::new(CTL_PARTICIPANT_BEGIN, *id);
                w.u32(*participant);
                w.u8(kind.code());
                w.duration(*deadline);
            }
            ControlMessage::ParticipantFinish {
                id,
                participant,
                deadline,
            } => {
                w = Writer::new(CTL_PARTICIPANT_FINISH, *id);
                w.u32(*participant);
                w.duration(*deadline);
            }
            ControlMessage::ParticipantShutdown {
                id,
                participant,
                kind,
                deadline,
            } => {
                w = Writer::new(CTL_PARTICIPANT_SHUTDOWN, *id);
                w.u32(*participant);
                w.u8(kind.code());
                w.duration(*deadline);
            }
            ControlMessage::ParticipantBeginAck {
                id,
                participant,
                budget,
            } => {
                w = Writer::new(CTL_PARTICIPANT_BEGIN_ACK, *id);
                w.u32(*participant);
                w.duration(*budget);
            }
            ControlMessage::ParticipantFinishAck {
                id,
                participant,
                outcome,
                elapsed,
                detail,
            } => {
                w = Writer::new(CTL_PARTICIPANT_FINISH_ACK, *id);
                w.u32(*participant);
                w.u8(outcome.code());
                w.duration(*elapsed);
                w.string("detail", detail, MAX_TEXT_LEN)?;
            }
            ControlMessage::ParticipantError {
                id,
                participant,
                kind,
                message,
            } => {
                w = Writer::new(CTL_PARTICIPANT_ERROR, *id);
                w.u32(*participant);
                w.u8(kind.code());
                w.string("message", message, MAX_TEXT_LEN)?;
            }
        }
        w.finish()
    }

    fn decode_payload(header: &FrameHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        use msg_type::*;
        let id = header.seq;
        check_flags(header)?;
        let mut r = Reader::new(payload);
        let msg = match header.msg_type {
            CTL_LIST_DEVICES => ControlMessage::ListDevices { id },
            CTL_DEVICES => {
                let count = r.u16("device count")? as usize;
                // Each entry takes at least 14 bytes; never trust the count
                // for an allocation larger than the payload could hold.
                let mut devices = Vec::with_capacity(count.min(r.remaining() / 14));
                for _ in 0..count {
                    devices.push(r.device_info()?);
                }
                ControlMessage::Devices { id, devices }
            }
            CTL_BEGIN => {
                let address = r.address()?;
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                ControlMessage::Begin {
                    id,
                    address,
                    kind,
                    deadline,
                }
            }
            CTL_FINISH => {
                let address = r.address()?;
                let deadline = r.duration("deadline")?;
                ControlMessage::Finish {
                    id,
                    address,
                    deadline,
                }
            }
            CTL_SHUTDOWN => {
                let address = r.address()?;
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                ControlMessage::Shutdown {
                    id,
                    address,
                    kind,
                    deadline,
                }
            }
            CTL_BEGIN_ACK => {
                let address = r.address()?;
                let budget = r.duration("budget")?;
                ControlMessage::BeginAck {
                    id,
                    address,
                    budget,
                }
            }
            CTL_FINISH_ACK => {
                let address = r.address()?;
                let outcome = r.code("outcome")?;
                let elapsed = r.duration("elapsed")?;
                let detail = r.string("detail", MAX_TEXT_LEN)?;
                ControlMessage::FinishAck {
                    id,
                    address,
                    outcome,
                    elapsed,
                    detail,
                }
            }
            CTL_DEVICE_ERROR => {
                let address = r.address()?;
                let kind = r.code("error kind")?;
                let message = r.string("message", MAX_TEXT_LEN)?;
                ControlMessage::DeviceError {
                    id,
                    address,
                    kind,
                    message,
                }
            }
            CTL_ERROR => ControlMessage::Error {
                id,
                message: r.string("message", MAX_TEXT_LEN)?,
            },
            CTL_LIST_PARTICIPANTS => ControlMessage::ListParticipants { id },
            CTL_PARTICIPANTS => {
                let count = r.u16("participant count")? as usize;
                // Each entry takes at least 17 bytes.
                let mut participants = Vec::with_capacity(count.min(r.remaining() / 17));
                for _ in 0..count {
                    participants.push(r.participant_info()?);
                }
                ControlMessage::Participants { id, participants }
            }
            CTL_PARTICIPANT_BEGIN => {
                let participant = r.u32("participant id")?;
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                ControlMessage::ParticipantBegin {
                    id,
                    participant,
                    kind,
                    deadline,
                }
            }
            CTL_PARTICIPANT_FINISH => {
                let participant = r.u32("participant id")?;
                let deadline = r.duration("deadline")?;
                ControlMessage::ParticipantFinish {
                    id,
                    participant,
                    deadline,
                }
            }
            CTL_PARTICIPANT_SHUTDOWN => {
                let participant = r.u32("participant id")?;
                let kind = r.code("kind")?;
                let deadline = r.duration("deadline")?;
                ControlMessage::ParticipantShutdown {
                    id,
                    participant,
                    kind,
                    deadline,
                }
            }
            CTL_PARTICIPANT_BEGIN_ACK => {
                let participant = r.u32("participant id")?;
                let budget = r.duration("budget")?;
                ControlMessage::ParticipantBeginAck {
                    id,
                    participant,
                    budget,
                }
            }
            CTL_PARTICIPANT_FINISH_ACK => {
                let participant = r.u32("participant id")?;
                let outcome = r.code("outcome")?;
                let elapsed = r.duration("elapsed")?;
                let detail = r.string("detail", MAX_TEXT_LEN)?;
                ControlMessage::ParticipantFinishAck {
                    id,
                    participant,
                    outcome,
                    elapsed,
                    detail,
                }
            }
            CTL_PARTICIPANT_ERROR => {
                let participant = r.u32("participant id")?;
                let kind = r.code("error kind")?;
                let message = r.string("message", MAX_TEXT_LEN)?;
                ControlMessage::ParticipantError {
                    id,
                    participant,
                    kind,
                    message,
                }
            }
            other => return Err(DecodeError::UnknownMessageType { msg_type: other }),
        };
        r.finish()?;
        Ok(msg)
    }

    fn seq(&self) -> u32 {
        self.id()
    }
}

#[cfg(test)]
mod tests;
