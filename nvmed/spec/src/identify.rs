//! Identify data structures (NVMe Base Specification 1.4, §5.15).
//!
//! Each structure is the whole 4096-byte page the controller writes, laid
//! out field by field; the byte ranges in the doc comments are the
//! specification's, and `const` assertions check the layout against them.

use std::mem::offset_of;

use bitfield_struct::bitfield;
use open_enum::open_enum;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::{read_prefix, SpecError};

/// Size of every Identify data structure in bytes (§5.15).
pub const IDENTIFY_SIZE: usize = 4096;

/// Number of LBA Format descriptors in NVMe 1.4 (LBAF0..LBAF15).
pub const LBAF_COUNT: usize = 16;

/// Namespace IDs in an Active Namespace ID list.
pub const NAMESPACE_LIST_LEN: usize = IDENTIFY_SIZE / size_of::<u32>();

const _: () = {
    assert!(size_of::<IdentifyController>() == IDENTIFY_SIZE);
    assert!(size_of::<IdentifyNamespace>() == IDENTIFY_SIZE);
    assert!(size_of::<NamespaceList>() == IDENTIFY_SIZE);
    // Every value of FLBAS's format index names one of the LBAF descriptors.
    assert!(1 << Flbas::FORMAT_BITS == LBAF_COUNT);
    // Identify Controller (§5.15.2): the byte offsets the specification gives.
    assert!(offset_of!(IdentifyController, ssvid) == 2);
    assert!(offset_of!(IdentifyController, sn) == 4);
    assert!(offset_of!(IdentifyController, mn) == 24);
    assert!(offset_of!(IdentifyController, fr) == 64);
    assert!(offset_of!(IdentifyController, mdts) == 77);
    assert!(offset_of!(IdentifyController, cntlid) == 78);
    assert!(offset_of!(IdentifyController, ver) == 80);
    assert!(offset_of!(IdentifyController, rtd3r) == 84);
    assert!(offset_of!(IdentifyController, rtd3e) == 88);
    assert!(offset_of!(IdentifyController, cntrltype) == 111);
    assert!(offset_of!(IdentifyController, fguid) == 112);
    assert!(offset_of!(IdentifyController, oacs) == 256);
    assert!(offset_of!(IdentifyController, aerl) == 259);
    assert!(offset_of!(IdentifyController, tnvmcap) == 280);
    assert!(offset_of!(IdentifyController, pels) == 352);
    assert!(offset_of!(IdentifyController, sqes) == 512);
    assert!(offset_of!(IdentifyController, cqes) == 513);
    assert!(offset_of!(IdentifyController, maxcmd) == 514);
    assert!(offset_of!(IdentifyController, nn) == 516);
    assert!(offset_of!(IdentifyController, oncs) == 520);
    assert!(offset_of!(IdentifyController, vwc) == 525);
    assert!(offset_of!(IdentifyController, sgls) == 536);
    assert!(offset_of!(IdentifyController, subnqn) == 768);
    assert!(offset_of!(IdentifyController, psd) == 2048);
    assert!(offset_of!(IdentifyController, vs) == 3072);
    // Identify Namespace (§5.15.3).
    assert!(offset_of!(IdentifyNamespace, ncap) == 8);
    assert!(offset_of!(IdentifyNamespace, nuse) == 16);
    assert!(offset_of!(IdentifyNamespace, nsfeat) == 24);
    assert!(offset_of!(IdentifyNamespace, nlbaf) == 25);
    assert!(offset_of!(IdentifyNamespace, flbas) == 26);
    assert!(offset_of!(IdentifyNamespace, nvmcap) == 48);
    assert!(offset_of!(IdentifyNamespace, anagrpid) == 92);
    assert!(offset_of!(IdentifyNamespace, nguid) == 104);
    assert!(offset_of!(IdentifyNamespace, eui64) == 120);
    assert!(offset_of!(IdentifyNamespace, lbaf) == 128);
    assert!(offset_of!(IdentifyNamespace, vs) == 384);
};

/// Controller or Namespace Structure (CNS) values (§5.15.1).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum Cns {
    /// 00h: Identify Namespace data structure for NSID.
    Namespace = 0x00,
    /// 01h: Identify Controller data structure.
    Controller = 0x01,
    /// 02h: Active Namespace ID list (IDs greater than NSID, ascending).
    ActiveNamespaceList = 0x02,
    /// 03h: Namespace Identification Descriptor list.
    NamespaceDescriptorList = 0x03,
}

impl Cns {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

/// A fixed-length ASCII text field, padded with spaces (§1.5 "ASCII string"
/// conventions; SN, MN and FR of Identify Controller).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct AsciiString<const N: usize>(pub [u8; N]);

impl<const N: usize> AsciiString<N> {
    /// `text` padded with spaces; [`SpecError::InvalidText`] when it is longer
    /// than `N` bytes or holds anything but printable ASCII and spaces.
    pub fn new(what: &'static str, text: &str) -> Result<Self, SpecError> {
        if text.len() > N {
            return Err(SpecError::InvalidText {
                what,
                reason: format!("{} bytes do not fit in {N}", text.len()),
            });
        }
        if let Some(c) = text.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
            return Err(SpecError::InvalidText {
                what,
                reason: format!("{c:?} is not printable ASCII"),
            });
        }
        let mut field = [b' '; N];
        for (dst, src) in field.iter_mut().zip(text.bytes()) {
            *dst = src;
        }
        Ok(Self(field))
    }

    /// The text for display: trailing spaces (and the NUL bytes some devices
    /// pad with) removed, any other byte that is not printable ASCII shown as
    /// `?`.
    pub fn to_text(&self) -> String {
        let text: String = self
            .0
            .iter()
            .map(|&c| match c {
                0 => ' ',
                c if c.is_ascii_graphic() || c == b' ' => char::from(c),
                _ => '?',
            })
            .collect();
        text.trim_end().to_string()
    }
}

impl<const N: usize> Default for AsciiString<N> {
    fn default() -> Self {
        Self([b' '; N])
    }
}

impl<const N: usize> std::fmt::Debug for AsciiString<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_text())
    }
}

/// SQES / CQES: required and maximum queue entry sizes as powers of two
/// (Identify Controller bytes 512 and 513).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct QueueEntrySize {
    /// Required (minimum) entry size, log2 (bits 3:0).
    #[bits(4)]
    pub min: u8,
    /// Maximum entry size, log2 (bits 7:4).
    #[bits(4)]
    pub max: u8,
}

impl QueueEntrySize {
    /// Minimum and maximum both `log2`.
    pub fn exactly(log2: u8) -> Result<Self, SpecError> {
        let field = Self::new()
            .with_min_checked(log2)
            .map_err(|()| SpecError::OutOfRange {
                what: "queue entry size (log2)",
                value: u64::from(log2),
                min: 0,
                max: (1 << Self::MIN_BITS) - 1,
            })?;
        Ok(field.with_max(log2))
    }
}

/// VWC: Volatile Write Cache (Identify Controller byte 525).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct VolatileWriteCache {
    /// A volatile write cache is present (bit 0).
    pub present: bool,
    /// Flush behaviour for NSID FFFFFFFFh (bits 2:1).
    #[bits(2)]
    pub flush_all: u8,
    /// Reserved (bits 7:3).
    #[bits(5)]
    __: u8,
}

/// The Identify Controller data structure (CNS 01h; §5.15.2).
#[repr(C)]
#[derive(Clone, PartialEq, Eq, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IdentifyController {
    /// VID: PCI Vendor ID (bytes 1:0).
    pub vid: u16,
    /// SSVID: PCI Subsystem Vendor ID (bytes 3:2).
    pub ssvid: u16,
    /// SN: Serial Number (bytes 23:4).
    pub sn: AsciiString<20>,
    /// MN: Model Number (bytes 63:24).
    pub mn: AsciiString<40>,
    /// FR: Firmware Revision (bytes 71:64).
    pub fr: AsciiString<8>,
    /// RAB: Recommended Arbitration Burst (byte 72).
    pub rab: u8,
    /// IEEE: IEEE OUI Identifier (bytes 75:73).
    pub ieee: [u8; 3],
    /// CMIC: Controller Multi-Path I/O and Namespace Sharing Capabilities (byte 76).
    pub cmic: u8,
    /// MDTS: Maximum Data Transfer Size as a power of two in units of the
    /// minimum memory page size (CAP.MPSMIN); 0 = no limit (byte 77).
    pub mdts: u8,
    /// CNTLID: Controller ID (bytes 79:78).
    pub cntlid: u16,
    /// VER: Version, encoded like the VS register (bytes 83:80).
    pub ver: u32,
    /// RTD3R: RTD3 Resume Latency in microseconds, 0 = not reported (bytes 87:84).
    pub rtd3r: u32,
    /// RTD3E: RTD3 Entry Latency in microseconds: expected time from a normal
    /// shutdown notification (CC.SHN=01b) to CSTS.SHST=10b; 0 = not reported
    /// (bytes 91:88).
    pub rtd3e: u32,
    /// OAES: Optional Asynchronous Events Supported (bytes 95:92).
    pub oaes: u32,
    /// CTRATT: Controller Attributes (bytes 99:96).
    pub ctratt: u32,
    /// RRLS: Read Recovery Levels Supported (bytes 101:100).
    pub rrls: u16,
    /// Reserved (bytes 110:102).
    pub reserved_102: [u8; 9],
    /// CNTRLTYPE: Controller Type, 1 = I/O controller (byte 111).
    pub cntrltype: u8,
    /// FGUID: FRU Globally Unique Identifier (bytes 127:112).
    pub fguid: [u8; 16],
    /// CRDT1..CRDT3: Command Retry Delay Times in 100 ms units (bytes 133:128).
    pub crdt: [u16; 3],
    /// Reserved (bytes 239:134).
    pub reserved_134: [u8; 106],
    /// Defined by the NVMe Management Interface specification (bytes 255:240).
    pub nvme_mi: [u8; 16],
    /// OACS: Optional Admin Command Support (bytes 257:256).
    pub oacs: u16,
    /// ACL: Abort Command Limit, 0's based (byte 258).
    pub acl: u8,
    /// AERL: Asynchronous Event Request Limit, 0's based (byte 259).
    pub aerl: u8,
    /// FRMW: Firmware Updates (byte 260).
    pub frmw: u8,
    /// LPA: Log Page Attributes (byte 261).
    pub lpa: u8,
    /// ELPE: Error Log Page Entries, 0's based (byte 262).
    pub elpe: u8,
    /// NPSS: Number of Power States Support, 0's based (byte 263).
    pub npss: u8,
    /// AVSCC: Admin Vendor Specific Command Configuration (byte 264).
    pub avscc: u8,
    /// APSTA: Autonomous Power State Transition Attributes (byte 265).
    pub apsta: u8,
    /// WCTEMP: Warning Composite Temperature Threshold, kelvin (bytes 267:266).
    pub wctemp: u16,
    /// CCTEMP: Critical Composite Temperature Threshold, kelvin (bytes 269:268).
    pub cctemp: u16,
    /// MTFA: Maximum Time for Firmware Activation, 100 ms units (bytes 271:270).
    pub mtfa: u16,
    /// HMPRE: Host Memory Buffer Preferred Size, 4 KiB units (bytes 275:272).
    pub hmpre: u32,
    /// HMMIN: Host Memory Buffer Minimum Size, 4 KiB units (bytes 279:276).
    pub hmmin: u32,
    /// TNVMCAP: Total NVM Capacity in bytes, 128-bit little-endian (bytes 295:280).
    pub tnvmcap: [u8; 16],
    /// UNVMCAP: Unallocated NVM Capacity in bytes, 128-bit (bytes 311:296).
    pub unvmcap: [u8; 16],
    /// RPMBS: Replay Protected Memory Block Support (bytes 315:312).
    pub rpmbs: u32,
    /// EDSTT: Extended Device Self-test Time, minutes (bytes 317:316).
    pub edstt: u16,
    /// DSTO: Device Self-test Options (byte 318).
    pub dsto: u8,
    /// FWUG: Firmware Update Granularity, 4 KiB units (byte 319).
    pub fwug: u8,
    /// KAS: Keep Alive Support, 100 ms units (bytes 321:320).
    pub kas: u16,
    /// HCTMA: Host Controlled Thermal Management Attributes (bytes 323:322).
    pub hctma: u16,
    /// MNTMT: Minimum Thermal Management Temperature, kelvin (bytes 325:324).
    pub mntmt: u16,
    /// MXTMT: Maximum Thermal Management Temperature, kelvin (bytes 327:326).
    pub mxtmt: u16,
    /// SANICAP: Sanitize Capabilities (bytes 331:328).
    pub sanicap: u32,
    /// HMMINDS: Host Memory Buffer Minimum Descriptor Entry Size (bytes 335:332).
    pub hmminds: u32,
    /// HMMAXD: Host Memory Maximum Descriptors Entries (bytes 337:336).
    pub hmmaxd: u16,
    /// NSETIDMAX: NVM Set Identifier Maximum (bytes 339:338).
    pub nsetidmax: u16,
    /// ENDGIDMAX: Endurance Group Identifier Maximum (bytes 341:340).
    pub endgidmax: u16,
    /// ANATT: ANA Transition Time, seconds (byte 342).
    pub anatt: u8,
    /// ANACAP: Asymmetric Namespace Access Capabilities (byte 343).
    pub anacap: u8,
    /// ANAGRPMAX: ANA Group Identifier Maximum (bytes 347:344).
    pub anagrpmax: u32,
    /// NANAGRPID: Number of ANA Group Identifiers (bytes 351:348).
    pub nanagrpid: u32,
    /// PELS: Persistent Event Log Size, 64 KiB units (bytes 355:352).
    pub pels: u32,
    /// Reserved (bytes 511:356).
    pub reserved_356: [u8; 156],
    /// SQES: Submission Queue Entry Size (byte 512).
    pub sqes: QueueEntrySize,
    /// CQES: Completion Queue Entry Size (byte 513).
    pub cqes: QueueEntrySize,
    /// MAXCMD: Maximum Outstanding Commands, 0 = not reported (bytes 515:514).
    pub maxcmd: u16,
    /// NN: Number of Namespaces, the largest valid namespace ID (bytes 519:516).
    pub nn: u32,
    /// ONCS: Optional NVM Command Support (bytes 521:520).
    pub oncs: u16,
    /// FUSES: Fused Operation Support (bytes 523:522).
    pub fuses: u16,
    /// FNA: Format NVM Attributes (byte 524).
    pub fna: u8,
    /// VWC: Volatile Write Cache (byte 525).
    pub vwc: VolatileWriteCache,
    /// AWUN: Atomic Write Unit Normal, 0's based blocks (bytes 527:526).
    pub awun: u16,
    /// AWUPF: Atomic Write Unit Power Fail, 0's based blocks (bytes 529:528).
    pub awupf: u16,
    /// NVSCC: NVM Vendor Specific Command Configuration (byte 530).
    pub nvscc: u8,
    /// NWPC: Namespace Write Protection Capabilities (byte 531).
    pub nwpc: u8,
    /// ACWU: Atomic Compare & Write Unit, 0's based blocks (bytes 533:532).
    pub acwu: u16,
    /// Reserved (bytes 535:534).
    pub reserved_534: [u8; 2],
    /// SGLS: SGL Support (bytes 539:536).
    pub sgls: u32,
    /// MNAN: Maximum Number of Allowed Namespaces (bytes 543:540).
    pub mnan: u32,
    /// Reserved (bytes 767:544).
    pub reserved_544: [u8; 224],
    /// SUBNQN: NVM Subsystem NVMe Qualified Name, UTF-8, NUL terminated
    /// (bytes 1023:768).
    pub subnqn: [u8; 256],
    /// Reserved (bytes 1791:1024).
    pub reserved_1024: [u8; 768],
    /// Defined by the NVMe over Fabrics specification (bytes 2047:1792).
    pub fabrics: [u8; 256],
    /// PSD0..PSD31: Power State Descriptors, 32 bytes each (bytes 3071:2048).
    pub psd: [[u8; 32]; 32],
    /// Vendor Specific (bytes 4095:3072).
    pub vs: [u8; 1024],
}

impl Default for IdentifyController {
    /// All fields zero (SN, MN and FR included).
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl IdentifyController {
    /// Decodes the first 4096 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        read_prefix("identify controller data", bytes)
    }
    /// The 4096-byte wire layout.
    pub fn to_bytes(&self) -> [u8; IDENTIFY_SIZE] {
        zerocopy::transmute!(self.clone())
    }
    /// Serial number as text (see [`AsciiString::to_text`]).
    pub fn serial(&self) -> String {
        self.sn.to_text()
    }
    /// Model number as text.
    pub fn model(&self) -> String {
        self.mn.to_text()
    }
    /// Firmware revision as text.
    pub fn firmware(&self) -> String {
        self.fr.to_text()
    }
    /// True when VWC bit 0 reports a volatile write cache.
    pub fn volatile_write_cache(&self) -> bool {
        self.vwc.present()
    }
    /// Maximum data transfer size in bytes for a controller whose minimum page
    /// size is `min_page_size`; `None` means no limit (MDTS = 0). A limit too
    /// large for 64 bits is `u64::MAX`.
    pub fn max_transfer_bytes(&self, min_page_size: u64) -> Option<u64> {
        if self.mdts == 0 {
            None
        } else {
            Some(
                1u64.checked_shl(u32::from(self.mdts))
                    .map_or(u64::MAX, |units| min_page_size.saturating_mul(units)),
            )
        }
    }
}

/// LBAF: an LBA Format descriptor (Identify Namespace bytes 128 + 4n; §5.15.3).
#[bitfield(u32)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct LbaFormat {
    /// MS: metadata bytes per LBA (bits 15:0).
    pub ms: u16,
    /// LBADS: LBA data size as a power of two, 9 = 512 bytes; 0 = format
    /// not available (bits 23:16).
    pub lbads: u8,
    /// RP: relative performance, 0 = best (bits 25:24).
    #[bits(2)]
    pub rp: u8,
    /// Reserved (bits 31:26).
    #[bits(6)]
    __: u8,
}

impl LbaFormat {
    /// Logical block size in bytes, `None` when LBADS is outside 9..=31
    /// (the specification requires at least 512 bytes).
    pub fn block_size(&self) -> Option<u32> {
        (9..32)
            .contains(&self.lbads())
            .then(|| 1u32 << self.lbads())
    }
}

/// FLBAS: Formatted LBA Size (Identify Namespace byte 26).
#[bitfield(u8)]
#[derive(PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Flbas {
    /// Index of the LBA format in use, LBAF0..LBAF15 (bits 3:0).
    #[bits(4)]
    pub format: u8,
    /// Metadata travels at the end of each block (extended LBA) rather than
    /// in a separate buffer (bit 4).
    pub extended: bool,
    /// Reserved (bits 7:5).
    #[bits(3)]
    __: u8,
}

/// The Identify Namespace data structure (CNS 00h; §5.15.3).
#[repr(C)]
#[derive(Clone, PartialEq, Eq, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct IdentifyNamespace {
    /// NSZE: Namespace Size in logical blocks (bytes 7:0).
    pub nsze: u64,
    /// NCAP: Namespace Capacity in logical blocks (bytes 15:8).
    pub ncap: u64,
    /// NUSE: Namespace Utilization in logical blocks (bytes 23:16).
    pub nuse: u64,
    /// NSFEAT: Namespace Features (byte 24).
    pub nsfeat: u8,
    /// NLBAF: Number of LBA Formats, 0's based (byte 25).
    pub nlbaf: u8,
    /// FLBAS: Formatted LBA Size (byte 26).
    pub flbas: Flbas,
    /// MC: Metadata Capabilities (byte 27).
    pub mc: u8,
    /// DPC: End-to-end Data Protection Capabilities (byte 28).
    pub dpc: u8,
    /// DPS: End-to-end Data Protection Type Settings (byte 29).
    pub dps: u8,
    /// NMIC: Namespace Multi-path I/O and Namespace Sharing Capabilities (byte 30).
    pub nmic: u8,
    /// RESCAP: Reservation Capabilities (byte 31).
    pub rescap: u8,
    /// FPI: Format Progress Indicator (byte 32).
    pub fpi: u8,
    /// DLFEAT: Deallocate Logical Block Features (byte 33).
    pub dlfeat: u8,
    /// NAWUN: Namespace Atomic Write Unit Normal (bytes 35:34).
    pub nawun: u16,
    /// NAWUPF: Namespace Atomic Write Unit Power Fail (bytes 37:36).
    pub nawupf: u16,
    /// NACWU: Namespace Atomic Compare & Write Unit (bytes 39:38).
    pub nacwu: u16,
    /// NABSN: Namespace Atomic Boundary Size Normal (bytes 41:40).
    pub nabsn: u16,
    /// NABO: Namespace Atomic Boundary Offset (bytes 43:42).
    pub nabo: u16,
    /// NABSPF: Namespace Atomic Boundary Size Power Fail (bytes 45:44).
    pub nabspf: u16,
    /// NOIOB: Namespace Optimal I/O Boundary (bytes 47:46).
    pub noiob: u16,
    /// NVMCAP: NVM Capacity in bytes, 128-bit little-endian (bytes 63:48).
    pub nvmcap: [u8; 16],
    /// NPWG: Namespace Preferred Write Granularity (bytes 65:64).
    pub npwg: u16,
    /// NPWA: Namespace Preferred Write Alignment (bytes 67:66).
    pub npwa: u16,
    /// NPDG: Namespace Preferred Deallocate Granularity (bytes 69:68).
    pub npdg: u16,
    /// NPDA: Namespace Preferred Deallocate Alignment (bytes 71:70).
    pub npda: u16,
    /// NOWS: Namespace Optimal Write Size (bytes 73:72).
    pub nows: u16,
    /// Reserved (bytes 91:74).
    pub reserved_74: [u8; 18],
    /// ANAGRPID: ANA Group Identifier (bytes 95:92).
    pub anagrpid: u32,
    /// Reserved (bytes 98:96).
    pub reserved_96: [u8; 3],
    /// NSATTR: Namespace Attributes (byte 99).
    pub nsattr: u8,
    /// NVMSETID: NVM Set Identifier (bytes 101:100).
    pub nvmsetid: u16,
    /// ENDGID: Endurance Group Identifier (bytes 103:102).
    pub endgid: u16,
    /// NGUID: Namespace Globally Unique Identifier (bytes 119:104).
    pub nguid: [u8; 16],
    /// EUI64: IEEE Extended Unique Identifier (bytes 127:120).
    pub eui64: [u8; 8],
    /// LBAF0..LBAF15: LBA Format descriptors (bytes 191:128).
    pub lbaf: [LbaFormat; LBAF_COUNT],
    /// Reserved (bytes 383:192).
    pub reserved_192: [u8; 192],
    /// Vendor Specific (bytes 4095:384).
    pub vs: [u8; 3712],
}

impl Default for IdentifyNamespace {
    /// All fields zero: what a controller returns for an inactive namespace.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl IdentifyNamespace {
    /// Decodes the first 4096 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        read_prefix("identify namespace data", bytes)
    }
    /// The 4096-byte wire layout.
    pub fn to_bytes(&self) -> [u8; IDENTIFY_SIZE] {
        zerocopy::transmute!(self.clone())
    }
    /// The LBA format in use (FLBAS bits 3:0 index one of the 16
    /// descriptors). The descriptor may describe no usable format; see
    /// [`LbaFormat::block_size`].
    pub fn current_format(&self) -> LbaFormat {
        // In range: FLBAS's 4-bit index has exactly LBAF_COUNT values.
        self.lbaf[usize::from(self.flbas.format())]
    }
    /// Logical block size in bytes of the format in use, if valid.
    pub fn block_size(&self) -> Option<u32> {
        self.current_format().block_size()
    }
    /// True when the namespace is inactive (the spec returns all zeros for an
    /// inactive NSID).
    pub fn is_inactive(&self) -> bool {
        self.nsze == 0
    }
}

/// An Active Namespace ID list (CNS 02h; §5.15.4): up to 1024 namespace
/// IDs in increasing order, the unused entries zero.
#[repr(C)]
#[derive(Clone, PartialEq, Eq, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct NamespaceList {
    /// The entries, as the controller wrote them.
    pub ids: [u32; NAMESPACE_LIST_LEN],
}

impl Default for NamespaceList {
    /// An empty list.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl NamespaceList {
    /// A list holding `ids` (at most 1024, none zero, in the order given).
    pub fn from_ids(ids: &[u32]) -> Result<Self, SpecError> {
        if ids.len() > NAMESPACE_LIST_LEN {
            return Err(SpecError::OutOfRange {
                what: "namespace IDs in one list",
                value: ids.len() as u64,
                min: 0,
                max: NAMESPACE_LIST_LEN as u64,
            });
        }
        if ids.contains(&0) {
            return Err(SpecError::OutOfRange {
                what: "namespace ID",
                value: 0,
                min: 1,
                max: u64::from(u32::MAX),
            });
        }
        let mut list = Self::default();
        for (dst, id) in list.ids.iter_mut().zip(ids) {
            *dst = *id;
        }
        Ok(list)
    }
    /// Decodes the first 4096 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SpecError> {
        read_prefix("active namespace ID list", bytes)
    }
    /// The 4096-byte wire layout.
    pub fn to_bytes(&self) -> [u8; IDENTIFY_SIZE] {
        zerocopy::transmute!(self.clone())
    }
    /// The namespace IDs before the first zero entry.
    pub fn active(&self) -> Vec<u32> {
        self.ids.iter().copied().take_while(|&id| id != 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> IdentifyController {
        let mut id = IdentifyController {
            vid: 0x1b36,
            ssvid: 0x1af4,
            sn: AsciiString::new("SN", "SIM0001").unwrap(),
            mn: AsciiString::new("MN", "nvme_sim controller").unwrap(),
            fr: AsciiString::new("FR", "1.0").unwrap(),
            mdts: 5,
            ver: 0x0001_0400,
            rtd3e: 4_500_000,
            sqes: QueueEntrySize::exactly(6).unwrap(),
            cqes: QueueEntrySize::exactly(4).unwrap(),
            nn: 1,
            vwc: VolatileWriteCache::new().with_present(true),
            ..Default::default()
        };
        id.cntrltype = 1;
        id
    }

    #[test]
    fn controller_round_trip_and_offsets() {
        let id = controller();
        let b = id.to_bytes();
        assert_eq!(&b[88..92], &4_500_000u32.to_le_bytes());
        assert_eq!(b[525], 1);
        assert_eq!(b[77], 5);
        assert_eq!(b[111], 1);
        assert_eq!((b[512], b[513]), (0x66, 0x44));
        assert_eq!(&b[4..11], b"SIM0001");
        assert_eq!(b[11], b' ');
        let back = IdentifyController::from_bytes(&b).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.serial(), "SIM0001");
        assert_eq!(back.model(), "nvme_sim controller");
        assert!(back.volatile_write_cache());
        assert_eq!(back.max_transfer_bytes(4096), Some(128 * 1024));
        assert_eq!(back.sqes.min(), 6);
        assert!(matches!(
            IdentifyController::from_bytes(&b[..4095]),
            Err(SpecError::TooShort {
                expected: 4096,
                actual: 4095,
                ..
            })
        ));
    }

    #[test]
    fn text_fields() {
        assert!(matches!(
            AsciiString::<8>::new("FR", "123456789"),
            Err(SpecError::InvalidText { what: "FR", .. })
        ));
        assert!(AsciiString::<8>::new("FR", "ü").is_err());
        assert!(AsciiString::<8>::new("FR", "a\tb").is_err());
        assert_eq!(AsciiString::<8>::new("FR", "").unwrap().0, [b' '; 8]);
        assert_eq!(AsciiString::<8>::default().to_text(), "");
        let mut b = vec![0u8; IDENTIFY_SIZE];
        b[4] = 0xFF;
        b[5] = b'A';
        let id = IdentifyController::from_bytes(&b).unwrap();
        assert_eq!(id.serial(), "?A");
        let id = IdentifyController::from_bytes(&vec![0xFF; IDENTIFY_SIZE]).unwrap();
        assert_eq!(id.max_transfer_bytes(4096), Some(u64::MAX));
        assert_eq!(id.serial(), "?".repeat(20));
    }

    #[test]
    fn queue_entry_size_is_checked() {
        assert_eq!(QueueEntrySize::exactly(15).unwrap().into_bits(), 0xFF);
        assert!(QueueEntrySize::exactly(16).is_err());
    }

    #[test]
    fn namespace_round_trip() {
        let mut ns = IdentifyNamespace {
            nsze: 2048,
            ncap: 2048,
            nuse: 2048,
            nlbaf: 1,
            flbas: Flbas::new().with_format(1),
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat::new().with_lbads(9);
        ns.lbaf[1] = LbaFormat::new().with_lbads(12).with_rp(1);
        ns.nguid = [7; 16];
        let b = ns.to_bytes();
        assert_eq!(b[26], 1);
        assert_eq!(&b[132..136], &[0, 0, 12, 1]);
        assert_eq!(&b[104..120], &[7; 16]);
        let back = IdentifyNamespace::from_bytes(&b).unwrap();
        assert_eq!(back, ns);
        assert_eq!(back.block_size(), Some(4096));
        ns.flbas = Flbas::new().with_format(0xF).with_extended(true);
        assert_eq!(ns.current_format(), LbaFormat::new());
        assert_eq!(ns.block_size(), None);
        assert_eq!(ns.to_bytes()[26], 0x1F);
        ns.lbaf[15] = LbaFormat::new().with_lbads(32);
        assert_eq!(ns.block_size(), None);
        ns.lbaf[15] = LbaFormat::new().with_lbads(31);
        assert_eq!(ns.block_size(), Some(1 << 31));
        assert!(IdentifyNamespace::default().is_inactive());
        assert!(IdentifyNamespace::from_bytes(&b[..192]).is_err());
    }

    #[test]
    fn namespace_list() {
        let list = NamespaceList::from_ids(&[1, 2, 7]).unwrap();
        let b = list.to_bytes();
        assert_eq!(&b[..12], &[1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(
            NamespaceList::from_bytes(&b).unwrap().active(),
            vec![1, 2, 7]
        );
        assert_eq!(NamespaceList::default().active(), Vec::<u32>::new());
        assert!(NamespaceList::from_bytes(&b[..100]).is_err());
        assert!(NamespaceList::from_ids(&[1, 0]).is_err());
        let full: Vec<u32> = (1..=1024).collect();
        assert_eq!(NamespaceList::from_ids(&full).unwrap().active(), full);
        let too_many: Vec<u32> = (1..=1025).collect();
        assert!(NamespaceList::from_ids(&too_many).is_err());
    }
}
