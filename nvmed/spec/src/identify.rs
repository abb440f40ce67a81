//! Identify data structures (NVMe Base Specification 1.4, §5.15).

use crate::{le16, le32, le64, need, SpecError};

/// Size of every Identify data structure in bytes (§5.15).
pub const IDENTIFY_SIZE: usize = 4096;

/// Controller or Namespace Structure (CNS) values (§5.15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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
    /// Decodes a CNS value; `None` when this crate does not know it.
    pub fn from_u8(cns: u8) -> Option<Self> {
        Some(match cns {
            0x00 => Self::Namespace,
            0x01 => Self::Controller,
            0x02 => Self::ActiveNamespaceList,
            0x03 => Self::NamespaceDescriptorList,
            _ => return None,
        })
    }
}

/// Byte offsets in the Identify Controller data structure (§5.15.2).
pub mod ctrl_offset {
    /// VID: PCI Vendor ID (bytes 1:0).
    pub const VID: usize = 0;
    /// SSVID: PCI Subsystem Vendor ID (bytes 3:2).
    pub const SSVID: usize = 2;
    /// SN: Serial Number, ASCII, 20 bytes (bytes 23:4).
    pub const SN: usize = 4;
    /// MN: Model Number, ASCII, 40 bytes (bytes 63:24).
    pub const MN: usize = 24;
    /// FR: Firmware Revision, ASCII, 8 bytes (bytes 71:64).
    pub const FR: usize = 64;
    /// MDTS: Maximum Data Transfer Size (byte 77).
    pub const MDTS: usize = 77;
    /// CNTLID: Controller ID (bytes 79:78).
    pub const CNTLID: usize = 78;
    /// VER: Version (bytes 83:80).
    pub const VER: usize = 80;
    /// RTD3R: RTD3 Resume Latency in µs (bytes 87:84).
    pub const RTD3R: usize = 84;
    /// RTD3E: RTD3 Entry Latency in µs (bytes 91:88).
    pub const RTD3E: usize = 88;
    /// SQES: Submission Queue Entry Size (byte 512).
    pub const SQES: usize = 512;
    /// CQES: Completion Queue Entry Size (byte 513).
    pub const CQES: usize = 513;
    /// MAXCMD: Maximum Outstanding Commands (bytes 515:514).
    pub const MAXCMD: usize = 514;
    /// NN: Number of Namespaces (bytes 519:516).
    pub const NN: usize = 516;
    /// ONCS: Optional NVM Command Support (bytes 521:520).
    pub const ONCS: usize = 520;
    /// VWC: Volatile Write Cache (byte 525).
    pub const VWC: usize = 525;
}

/// Length of the SN field.
pub const SN_LEN: usize = 20;
/// Length of the MN field.
pub const MN_LEN: usize = 40;
/// Length of the FR field.
pub const FR_LEN: usize = 8;

/// The Identify Controller fields this project uses (§5.15.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyController {
    /// PCI Vendor ID.
    pub vid: u16,
    /// PCI Subsystem Vendor ID.
    pub ssvid: u16,
    /// Serial number (ASCII, trailing spaces trimmed when parsed).
    pub serial: String,
    /// Model number (ASCII, trailing spaces trimmed when parsed).
    pub model: String,
    /// Firmware revision (ASCII, trailing spaces trimmed when parsed).
    pub firmware: String,
    /// MDTS: maximum data transfer size as a power of two in units of the
    /// minimum memory page size (CAP.MPSMIN); 0 = no limit.
    pub mdts: u8,
    /// Controller identifier.
    pub cntlid: u16,
    /// Version the controller reports (same encoding as the VS register).
    pub ver: u32,
    /// RTD3 Resume Latency in microseconds (0 = not reported).
    pub rtd3r: u32,
    /// RTD3 Entry Latency in microseconds: expected time from a normal
    /// shutdown notification (CC.SHN=01b) to CSTS.SHST=10b (0 = not reported).
    pub rtd3e: u32,
    /// SQES: bits 3:0 required (minimum) and 7:4 maximum SQ entry size, log2.
    pub sqes: u8,
    /// CQES: bits 3:0 required (minimum) and 7:4 maximum CQ entry size, log2.
    pub cqes: u8,
    /// Maximum outstanding commands (0 = not reported).
    pub maxcmd: u16,
    /// Number of namespaces: the largest valid namespace ID.
    pub nn: u32,
    /// Optional NVM Command Support bits.
    pub oncs: u16,
    /// VWC: bit 0 set when a volatile write cache is present.
    pub vwc: u8,
}

impl IdentifyController {
    /// True when VWC bit 0 reports a volatile write cache.
    pub fn volatile_write_cache(&self) -> bool {
        self.vwc & 1 != 0
    }
    /// Minimum (required) SQ entry size, log2.
    pub fn sqes_min(&self) -> u8 {
        self.sqes & 0xF
    }
    /// Maximum SQ entry size, log2.
    pub fn sqes_max(&self) -> u8 {
        self.sqes >> 4
    }
    /// Minimum (required) CQ entry size, log2.
    pub fn cqes_min(&self) -> u8 {
        self.cqes & 0xF
    }
    /// Maximum CQ entry size, log2.
    pub fn cqes_max(&self) -> u8 {
        self.cqes >> 4
    }
    /// Maximum data transfer size in bytes for a controller whose minimum page
    /// size is `min_page_size`; `None` means no limit (MDTS = 0).
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

    /// Parses the structure from (at least) its first 526 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, SpecError> {
        need("identify controller data", b, ctrl_offset::VWC + 1)?;
        Ok(Self {
            vid: le16(b, ctrl_offset::VID),
            ssvid: le16(b, ctrl_offset::SSVID),
            serial: ascii_field(&b[ctrl_offset::SN..ctrl_offset::SN + SN_LEN]),
            model: ascii_field(&b[ctrl_offset::MN..ctrl_offset::MN + MN_LEN]),
            firmware: ascii_field(&b[ctrl_offset::FR..ctrl_offset::FR + FR_LEN]),
            mdts: b[ctrl_offset::MDTS],
            cntlid: le16(b, ctrl_offset::CNTLID),
            ver: le32(b, ctrl_offset::VER),
            rtd3r: le32(b, ctrl_offset::RTD3R),
            rtd3e: le32(b, ctrl_offset::RTD3E),
            sqes: b[ctrl_offset::SQES],
            cqes: b[ctrl_offset::CQES],
            maxcmd: le16(b, ctrl_offset::MAXCMD),
            nn: le32(b, ctrl_offset::NN),
            oncs: le16(b, ctrl_offset::ONCS),
            vwc: b[ctrl_offset::VWC],
        })
    }

    /// Serialises into a 4096-byte structure (strings space padded and
    /// truncated to their field lengths; other bytes zero).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        b[0..2].copy_from_slice(&self.vid.to_le_bytes());
        b[2..4].copy_from_slice(&self.ssvid.to_le_bytes());
        put_ascii(
            &mut b[ctrl_offset::SN..ctrl_offset::SN + SN_LEN],
            &self.serial,
        );
        put_ascii(
            &mut b[ctrl_offset::MN..ctrl_offset::MN + MN_LEN],
            &self.model,
        );
        put_ascii(
            &mut b[ctrl_offset::FR..ctrl_offset::FR + FR_LEN],
            &self.firmware,
        );
        b[ctrl_offset::MDTS] = self.mdts;
        b[78..80].copy_from_slice(&self.cntlid.to_le_bytes());
        b[80..84].copy_from_slice(&self.ver.to_le_bytes());
        b[84..88].copy_from_slice(&self.rtd3r.to_le_bytes());
        b[88..92].copy_from_slice(&self.rtd3e.to_le_bytes());
        b[ctrl_offset::SQES] = self.sqes;
        b[ctrl_offset::CQES] = self.cqes;
        b[514..516].copy_from_slice(&self.maxcmd.to_le_bytes());
        b[516..520].copy_from_slice(&self.nn.to_le_bytes());
        b[520..522].copy_from_slice(&self.oncs.to_le_bytes());
        b[ctrl_offset::VWC] = self.vwc;
        b
    }
}

/// An LBA Format descriptor (§5.15.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbaFormat {
    /// MS: metadata bytes per LBA.
    pub ms: u16,
    /// LBADS: LBA data size as a power of two (9 = 512 bytes); 0 = unsupported format.
    pub lbads: u8,
    /// RP: relative performance (0 = best).
    pub rp: u8,
}

impl LbaFormat {
    /// Decodes the 32-bit descriptor.
    pub fn from_u32(v: u32) -> Self {
        Self {
            ms: v as u16,
            lbads: (v >> 16) as u8,
            rp: ((v >> 24) & 0x3) as u8,
        }
    }
    /// Encodes the 32-bit descriptor.
    pub fn to_u32(self) -> u32 {
        u32::from(self.ms) | (u32::from(self.lbads) << 16) | (u32::from(self.rp & 0x3) << 24)
    }
    /// Logical block size in bytes, `None` when LBADS is outside 9..=31
    /// (the spec requires at least 512 bytes).
    pub fn block_size(&self) -> Option<u32> {
        if (9..32).contains(&self.lbads) {
            Some(1u32 << self.lbads)
        } else {
            None
        }
    }
}

/// Byte offsets in the Identify Namespace data structure (§5.15.3).
pub mod ns_offset {
    /// NSZE: Namespace Size in logical blocks (bytes 7:0).
    pub const NSZE: usize = 0;
    /// NCAP: Namespace Capacity in logical blocks (bytes 15:8).
    pub const NCAP: usize = 8;
    /// NUSE: Namespace Utilization (bytes 23:16).
    pub const NUSE: usize = 16;
    /// NSFEAT: Namespace Features (byte 24).
    pub const NSFEAT: usize = 24;
    /// NLBAF: Number of LBA Formats, 0's based (byte 25).
    pub const NLBAF: usize = 25;
    /// FLBAS: Formatted LBA Size (byte 26).
    pub const FLBAS: usize = 26;
    /// LBAF0: first LBA Format descriptor (bytes 131:128); 16 descriptors of 4 bytes.
    pub const LBAF: usize = 128;
}

/// Number of LBA Format descriptors in NVMe 1.4 (LBAF0..LBAF15).
pub const LBAF_COUNT: usize = 16;

/// The Identify Namespace fields this project uses (§5.15.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// NSZE: size in logical blocks.
    pub nsze: u64,
    /// NCAP: capacity in logical blocks.
    pub ncap: u64,
    /// NUSE: utilisation in logical blocks.
    pub nuse: u64,
    /// NSFEAT bits.
    pub nsfeat: u8,
    /// NLBAF: number of LBA formats, 0's based.
    pub nlbaf: u8,
    /// FLBAS: bits 3:0 select the LBA format in use; bit 4 = extended metadata.
    pub flbas: u8,
    /// LBAF0..LBAF15.
    pub lbaf: [LbaFormat; LBAF_COUNT],
}

impl IdentifyNamespace {
    /// Index of the LBA format in use (FLBAS bits 3:0).
    pub fn format_index(&self) -> usize {
        usize::from(self.flbas & 0xF)
    }
    /// The LBA format in use.
    pub fn current_format(&self) -> LbaFormat {
        self.lbaf
            .get(self.format_index())
            .copied()
            .unwrap_or_default()
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

    /// Parses the structure from (at least) its first 192 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, SpecError> {
        need(
            "identify namespace data",
            b,
            ns_offset::LBAF + 4 * LBAF_COUNT,
        )?;
        let mut lbaf = [LbaFormat::default(); LBAF_COUNT];
        for (i, f) in lbaf.iter_mut().enumerate() {
            *f = LbaFormat::from_u32(le32(b, ns_offset::LBAF + 4 * i));
        }
        Ok(Self {
            nsze: le64(b, ns_offset::NSZE),
            ncap: le64(b, ns_offset::NCAP),
            nuse: le64(b, ns_offset::NUSE),
            nsfeat: b[ns_offset::NSFEAT],
            nlbaf: b[ns_offset::NLBAF],
            flbas: b[ns_offset::FLBAS],
            lbaf,
        })
    }

    /// Serialises into a 4096-byte structure.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        b[0..8].copy_from_slice(&self.nsze.to_le_bytes());
        b[8..16].copy_from_slice(&self.ncap.to_le_bytes());
        b[16..24].copy_from_slice(&self.nuse.to_le_bytes());
        b[ns_offset::NSFEAT] = self.nsfeat;
        b[ns_offset::NLBAF] = self.nlbaf;
        b[ns_offset::FLBAS] = self.flbas;
        for (i, f) in self.lbaf.iter().enumerate() {
            let at = ns_offset::LBAF + 4 * i;
            b[at..at + 4].copy_from_slice(&f.to_u32().to_le_bytes());
        }
        b
    }
}

/// Parses an Active Namespace ID list (CNS 02h, §5.15.4): up to 1024 ascending
/// 32-bit IDs, terminated by the first zero.
pub fn parse_namespace_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .take(IDENTIFY_SIZE / 4)
        .map(|c| le32(c, 0))
        .take_while(|&id| id != 0)
        .collect()
}

/// Serialises an Active Namespace ID list into 4096 bytes (extra IDs dropped).
pub fn namespace_list_bytes(ids: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_SIZE];
    for (i, id) in ids.iter().take(IDENTIFY_SIZE / 4).enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
    }
    b
}

/// Decodes a space-padded ASCII field: trailing spaces and NULs removed,
/// non-printable bytes replaced by `?`.
fn ascii_field(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else if c == 0 {
                ' '
            } else {
                '?'
            }
        })
        .collect();
    s.trim_end().to_string()
}

/// Writes `s` into a space-padded ASCII field (non-ASCII characters become `?`).
fn put_ascii(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, c) in dst.iter_mut().zip(s.chars()) {
        *d = if c.is_ascii() { c as u8 } else { b'?' };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_round_trip_and_offsets() {
        let id = IdentifyController {
            vid: 0x1b36,
            ssvid: 0x1af4,
            serial: "SIM0001".into(),
            model: "nvme_sim controller".into(),
            firmware: "1.0".into(),
            mdts: 5,
            cntlid: 0,
            ver: 0x0001_0400,
            rtd3r: 0,
            rtd3e: 4_500_000,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 0,
            nn: 1,
            oncs: 0,
            vwc: 1,
        };
        let b = id.to_bytes();
        assert_eq!(b.len(), IDENTIFY_SIZE);
        assert_eq!(&b[88..92], &4_500_000u32.to_le_bytes());
        assert_eq!(b[525], 1);
        assert_eq!(b[77], 5);
        assert_eq!(&b[4..11], b"SIM0001");
        assert_eq!(b[11], b' ');
        let back = IdentifyController::parse(&b).unwrap();
        assert_eq!(back, id);
        assert!(back.volatile_write_cache());
        assert_eq!(back.max_transfer_bytes(4096), Some(128 * 1024));
        assert_eq!(back.sqes_min(), 6);
        assert!(IdentifyController::parse(&b[..500]).is_err());
    }

    #[test]
    fn odd_strings_do_not_panic() {
        let mut b = vec![0u8; IDENTIFY_SIZE];
        b[4] = 0xFF;
        b[5] = b'A';
        let id = IdentifyController::parse(&b).unwrap();
        assert_eq!(id.serial, "?A");
        let id = IdentifyController::parse(&vec![0xFF; IDENTIFY_SIZE]).unwrap();
        assert_eq!(id.max_transfer_bytes(4096), Some(u64::MAX));
    }

    #[test]
    fn namespace_round_trip() {
        let mut ns = IdentifyNamespace {
            nsze: 2048,
            ncap: 2048,
            nuse: 2048,
            nlbaf: 1,
            flbas: 1,
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat {
            ms: 0,
            lbads: 9,
            rp: 0,
        };
        ns.lbaf[1] = LbaFormat {
            ms: 0,
            lbads: 12,
            rp: 1,
        };
        let b = ns.to_bytes();
        assert_eq!(b[26], 1);
        assert_eq!(&b[132..136], &[0, 0, 12, 1]);
        let back = IdentifyNamespace::parse(&b).unwrap();
        assert_eq!(back, ns);
        assert_eq!(back.block_size(), Some(4096));
        ns.flbas = 0xF;
        assert_eq!(ns.block_size(), None);
        assert!(IdentifyNamespace::default().is_inactive());
    }

    #[test]
    fn namespace_list() {
        let b = namespace_list_bytes(&[1, 2, 7]);
        assert_eq!(parse_namespace_list(&b), vec![1, 2, 7]);
        assert_eq!(parse_namespace_list(&[1, 0, 0]), Vec::<u32>::new());
        assert_eq!(parse_namespace_list(&[]), Vec::<u32>::new());
    }
}
