//! PCI configuration space on Redox: ECAM regions from the ACPI MCFG table,
//! else configuration mechanism #1 through I/O ports.
//!
//! This mirrors how Redox's own pcid reaches configuration space: acpid
//! exposes the firmware's tables under `/scheme/acpi/tables/`, one file per
//! table whose name starts with the signature. The MCFG table (PCI Firmware
//! Specification 3.0, §4.1.2) is the 36-byte ACPI header, 8 reserved bytes,
//! then 16-byte allocation entries: base address (u64), PCI segment group
//! (u16), start bus (u8), end bus (u8), 4 reserved bytes. A function's
//! registers sit at `base + (bus << 20 | device << 15 | function << 12)`
//! (PCI Express Base Specification, §7.2.2), `base` being the address of bus 0
//! of the segment even when the entry starts at a later bus.

use std::path::{Path, PathBuf};

use pcid_hw::redox::{LegacyConfigPorts, MemoryType, PhysMap};
use pcid_hw::{HwError, RegisterIo};
use pcid_interface::function::PciAddress;

/// Directory where acpid serves the ACPI tables.
pub const ACPI_TABLES_DIR: &str = "/scheme/acpi/tables";

/// Length of the MCFG header (ACPI SDT header + 8 reserved bytes).
const MCFG_HEADER_LEN: usize = 44;
/// Length of one MCFG allocation entry.
const MCFG_ENTRY_LEN: usize = 16;
/// Bytes of configuration space per bus in ECAM.
const ECAM_BUS_SIZE: u64 = 1 << 20;

/// One MCFG allocation entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McfgEntry {
    /// ECAM base address of bus 0 of the segment.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// First bus decoded by this entry.
    pub start_bus: u8,
    /// Last bus decoded by this entry.
    pub end_bus: u8,
}

/// Why an MCFG table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The table or its directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No file in the ACPI tables directory starts with `MCFG`.
    #[error("no MCFG table in {0}")]
    NoMcfg(PathBuf),
    /// The table is malformed.
    #[error("{path}: malformed MCFG table: {reason}")]
    Malformed {
        /// The table file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Hardware access failed.
    #[error(transparent)]
    Hw(#[from] HwError),
}

/// Parses an MCFG table (the whole table, header included).
pub fn parse_mcfg(path: &Path, bytes: &[u8]) -> Result<Vec<McfgEntry>, ConfigError> {
    let malformed = |reason: String| ConfigError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < MCFG_HEADER_LEN {
        return Err(malformed(format!(
            "{} bytes, shorter than the {MCFG_HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if &bytes[0..4] != b"MCFG" {
        return Err(malformed(format!("signature {:?}", &bytes[0..4])));
    }
    let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if length != bytes.len() {
        return Err(malformed(format!(
            "header says {length} bytes, file has {}",
            bytes.len()
        )));
    }
    let entries = &bytes[MCFG_HEADER_LEN..];
    if entries.len() % MCFG_ENTRY_LEN != 0 {
        return Err(malformed(format!(
            "{} bytes of allocation entries, not a multiple of {MCFG_ENTRY_LEN}",
            entries.len()
        )));
    }
    let mut out = Vec::new();
    for chunk in entries.chunks_exact(MCFG_ENTRY_LEN) {
        let mut base = [0u8; 8];
        base.copy_from_slice(&chunk[0..8]);
        let entry = McfgEntry {
            base: u64::from_le_bytes(base),
            segment: u16::from_le_bytes([chunk[8], chunk[9]]),
            start_bus: chunk[10],
            end_bus: chunk[11],
        };
        if entry.end_bus < entry.start_bus {
            return Err(malformed(format!(
                "entry for segment {} has end bus {} before start bus {}",
                entry.segment, entry.end_bus, entry.start_bus
            )));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Finds and parses the MCFG table served by acpid in `dir`.
pub fn read_mcfg(dir: &Path) -> Result<Vec<McfgEntry>, ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_name().as_encoded_bytes().starts_with(b"MCFG") {
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            return parse_mcfg(&path, &bytes);
        }
    }
    Err(ConfigError::NoMcfg(dir.to_path_buf()))
}

/// One mapped ECAM region.
#[derive(Debug)]
struct EcamRegion {
    entry: McfgEntry,
    window: PhysMap,
}

/// Access to configuration space.
#[derive(Debug)]
pub enum ConfigSpace {
    /// Memory-mapped (ECAM) regions from MCFG.
    Ecam(Vec<EcamRegionHandle>),
    /// Configuration mechanism #1 (segment 0, first 256 bytes only).
    Ports(LegacyConfigPorts),
}

/// An ECAM region (opaque).
#[derive(Debug)]
pub struct EcamRegionHandle(EcamRegion);

impl ConfigSpace {
    /// ECAM when acpid offers an MCFG table whose regions can be mapped, else
    /// the legacy ports (as Redox's pcid does).
    pub fn open() -> Result<Self, ConfigError> {
        match read_mcfg(Path::new(ACPI_TABLES_DIR)).and_then(|entries| Self::map_ecam(&entries)) {
            Ok(space) => Ok(space),
            Err(err) => {
                log::info!(
                    "pcid: no usable ECAM ({err}); using configuration ports 0xCF8/0xCFC"
                );
                Ok(ConfigSpace::Ports(LegacyConfigPorts::new()?))
            }
        }
    }

    /// Maps the ECAM regions of `entries`; fails if none can be mapped.
    pub fn map_ecam(entries: &[McfgEntry]) -> Result<Self, ConfigError> {
        let mut regions = Vec::new();
        for entry in entries {
            let buses = u64::from(entry.end_bus - entry.start_bus) + 1;
            let phys = entry.base + u64::from(entry.start_bus) * ECAM_BUS_SIZE;
            let Ok(len) = usize::try_from(buses * ECAM_BUS_SIZE) else {
                continue;
            };
            match PhysMap::map(phys, len, MemoryType::Uncacheable) {
                Ok(window) => regions.push(EcamRegionHandle(EcamRegion {
                    entry: *entry,
                    window,
                })),
                Err(err) => log::error!(
                    "pcid: cannot map ECAM of segment {} buses {}..={}: {err}",
                    entry.segment,
                    entry.start_bus,
                    entry.end_bus
                ),
            }
        }
        if regions.is_empty() {
            return Err(ConfigError::Hw(HwError::Os {
                what: "map ECAM".to_string(),
                source: std::io::Error::other("no MCFG region could be mapped"),
            }));
        }
        Ok(ConfigSpace::Ecam(regions))
    }

    /// Which mechanism is in use, for logs.
    pub fn mechanism(&self) -> &'static str {
        match self {
            ConfigSpace::Ecam(_) => "ECAM",
            ConfigSpace::Ports(_) => "port I/O",
        }
    }

    /// Reads the dword at `offset` (a multiple of 4, below 4096) of a function.
    /// A function nobody decodes reads as all-ones, like a master abort.
    pub fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        let offset = offset & 0xFFC;
        match self {
            ConfigSpace::Ecam(regions) => match Self::ecam_offset(regions, address, offset) {
                Some((region, off)) => region.window.read32(off),
                None => u32::MAX,
            },
            ConfigSpace::Ports(ports) => {
                if address.segment != 0 || offset > 0xFC {
                    return u32::MAX;
                }
                ports.read32(
                    address.bus,
                    address.device,
                    address.function,
                    offset as u8,
                )
            }
        }
    }

    /// Writes the dword at `offset` (a multiple of 4, below 4096) of a function.
    pub fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        let offset = offset & 0xFFC;
        match self {
            ConfigSpace::Ecam(regions) => {
                if let Some((region, off)) = Self::ecam_offset(regions, address, offset) {
                    region.window.write32(off, value);
                }
            }
            ConfigSpace::Ports(ports) => {
                if address.segment == 0 && offset <= 0xFC {
                    ports.write32(
                        address.bus,
                        address.device,
                        address.function,
                        offset as u8,
                        value,
                    );
                }
            }
        }
    }

    fn ecam_offset(
        regions: &[EcamRegionHandle],
        address: PciAddress,
        offset: u16,
    ) -> Option<(&EcamRegion, usize)> {
        let region = regions.iter().map(|r| &r.0).find(|r| {
            r.entry.segment == address.segment
                && (r.entry.start_bus..=r.entry.end_bus).contains(&address.bus)
        })?;
        let off = (usize::from(address.bus - region.entry.start_bus) << 20)
            | (usize::from(address.device & 0x1F) << 15)
            | (usize::from(address.function & 0x7) << 12)
            | usize::from(offset);
        Some((region, off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(u64, u16, u8, u8)]) -> Vec<u8> {
        let len = MCFG_HEADER_LEN + entries.len() * MCFG_ENTRY_LEN;
        let mut t = vec![0u8; MCFG_HEADER_LEN];
        t[0..4].copy_from_slice(b"MCFG");
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        for &(base, seg, start, end) in entries {
            t.extend_from_slice(&base.to_le_bytes());
            t.extend_from_slice(&seg.to_le_bytes());
            t.push(start);
            t.push(end);
            t.extend_from_slice(&[0; 4]);
        }
        t
    }

    #[test]
    fn parses_qemu_q35_mcfg() {
        let t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        let e = parse_mcfg(Path::new("MCFG"), &t).unwrap();
        assert_eq!(
            e,
            vec![McfgEntry {
                base: 0xB000_0000,
                segment: 0,
                start_bus: 0,
                end_bus: 0xFF
            }]
        );
    }

    #[test]
    fn rejects_bad_tables() {
        let p = Path::new("MCFG");
        assert!(parse_mcfg(p, b"MCFG").is_err());
        let mut t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        t.push(0);
        assert!(parse_mcfg(p, &t).is_err());
        let t = table(&[(0xB000_0000, 0, 9, 3)]);
        assert!(parse_mcfg(p, &t).is_err());
        let mut t = table(&[]);
        t[0] = b'X';
        assert!(parse_mcfg(p, &t).is_err());
    }
}
