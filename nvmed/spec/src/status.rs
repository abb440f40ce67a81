//! Completion status (NVMe Base Specification 1.4, §4.6.1 "Status Field Definition").

use bitfield_struct::bitfield;
use open_enum::open_enum;

use crate::SpecError;

/// The 15-bit Status Field of a completion queue entry (Dword 3 bits 31:17,
/// §4.6.1), without the phase tag.
///
/// The type is 16 bits wide; its top bit is not part of the field and is
/// always zero ([`Status::from_bits`] clears it), so a `Status` always fits
/// the 15 bits it occupies in a completion entry.
#[bitfield(u16, new = false, conversion = false, debug = false, hash = true)]
#[derive(PartialEq, Eq)]
pub struct Status {
    /// SC: Status Code (bits 7:0 of the field).
    pub sc: u8,
    /// SCT: Status Code Type (bits 10:8 of the field).
    #[bits(3)]
    pub code_type: StatusCodeType,
    /// CRD: Command Retry Delay (bits 12:11 of the field).
    #[bits(2)]
    pub crd: u8,
    /// M: More status information in the Error Information log (bit 13).
    pub more: bool,
    /// DNR: Do Not Retry (bit 14).
    pub dnr: bool,
    /// Not part of the Status Field.
    #[bits(1)]
    __: u8,
}

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0);
    /// Width of the Status Field in bits.
    pub const FIELD_BITS: usize = Self::DNR_OFFSET + Self::DNR_BITS;
    const FIELD_MASK: u16 = (1 << Self::FIELD_BITS) - 1;

    /// From the 15-bit field value; a 16th bit is not part of the field and
    /// is dropped.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits & Self::FIELD_MASK)
    }
    /// The 15-bit field value.
    pub const fn into_bits(self) -> u16 {
        self.0 & Self::FIELD_MASK
    }
    /// Builds a status from a type and code; SCT is a 3-bit field, so a
    /// type above 7 is [`SpecError::OutOfRange`].
    pub fn new(sct: StatusCodeType, sc: u8) -> Result<Self, SpecError> {
        Status::SUCCESS
            .with_sc(sc)
            .with_code_type_checked(sct)
            .map_err(|()| SpecError::OutOfRange {
                what: "status code type",
                value: u64::from(sct.0),
                min: 0,
                max: (1 << Self::CODE_TYPE_BITS) - 1,
            })
    }
    /// A generic command status (SCT 0).
    pub const fn generic(code: GenericStatus) -> Self {
        Status::SUCCESS
            .with_code_type(StatusCodeType::Generic)
            .with_sc(code.0)
    }
    /// A command specific status (SCT 1).
    pub const fn command_specific(code: CommandSpecificStatus) -> Self {
        Status::SUCCESS
            .with_code_type(StatusCodeType::CommandSpecific)
            .with_sc(code.0)
    }
    /// A media and data integrity error (SCT 2).
    pub const fn media(code: MediaStatus) -> Self {
        Status::SUCCESS
            .with_code_type(StatusCodeType::MediaError)
            .with_sc(code.0)
    }
    /// True for SCT 0 / SC 0 (§4.6.1.2.1).
    pub fn is_success(&self) -> bool {
        self.code_type() == StatusCodeType::Generic && self.sc() == 0
    }
    /// The generic status code, when SCT is 0 (the code may be one this
    /// crate does not name).
    pub fn as_generic(&self) -> Option<GenericStatus> {
        (self.code_type() == StatusCodeType::Generic).then_some(GenericStatus(self.sc()))
    }
    /// The command specific status code, when SCT is 1.
    pub fn as_command_specific(&self) -> Option<CommandSpecificStatus> {
        (self.code_type() == StatusCodeType::CommandSpecific)
            .then_some(CommandSpecificStatus(self.sc()))
    }
    /// The media and data integrity error code, when SCT is 2.
    pub fn as_media(&self) -> Option<MediaStatus> {
        (self.code_type() == StatusCodeType::MediaError).then_some(MediaStatus(self.sc()))
    }
}

impl From<GenericStatus> for Status {
    fn from(code: GenericStatus) -> Self {
        Status::generic(code)
    }
}

impl From<CommandSpecificStatus> for Status {
    fn from(code: CommandSpecificStatus) -> Self {
        Status::command_specific(code)
    }
}

impl From<MediaStatus> for Status {
    fn from(code: MediaStatus) -> Self {
        Status::media(code)
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Status({self})")
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(g) = self.as_generic() {
            write!(f, "{g:?}")?;
        } else if let Some(c) = self.as_command_specific() {
            write!(f, "{c:?}")?;
        } else if let Some(m) = self.as_media() {
            write!(f, "{m:?}")?;
        } else {
            write!(f, "{:?} code {:#04x}", self.code_type(), self.sc())?;
        }
        write!(f, " (sct={}, sc={:#04x}", self.code_type().0, self.sc())?;
        if self.dnr() {
            write!(f, ", dnr")?;
        }
        write!(f, ")")
    }
}

/// SCT: Status Code Type (§4.6.1.1). A 3-bit field; 4h–6h are
/// reserved.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum StatusCodeType {
    /// 0h: Generic Command Status.
    Generic = 0,
    /// 1h: Command Specific Status.
    CommandSpecific = 1,
    /// 2h: Media and Data Integrity Errors.
    MediaError = 2,
    /// 3h: Path Related Status.
    PathRelated = 3,
    /// 7h: Vendor Specific.
    VendorSpecific = 7,
}

impl StatusCodeType {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

/// Generic Command Status values, SCT 0 (§4.6.1.2.1).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum GenericStatus {
    /// 00h: Successful Completion.
    Success = 0x00,
    /// 01h: Invalid Command Opcode.
    InvalidOpcode = 0x01,
    /// 02h: Invalid Field in Command.
    InvalidField = 0x02,
    /// 03h: Command ID Conflict.
    CommandIdConflict = 0x03,
    /// 04h: Data Transfer Error.
    DataTransferError = 0x04,
    /// 05h: Commands Aborted due to Power Loss Notification.
    AbortedPowerLoss = 0x05,
    /// 06h: Internal Error.
    InternalError = 0x06,
    /// 07h: Command Abort Requested.
    AbortRequested = 0x07,
    /// 08h: Command Aborted due to SQ Deletion.
    AbortedSqDeletion = 0x08,
    /// 09h: Command Aborted due to Failed Fused Command.
    AbortedFailedFused = 0x09,
    /// 0Ah: Command Aborted due to Missing Fused Command.
    AbortedMissingFused = 0x0A,
    /// 0Bh: Invalid Namespace or Format.
    InvalidNamespace = 0x0B,
    /// 0Ch: Command Sequence Error.
    CommandSequenceError = 0x0C,
    /// 0Dh: Invalid SGL Segment Descriptor.
    InvalidSglSegment = 0x0D,
    /// 0Eh: Invalid Number of SGL Descriptors.
    InvalidSglCount = 0x0E,
    /// 0Fh: Data SGL Length Invalid.
    DataSglLengthInvalid = 0x0F,
    /// 10h: Metadata SGL Length Invalid.
    MetadataSglLengthInvalid = 0x10,
    /// 11h: SGL Descriptor Type Invalid.
    SglDescriptorTypeInvalid = 0x11,
    /// 12h: Invalid Use of Controller Memory Buffer.
    InvalidCmbUse = 0x12,
    /// 13h: PRP Offset Invalid.
    PrpOffsetInvalid = 0x13,
    /// 14h: Atomic Write Unit Exceeded.
    AtomicWriteUnitExceeded = 0x14,
    /// 15h: Operation Denied.
    OperationDenied = 0x15,
    /// 80h: LBA Out of Range (NVM command set).
    LbaOutOfRange = 0x80,
    /// 81h: Capacity Exceeded.
    CapacityExceeded = 0x81,
    /// 82h: Namespace Not Ready.
    NamespaceNotReady = 0x82,
    /// 83h: Reservation Conflict.
    ReservationConflict = 0x83,
    /// 84h: Format In Progress.
    FormatInProgress = 0x84,
}

/// Command Specific Status values, SCT 1 (§4.6.1.2.2).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum CommandSpecificStatus {
    /// 00h: Completion Queue Invalid (Create I/O SQ).
    CompletionQueueInvalid = 0x00,
    /// 01h: Invalid Queue Identifier (Create/Delete I/O queues).
    InvalidQueueId = 0x01,
    /// 02h: Invalid Queue Size (Create I/O queues).
    InvalidQueueSize = 0x02,
    /// 03h: Abort Command Limit Exceeded.
    AbortLimitExceeded = 0x03,
    /// 05h: Asynchronous Event Request Limit Exceeded.
    AsyncEventLimitExceeded = 0x05,
    /// 06h: Invalid Firmware Slot.
    InvalidFirmwareSlot = 0x06,
    /// 07h: Invalid Firmware Image.
    InvalidFirmwareImage = 0x07,
    /// 08h: Invalid Interrupt Vector (Create I/O CQ).
    InvalidInterruptVector = 0x08,
    /// 09h: Invalid Log Page.
    InvalidLogPage = 0x09,
    /// 0Ah: Invalid Format.
    InvalidFormat = 0x0A,
    /// 0Ch: Invalid Queue Deletion (Delete I/O CQ while an SQ still uses it).
    InvalidQueueDeletion = 0x0C,
    /// 0Dh: Feature Identifier Not Saveable.
    FeatureNotSaveable = 0x0D,
    /// 0Eh: Feature Not Changeable.
    FeatureNotChangeable = 0x0E,
    /// 0Fh: Feature Not Namespace Specific.
    FeatureNotNamespaceSpecific = 0x0F,
    /// 80h: Conflicting Attributes (NVM command set).
    ConflictingAttributes = 0x80,
    /// 81h: Invalid Protection Information.
    InvalidProtectionInformation = 0x81,
    /// 82h: Attempted Write to Read Only Range.
    WriteToReadOnlyRange = 0x82,
}

/// Media and Data Integrity Errors, SCT 2 (§4.6.1.2.3),
/// the values this project uses.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum MediaStatus {
    /// 80h: Write Fault.
    WriteFault = 0x80,
    /// 81h: Unrecovered Read Error.
    UnrecoveredReadError = 0x81,
    /// 86h: Access Denied.
    AccessDenied = 0x86,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_under_its_type() {
        for sc in 0..=u8::MAX {
            let g = Status::from(GenericStatus(sc));
            assert_eq!(g.as_generic(), Some(GenericStatus(sc)));
            assert_eq!(g.as_command_specific(), None);
            let c = Status::from(CommandSpecificStatus(sc));
            assert_eq!(c.as_command_specific(), Some(CommandSpecificStatus(sc)));
            assert_eq!(c.as_generic(), None);
            let m = Status::from(MediaStatus(sc));
            assert_eq!(m.as_media(), Some(MediaStatus(sc)));
            assert_eq!(m.code_type(), StatusCodeType::MediaError);
        }
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::from(GenericStatus::InvalidField).is_success());
        assert!(!Status::from(CommandSpecificStatus::CompletionQueueInvalid).is_success());
    }

    #[test]
    fn field_layout() {
        let s = Status::from(CommandSpecificStatus::InvalidQueueDeletion).with_dnr(true);
        assert_eq!(s.into_bits(), 0x4000 | 0x0100 | 0x0C);
        assert_eq!(
            (
                Status::CODE_TYPE_OFFSET,
                Status::CRD_OFFSET,
                Status::FIELD_BITS
            ),
            (8, 11, 15)
        );
        assert_eq!(Status::from_bits(0x0500).code_type(), StatusCodeType(5));
        assert_eq!(
            Status::new(StatusCodeType(5), 3).unwrap().into_bits(),
            0x0503
        );
        assert!(Status::new(StatusCodeType(8), 0).is_err());
        assert_eq!(Status::from_bits(0xFFFF).into_bits(), 0x7FFF);
        assert!(format!("{}", Status::from_bits(0x7FFF)).contains("dnr"));
    }

    #[test]
    fn display_names_known_and_unknown_codes() {
        assert_eq!(
            Status::from(GenericStatus::InvalidField).to_string(),
            "InvalidField (sct=0, sc=0x02)"
        );
        assert_eq!(
            Status::from(MediaStatus::WriteFault)
                .with_dnr(true)
                .to_string(),
            "WriteFault (sct=2, sc=0x80, dnr)"
        );
        let unknown = Status::from(GenericStatus(0x55)).to_string();
        assert!(
            unknown.contains("85") && unknown.contains("sc=0x55"),
            "{unknown}"
        );
        let path = Status::new(StatusCodeType::PathRelated, 1)
            .unwrap()
            .to_string();
        assert!(path.starts_with("PathRelated code 0x01"), "{path}");
    }
}
