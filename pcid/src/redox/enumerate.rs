//! Walking PCI configuration space the way Redox's pcid does.
//!
//! Portable logic over [`ConfigAccess`] (ECAM and/or ports on Redox, a model
//! in the unit tests). Register offsets are from the PCI Local Bus
//! Specification 3.0, §6.1–6.2.
//!
//! # What is enumerated (Redox's rules)
//!
//! * Buses 0 and 0x80 of segment 0 (Redox scans 0x80 for Intel platforms that
//!   put the PCH there), then the secondary bus of every PCI-to-PCI bridge
//!   found, each bus once (Redox's list has no such guard: a bridge pointing
//!   back at a scanned bus would make it loop).
//! * On each bus, devices 0–31; a device whose function 0 reads vendor and
//!   device id 0xFFFF is absent; functions 1–7 are scanned only when function
//!   0's header type has the multi-function bit; absent functions 1–7 are
//!   skipped.
//! * Type 0 headers (endpoints) are the functions pcid lists and serves;
//!   bridges are followed but not listed; other header types are logged and
//!   skipped. A function behind a bridge records the bridge as its parent, so
//!   shutdown can order it first.
//! * For every endpoint: its six BARs, its expansion ROM, its capability list
//!   (MSI, MSI-X, vendor-specific).
//!
//! # BAR sizing, and why decoding stays on
//!
//! A BAR is sized by writing all-ones to it, reading back which bits stuck
//! and writing the original value back (§6.2.5.1). Redox's pcid (pci_types
//! 0.10) does this at enumeration with the function's decoding left as
//! firmware set it, and this pcid does the same, for this reason: pcid starts
//! after vesad, which is already drawing into the boot framebuffer — memory
//! behind a BAR of the display function. Turning memory decoding off for the
//! whole sizing of a function (the textbook method, and what this project
//! did before) would stop that framebuffer for every access of every BAR of
//! the function; leaving it on limits the disturbance to the three accesses
//! of the BAR being sized, the window Redox systems already live with.
//! Sizing later, when a function's channel is opened, would not help:
//! Redox's pcid-spawner opens every function's channel, vesad's display
//! function included, to read its configuration.
//!
//! Two differences from Redox: I/O BARs are sized too (Redox reports only
//! their port; this pcid's own drivers are told the size in `Welcome`), and
//! where pci_types would panic (a reserved memory type, a port above
//! 0xFFFF) or compute a size from a BAR that reads back no address bits, the
//! slot is logged and reported empty.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use pcid_interface::function::{Bar, BarKind};
use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};

use super::config_space::ConfigAccess;
use super::driver_interface::handler::{read_capabilities, Function};
use super::driver_interface::{FullDeviceId, FunctionConfig, PciBar, PciRom};

/// The buses Redox's pcid starts from.
pub const ROOT_BUSES: [u8; 2] = [0x00, 0x80];

/// An endpoint found on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// What Redox's driver interface says about it.
    pub function: Function,
    /// The bridge it sits behind, if any.
    pub parent: Option<PciAddress>,
    /// Its implemented BARs with kind and size (what this project's drivers
    /// are told in `Welcome`).
    pub bars: Vec<Bar>,
}

impl Found {
    /// Address of the function.
    pub fn address(&self) -> PciAddress {
        self.function.config.addr
    }

    /// The function as this project's protocol describes it (`Welcome`):
    /// ids, parent bridge, BARs and the legacy interrupt set up when the
    /// function was enabled.
    pub fn pci_function(&self) -> PciFunction {
        let id = &self.function.config.full_device_id;
        PciFunction {
            address: self.address(),
            vendor: id.vendor_id,
            device: id.device_id,
            class: id.class,
            subclass: id.subclass,
            interface: id.interface,
            revision: id.revision,
            parent: self.parent,
            backend: FunctionBackend::Redox {
                bars: self.bars.clone(),
                legacy_irq: self
                    .function
                    .config
                    .legacy_interrupt_line
                    .map(|line| line.irq),
            },
        }
    }

    /// One line for logs, in Redox's style: `00-00--04.0 1B36:0010 01.08.02.02`.
    pub fn describe(&self) -> String {
        let id = &self.function.config.full_device_id;
        format!(
            "{} {:04X}:{:04X} {:02X}.{:02X}.{:02X}.{:02X}",
            pcid_interface::redox::function_name(self.address()),
            id.vendor_id,
            id.device_id,
            id.class,
            id.subclass,
            id.interface,
            id.revision
        )
    }
}

fn addr(bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress {
        segment: 0,
        bus,
        device,
        function,
    }
}

/// Enumerates segment 0 from [`ROOT_BUSES`]; see the module documentation.
/// The result is sorted by address (the order of the `pci` scheme's listing).
pub fn enumerate(cfg: &dyn ConfigAccess) -> Vec<Found> {
    let mut found = BTreeMap::new();
    let mut queue: VecDeque<(u8, Option<PciAddress>)> =
        ROOT_BUSES.iter().map(|&b| (b, None)).collect();
    let mut scanned = BTreeSet::new();
    while let Some((bus, parent)) = queue.pop_front() {
        if !scanned.insert(bus) {
            if parent.is_some() {
                log::warn!(
                    "pcid: bus {bus:02x} reached again through bridge {parent:?}; not rescanned"
                );
            }
            continue;
        }
        for device in 0..32 {
            scan_device(cfg, bus, device, parent, &mut queue, &mut found);
        }
    }
    found.into_values().collect()
}

fn scan_device(
    cfg: &dyn ConfigAccess,
    bus: u8,
    device: u8,
    parent: Option<PciAddress>,
    queue: &mut VecDeque<(u8, Option<PciAddress>)>,
    found: &mut BTreeMap<PciAddress, Found>,
) {
    for function in 0..8 {
        let a = addr(bus, device, function);
        let id = cfg.read32(a, 0x00);
        if id == u32::MAX {
            if function == 0 {
                return;
            }
            continue;
        }
        let class = cfg.read32(a, 0x08);
        let header = (cfg.read32(a, 0x0C) >> 16) as u8;
        let full_id = FullDeviceId {
            vendor_id: id as u16,
            device_id: (id >> 16) as u16,
            class: (class >> 24) as u8,
            subclass: (class >> 16) as u8,
            interface: (class >> 8) as u8,
            revision: class as u8,
        };
        match header & 0x7F {
            0x00 => {
                let (bars, ours) = read_bars(cfg, a);
                let f = Found {
                    function: Function {
                        config: FunctionConfig {
                            addr: a,
                            bars,
                            rom: read_rom(cfg, a),
                            legacy_interrupt_line: None,
                            full_device_id: full_id,
                        },
                        capabilities: read_capabilities(cfg, a),
                    },
                    parent,
                    bars: ours,
                };
                log::info!("pcid: PCI {}", f.describe());
                found.insert(a, f);
            }
            0x01 => {
                let secondary = (cfg.read32(a, 0x18) >> 8) as u8;
                log::info!("pcid: PCI bridge {a} to bus {secondary:02x}");
                queue.push_back((secondary, Some(a)));
            }
            other => log::warn!("pcid: {a}: header type {other:#04x} is not handled; skipped"),
        }
        if function == 0 && header & 0x80 == 0 {
            return;
        }
    }
}

fn lowest_bit(mask: u64) -> Option<u64> {
    (mask != 0).then(|| 1u64 << mask.trailing_zeros())
}

/// Sizes and decodes the six BARs of a type 0 header: Redox's view (slot by
/// slot) and this project's (implemented BARs with kind and size).
pub fn read_bars(cfg: &dyn ConfigAccess, a: PciAddress) -> ([PciBar; 6], Vec<Bar>) {
    let mut slots = [PciBar::None; 6];
    let mut bars = Vec::new();
    let mut slot = 0u8;
    while slot < 6 {
        let off = 0x10 + 4 * u16::from(slot);
        let value = cfg.read32(a, off);
        if value & 1 == 1 {
            // I/O: bits 31:2 are the port.
            let port = value & !0x3;
            cfg.write32(a, off, u32::MAX);
            let readback = cfg.read32(a, off) & !0x3;
            cfg.write32(a, off, value);
            match u16::try_from(port) {
                Ok(p) => {
                    slots[usize::from(slot)] = PciBar::Port(p);
                    if let Some(size) = lowest_bit(u64::from(readback)) {
                        bars.push(Bar {
                            index: slot,
                            kind: BarKind::Io,
                            address: u64::from(port),
                            size,
                        });
                    }
                }
                Err(_) => {
                    log::warn!("pcid: {a}: BAR{slot} port {port:#x} is above 0xFFFF; ignored")
                }
            }
            slot += 1;
            continue;
        }
        let prefetchable = value & 0x8 != 0;
        let address = value & !0xF;
        match (value >> 1) & 0x3 {
            0b00 => {
                cfg.write32(a, off, 0xFFFF_FFF0);
                let readback = cfg.read32(a, off) & !0xF;
                cfg.write32(a, off, address);
                if let Some(size) = lowest_bit(u64::from(readback)) {
                    // A 32-bit mask has its lowest bit below 2^32.
                    slots[usize::from(slot)] = PciBar::Memory32 {
                        addr: address,
                        size: size as u32,
                    };
                    bars.push(Bar {
                        index: slot,
                        kind: BarKind::Memory32 { prefetchable },
                        address: u64::from(address),
                        size,
                    });
                }
                slot += 1;
            }
            0b10 if slot < 5 => {
                let upper = cfg.read32(a, off + 4);
                cfg.write32(a, off, 0xFFFF_FFF0);
                cfg.write32(a, off + 4, u32::MAX);
                let low = cfg.read32(a, off) & !0xF;
                let high = cfg.read32(a, off + 4);
                cfg.write32(a, off, address);
                cfg.write32(a, off + 4, upper);
                let full = (u64::from(upper) << 32) | u64::from(address);
                match lowest_bit((u64::from(high) << 32) | u64::from(low)) {
                    Some(size) => {
                        slots[usize::from(slot)] = PciBar::Memory64 { addr: full, size };
                        bars.push(Bar {
                            index: slot,
                            kind: BarKind::Memory64 { prefetchable },
                            address: full,
                            size,
                        });
                    }
                    None => {
                        log::warn!("pcid: {a}: 64-bit BAR{slot} keeps no address bits; ignored")
                    }
                }
                slot += 2;
            }
            0b10 => {
                log::warn!("pcid: {a}: 64-bit BAR in the last slot; ignored");
                slot += 1;
            }
            _ => {
                log::warn!("pcid: {a}: BAR{slot} has the reserved memory type; ignored");
                slot += 1;
            }
        }
    }
    (slots, bars)
}

/// Expansion ROM address mask (§6.2.5.2).
const ROM_ADDRESS_MASK: u32 = 0xFFFF_F800;

/// Sizes the expansion ROM BAR (offset 0x30), keeping its enable bit.
pub fn read_rom(cfg: &dyn ConfigAccess, a: PciAddress) -> Option<PciRom> {
    let data = cfg.read32(a, 0x30);
    let enabled = data & 1 == 1;
    cfg.write32(a, 0x30, ROM_ADDRESS_MASK | u32::from(enabled));
    let readback = cfg.read32(a, 0x30);
    cfg.write32(a, 0x30, data);
    let size = lowest_bit(u64::from(readback & ROM_ADDRESS_MASK))?;
    Some(PciRom {
        addr: data & ROM_ADDRESS_MASK,
        size: size as u32,
        enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redox::config_space::model::{addr as a4, Model};
    use crate::redox::driver_interface::handler::Capability;

    fn at(bus: u8, device: u8, function: u8) -> PciAddress {
        a4(0, bus, device, function)
    }

    /// A q35-like machine: host bridge, a root port to bus 1 with an NVMe
    /// controller, a multi-function device at 1f (LPC, SATA with an I/O and a
    /// 32-bit BAR, SMBus), and a device on bus 0x80.
    fn machine() -> Model {
        let mut m = Model::default();
        m.function(at(0, 0, 0), 0x8086, 0x29C0, 0x0600_0000, 0x00);
        m.function(at(0, 0x1C, 0), 0x1B36, 0x000C, 0x0604_0000, 0x01);
        m.set(at(0, 0x1C, 0), 0x18, 0x0001_0100);
        let nvme = at(1, 0, 0);
        m.function(nvme, 0x1B36, 0x0010, 0x0108_0202, 0x00);
        m.bar_mem64(nvme, 0, 0xFEBF_0000, 0x4000, false);
        m.capabilities(nvme, &[(0x40, 0x11 | (64 << 16))]);
        m.function(at(0, 0x1F, 0), 0x8086, 0x2918, 0x0601_0002, 0x80);
        let sata = at(0, 0x1F, 2);
        m.function(sata, 0x8086, 0x2922, 0x0106_0102, 0x00);
        m.bar_io(sata, 4, 0xC080, 0x20);
        m.bar_mem32(sata, 5, 0xFEBE_8000, 0x1000, false);
        m.set(sata, 0x30, 0xFEB0_0000);
        m.mask(sata, 0x30, 0xFFFE_0001);
        m.function(at(0, 0x1F, 3), 0x8086, 0x2930, 0x0C05_0002, 0x00);
        m.function(at(0x80, 2, 0), 0x8086, 0x1234, 0x0880_0000, 0x00);
        m
    }

    fn addresses(found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| pcid_interface::redox::function_name(f.address()))
            .collect()
    }

    #[test]
    fn lists_endpoints_of_buses_0_0x80_and_behind_bridges_sorted_by_address() {
        let m = machine();
        let found = enumerate(&m);
        assert_eq!(
            addresses(&found),
            [
                "00-00--00.0",
                "00-00--1f.0",
                "00-00--1f.2",
                "00-00--1f.3",
                "00-01--00.0",
                "00-80--02.0"
            ]
        );
        let nvme = &found[4];
        assert_eq!(nvme.parent, Some(at(0, 0x1C, 0)), "behind the root port");
        assert_eq!(found[0].parent, None);
        assert_eq!(found[5].parent, None);
        let id = nvme.function.config.full_device_id;
        assert_eq!(
            (
                id.vendor_id,
                id.device_id,
                id.class,
                id.subclass,
                id.interface,
                id.revision
            ),
            (0x1B36, 0x0010, 1, 8, 2, 2)
        );
        assert!(matches!(
            nvme.function.capabilities[..],
            [Capability::MsiX(_)]
        ));
        assert_eq!(nvme.describe(), "00-01--00.0 1B36:0010 01.08.02.02");
        let f = nvme.pci_function();
        assert_eq!(f.address, at(1, 0, 0));
        assert_eq!(f.parent, Some(at(0, 0x1C, 0)));
    }

    #[test]
    fn functions_1_to_7_only_for_multi_function_devices() {
        let mut m = machine();
        // Function 1 of the single-function host bridge is never looked at.
        m.function(at(0, 0, 1), 0x8086, 0xFFFF, 0x0600_0000, 0x00);
        let found = enumerate(&m);
        assert!(!addresses(&found).contains(&"00-00--00.1".to_string()));
    }

    #[test]
    fn bars_are_sized_with_decoding_left_on_and_restored() {
        let m = machine();
        let found = enumerate(&m);
        let nvme = &found[4];
        assert_eq!(
            nvme.function.config.bars,
            [
                PciBar::Memory64 {
                    addr: 0xFEBF_0000,
                    size: 0x4000
                },
                PciBar::None,
                PciBar::None,
                PciBar::None,
                PciBar::None,
                PciBar::None
            ]
        );
        assert_eq!(
            nvme.bars,
            [Bar {
                index: 0,
                kind: BarKind::Memory64 {
                    prefetchable: false
                },
                address: 0xFEBF_0000,
                size: 0x4000
            }]
        );
        let sata = &found[2];
        assert_eq!(sata.function.config.bars[4], PciBar::Port(0xC080));
        assert_eq!(
            sata.function.config.bars[5],
            PciBar::Memory32 {
                addr: 0xFEBE_8000,
                size: 0x1000
            }
        );
        assert_eq!(
            sata.bars
                .iter()
                .map(|b| (b.index, b.kind, b.size))
                .collect::<Vec<_>>(),
            [
                (4, BarKind::Io, 0x20),
                (
                    5,
                    BarKind::Memory32 {
                        prefetchable: false
                    },
                    0x1000
                )
            ]
        );
        assert_eq!(
            sata.function.config.rom,
            Some(PciRom {
                addr: 0xFEB0_0000,
                size: 0x20000,
                enabled: false
            })
        );
        assert_eq!(found[0].function.config.rom, None);
        // Registers hold their original values again, and the command
        // register was never written: decoding stayed as firmware set it.
        assert_eq!(m.get(at(1, 0, 0), 0x10), 0xFEBF_0004);
        assert_eq!(m.get(at(1, 0, 0), 0x14), 0);
        assert_eq!(m.get(at(0, 0x1F, 2), 0x20), 0xC081);
        assert_eq!(m.get(at(0, 0x1F, 2), 0x30), 0xFEB0_0000);
        assert!(m.writes().iter().all(|w| w.offset != 0x04));
        // Only BAR and ROM registers were written.
        assert!(m
            .writes()
            .iter()
            .all(|w| (0x10..=0x24).contains(&w.offset) || w.offset == 0x30));
    }

    #[test]
    fn odd_bars_are_skipped_not_fatal() {
        let mut m = Model::default();
        let f = at(0, 3, 0);
        m.function(f, 0x1234, 0x5678, 0, 0);
        // Reserved memory type, then a 64-bit BAR in the last slot.
        m.set(f, 0x10, 0xE000_0002);
        m.mask(f, 0x10, 0xFFFF_F000);
        m.set(f, 0x24, 0xE000_0004);
        m.mask(f, 0x24, 0xFFFF_F000);
        let found = enumerate(&m);
        assert_eq!(found[0].function.config.bars, [PciBar::None; 6]);
        assert!(found[0].bars.is_empty());
    }

    #[test]
    fn a_bridge_looping_back_does_not_hang() {
        let mut m = machine();
        // An unconfigured bridge (secondary bus 0) and one claiming bus 1 again.
        m.function(at(1, 2, 0), 0x1B36, 0x000C, 0x0604_0000, 0x01);
        m.function(at(1, 3, 0), 0x1B36, 0x000C, 0x0604_0000, 0x01);
        m.set(at(1, 3, 0), 0x18, 0x0001_0101);
        let found = enumerate(&m);
        assert_eq!(found.len(), 6);
    }

    #[test]
    fn an_empty_bus_finds_nothing() {
        assert!(enumerate(&Model::default()).is_empty());
    }
}
