//! Configuration space on Redox: the ECAM regions of acpid's MCFG table,
//! mapped uncacheable through physmap, and configuration mechanism #1
//! through ports `0xCF8`/`0xCFC`, chosen per access by
//! [`Router`](super::config_space::Router) as Redox's pcid chooses.
//!
//! As in Redox's pcid, I/O port rights are requested only at the first
//! access that needs the ports, so pcid holds them only on machines (or
//! buses) without ECAM. Device-tree ECAM (Redox's pcid reads it on aarch64
//! and riscv) is not supported: this pcid targets x86_64.

use std::cell::OnceCell;
use std::path::Path;

use pcid_hw::redox::{LegacyConfigPorts, MemoryType, PhysMap};
use pcid_hw::RegisterIo;

use super::config_space::{EcamWindow, PortMechanism, Router};
use super::mcfg::{read_mcfg, McfgEntry, ACPI_TABLES_DIR};

/// A mapped ECAM region.
#[derive(Debug)]
pub struct Window(PhysMap);

impl EcamWindow for Window {
    fn read32(&self, offset: usize) -> u32 {
        self.0.read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.0.write32(offset, value)
    }
}

/// The configuration ports, with port rights taken at first use.
#[derive(Debug, Default)]
pub struct LazyPorts {
    ports: OnceCell<Option<LegacyConfigPorts>>,
}

impl LazyPorts {
    fn get(&self) -> Option<&LegacyConfigPorts> {
        self.ports
            .get_or_init(|| {
                log::info!("pcid: using configuration ports 0xCF8/0xCFC");
                match LegacyConfigPorts::new() {
                    Ok(p) => Some(p),
                    Err(e) => {
                        log::error!(
                            "pcid: no I/O port rights ({e}); functions without ECAM read as absent"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl PortMechanism for LazyPorts {
    fn read32(&self, bus: u8, device: u8, function: u8, offset: u8) -> u32 {
        self.get()
            .map_or(u32::MAX, |p| p.read32(bus, device, function, offset))
    }
    fn write32(&self, bus: u8, device: u8, function: u8, offset: u8, value: u32) {
        if let Some(p) = self.get() {
            p.write32(bus, device, function, offset, value);
        }
    }
}

/// Configuration space on Redox.
pub type ConfigSpace = Router<Window, LazyPorts>;

/// Maps the ECAM regions of acpid's MCFG table (none if there is no usable
/// table); everything else goes to the ports.
pub fn open() -> ConfigSpace {
    let entries = match read_mcfg(Path::new(ACPI_TABLES_DIR)) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("pcid: no ECAM ({e}); using the PCI 3.0 configuration ports");
            Vec::new()
        }
    };
    let regions = entries.iter().filter_map(map_region).collect::<Vec<_>>();
    let router = Router::new(regions, LazyPorts::default());
    log::info!(
        "pcid: {} ECAM region(s); other functions through the configuration ports",
        router.ecam_regions()
    );
    router
}

fn map_region(entry: &McfgEntry) -> Option<(McfgEntry, Window)> {
    let (phys, len) = entry.window();
    let len = usize::try_from(len).ok()?;
    match PhysMap::map(phys, len, MemoryType::Uncacheable) {
        Ok(window) => Some((*entry, Window(window))),
        Err(err) => {
            log::error!(
                "pcid: cannot map ECAM of segment {} buses {:02x}..={:02x}: {err}",
                entry.segment,
                entry.start_bus,
                entry.end_bus
            );
            None
        }
    }
}
