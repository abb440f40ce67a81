//! The ACPI MCFG table: where the ECAM regions of each PCI segment are.
//!
//! acpid serves the firmware's tables under `/scheme/acpi/tables/`, one file
//! per table whose name starts with the signature. The MCFG table (PCI
//! Firmware Specification 3.0, §4.1.2) is the 36-byte ACPI header, 8 reserved
//! bytes, then 16-byte allocation entries: base address (u64), PCI segment
//! group (u16), start bus (u8), end bus (u8), 4 reserved bytes. A function's
//! registers sit at `base + (bus << 20 | device << 15 | function << 12)`
//! (PCI Express Base Specification, §7.2.2), `base` being the address of bus 0
//! of the segment even when the entry starts at a later bus.
//!
//! Parsing is portable and unit-tested on every host; mapping the regions is
//! done by the Redox-only `config` module.

use std::path::{Path, PathBuf};

use pcid_interface::function::PciAddress;

/// Directory where acpid serves the ACPI tables.
pub const ACPI_TABLES_DIR: &str = "/scheme/acpi/tables";

/// Length of the MCFG header (ACPI SDT header + 8 reserved bytes).
pub const MCFG_HEADER_LEN: usize = 44;
/// Length of one MCFG allocation entry.
pub const MCFG_ENTRY_LEN: usize = 16;
/// Bytes of configuration space per bus in ECAM.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

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

impl McfgEntry {
    /// Physical address and length of the ECAM window for this entry's buses.
    pub fn window(&self) -> (u64, u64) {
        let buses = u64::from(self.end_bus.saturating_sub(self.start_bus)) + 1;
        (
            self.base + u64::from(self.start_bus) * ECAM_BUS_SIZE,
            buses * ECAM_BUS_SIZE,
        )
    }

    /// Offset of `address`'s register `offset` inside [`McfgEntry::window`],
    /// or `None` if this entry does not decode that function.
    pub fn offset_of(&self, address: PciAddress, offset: u16) -> Option<usize> {
        if address.segment != self.segment
            || !(self.start_bus..=self.end_bus).contains(&address.bus)
            || address.device > 31
            || address.function > 7
            || offset > 0xFFC
        {
            return None;
        }
        Some(
            (usize::from(address.bus - self.start_bus) << 20)
                | (usize::from(address.device) << 15)
                | (usize::from(address.function) << 12)
                | usize::from(offset & 0xFFC),
        )
    }
}

/// Why an MCFG table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum McfgError {
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
    NotFound(PathBuf),
    /// The table is malformed.
    #[error("{path}: malformed MCFG table: {reason}")]
    Malformed {
        /// The table file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Parses an MCFG table (the whole table, header included).
pub fn parse_mcfg(path: &Path, bytes: &[u8]) -> Result<Vec<McfgEntry>, McfgError> {
    let malformed = |reason: String| McfgError::Malformed {
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
            "header says {length} bytes, the table has {}",
            bytes.len()
        )));
    }
    let entries = &bytes[MCFG_HEADER_LEN..];
    if entries.len() % MCFG_ENTRY_LEN != 0 {
        // Redox's pcid ignores a partial last entry; so does this one.
        log::warn!(
            "{}: {} bytes of allocation entries, not a multiple of {MCFG_ENTRY_LEN}; \
             the partial last entry is ignored",
            path.display(),
            entries.len()
        );
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
        // An entry that cannot describe an ECAM window is skipped (Redox's
        // pcid would fail to map it, or panic computing its size), so the
        // functions it claims fall back to the configuration ports.
        if entry.end_bus < entry.start_bus {
            log::warn!(
                "{}: entry for segment {} has end bus {} before start bus {}; skipped",
                path.display(),
                entry.segment,
                entry.end_bus,
                entry.start_bus
            );
            continue;
        }
        if entry.base == 0 || entry.base % ECAM_BUS_SIZE != 0 {
            log::warn!(
                "{}: entry for segment {} has base {:#x}, not a non-zero multiple of 1 MiB; skipped",
                path.display(),
                entry.segment,
                entry.base
            );
            continue;
        }
        out.push(entry);
    }
    Ok(out)
}

/// Finds and parses the MCFG table in `dir` (acpid's tables directory).
pub fn read_mcfg(dir: &Path) -> Result<Vec<McfgEntry>, McfgError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| McfgError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_name().as_encoded_bytes().starts_with(b"MCFG") {
            let path = entry.path();
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            return parse_mcfg(&path, &bytes);
        }
    }
    Err(McfgError::NotFound(dir.to_path_buf()))
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

    fn addr(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            segment: 0,
            bus,
            device,
            function,
        }
    }

    #[test]
    fn parses_a_q35_style_table_and_computes_offsets() {
        // QEMU q35 places ECAM for buses 0..=255 at 0xB000_0000.
        let t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        let e = parse_mcfg(Path::new("MCFG"), &t).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].window(), (0xB000_0000, 256 << 20));
        assert_eq!(e[0].offset_of(addr(0, 4, 0), 0x10), Some((4 << 15) | 0x10));
        assert_eq!(
            e[0].offset_of(addr(2, 0, 1), 0x100),
            Some((2 << 20) | (1 << 12) | 0x100)
        );
        let other_segment = PciAddress {
            segment: 1,
            ..addr(0, 0, 0)
        };
        assert_eq!(e[0].offset_of(other_segment, 0), None);
        assert_eq!(e[0].offset_of(addr(0, 0, 0), 0x1000), None);
    }

    #[test]
    fn base_is_bus_zero_even_for_a_later_start_bus() {
        let e = McfgEntry {
            base: 0xE000_0000,
            segment: 0,
            start_bus: 0x10,
            end_bus: 0x1F,
        };
        assert_eq!(e.window(), (0xE000_0000 + (0x10 << 20), 16 << 20));
        assert_eq!(e.offset_of(addr(0x10, 0, 0), 0), Some(0));
        assert_eq!(e.offset_of(addr(0x11, 0, 0), 0), Some(1 << 20));
        assert_eq!(e.offset_of(addr(0x0F, 0, 0), 0), None);
    }

    #[test]
    fn rejects_malformed_tables_and_skips_unusable_entries() {
        let p = Path::new("MCFG");
        assert!(parse_mcfg(p, b"MCFG").is_err());
        let mut t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        t.push(0);
        assert!(parse_mcfg(p, &t).is_err(), "length mismatch");
        let mut t = table(&[]);
        t[0] = b'X';
        assert!(parse_mcfg(p, &t).is_err());
        // Entries that cannot be windows are skipped, the others kept.
        let good = (0xB000_0000, 0, 0, 0x3F);
        let e = parse_mcfg(
            p,
            &table(&[(0xB000_0000, 0, 9, 3), good, (0, 0, 0x40, 0xFF)]),
        )
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].end_bus, 0x3F);
        // A partial last entry is ignored, as Redox's pcid ignores it.
        let mut t = table(&[good]);
        t.extend_from_slice(&[0xAB; 5]);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        assert_eq!(parse_mcfg(p, &t).unwrap().len(), 1);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut seed = 0x1234_5678_u32;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = parse_mcfg(Path::new("x"), &bytes);
            let mut with_sig = bytes.clone();
            if with_sig.len() >= 8 {
                with_sig[0..4].copy_from_slice(b"MCFG");
                let l = with_sig.len() as u32;
                with_sig[4..8].copy_from_slice(&l.to_le_bytes());
                let _ = parse_mcfg(Path::new("x"), &with_sig);
            }
        }
    }
}
