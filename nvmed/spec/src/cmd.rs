//! Queue entries and commands (NVMe Base Specification 1.4, §4.2 "Submission
//! Queue Entry", §4.6 "Completion Queue Entry", §5 admin commands, §6 NVM commands).

use std::mem::offset_of;

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::features::{FeatureId, FeatureSelect};
use crate::identify::Cns;
use crate::status::Status;
use crate::{read_prefix, zeros_based, SpecError};

/// Size of a submission queue entry in bytes (§4.2).
pub const SQ_ENTRY_SIZE: usize = 64;
/// `log2(SQ_ENTRY_SIZE)`, the value for CC.IOSQES and Identify SQES.
pub const SQ_ENTRY_SIZE_LOG2: u8 = 6;
/// Size of a completion queue entry in bytes (§4.6).
pub const CQ_ENTRY_SIZE: usize = 16;
/// `log2(CQ_ENTRY_SIZE)`, the value for CC.IOCQES and Identify CQES.
pub const CQ_ENTRY_SIZE_LOG2: u8 = 4;

const _: () = {
    assert!(size_of::<SubmissionEntry>() == SQ_ENTRY_SIZE);
    assert!(1 << SQ_ENTRY_SIZE_LOG2 == SQ_ENTRY_SIZE);
    assert!(size_of::<CompletionEntry>() == CQ_ENTRY_SIZE);
    assert!(1 << CQ_ENTRY_SIZE_LOG2 == CQ_ENTRY_SIZE);
    // Dword positions of the common command format (§4.2).
    assert!(offset_of!(SubmissionEntry, nsid) == 4);
    assert!(offset_of!(SubmissionEntry, mptr) == 16);
    assert!(offset_of!(SubmissionEntry, prp1) == 24);
    assert!(offset_of!(SubmissionEntry, prp2) == 32);
    assert!(offset_of!(SubmissionEntry, cdw10) == 40);
    assert!(offset_of!(SubmissionEntry, cdw15) == 60);
    // Completion queue entry (§4.6): DW2 = SQID:SQHD,
    // DW3 = Status Field:P:CID.
    assert!(offset_of!(CompletionEntry, sq_head) == 8);
    assert!(offset_of!(CompletionEntry, sq_id) == 10);
    assert!(offset_of!(CompletionEntry, cid) == 12);
    assert!(offset_of!(CompletionEntry, status_phase) == 14);
};

/// Admin command opcodes (§5).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum AdminOpcode {
    /// 00h: Delete I/O Submission Queue (§5.6).
    DeleteIoSq = 0x00,
    /// 01h: Create I/O Submission Queue (§5.4).
    CreateIoSq = 0x01,
    /// 02h: Get Log Page (§5.14).
    GetLogPage = 0x02,
    /// 04h: Delete I/O Completion Queue (§5.5).
    DeleteIoCq = 0x04,
    /// 05h: Create I/O Completion Queue (§5.3).
    CreateIoCq = 0x05,
    /// 06h: Identify (§5.15).
    Identify = 0x06,
    /// 08h: Abort (§5.1).
    Abort = 0x08,
    /// 09h: Set Features (§5.21).
    SetFeatures = 0x09,
    /// 0Ah: Get Features (§5.9).
    GetFeatures = 0x0A,
    /// 0Ch: Asynchronous Event Request (§5.2).
    AsyncEventRequest = 0x0C,
    /// 18h: Keep Alive (§5.16).
    KeepAlive = 0x18,
}

/// NVM command set I/O opcodes (§6).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum NvmOpcode {
    /// 00h: Flush (§6.8): commit volatile write cache contents to media.
    Flush = 0x00,
    /// 01h: Write (§6.15).
    Write = 0x01,
    /// 02h: Read (§6.9).
    Read = 0x02,
}

/// Command Dword 0, common to all commands (§4.2).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Cdw0 {
    /// OPC: opcode (bits 7:0).
    pub opcode: u8,
    /// FUSE: fused operation (bits 9:8); 00b = normal.
    #[bits(2)]
    pub fuse: u8,
    /// Reserved (bits 13:10).
    #[bits(4)]
    __: u8,
    /// PSDT: PRP or SGL for data transfer (bits 15:14); 00b = PRPs.
    #[bits(2)]
    pub psdt: u8,
    /// CID: command identifier (bits 31:16).
    pub cid: u16,
}

/// A 64-byte submission queue entry (§4.2), PRP form.
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct SubmissionEntry {
    /// Command Dword 0: opcode, fuse, PSDT, command identifier.
    pub cdw0: Cdw0,
    /// Namespace identifier (Dword 1).
    pub nsid: u32,
    /// Dword 2 (command specific, usually reserved).
    pub cdw2: u32,
    /// Dword 3 (command specific, usually reserved).
    pub cdw3: u32,
    /// Metadata pointer (Dwords 5:4).
    pub mptr: u64,
    /// PRP Entry 1 (Dwords 7:6).
    pub prp1: u64,
    /// PRP Entry 2 (Dwords 9:8): second page, or a PRP list pointer.
    pub prp2: u64,
    /// Command Dword 10.
    pub cdw10: u32,
    /// Command Dword 11.
    pub cdw11: u32,
    /// Command Dword 12.
    pub cdw12: u32,
    /// Command Dword 13.
    pub cdw13: u32,
    /// Command Dword 14.
    pub cdw14: u32,
    /// Command Dword 15.
    pub cdw15: u32,
}

impl SubmissionEntry {
    /// A command with `opcode` and command identifier `cid`, all else zero.
    pub fn new(opcode: u8, cid: u16) -> Self {
        Self {
            cdw0: Cdw0::new().with_opcode(opcode).with_cid(cid),
            ..Self::default()
        }
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.cdw0.opcode()
    }
    /// The command identifier.
    pub fn cid(&self) -> u16 {
        self.cdw0.cid()
    }
    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0.set_cid(cid);
    }

    /// The 64-byte little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; SQ_ENTRY_SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes the first 64 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        read_prefix("submission queue entry", bytes)
    }

    // ---- admin command builders -------------------------------------------------

    /// Identify (§5.15): `cns` selects the data structure, written to `prp1`
    /// (and `prp2` if the 4 KiB buffer crosses a page).
    pub fn identify(cid: u16, cns: Cns, nsid: u32, prp1: u64, prp2: u64) -> Self {
        Self {
            nsid,
            prp1,
            prp2,
            cdw10: IdentifyDw10::new().with_cns(cns).into(),
            ..Self::new(AdminOpcode::Identify.0, cid)
        }
    }

    /// Create I/O Completion Queue (§5.3): physically contiguous queue of
    /// `entries` entries (1..=65536) at `base`, interrupts disabled.
    pub fn create_io_cq(cid: u16, qid: u16, entries: u32, base: u64) -> Result<Self, SpecError> {
        Ok(Self {
            prp1: base,
            cdw10: QueueDw10::for_create(qid, entries)?.into(),
            cdw11: CreateCqDw11::new().with_pc(true).into(),
            ..Self::new(AdminOpcode::CreateIoCq.0, cid)
        })
    }

    /// Create I/O Submission Queue (§5.4): physically contiguous queue of
    /// `entries` entries (1..=65536) at `base`, completing to queue `cqid`.
    pub fn create_io_sq(
        cid: u16,
        qid: u16,
        entries: u32,
        base: u64,
        cqid: u16,
    ) -> Result<Self, SpecError> {
        Ok(Self {
            prp1: base,
            cdw10: QueueDw10::for_create(qid, entries)?.into(),
            cdw11: CreateSqDw11::new().with_pc(true).with_cqid(cqid).into(),
            ..Self::new(AdminOpcode::CreateIoSq.0, cid)
        })
    }

    /// Delete I/O Submission Queue (§5.6).
    pub fn delete_io_sq(cid: u16, qid: u16) -> Self {
        Self {
            cdw10: QueueDw10::new().with_qid(qid).into(),
            ..Self::new(AdminOpcode::DeleteIoSq.0, cid)
        }
    }

    /// Delete I/O Completion Queue (§5.5).
    pub fn delete_io_cq(cid: u16, qid: u16) -> Self {
        Self {
            cdw10: QueueDw10::new().with_qid(qid).into(),
            ..Self::new(AdminOpcode::DeleteIoCq.0, cid)
        }
    }

    /// Set Features / Number of Queues (§5.21.1.7): request `sq` submission and
    /// `cq` completion I/O queues (1's based here, 1..=65536; 0's based on the
    /// wire).
    pub fn set_number_of_queues(cid: u16, sq: u32, cq: u32) -> Result<Self, SpecError> {
        Ok(Self {
            cdw10: FeaturesDw10::new()
                .with_fid(FeatureId::NumberOfQueues)
                .into(),
            cdw11: NumberOfQueues::from_counts(sq, cq)?.into(),
            ..Self::new(AdminOpcode::SetFeatures.0, cid)
        })
    }

    /// Abort (§5.1): abort command `target_cid` on submission queue `sqid`.
    pub fn abort(cid: u16, sqid: u16, target_cid: u16) -> Self {
        Self {
            cdw10: AbortDw10::new().with_sqid(sqid).with_cid(target_cid).into(),
            ..Self::new(AdminOpcode::Abort.0, cid)
        }
    }

    // ---- NVM command builders ---------------------------------------------------

    /// Read (§6.9) or Write (§6.15) of `blocks` logical blocks (1's based
    /// here, 1..=65536; 0's based NLB on the wire) starting at `slba`.
    pub fn read_write(
        op: NvmOpcode,
        cid: u16,
        nsid: u32,
        slba: u64,
        blocks: u32,
        prp1: u64,
        prp2: u64,
    ) -> Result<Self, SpecError> {
        let nlb = zeros_based("Read/Write blocks (NLB)", blocks, RwDw12::NLB_BITS)?;
        let mut e = Self {
            nsid,
            prp1,
            prp2,
            cdw12: RwDw12::new().with_nlb(nlb).into(),
            ..Self::new(op.0, cid)
        };
        e.set_slba(slba);
        Ok(e)
    }

    /// Flush (§6.8) of namespace `nsid`.
    pub fn flush(cid: u16, nsid: u32) -> Self {
        Self {
            nsid,
            ..Self::new(NvmOpcode::Flush.0, cid)
        }
    }

    /// Starting LBA of a Read/Write: Dword 10 holds bits 31:0, Dword 11
    /// bits 63:32 (§6.9).
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw10) | (u64::from(self.cdw11) << 32)
    }
    /// Sets the starting LBA of a Read/Write.
    pub fn set_slba(&mut self, slba: u64) {
        // Low and high halves of the 64-bit LBA.
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
    }
}

/// Command Dword 10 of Create/Delete I/O queue commands (§5.3–§5.6).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct QueueDw10 {
    /// QID: queue identifier (bits 15:0).
    pub qid: u16,
    /// QSIZE: queue size, 0's based (bits 31:16; create commands only).
    pub qsize: u16,
}

impl QueueDw10 {
    /// Dword 10 of a create command for queue `qid` of `entries` entries
    /// (1's based, 1..=65536).
    pub fn for_create(qid: u16, entries: u32) -> Result<Self, SpecError> {
        let qsize = zeros_based("queue entries (QSIZE)", entries, Self::QSIZE_BITS)?;
        Ok(Self::new().with_qid(qid).with_qsize(qsize))
    }
    /// Queue entries, 1's based.
    pub fn entries(&self) -> u32 {
        u32::from(self.qsize()) + 1
    }
}

/// Command Dword 11 of Create I/O Completion Queue (§5.3).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateCqDw11 {
    /// PC: physically contiguous (bit 0).
    pub pc: bool,
    /// IEN: interrupts enabled (bit 1).
    pub ien: bool,
    /// Reserved (bits 15:2).
    #[bits(14)]
    __: u16,
    /// IV: interrupt vector (bits 31:16).
    pub iv: u16,
}

/// Command Dword 11 of Create I/O Submission Queue (§5.4).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct CreateSqDw11 {
    /// PC: physically contiguous (bit 0).
    pub pc: bool,
    /// QPRIO: queue priority (bits 2:1).
    #[bits(2)]
    pub qprio: u8,
    /// Reserved (bits 15:3).
    #[bits(13)]
    __: u16,
    /// CQID: completion queue identifier (bits 31:16).
    pub cqid: u16,
}

/// Command Dword 10 of Identify (§5.15.1).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct IdentifyDw10 {
    /// CNS: controller or namespace structure (bits 7:0).
    #[bits(8)]
    pub cns: Cns,
    /// Reserved (bits 15:8).
    __: u8,
    /// CNTID: controller identifier (bits 31:16).
    pub cntid: u16,
}

/// Command Dword 10 of Set Features (§5.21) and Get Features
/// (§5.9).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct FeaturesDw10 {
    /// FID: feature identifier (bits 7:0).
    #[bits(8)]
    pub fid: FeatureId,
    /// SEL: select, Get Features only (bits 10:8).
    #[bits(3)]
    pub select: FeatureSelect,
    /// Reserved (bits 30:11).
    #[bits(20)]
    __: u32,
    /// SV: save, Set Features only (bit 31).
    pub sv: bool,
}

/// Number of Queues value (§5.21.1.7): Command Dword 11
/// of Set Features and Dword 0 of its completion. Both counts are 0's based.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct NumberOfQueues {
    /// NSQR/NSQA: number of I/O submission queues, 0's based (bits 15:0).
    pub nsq: u16,
    /// NCQR/NCQA: number of I/O completion queues, 0's based (bits 31:16).
    pub ncq: u16,
}

impl NumberOfQueues {
    /// From 1's based counts, each 1..=65536.
    pub fn from_counts(sq: u32, cq: u32) -> Result<Self, SpecError> {
        let nsq = zeros_based("I/O submission queues (NSQ)", sq, Self::NSQ_BITS)?;
        let ncq = zeros_based("I/O completion queues (NCQ)", cq, Self::NCQ_BITS)?;
        Ok(Self::new().with_nsq(nsq).with_ncq(ncq))
    }
    /// Number of I/O submission queues, 1's based.
    pub fn sq_count(&self) -> u32 {
        u32::from(self.nsq()) + 1
    }
    /// Number of I/O completion queues, 1's based.
    pub fn cq_count(&self) -> u32 {
        u32::from(self.ncq()) + 1
    }
}

/// Command Dword 10 of Abort (§5.1).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AbortDw10 {
    /// SQID: submission queue of the command to abort (bits 15:0).
    pub sqid: u16,
    /// CID: identifier of the command to abort (bits 31:16).
    pub cid: u16,
}

/// Command Dword 12 of Read/Write (§6.9, §6.15).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct RwDw12 {
    /// NLB: number of logical blocks, 0's based (bits 15:0).
    pub nlb: u16,
    /// Bits 29:16: DTYPE, PRINFO and reserved bits, not used here.
    #[bits(14)]
    __: u16,
    /// FUA: force unit access (bit 30).
    pub fua: bool,
    /// LR: limited retry (bit 31).
    pub lr: bool,
}

impl RwDw12 {
    /// Number of blocks, 1's based.
    pub fn blocks(&self) -> u32 {
        u32::from(self.nlb()) + 1
    }
}

/// The upper half of completion Dword 3 (§4.6): the phase tag
/// (bit 16 of the dword) and the Status Field (bits 31:17).
#[bitfield(u16)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct StatusAndPhase {
    /// P: phase tag.
    pub phase: bool,
    /// SF: status field.
    #[bits(15)]
    pub status: Status,
}

/// A 16-byte completion queue entry (§4.6).
#[repr(C)]
#[derive(
    Clone, Copy, PartialEq, Eq, Default, Debug, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct CompletionEntry {
    /// Dword 0: command specific result.
    pub dw0: u32,
    /// Dword 1: reserved / command specific.
    pub dw1: u32,
    /// SQHD: submission queue head pointer (Dword 2 bits 15:0).
    pub sq_head: u16,
    /// SQID: submission queue identifier (Dword 2 bits 31:16).
    pub sq_id: u16,
    /// CID: command identifier (Dword 3 bits 15:0).
    pub cid: u16,
    /// Phase tag and Status Field (Dword 3 bits 31:16).
    pub status_phase: StatusAndPhase,
}

impl CompletionEntry {
    /// Byte offset of [`CompletionEntry::status_phase`], the two bytes a host
    /// reads first to see whether the entry is new.
    pub const STATUS_PHASE_OFFSET: usize = offset_of!(CompletionEntry, status_phase);

    /// P: the phase tag.
    pub fn phase(&self) -> bool {
        self.status_phase.phase()
    }
    /// Sets the phase tag.
    pub fn set_phase(&mut self, phase: bool) {
        self.status_phase.set_phase(phase);
    }
    /// SF: the status field.
    pub fn status(&self) -> Status {
        self.status_phase.status()
    }
    /// Sets the status field.
    pub fn set_status(&mut self, status: Status) {
        // A Status is at most 15 bits wide (Status::into_bits): it fits.
        self.status_phase.set_status(status);
    }
    /// Returns a copy with the status field set.
    #[must_use]
    pub fn with_status(mut self, status: Status) -> Self {
        self.set_status(status);
        self
    }
    /// Returns a copy with the phase tag set.
    #[must_use]
    pub fn with_phase(mut self, phase: bool) -> Self {
        self.set_phase(phase);
        self
    }

    /// The 16-byte little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; CQ_ENTRY_SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Decodes the first 16 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        read_prefix("completion queue entry", bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{CommandSpecificStatus, GenericStatus};

    #[test]
    fn sqe_layout_and_round_trip() {
        let e = SubmissionEntry::read_write(
            NvmOpcode::Write,
            0x1234,
            1,
            0x1_0000_0002,
            8,
            0xAAAA_0000,
            0xBBBB_0000,
        )
        .unwrap();
        let b = e.to_bytes();
        assert_eq!(b[0], 0x01);
        assert_eq!(&b[2..4], &[0x34, 0x12]);
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert_eq!(&b[24..32], &0xAAAA_0000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0xBBBB_0000u64.to_le_bytes());
        assert_eq!(&b[40..44], &[2, 0, 0, 0]);
        assert_eq!(&b[44..48], &[1, 0, 0, 0]);
        assert_eq!(&b[48..52], &[7, 0, 0, 0]);
        let back = SubmissionEntry::from_bytes(&b).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.slba(), 0x1_0000_0002);
        assert_eq!(RwDw12::from(back.cdw12).blocks(), 8);
    }

    #[test]
    fn read_write_block_counts_are_checked() {
        let max = SubmissionEntry::read_write(NvmOpcode::Read, 0, 1, 0, 65536, 0, 0).unwrap();
        assert_eq!(RwDw12::from(max.cdw12).nlb(), 0xFFFF);
        assert_eq!(RwDw12::from(max.cdw12).blocks(), 65536);
        for bad in [0, 65537] {
            assert!(matches!(
                SubmissionEntry::read_write(NvmOpcode::Read, 0, 1, 0, bad, 0, 0),
                Err(SpecError::OutOfRange {
                    min: 1,
                    max: 65536,
                    ..
                })
            ));
        }
    }

    #[test]
    fn admin_builders() {
        let e = SubmissionEntry::create_io_sq(3, 1, 64, 0x5000, 1).unwrap();
        assert_eq!(AdminOpcode(e.opcode()), AdminOpcode::CreateIoSq);
        assert_eq!(QueueDw10::from(e.cdw10).qid(), 1);
        assert_eq!(QueueDw10::from(e.cdw10).qsize(), 63);
        assert_eq!(CreateSqDw11::from(e.cdw11).cqid(), 1);
        assert!(CreateSqDw11::from(e.cdw11).pc());
        assert!(SubmissionEntry::create_io_cq(3, 1, 0, 0x5000).is_err());
        let e = SubmissionEntry::create_io_cq(3, 1, 65536, 0x5000).unwrap();
        assert_eq!(QueueDw10::from(e.cdw10).entries(), 65536);
        let e = SubmissionEntry::set_number_of_queues(4, 1, 1).unwrap();
        assert_eq!(FeaturesDw10::from(e.cdw10).fid(), FeatureId::NumberOfQueues);
        assert_eq!(e.cdw10, 0x07);
        assert_eq!(e.cdw11, 0);
        assert!(SubmissionEntry::set_number_of_queues(4, 0, 1).is_err());
        let e = SubmissionEntry::identify(5, Cns::Controller, 0, 0x1000, 0);
        assert_eq!(e.cdw10, 1);
        assert_eq!(AdminOpcode(e.opcode()), AdminOpcode::Identify);
        let e = SubmissionEntry::abort(6, 2, 0x1234);
        assert_eq!(e.cdw10, 0x1234_0002);
        // Open enums keep values they do not name.
        assert_eq!(format!("{:?}", AdminOpcode(0x7F)), "AdminOpcode(127)");
        assert_eq!(NvmOpcode(0x00), NvmOpcode::Flush);
    }

    #[test]
    fn features_dword_fields() {
        let dw10 = FeaturesDw10::from(0x8000_0306);
        assert_eq!(dw10.fid(), FeatureId::VolatileWriteCache);
        assert_eq!(dw10.select(), FeatureSelect::SupportedCapabilities);
        assert!(dw10.sv());
        assert_eq!(FeaturesDw10::from(0x700).select(), FeatureSelect(7));
    }

    #[test]
    fn cqe_layout_and_round_trip() {
        let c = CompletionEntry {
            dw0: 0xDEAD_BEEF,
            sq_head: 5,
            sq_id: 1,
            cid: 0x42,
            ..Default::default()
        }
        .with_phase(true)
        .with_status(Status::from(CommandSpecificStatus::InvalidQueueId).with_dnr(true));
        let b = c.to_bytes();
        // Dword 3 = SF << 17 | P << 16 | CID.
        let dw3 = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        assert_eq!(dw3, (0x4101u32 << 17) | (1 << 16) | 0x42);
        assert_eq!(CompletionEntry::from_bytes(&b).unwrap(), c);
        assert_eq!(CompletionEntry::STATUS_PHASE_OFFSET, 14);
        let ok = CompletionEntry::from_bytes(&[0u8; 16]).unwrap();
        assert!(ok.status().is_success());
        assert!(!ok.phase());
        let ones = CompletionEntry::from_bytes(&[0xFF; 16]).unwrap();
        assert!(ones.phase());
        assert_eq!(ones.status().into_bits(), 0x7FFF);
        assert_eq!(ones.status().as_generic(), None);
        let generic = ok.with_status(GenericStatus::AbortedSqDeletion.into());
        assert_eq!(
            generic.status().as_generic(),
            Some(GenericStatus::AbortedSqDeletion)
        );
        assert!(!generic.phase());
    }

    #[test]
    fn short_input_is_an_error() {
        assert!(matches!(
            CompletionEntry::from_bytes(&[0u8; 15]),
            Err(SpecError::TooShort {
                expected: 16,
                actual: 15,
                ..
            })
        ));
        assert!(SubmissionEntry::from_bytes(&[0u8; 63]).is_err());
        assert!(SubmissionEntry::from_bytes(&[0u8; 100]).is_ok());
    }
}
