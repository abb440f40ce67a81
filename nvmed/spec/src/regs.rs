//! Controller registers (NVMe Base Specification 1.4, §3.1 "Register Definition").
//!
//! Each register is a newtype over its raw value with typed field accessors.
//! Reserved bits are preserved by the setters, so a read–modify–write keeps
//! whatever the controller reported in them.

use std::time::Duration;

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

/// Controller Capabilities (CAP, offset 0x00, 64-bit; §3.1.1).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap(pub u64);

bitfields!(Cap: u64 {
    /// MQES: Maximum Queue Entries Supported, 0's based (bits 15:0).
    mqes, set_mqes, with_mqes: u16 @ 0..=15;
    /// CQR: Contiguous Queues Required (bit 16).
    cqr, set_cqr, with_cqr: bool @ 16..=16;
    /// AMS: Arbitration Mechanism Supported (bits 18:17).
    ams, set_ams, with_ams: u8 @ 17..=18;
    /// TO: Timeout, worst-case time to wait for CSTS.RDY to change after
    /// CC.EN changes, in 500 ms units (bits 31:24).
    to, set_to, with_to: u8 @ 24..=31;
    /// DSTRD: Doorbell Stride, the stride is `2 ^ (2 + DSTRD)` bytes (bits 35:32).
    dstrd, set_dstrd, with_dstrd: u8 @ 32..=35;
    /// NSSRS: NVM Subsystem Reset Supported (bit 36).
    nssrs, set_nssrs, with_nssrs: bool @ 36..=36;
    /// CSS: Command Sets Supported, bit 0 = NVM command set (bits 44:37).
    css, set_css, with_css: u8 @ 37..=44;
    /// BPS: Boot Partition Support (bit 45).
    bps, set_bps, with_bps: bool @ 45..=45;
    /// MPSMIN: Memory Page Size Minimum, `2 ^ (12 + MPSMIN)` bytes (bits 51:48).
    mpsmin, set_mpsmin, with_mpsmin: u8 @ 48..=51;
    /// MPSMAX: Memory Page Size Maximum, `2 ^ (12 + MPSMAX)` bytes (bits 55:52).
    mpsmax, set_mpsmax, with_mpsmax: u8 @ 52..=55;
    /// PMRS: Persistent Memory Region Supported (bit 56).
    pmrs, set_pmrs, with_pmrs: bool @ 56..=56;
    /// CMBS: Controller Memory Buffer Supported (bit 57).
    cmbs, set_cmbs, with_cmbs: bool @ 57..=57;
});

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

impl std::fmt::Debug for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cap")
            .field("raw", &format_args!("{:#018x}", self.0))
            .field("mqes", &self.mqes())
            .field("cqr", &self.cqr())
            .field("to", &self.to())
            .field("dstrd", &self.dstrd())
            .field("css", &self.css())
            .field("mpsmin", &self.mpsmin())
            .field("mpsmax", &self.mpsmax())
            .finish()
    }
}

/// Version (VS, offset 0x08; §3.1.2).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Version(pub u32);

bitfields!(Version: u32 {
    /// TER: Tertiary version number (bits 7:0).
    tertiary, set_tertiary, with_tertiary: u8 @ 0..=7;
    /// MNR: Minor version number (bits 15:8).
    minor, set_minor, with_minor: u8 @ 8..=15;
    /// MJR: Major version number (bits 31:16).
    major, set_major, with_major: u16 @ 16..=31;
});

impl Version {
    /// Builds a version value from its parts.
    pub fn new(major: u16, minor: u8, tertiary: u8) -> Self {
        Version(0)
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

/// Controller Configuration (CC, offset 0x14; §3.1.5).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Cc(pub u32);

bitfields!(Cc: u32 {
    /// EN: Enable (bit 0).
    en, set_en, with_en: bool @ 0..=0;
    /// CSS: I/O Command Set Selected, raw (bits 6:4); see [`Cc::command_set`].
    css_raw, set_css_raw, with_css_raw: u8 @ 4..=6;
    /// MPS: Memory Page Size, `2 ^ (12 + MPS)` bytes (bits 10:7).
    mps, set_mps, with_mps: u8 @ 7..=10;
    /// AMS: Arbitration Mechanism Selected (bits 13:11); 000b = round robin.
    ams, set_ams, with_ams: u8 @ 11..=13;
    /// SHN: Shutdown Notification, raw (bits 15:14); see [`Cc::shutdown`].
    shn_raw, set_shn_raw, with_shn_raw: u8 @ 14..=15;
    /// IOSQES: I/O Submission Queue Entry Size, `2 ^ n` bytes (bits 19:16).
    iosqes, set_iosqes, with_iosqes: u8 @ 16..=19;
    /// IOCQES: I/O Completion Queue Entry Size, `2 ^ n` bytes (bits 23:20).
    iocqes, set_iocqes, with_iocqes: u8 @ 20..=23;
});

impl Cc {
    /// The shutdown notification field.
    pub fn shutdown(&self) -> ShutdownNotification {
        ShutdownNotification::from_bits(self.shn_raw())
    }
    /// Sets the shutdown notification field.
    pub fn set_shutdown(&mut self, shn: ShutdownNotification) {
        self.set_shn_raw(shn.bits());
    }
    /// Returns a copy with the shutdown notification field set.
    #[must_use]
    pub fn with_shutdown(mut self, shn: ShutdownNotification) -> Self {
        self.set_shutdown(shn);
        self
    }
    /// The I/O command set selected.
    pub fn command_set(&self) -> CommandSetSelect {
        CommandSetSelect::from_bits(self.css_raw())
    }
    /// Returns a copy with the I/O command set selected.
    #[must_use]
    pub fn with_command_set(self, css: CommandSetSelect) -> Self {
        self.with_css_raw(css.bits())
    }
}

impl std::fmt::Debug for Cc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cc")
            .field("raw", &format_args!("{:#010x}", self.0))
            .field("en", &self.en())
            .field("css", &self.command_set())
            .field("mps", &self.mps())
            .field("shn", &self.shutdown())
            .field("iosqes", &self.iosqes())
            .field("iocqes", &self.iocqes())
            .finish()
    }
}

/// CC.CSS values (§3.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandSetSelect {
    /// 000b: NVM command set.
    Nvm,
    /// 110b: all supported I/O command sets (NVMe 2.0).
    AllSupported,
    /// 111b: admin command set only.
    AdminOnly,
    /// Any other (reserved) value.
    Reserved(u8),
}

impl CommandSetSelect {
    /// Decodes the 3-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x7 {
            0b000 => Self::Nvm,
            0b110 => Self::AllSupported,
            0b111 => Self::AdminOnly,
            other => Self::Reserved(other),
        }
    }
    /// Encodes the 3-bit field.
    pub fn bits(self) -> u8 {
        match self {
            Self::Nvm => 0b000,
            Self::AllSupported => 0b110,
            Self::AdminOnly => 0b111,
            Self::Reserved(b) => b & 0x7,
        }
    }
}

/// CC.SHN: Shutdown Notification (§3.1.5; shutdown procedure in §7.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownNotification {
    /// 00b: no notification, no effect.
    None,
    /// 01b: normal shutdown notification.
    Normal,
    /// 10b: abrupt shutdown notification.
    Abrupt,
    /// 11b: reserved.
    Reserved,
}

impl ShutdownNotification {
    /// Decodes the 2-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x3 {
            0b00 => Self::None,
            0b01 => Self::Normal,
            0b10 => Self::Abrupt,
            _ => Self::Reserved,
        }
    }
    /// Encodes the 2-bit field.
    pub fn bits(self) -> u8 {
        match self {
            Self::None => 0b00,
            Self::Normal => 0b01,
            Self::Abrupt => 0b10,
            Self::Reserved => 0b11,
        }
    }
}

/// Controller Status (CSTS, offset 0x1C; §3.1.6).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Csts(pub u32);

bitfields!(Csts: u32 {
    /// RDY: Ready (bit 0).
    rdy, set_rdy, with_rdy: bool @ 0..=0;
    /// CFS: Controller Fatal Status (bit 1).
    cfs, set_cfs, with_cfs: bool @ 1..=1;
    /// SHST: Shutdown Status, raw (bits 3:2); see [`Csts::shutdown_status`].
    shst_raw, set_shst_raw, with_shst_raw: u8 @ 2..=3;
    /// NSSRO: NVM Subsystem Reset Occurred (bit 4).
    nssro, set_nssro, with_nssro: bool @ 4..=4;
    /// PP: Processing Paused (bit 5).
    pp, set_pp, with_pp: bool @ 5..=5;
});

impl Csts {
    /// The shutdown status field.
    pub fn shutdown_status(&self) -> ShutdownStatus {
        ShutdownStatus::from_bits(self.shst_raw())
    }
    /// Sets the shutdown status field.
    pub fn set_shutdown_status(&mut self, shst: ShutdownStatus) {
        self.set_shst_raw(shst.bits());
    }
    /// Returns a copy with the shutdown status field set.
    #[must_use]
    pub fn with_shutdown_status(mut self, shst: ShutdownStatus) -> Self {
        self.set_shutdown_status(shst);
        self
    }
    /// True when the register read all-ones: the device is gone.
    pub fn is_all_ones(&self) -> bool {
        is_all_ones32(self.0)
    }
}

impl std::fmt::Debug for Csts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Csts")
            .field("raw", &format_args!("{:#010x}", self.0))
            .field("rdy", &self.rdy())
            .field("cfs", &self.cfs())
            .field("shst", &self.shutdown_status())
            .finish()
    }
}

/// CSTS.SHST: Shutdown Status (§3.1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStatus {
    /// 00b: normal operation, no shutdown requested.
    Normal,
    /// 01b: shutdown processing occurring.
    Occurring,
    /// 10b: shutdown processing complete.
    Complete,
    /// 11b: reserved.
    Reserved,
}

impl ShutdownStatus {
    /// Decodes the 2-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x3 {
            0b00 => Self::Normal,
            0b01 => Self::Occurring,
            0b10 => Self::Complete,
            _ => Self::Reserved,
        }
    }
    /// Encodes the 2-bit field.
    pub fn bits(self) -> u8 {
        match self {
            Self::Normal => 0b00,
            Self::Occurring => 0b01,
            Self::Complete => 0b10,
            Self::Reserved => 0b11,
        }
    }
}

/// Admin Queue Attributes (AQA, offset 0x24; §3.1.8).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Aqa(pub u32);

bitfields!(Aqa: u32 {
    /// ASQS: Admin Submission Queue Size, 0's based (bits 11:0).
    asqs, set_asqs, with_asqs: u16 @ 0..=11;
    /// ACQS: Admin Completion Queue Size, 0's based (bits 27:16).
    acqs, set_acqs, with_acqs: u16 @ 16..=27;
});

impl Aqa {
    /// Builds AQA for admin queues of `sq_entries` and `cq_entries` entries
    /// (1's based; stored 0's based). Values are clamped to the field width.
    pub fn for_entries(sq_entries: u16, cq_entries: u16) -> Self {
        Aqa(0)
            .with_asqs(sq_entries.saturating_sub(1))
            .with_acqs(cq_entries.saturating_sub(1))
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
        let cap = Cap(0)
            .with_mqes(2047)
            .with_cqr(true)
            .with_to(15)
            .with_css(Cap::CSS_NVM)
            .with_mpsmax(4);
        assert_eq!(cap.0, 0x0040_0020_0F01_07FF);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert_eq!(cap.timeout(), Duration::from_millis(7500));
        assert_eq!(cap.doorbell_stride(), 4);
        assert_eq!(cap.min_page_size(), 4096);
        assert_eq!(cap.max_page_size(), 65536);
        assert_eq!(Cap(u64::MAX).dstrd(), 0xF);
    }

    #[test]
    fn cc_fields_round_trip() {
        let cc = Cc(0)
            .with_en(true)
            .with_command_set(CommandSetSelect::Nvm)
            .with_mps(0)
            .with_iosqes(6)
            .with_iocqes(4)
            .with_shutdown(ShutdownNotification::Normal);
        assert_eq!(cc.0, 0x0046_4001);
        assert!(cc.en());
        assert_eq!(cc.shutdown(), ShutdownNotification::Normal);
        let cc = cc.with_shutdown(ShutdownNotification::Abrupt);
        assert_eq!(cc.shn_raw(), 0b10);
        assert_eq!(cc.iosqes(), 6);
        assert_eq!(Cc(0x70).command_set(), CommandSetSelect::AdminOnly);
        assert_eq!(Cc(0x10).command_set(), CommandSetSelect::Reserved(1));
    }

    #[test]
    fn setters_mask_and_preserve_other_bits() {
        let mut cc = Cc(0xFF00_0000);
        cc.set_iosqes(0xFF);
        assert_eq!(cc.iosqes(), 0xF);
        assert_eq!(cc.0 & 0xFF00_0000, 0xFF00_0000);
        assert_eq!(cc.iocqes(), 0);
    }

    #[test]
    fn csts_shutdown_status() {
        let c = Csts(0)
            .with_rdy(true)
            .with_shutdown_status(ShutdownStatus::Complete);
        assert_eq!(c.0, 0b1001);
        assert_eq!(Csts(0b0100).shutdown_status(), ShutdownStatus::Occurring);
        assert_eq!(Csts(0b1100).shutdown_status(), ShutdownStatus::Reserved);
        assert!(Csts(0b10).cfs());
        assert!(Csts(u32::MAX).is_all_ones());
    }

    #[test]
    fn aqa_is_zeros_based() {
        let a = Aqa::for_entries(32, 32);
        assert_eq!(a.0, 0x001F_001F);
        assert_eq!(a.asqs(), 31);
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
        assert_eq!(v.0, 0x0001_0400);
        assert_eq!(v.to_string(), "1.4.0");
    }
}
