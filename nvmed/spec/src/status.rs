//! Completion status (NVMe Base Specification 1.4, §4.6.1 "Status Field Definition").

/// The 15-bit Status Field of a completion queue entry (Dword 3 bits 31:17,
/// §4.6.1), without the phase tag.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Status(pub u16);

bitfields!(Status: u16 {
    /// SC: Status Code (bits 7:0 of the status field).
    sc, set_sc, with_sc: u8 @ 0..=7;
    /// SCT: Status Code Type, raw (bits 10:8); see [`Status::code_type`].
    sct_raw, set_sct_raw, with_sct_raw: u8 @ 8..=10;
    /// CRD: Command Retry Delay (bits 12:11).
    crd, set_crd, with_crd: u8 @ 11..=12;
    /// M: More status information in the Error Information log (bit 13).
    more, set_more, with_more: bool @ 13..=13;
    /// DNR: Do Not Retry (bit 14).
    dnr, set_dnr, with_dnr: bool @ 14..=14;
});

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0);

    /// Builds a status from a type and code.
    pub fn new(sct: StatusCodeType, sc: u8) -> Self {
        Status(0).with_sct_raw(sct.bits()).with_sc(sc)
    }
    /// A generic command status (SCT 0).
    pub fn generic(code: GenericStatus) -> Self {
        Self::new(StatusCodeType::Generic, code as u8)
    }
    /// A command specific status (SCT 1).
    pub fn command_specific(code: CommandSpecificStatus) -> Self {
        Self::new(StatusCodeType::CommandSpecific, code as u8)
    }
    /// The status code type.
    pub fn code_type(&self) -> StatusCodeType {
        StatusCodeType::from_bits(self.sct_raw())
    }
    /// True for SCT 0 / SC 0 (§4.6.1.2.1).
    pub fn is_success(&self) -> bool {
        self.sct_raw() == 0 && self.sc() == 0
    }
    /// The generic status code, when SCT is 0 and the code is one this crate knows.
    pub fn as_generic(&self) -> Option<GenericStatus> {
        if self.code_type() == StatusCodeType::Generic {
            GenericStatus::from_code(self.sc())
        } else {
            None
        }
    }
    /// The command specific status code, when SCT is 1 and known.
    pub fn as_command_specific(&self) -> Option<CommandSpecificStatus> {
        if self.code_type() == StatusCodeType::CommandSpecific {
            CommandSpecificStatus::from_code(self.sc())
        } else {
            None
        }
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
        } else {
            write!(f, "{:?} code {:#04x}", self.code_type(), self.sc())?;
        }
        write!(f, " (sct={}, sc={:#04x}", self.sct_raw(), self.sc())?;
        if self.dnr() {
            write!(f, ", dnr")?;
        }
        write!(f, ")")
    }
}

/// SCT: Status Code Type (§4.6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCodeType {
    /// 0h: Generic Command Status.
    Generic,
    /// 1h: Command Specific Status.
    CommandSpecific,
    /// 2h: Media and Data Integrity Errors.
    MediaError,
    /// 3h: Path Related Status.
    PathRelated,
    /// 7h: Vendor Specific.
    VendorSpecific,
    /// 4h–6h: reserved.
    Reserved(u8),
}

impl StatusCodeType {
    /// Decodes the 3-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x7 {
            0 => Self::Generic,
            1 => Self::CommandSpecific,
            2 => Self::MediaError,
            3 => Self::PathRelated,
            7 => Self::VendorSpecific,
            other => Self::Reserved(other),
        }
    }
    /// Encodes the 3-bit field.
    pub fn bits(self) -> u8 {
        match self {
            Self::Generic => 0,
            Self::CommandSpecific => 1,
            Self::MediaError => 2,
            Self::PathRelated => 3,
            Self::VendorSpecific => 7,
            Self::Reserved(b) => b & 0x7,
        }
    }
}

/// Generic Command Status values, SCT 0 (§4.6.1.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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

impl GenericStatus {
    const ALL: [GenericStatus; 27] = [
        Self::Success,
        Self::InvalidOpcode,
        Self::InvalidField,
        Self::CommandIdConflict,
        Self::DataTransferError,
        Self::AbortedPowerLoss,
        Self::InternalError,
        Self::AbortRequested,
        Self::AbortedSqDeletion,
        Self::AbortedFailedFused,
        Self::AbortedMissingFused,
        Self::InvalidNamespace,
        Self::CommandSequenceError,
        Self::InvalidSglSegment,
        Self::InvalidSglCount,
        Self::DataSglLengthInvalid,
        Self::MetadataSglLengthInvalid,
        Self::SglDescriptorTypeInvalid,
        Self::InvalidCmbUse,
        Self::PrpOffsetInvalid,
        Self::AtomicWriteUnitExceeded,
        Self::OperationDenied,
        Self::LbaOutOfRange,
        Self::CapacityExceeded,
        Self::NamespaceNotReady,
        Self::ReservationConflict,
        Self::FormatInProgress,
    ];

    /// Decodes a status code; `None` for codes this crate does not name.
    pub fn from_code(sc: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == sc)
    }
}

/// Command Specific Status values, SCT 1 (§4.6.1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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

impl CommandSpecificStatus {
    const ALL: [CommandSpecificStatus; 17] = [
        Self::CompletionQueueInvalid,
        Self::InvalidQueueId,
        Self::InvalidQueueSize,
        Self::AbortLimitExceeded,
        Self::AsyncEventLimitExceeded,
        Self::InvalidFirmwareSlot,
        Self::InvalidFirmwareImage,
        Self::InvalidInterruptVector,
        Self::InvalidLogPage,
        Self::InvalidFormat,
        Self::InvalidQueueDeletion,
        Self::FeatureNotSaveable,
        Self::FeatureNotChangeable,
        Self::FeatureNotNamespaceSpecific,
        Self::ConflictingAttributes,
        Self::InvalidProtectionInformation,
        Self::WriteToReadOnlyRange,
    ];

    /// Decodes a status code; `None` for codes this crate does not name.
    pub fn from_code(sc: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u8 == sc)
    }
}

/// Media and Data Integrity Errors, SCT 2 (§4.6.1.2.3), NVM command set subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MediaStatus {
    /// 80h: Write Fault.
    WriteFault = 0x80,
    /// 81h: Unrecovered Read Error.
    UnrecoveredReadError = 0x81,
    /// 86h: Access Denied.
    AccessDenied = 0x86,
}

impl From<MediaStatus> for Status {
    fn from(code: MediaStatus) -> Self {
        Status::new(StatusCodeType::MediaError, code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for g in GenericStatus::ALL {
            let s = Status::from(g);
            assert_eq!(s.as_generic(), Some(g));
            assert_eq!(s.as_command_specific(), None);
        }
        for c in CommandSpecificStatus::ALL {
            let s = Status::from(c);
            assert_eq!(s.as_command_specific(), Some(c));
            assert_eq!(s.as_generic(), None);
        }
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::from(GenericStatus::InvalidField).is_success());
    }

    #[test]
    fn field_layout() {
        let s = Status::from(CommandSpecificStatus::InvalidQueueDeletion).with_dnr(true);
        assert_eq!(s.0, 0x4000 | 0x0100 | 0x0C);
        assert_eq!(
            Status::from(MediaStatus::WriteFault).code_type(),
            StatusCodeType::MediaError
        );
        assert_eq!(Status(0x0500).code_type(), StatusCodeType::Reserved(5));
        assert!(format!("{}", Status(0x7FFF)).contains("dnr"));
    }
}
