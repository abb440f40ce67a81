//! Configuration space on Redox: ECAM regions from the ACPI MCFG table
//! (mapped uncacheable through physmap), else configuration mechanism #1
//! through ports `0xCF8`/`0xCFC`, as Redox's own pcid does.

use std::path::Path;

use pcid_hw::redox::{LegacyConfigPorts, MemoryType, PhysMap};
use pcid_hw::{HwError, RegisterIo};
use pcid_interface::function::PciAddress;

use super::enumerate::ConfigAccess;
use super::mcfg::{read_mcfg, McfgEntry, ACPI_TABLES_DIR};

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
    Ecam(Vec<EcamRegionMap>),
    /// Configuration mechanism #1 (segment 0, first 256 bytes only).
    Ports(LegacyConfigPorts),
}

/// A mapped ECAM region.
#[derive(Debug)]
pub struct EcamRegionMap(EcamRegion);

impl ConfigSpace {
    /// ECAM when acpid serves an MCFG table whose regions can be mapped, else
    /// the configuration ports.
    pub fn open() -> Result<Self, HwError> {
        let ecam = read_mcfg(Path::new(ACPI_TABLES_DIR))
            .map_err(|e| e.to_string())
            .and_then(|entries| Self::map_ecam(&entries));
        match ecam {
            Ok(space) => Ok(space),
            Err(why) => {
                log::info!("pcid: no usable ECAM ({why}); using configuration ports 0xCF8/0xCFC");
                Ok(ConfigSpace::Ports(LegacyConfigPorts::new()?))
            }
        }
    }

    /// Maps the ECAM regions of `entries`; fails if none can be mapped.
    pub fn map_ecam(entries: &[McfgEntry]) -> Result<Self, String> {
        let mut regions = Vec::new();
        for entry in entries {
            let (phys, len) = entry.window();
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            match PhysMap::map(phys, len, MemoryType::Uncacheable) {
                Ok(window) => regions.push(EcamRegionMap(EcamRegion {
                    entry: *entry,
                    window,
                })),
                Err(err) => log::error!(
                    "pcid: cannot map ECAM of segment {} buses {:02x}..={:02x}: {err}",
                    entry.segment,
                    entry.start_bus,
                    entry.end_bus
                ),
            }
        }
        if regions.is_empty() {
            return Err("no MCFG region could be mapped".to_string());
        }
        Ok(ConfigSpace::Ecam(regions))
    }

    /// Which mechanism is in use, for logs.
    pub fn mechanism(&self) -> &'static str {
        match self {
            ConfigSpace::Ecam(_) => "ECAM",
            ConfigSpace::Ports(_) => "configuration ports",
        }
    }

    fn ecam(
        regions: &[EcamRegionMap],
        address: PciAddress,
        offset: u16,
    ) -> Option<(&PhysMap, usize)> {
        regions.iter().find_map(|r| {
            r.0.entry
                .offset_of(address, offset)
                .map(|off| (&r.0.window, off))
        })
    }
}

impl ConfigAccess for ConfigSpace {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        let offset = offset & 0xFFC;
        match self {
            ConfigSpace::Ecam(regions) => match Self::ecam(regions, address, offset) {
                Some((window, off)) => window.read32(off),
                None => u32::MAX,
            },
            ConfigSpace::Ports(ports) => {
                if address.segment != 0 || offset > 0xFC {
                    return u32::MAX;
                }
                ports.read32(address.bus, address.device, address.function, offset as u8)
            }
        }
    }

    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        let offset = offset & 0xFFC;
        match self {
            ConfigSpace::Ecam(regions) => {
                if let Some((window, off)) = Self::ecam(regions, address, offset) {
                    window.write32(off, value);
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
}
