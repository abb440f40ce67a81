//! Queue entries and commands (NVMe Base Specification 1.4, §4.2 "Submission
//! Queue Entry", §4.6 "Completion Queue Entry", §5 admin commands, §6 NVM commands).

use crate::identify::Cns;
use crate::status::Status;
use crate::{le16, le32, le64, need, SpecError};

/// Size of a submission queue entry in bytes (§4.2).
pub const SQ_ENTRY_SIZE: usize = 64;
/// `log2(SQ_ENTRY_SIZE)`, the value for CC.IOSQES and Identify SQES.
pub const SQ_ENTRY_SIZE_LOG2: u8 = 6;
/// Size of a completion queue entry in bytes (§4.6).
pub const CQ_ENTRY_SIZE: usize = 16;
/// `log2(CQ_ENTRY_SIZE)`, the value for CC.IOCQES and Identify CQES.
pub const CQ_ENTRY_SIZE_LOG2: u8 = 4;

/// Admin command opcodes (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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

impl AdminOpcode {
    /// Decodes an opcode; `None` when this crate does not know it.
    pub fn from_u8(op: u8) -> Option<Self> {
        Some(match op {
            0x00 => Self::DeleteIoSq,
            0x01 => Self::CreateIoSq,
            0x02 => Self::GetLogPage,
            0x04 => Self::DeleteIoCq,
            0x05 => Self::CreateIoCq,
            0x06 => Self::Identify,
            0x08 => Self::Abort,
            0x09 => Self::SetFeatures,
            0x0A => Self::GetFeatures,
            0x0C => Self::AsyncEventRequest,
            0x18 => Self::KeepAlive,
            _ => return None,
        })
    }
}

/// NVM command set I/O opcodes (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NvmOpcode {
    /// 00h: Flush (§6.8): commit volatile write cache contents to media.
    Flush = 0x00,
    /// 01h: Write (§6.15).
    Write = 0x01,
    /// 02h: Read (§6.9).
    Read = 0x02,
}

impl NvmOpcode {
    /// Decodes an opcode; `None` when this crate does not know it.
    pub fn from_u8(op: u8) -> Option<Self> {
        Some(match op {
            0x00 => Self::Flush,
            0x01 => Self::Write,
            0x02 => Self::Read,
            _ => return None,
        })
    }
}

/// Command Dword 0, common to all commands (§4.2).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Cdw0(pub u32);

bitfields!(Cdw0: u32 {
    /// OPC: opcode (bits 7:0).
    opcode, set_opcode, with_opcode: u8 @ 0..=7;
    /// FUSE: fused operation (bits 9:8); 00b = normal.
    fuse, set_fuse, with_fuse: u8 @ 8..=9;
    /// PSDT: PRP or SGL for data transfer (bits 15:14); 00b = PRPs.
    psdt, set_psdt, with_psdt: u8 @ 14..=15;
    /// CID: command identifier (bits 31:16).
    cid, set_cid, with_cid: u16 @ 16..=31;
});

/// A 64-byte submission queue entry (§4.2), PRP form.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
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
            cdw0: Cdw0(0).with_opcode(opcode).with_cid(cid),
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

    /// Serialises to the 64-byte little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; SQ_ENTRY_SIZE] {
        let mut b = [0u8; SQ_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.cdw0.0.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[8..12].copy_from_slice(&self.cdw2.to_le_bytes());
        b[12..16].copy_from_slice(&self.cdw3.to_le_bytes());
        b[16..24].copy_from_slice(&self.mptr.to_le_bytes());
        b[24..32].copy_from_slice(&self.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&self.prp2.to_le_bytes());
        b[40..44].copy_from_slice(&self.cdw10.to_le_bytes());
        b[44..48].copy_from_slice(&self.cdw11.to_le_bytes());
        b[48..52].copy_from_slice(&self.cdw12.to_le_bytes());
        b[52..56].copy_from_slice(&self.cdw13.to_le_bytes());
        b[56..60].copy_from_slice(&self.cdw14.to_le_bytes());
        b[60..64].copy_from_slice(&self.cdw15.to_le_bytes());
        b
    }

    /// Parses the first 64 bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SpecError> {
        need("submission queue entry", b, SQ_ENTRY_SIZE)?;
        Ok(Self {
            cdw0: Cdw0(le32(b, 0)),
            nsid: le32(b, 4),
            cdw2: le32(b, 8),
            cdw3: le32(b, 12),
            mptr: le64(b, 16),
            prp1: le64(b, 24),
            prp2: le64(b, 32),
            cdw10: le32(b, 40),
            cdw11: le32(b, 44),
            cdw12: le32(b, 48),
            cdw13: le32(b, 52),
            cdw14: le32(b, 56),
            cdw15: le32(b, 60),
        })
    }

    // ---- admin command builders -------------------------------------------------

    /// Identify (§5.15): `cns` selects the data structure, written to `prp1`
    /// (and `prp2` if the 4 KiB buffer crosses a page).
    pub fn identify(cid: u16, cns: Cns, nsid: u32, prp1: u64, prp2: u64) -> Self {
        let mut e = Self::new(AdminOpcode::Identify as u8, cid);
        e.nsid = nsid;
        e.prp1 = prp1;
        e.prp2 = prp2;
        e.cdw10 = IdentifyDw10(0).with_cns(cns as u8).0;
        e
    }

    /// Create I/O Completion Queue (§5.3): physically contiguous queue of
    /// `entries` entries at `base`, interrupts disabled.
    pub fn create_io_cq(cid: u16, qid: u16, entries: u16, base: u64) -> Self {
        let mut e = Self::new(AdminOpcode::CreateIoCq as u8, cid);
        e.prp1 = base;
        e.cdw10 = QueueDw10(0)
            .with_qid(qid)
            .with_qsize(entries.saturating_sub(1))
            .0;
        e.cdw11 = CreateCqDw11(0).with_pc(true).0;
        e
    }

    /// Create I/O Submission Queue (§5.4): physically contiguous queue of
    /// `entries` entries at `base`, completing to queue `cqid`.
    pub fn create_io_sq(cid: u16, qid: u16, entries: u16, base: u64, cqid: u16) -> Self {
        let mut e = Self::new(AdminOpcode::CreateIoSq as u8, cid);
        e.prp1 = base;
        e.cdw10 = QueueDw10(0)
            .with_qid(qid)
            .with_qsize(entries.saturating_sub(1))
            .0;
        e.cdw11 = CreateSqDw11(0).with_pc(true).with_cqid(cqid).0;
        e
    }

    /// Delete I/O Submission Queue (§5.6).
    pub fn delete_io_sq(cid: u16, qid: u16) -> Self {
        let mut e = Self::new(AdminOpcode::DeleteIoSq as u8, cid);
        e.cdw10 = QueueDw10(0).with_qid(qid).0;
        e
    }

    /// Delete I/O Completion Queue (§5.5).
    pub fn delete_io_cq(cid: u16, qid: u16) -> Self {
        let mut e = Self::new(AdminOpcode::DeleteIoCq as u8, cid);
        e.cdw10 = QueueDw10(0).with_qid(qid).0;
        e
    }

    /// Set Features / Number of Queues (§5.21.1.7): request `sq` submission and
    /// `cq` completion I/O queues (1's based here, 0's based on the wire).
    pub fn set_number_of_queues(cid: u16, sq: u16, cq: u16) -> Self {
        let mut e = Self::new(AdminOpcode::SetFeatures as u8, cid);
        e.cdw10 = FeaturesDw10(0)
            .with_fid(crate::features::FeatureId::NumberOfQueues as u8)
            .0;
        e.cdw11 = NumberOfQueues::from_counts(sq, cq).0;
        e
    }

    /// Abort (§5.1): abort command `target_cid` on submission queue `sqid`.
    pub fn abort(cid: u16, sqid: u16, target_cid: u16) -> Self {
        let mut e = Self::new(AdminOpcode::Abort as u8, cid);
        e.cdw10 = u32::from(sqid) | (u32::from(target_cid) << 16);
        e
    }

    // ---- NVM command builders ---------------------------------------------------

    /// Read (§6.9) or Write (§6.15) of `blocks` logical blocks (1's based
    /// here, 0's based NLB on the wire) starting at `slba`.
    pub fn read_write(
        op: NvmOpcode,
        cid: u16,
        nsid: u32,
        slba: u64,
        blocks: u16,
        prp1: u64,
        prp2: u64,
    ) -> Self {
        let mut e = Self::new(op as u8, cid);
        e.nsid = nsid;
        e.prp1 = prp1;
        e.prp2 = prp2;
        e.set_slba(slba);
        e.cdw12 = RwDw12(0).with_nlb(blocks.saturating_sub(1)).0;
        e
    }

    /// Flush (§6.8) of namespace `nsid`.
    pub fn flush(cid: u16, nsid: u32) -> Self {
        let mut e = Self::new(NvmOpcode::Flush as u8, cid);
        e.nsid = nsid;
        e
    }

    /// Starting LBA of a Read/Write (Dwords 11:10).
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw10) | (u64::from(self.cdw11) << 32)
    }
    /// Sets the starting LBA of a Read/Write.
    pub fn set_slba(&mut self, slba: u64) {
        self.cdw10 = slba as u32;
        self.cdw11 = (slba >> 32) as u32;
    }
}

/// Command Dword 10 of Create/Delete I/O queue commands (§5.3–§5.6).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct QueueDw10(pub u32);

bitfields!(QueueDw10: u32 {
    /// QID: queue identifier (bits 15:0).
    qid, set_qid, with_qid: u16 @ 0..=15;
    /// QSIZE: queue size, 0's based (bits 31:16; create commands only).
    qsize, set_qsize, with_qsize: u16 @ 16..=31;
});

/// Command Dword 11 of Create I/O Completion Queue (§5.3).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct CreateCqDw11(pub u32);

bitfields!(CreateCqDw11: u32 {
    /// PC: physically contiguous (bit 0).
    pc, set_pc, with_pc: bool @ 0..=0;
    /// IEN: interrupts enabled (bit 1).
    ien, set_ien, with_ien: bool @ 1..=1;
    /// IV: interrupt vector (bits 31:16).
    iv, set_iv, with_iv: u16 @ 16..=31;
});

/// Command Dword 11 of Create I/O Submission Queue (§5.4).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct CreateSqDw11(pub u32);

bitfields!(CreateSqDw11: u32 {
    /// PC: physically contiguous (bit 0).
    pc, set_pc, with_pc: bool @ 0..=0;
    /// QPRIO: queue priority (bits 2:1).
    qprio, set_qprio, with_qprio: u8 @ 1..=2;
    /// CQID: completion queue identifier (bits 31:16).
    cqid, set_cqid, with_cqid: u16 @ 16..=31;
});

/// Command Dword 10 of Identify (§5.15.1).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct IdentifyDw10(pub u32);

bitfields!(IdentifyDw10: u32 {
    /// CNS: controller or namespace structure (bits 7:0).
    cns, set_cns, with_cns: u8 @ 0..=7;
    /// CNTID: controller identifier (bits 31:16).
    cntid, set_cntid, with_cntid: u16 @ 16..=31;
});

/// Command Dword 10 of Set/Get Features (§5.21).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct FeaturesDw10(pub u32);

bitfields!(FeaturesDw10: u32 {
    /// FID: feature identifier (bits 7:0).
    fid, set_fid, with_fid: u8 @ 0..=7;
    /// SV: save (bit 31).
    sv, set_sv, with_sv: bool @ 31..=31;
});

/// Number of Queues value (§5.21.1.7): Command Dword 11 of
/// Set Features and Dword 0 of its completion. Both counts are 0's based.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct NumberOfQueues(pub u32);

bitfields!(NumberOfQueues: u32 {
    /// NSQR/NSQA: number of I/O submission queues, 0's based (bits 15:0).
    nsq, set_nsq, with_nsq: u16 @ 0..=15;
    /// NCQR/NCQA: number of I/O completion queues, 0's based (bits 31:16).
    ncq, set_ncq, with_ncq: u16 @ 16..=31;
});

impl NumberOfQueues {
    /// From 1's based counts.
    pub fn from_counts(sq: u16, cq: u16) -> Self {
        NumberOfQueues(0)
            .with_nsq(sq.saturating_sub(1))
            .with_ncq(cq.saturating_sub(1))
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

/// Command Dword 12 of Read/Write (§6.9, §6.15).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RwDw12(pub u32);

bitfields!(RwDw12: u32 {
    /// NLB: number of logical blocks, 0's based (bits 15:0).
    nlb, set_nlb, with_nlb: u16 @ 0..=15;
    /// FUA: force unit access (bit 30).
    fua, set_fua, with_fua: bool @ 30..=30;
    /// LR: limited retry (bit 31).
    lr, set_lr, with_lr: bool @ 31..=31;
});

impl RwDw12 {
    /// Number of blocks, 1's based.
    pub fn blocks(&self) -> u32 {
        u32::from(self.nlb()) + 1
    }
}

/// A 16-byte completion queue entry (§4.6).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
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
    /// P: phase tag (Dword 3 bit 16).
    pub phase: bool,
    /// Status field (Dword 3 bits 31:17).
    pub status: Status,
}

impl CompletionEntry {
    /// Serialises to the 16-byte little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; CQ_ENTRY_SIZE] {
        let mut b = [0u8; CQ_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        b[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        let hi = u16::from(self.phase) | ((self.status.0 & 0x7FFF) << 1);
        b[14..16].copy_from_slice(&hi.to_le_bytes());
        b
    }

    /// Parses the first 16 bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SpecError> {
        need("completion queue entry", b, CQ_ENTRY_SIZE)?;
        let hi = le16(b, 14);
        Ok(Self {
            dw0: le32(b, 0),
            dw1: le32(b, 4),
            sq_head: le16(b, 8),
            sq_id: le16(b, 10),
            cid: le16(b, 12),
            phase: hi & 1 != 0,
            status: Status(hi >> 1),
        })
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
        );
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
        assert_eq!(RwDw12(back.cdw12).blocks(), 8);
    }

    #[test]
    fn admin_builders() {
        let e = SubmissionEntry::create_io_sq(3, 1, 64, 0x5000, 1);
        assert_eq!(e.opcode(), AdminOpcode::CreateIoSq as u8);
        assert_eq!(QueueDw10(e.cdw10).qid(), 1);
        assert_eq!(QueueDw10(e.cdw10).qsize(), 63);
        assert_eq!(CreateSqDw11(e.cdw11).cqid(), 1);
        assert!(CreateSqDw11(e.cdw11).pc());
        let e = SubmissionEntry::set_number_of_queues(4, 1, 1);
        assert_eq!(FeaturesDw10(e.cdw10).fid(), 0x07);
        assert_eq!(e.cdw11, 0);
        let e = SubmissionEntry::identify(5, Cns::Controller, 0, 0x1000, 0);
        assert_eq!(e.cdw10, 1);
        assert_eq!(
            AdminOpcode::from_u8(e.opcode()),
            Some(AdminOpcode::Identify)
        );
        assert_eq!(AdminOpcode::from_u8(0x7F), None);
        assert_eq!(NvmOpcode::from_u8(0x00), Some(NvmOpcode::Flush));
    }

    #[test]
    fn cqe_layout_and_round_trip() {
        let c = CompletionEntry {
            dw0: 0xDEAD_BEEF,
            dw1: 0,
            sq_head: 5,
            sq_id: 1,
            cid: 0x42,
            phase: true,
            status: Status::from(CommandSpecificStatus::InvalidQueueId).with_dnr(true),
        };
        let b = c.to_bytes();
        // Dword 3 = SF << 17 | P << 16 | CID.
        let dw3 = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        assert_eq!(dw3, (0x4101u32 << 17) | (1 << 16) | 0x42);
        assert_eq!(CompletionEntry::from_bytes(&b).unwrap(), c);
        let ok = CompletionEntry::from_bytes(&[0u8; 16]).unwrap();
        assert!(ok.status.is_success());
        assert!(!ok.phase);
        assert_eq!(
            CompletionEntry::from_bytes(&[0xFF; 16])
                .unwrap()
                .status
                .as_generic(),
            None
        );
        let _ = GenericStatus::Success;
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
