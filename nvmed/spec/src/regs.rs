//! Controller registers (NVMe Base Specification 1.4, §3.1 "Register Definition").
//!
//! Each register is a [`bitfield_struct`] type over its raw value: every bit
//! is a named field or reserved padding. `from_bits`/`into_bits` (and `From`)
//! convert to and from the raw value; the setters keep reserved bits as they
//! were, so a read–modify–write preserves whatever the controller reported.

use std::time::Duration;

use bitfield_struct::bitfield;
use open_enum::open_enum;

use crate::{zeros_based, SpecError};

/// Register offsets within BAR0 (§3.1).
pub mod offset {
    /// Controller Capabilities, 64-bit (§3.1.1).
    pub const CAP: usize = 0x00;
    /// Version, 32-bit (§3.1.2).
    pub const VS: usize = 0x08;
    /// Interrupt Mask Set, 32-bit (§3.1.3).
    pub const INTMS: usize = 0x0C;
    /// Interrupt Mask Clear, 32-bit (§3.1.4).
    pub const INTMC: usize = 0x10;
    /// Controller Configuration, 32-bit (§3.1.5).
    pub const CC: usize = 0x14;
    /// Controller Status, 32-bit (§3.1.6).
    pub const CSTS: usize = 0x1C;
    /// NVM Subsystem Reset, 32-bit (§3.1.7).
    pub const NSSR: usize = 0x20;
    /// Admin Queue Attributes, 32-bit (§3.1.8).
    pub const AQA: usize = 0x24;
    /// Admin Submission Queue Base Address, 64-bit (§3.1.9).
    pub const ASQ: usize = 0x28;
    /// Admin Completion Queue Base Address, 64-bit (§3.1.10).
    pub const ACQ: usize = 0x30;
    /// First doorbell register: Submission Queue 0 Tail Doorbell (§3.1.24).
    pub const DOORBELL_BASE: usize = 0x1000;
}

/// Stride between doorbell registers in bytes: `4 << CAP.DSTRD` (§3.1.1).
/// DSTRD is a 4-bit field; bits above it are not part of the value.
pub fn doorbell_stride(dstrd: u8) -> usize {
    4usize << (dstrd & 0xF)
}

/// Offset of the Submission Queue `qid` Tail Doorbell (SQyTDBL, §3.1.24):
/// `0x1000 + (2 * qid) * (4 << DSTRD)`.
pub fn sq_tail_doorbell(qid: u16, dstrd: u8) -> usize {
    offset::DOORBELL_BASE + (2 * usize::from(qid)) * doorbell_stride(dstrd)
}

/// Offset of the Completion Queue `qid` Head Doorbell (CQyHDBL, §3.1.25):
/// `0x1000 + (2 * qid + 1) * (4 << DSTRD)`.
pub fn cq_head_doorbell(qid: u16, dstrd: u8) -> usize {
    offset::DOORBELL_BASE + (2 * usize::from(qid) + 1) * doorbell_stride(dstrd)
}

/// Which doorbell a BAR0 offset at or above [`offset::DOORBELL_BASE`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// Submission queue tail doorbell of queue `qid`.
    SqTail(u16),
    /// Completion queue head doorbell of queue `qid`.
    CqHead(u16),
}

/// Decodes a doorbell offset (the inverse of [`sq_tail_doorbell`] and
/// [`cq_head_doorbell`]); `None` when `off` is not exactly a doorbell.
pub fn decode_doorbell(off: usize, dstrd: u8) -> Option<Doorbell> {
    let rel = off.checked_sub(offset::DOORBELL_BASE)?;
    let stride = doorbell_stride(dstrd);
    if rel % stride != 0 {
        return None;
    }
    let index = rel / stride;
    let qid = u16::try_from(index / 2).ok()?;
    Some(if index % 2 == 0 {
        Doorbell::SqTail(qid)
    } else {
        Doorbell::CqHead(qid)
    })
}

/// True when a 32-bit register read returned all ones, which on PCI means the
/// device no longer answers (surprise removal, link down).
pub fn is_all_ones32(value: u32) -> bool {
    value == u32::MAX
}

/// Controller Capabilities (CAP, offset 00h, 64-bit; §3.1.1).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// MQES: Maximum Queue Entries Supported, 0's based (bits 15:0).
    pub mqes: u16,
    /// CQR: Contiguous Queues Required (bit 16).
    pub cqr: bool,
    /// AMS: Arbitration Mechanism Supported (bits 18:17).
    #[bits(2)]
    pub ams: u8,
    /// Reserved (bits 23:19).
    #[bits(5)]
    __: u8,
    /// TO: Timeout, worst-case time to wait for CSTS.RDY to change after
    /// CC.EN changes, in 500 ms units (bits 31:24).
    pub to: u8,
    /// DSTRD: Doorbell Stride, the stride is `2 ^ (2 + DSTRD)` bytes (bits 35:32).
    #[bits(4)]
    pub dstrd: u8,
    /// NSSRS: NVM Subsystem Reset Supported (bit 36).
    pub nssrs: bool,
    /// CSS: Command Sets Supported, bit 0 = NVM command set (bits 44:37);
    /// see [`Cap::CSS_NVM`].
    pub css: u8,
    /// BPS: Boot Partition Support (bit 45).
    pub bps: bool,
    /// Reserved (bits 47:46).
    #[bits(2)]
    __: u8,
    /// MPSMIN: Memory Page Size Minimum, `2 ^ (12 + MPSMIN)` bytes (bits 51:48).
    #[bits(4)]
    pub mpsmin: u8,
    /// MPSMAX: Memory Page Size Maximum, `2 ^ (12 + MPSMAX)` bytes (bits 55:52).
    #[bits(4)]
    pub mpsmax: u8,
    /// PMRS: Persistent Memory Region Supported (bit 56).
    pub pmrs: bool,
    /// CMBS: Controller Memory Buffer Supported (bit 57).
    pub cmbs: bool,
    /// Reserved (bits 63:58).
    #[bits(6)]
    __: u8,
}

impl Cap {
    /// CAP.CSS bit 0: the NVM command set is supported.
    pub const CSS_NVM: u8 = 1 << 0;

    /// CAP.TO as a duration (500 ms units). Zero means the controller gives no
    /// bound; callers should substitute their own.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(500 * u64::from(self.to()))
    }
    /// Maximum entries per queue (MQES is 0's based).
    pub fn max_queue_entries(&self) -> u32 {
        u32::from(self.mqes()) + 1
    }
    /// Doorbell stride in bytes.
    pub fn doorbell_stride(&self) -> usize {
        doorbell_stride(self.dstrd())
    }
    /// Smallest supported memory page size in bytes.
    pub fn min_page_size(&self) -> u64 {
        1u64 << (12 + u32::from(self.mpsmin()))
    }
    /// Largest supported memory page size in bytes.
    pub fn max_page_size(&self) -> u64 {
        1u64 << (12 + u32::from(self.mpsmax()))
    }
}

/// Version (VS, offset 08h; §3.1.2).
#[bitfield(u32, new = false)]
#[derive(PartialEq, Eq)]
pub struct Version {
    /// TER: Tertiary version number (bits 7:0).
    pub tertiary: u8,
    /// MNR: Minor version number (bits 15:8).
    pub minor: u8,
    /// MJR: Major version number (bits 31:16).
    pub major: u16,
}

impl Version {
    /// Builds a version value from its parts.
    pub const fn new(major: u16, minor: u8, tertiary: u8) -> Self {
        Version::from_bits(0)
            .with_major(major)
            .with_minor(minor)
            .with_tertiary(tertiary)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.tertiary())
    }
}

/// Controller Configuration (CC, offset 14h; §3.1.5).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cc {
    /// EN: Enable (bit 0).
    pub en: bool,
    /// Reserved (bits 3:1).
    #[bits(3)]
    __: u8,
    /// CSS: I/O Command Set Selected (bits 6:4).
    #[bits(3)]
    pub command_set: CommandSetSelect,
    /// MPS: Memory Page Size, `2 ^ (12 + MPS)` bytes (bits 10:7).
    #[bits(4)]
    pub mps: u8,
    /// AMS: Arbitration Mechanism Selected (bits 13:11); 000b = round robin.
    #[bits(3)]
    pub ams: u8,
    /// SHN: Shutdown Notification (bits 15:14; procedure in §7.6.2).
    #[bits(2)]
    pub shutdown: ShutdownNotification,
    /// IOSQES: I/O Submission Queue Entry Size, `2 ^ n` bytes (bits 19:16).
    #[bits(4)]
    pub iosqes: u8,
    /// IOCQES: I/O Completion Queue Entry Size, `2 ^ n` bytes (bits 23:20).
    #[bits(4)]
    pub iocqes: u8,
    /// Reserved (bits 31:24).
    __: u8,
}

/// CC.CSS: I/O Command Set Selected (§3.1.5). A 3-bit field.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum CommandSetSelect {
    /// 000b: NVM command set.
    Nvm = 0b000,
    /// 110b: all supported I/O command sets (NVMe 2.0).
    AllSupported = 0b110,
    /// 111b: admin command set only.
    AdminOnly = 0b111,
}

/// CC.SHN: Shutdown Notification (§3.1.5; shutdown procedure in §7.6.2).
/// A 2-bit field.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum ShutdownNotification {
    /// 00b: no notification, no effect.
    None = 0b00,
    /// 01b: normal shutdown notification.
    Normal = 0b01,
    /// 10b: abrupt shutdown notification.
    Abrupt = 0b10,
    /// 11b: reserved.
    Reserved = 0b11,
}

/// Controller Status (CSTS, offset 1Ch; §3.1.6).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Csts {
    /// RDY: Ready (bit 0).
    pub rdy: bool,
    /// CFS: Controller Fatal Status (bit 1).
    pub cfs: bool,
    /// SHST: Shutdown Status (bits 3:2).
    #[bits(2)]
    pub shutdown_status: ShutdownStatus,
    /// NSSRO: NVM Subsystem Reset Occurred (bit 4).
    pub nssro: bool,
    /// PP: Processing Paused (bit 5).
    pub pp: bool,
    /// Reserved (bits 31:6).
    #[bits(26)]
    __: u32,
}

impl Csts {
    /// True when the register read all-ones: the device is gone.
    pub fn is_all_ones(&self) -> bool {
        is_all_ones32(self.into_bits())
    }
}

/// CSTS.SHST: Shutdown Status (§3.1.6). A 2-bit field.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum ShutdownStatus {
    /// 00b: normal operation, no shutdown requested.
    Normal = 0b00,
    /// 01b: shutdown processing occurring.
    Occurring = 0b01,
    /// 10b: shutdown processing complete.
    Complete = 0b10,
    /// 11b: reserved.
    Reserved = 0b11,
}

// The conversions `bitfield_struct` uses for fields of these types. A value
// wider than its field is refused by the `*_checked` setters (and makes the
// plain setters panic), never truncated.
impl CommandSetSelect {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

impl ShutdownNotification {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

impl ShutdownStatus {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

/// Admin Queue Attributes (AQA, offset 24h; §3.1.8).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Aqa {
    /// ASQS: Admin Submission Queue Size, 0's based (bits 11:0).
    #[bits(12)]
    pub asqs: u16,
    /// Reserved (bits 15:12).
    #[bits(4)]
    __: u8,
    /// ACQS: Admin Completion Queue Size, 0's based (bits 27:16).
    #[bits(12)]
    pub acqs: u16,
    /// Reserved (bits 31:28).
    #[bits(4)]
    __: u8,
}

impl Aqa {
    /// AQA for admin queues of `sq_entries` and `cq_entries` entries (1's
    /// based, stored 0's based): each must be 1..=4096.
    pub fn for_entries(sq_entries: u16, cq_entries: u16) -> Result<Self, SpecError> {
        let asqs = zeros_based("AQA.ASQS entries", sq_entries.into(), Self::ASQS_BITS)?;
        let acqs = zeros_based("AQA.ACQS entries", cq_entries.into(), Self::ACQS_BITS)?;
        Ok(Self::new().with_asqs(asqs).with_acqs(acqs))
    }
    /// Admin submission queue entries (1's based).
    pub fn sq_entries(&self) -> u32 {
        u32::from(self.asqs()) + 1
    }
    /// Admin completion queue entries (1's based).
    pub fn cq_entries(&self) -> u32 {
        u32::from(self.acqs()) + 1
    }
}

/// Mask of the address bits of ASQ/ACQ: bits 11:0 are reserved, the queue
/// base must be 4 KiB aligned (§3.1.9, §3.1.10).
pub const QUEUE_BASE_MASK: u64 = !0xFFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields_decode_qemu_value() {
        // MQES=2047, CQR=1, TO=15, DSTRD=0, CSS=NVM, MPSMIN=0, MPSMAX=4.
        let cap = Cap::new()
            .with_mqes(2047)
            .with_cqr(true)
            .with_to(15)
            .with_css(Cap::CSS_NVM)
            .with_mpsmax(4);
        assert_eq!(cap.into_bits(), 0x0040_0020_0F01_07FF);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert_eq!(cap.timeout(), Duration::from_millis(7500));
        assert_eq!(cap.doorbell_stride(), 4);
        assert_eq!(cap.min_page_size(), 4096);
        assert_eq!(cap.max_page_size(), 65536);
        let all = Cap::from_bits(u64::MAX);
        assert_eq!(all.dstrd(), 0xF);
        assert_eq!(all.css(), 0xFF);
        assert_eq!(all.max_page_size(), 1 << 27);
    }

    #[test]
    fn field_positions_match_the_spec() {
        // Bit positions as §3.1 numbers them.
        assert_eq!(
            (Cap::TO_OFFSET, Cap::DSTRD_OFFSET, Cap::CSS_OFFSET),
            (24, 32, 37)
        );
        assert_eq!(
            (Cap::MPSMIN_OFFSET, Cap::MPSMAX_OFFSET, Cap::CMBS_OFFSET),
            (48, 52, 57)
        );
        assert_eq!(
            (Cc::COMMAND_SET_OFFSET, Cc::MPS_OFFSET, Cc::AMS_OFFSET),
            (4, 7, 11)
        );
        assert_eq!(
            (Cc::SHUTDOWN_OFFSET, Cc::IOSQES_OFFSET, Cc::IOCQES_OFFSET),
            (14, 16, 20)
        );
        assert_eq!((Csts::SHUTDOWN_STATUS_OFFSET, Csts::PP_OFFSET), (2, 5));
        assert_eq!(
            (Aqa::ASQS_BITS, Aqa::ACQS_OFFSET, Aqa::ACQS_BITS),
            (12, 16, 12)
        );
        assert_eq!((Version::MINOR_OFFSET, Version::MAJOR_OFFSET), (8, 16));
    }

    #[test]
    fn cc_fields_round_trip() {
        let cc = Cc::new()
            .with_en(true)
            .with_command_set(CommandSetSelect::Nvm)
            .with_mps(0)
            .with_iosqes(6)
            .with_iocqes(4)
            .with_shutdown(ShutdownNotification::Normal);
        assert_eq!(cc.into_bits(), 0x0046_4001);
        assert!(cc.en());
        assert_eq!(cc.shutdown(), ShutdownNotification::Normal);
        let cc = cc.with_shutdown(ShutdownNotification::Abrupt);
        assert_eq!(cc.shutdown().into_bits(), 0b10);
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(
            Cc::from_bits(0x70).command_set(),
            CommandSetSelect::AdminOnly
        );
        // A reserved value is kept as it is.
        assert_eq!(Cc::from_bits(0x10).command_set(), CommandSetSelect(1));
    }

    #[test]
    fn setters_refuse_wide_values_and_preserve_other_bits() {
        let mut cc = Cc::from_bits(0xFF00_0000);
        assert!(cc.set_iosqes_checked(0xFF).is_err());
        assert!(cc
            .set_command_set_checked(CommandSetSelect(0b1000))
            .is_err());
        assert_eq!(cc.into_bits(), 0xFF00_0000);
        cc.set_iosqes(0xF);
        assert_eq!(cc.iosqes(), 0xF);
        assert_eq!(cc.into_bits() & 0xFF00_0000, 0xFF00_0000);
        assert_eq!(cc.iocqes(), 0);
    }

    #[test]
    fn csts_shutdown_status() {
        let c = Csts::new()
            .with_rdy(true)
            .with_shutdown_status(ShutdownStatus::Complete);
        assert_eq!(c.into_bits(), 0b1001);
        assert_eq!(
            Csts::from_bits(0b0100).shutdown_status(),
            ShutdownStatus::Occurring
        );
        assert_eq!(
            Csts::from_bits(0b1100).shutdown_status(),
            ShutdownStatus::Reserved
        );
        assert!(Csts::from_bits(0b10).cfs());
        assert!(Csts::from_bits(u32::MAX).is_all_ones());
        assert!(!Csts::from_bits(u32::MAX - 1).is_all_ones());
    }

    #[test]
    fn aqa_is_zeros_based_and_checked() {
        let a = Aqa::for_entries(32, 32).unwrap();
        assert_eq!(a.into_bits(), 0x001F_001F);
        assert_eq!(a.asqs(), 31);
        assert_eq!(a.sq_entries(), 32);
        let a = Aqa::for_entries(4096, 1).unwrap();
        assert_eq!(a.into_bits(), 0x0000_0FFF);
        assert_eq!(
            Aqa::for_entries(4097, 2),
            Err(SpecError::OutOfRange {
                what: "AQA.ASQS entries",
                value: 4097,
                min: 1,
                max: 4096
            })
        );
        assert!(Aqa::for_entries(2, 0).is_err());
    }

    #[test]
    fn doorbells_follow_stride() {
        assert_eq!(sq_tail_doorbell(0, 0), 0x1000);
        assert_eq!(cq_head_doorbell(0, 0), 0x1004);
        assert_eq!(sq_tail_doorbell(1, 0), 0x1008);
        assert_eq!(cq_head_doorbell(1, 0), 0x100C);
        assert_eq!(sq_tail_doorbell(1, 1), 0x1010);
        assert_eq!(cq_head_doorbell(1, 2), 0x1000 + 3 * 16);
        for dstrd in 0..4 {
            for q in 0..5 {
                assert_eq!(
                    decode_doorbell(sq_tail_doorbell(q, dstrd), dstrd),
                    Some(Doorbell::SqTail(q))
                );
                assert_eq!(
                    decode_doorbell(cq_head_doorbell(q, dstrd), dstrd),
                    Some(Doorbell::CqHead(q))
                );
            }
        }
        assert_eq!(decode_doorbell(0x1002, 0), None);
        assert_eq!(decode_doorbell(0xFFC, 0), None);
    }

    #[test]
    fn version_display() {
        let v = Version::new(1, 4, 0);
        assert_eq!(v.into_bits(), 0x0001_0400);
        assert_eq!(v.to_string(), "1.4.0");
        assert_eq!(Version::from_bits(0x0002_0100).to_string(), "2.1.0");
    }
}
