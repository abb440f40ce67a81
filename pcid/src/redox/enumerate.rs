//! Walking PCI configuration space: functions, bridges, BARs.
//!
//! Portable logic over a [`ConfigAccess`] (ECAM or ports on Redox, a model
//! in the unit tests). Register offsets are from the PCI Local Bus
//! Specification 3.0, §6.1 (type 0 and type 1 headers):
//!
//! | offset | register                                               |
//! |-------:|--------------------------------------------------------|
//! | 0x00   | vendor id (15:0), device id (31:16)                    |
//! | 0x04   | command (15:0), status (31:16)                         |
//! | 0x08   | revision (7:0), prog-if (15:8), subclass, class        |
//! | 0x0C   | header type (23:16; bit 23 = multi-function)           |
//! | 0x10.. | BAR0..BAR5 (type 0); bus numbers at 0x18 (type 1)      |
//!
//! Enumeration starts at bus 0 of segment 0 and follows each bridge's
//! secondary bus, recording the bridge as the parent of what sits behind it
//! (so shutdown can order children before parents). A bus is scanned at most
//! once, so a misconfigured bridge cannot make the walk loop.
//!
//! BAR sizes are found the standard way (§6.2.5.1): with memory and I/O
//! decoding turned off, write all-ones, read back the size mask, restore the
//! original value, then restore the command register.

use std::collections::BTreeSet;

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::redox::{Bar, BarKind};

/// Command register: I/O Space Enable.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// 32-bit access to configuration space.
pub trait ConfigAccess {
    /// Reads the dword at `offset` (a multiple of 4). Absent functions read all-ones.
    fn read32(&self, address: PciAddress, offset: u16) -> u32;
    /// Writes the dword at `offset` (a multiple of 4).
    fn write32(&self, address: PciAddress, offset: u16, value: u32);
}

/// A function found on the bus, with its BARs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The function (backend [`FunctionBackend::Redox`]).
    pub function: PciFunction,
    /// Implemented BARs (empty for bridges).
    pub bars: Vec<Bar>,
    /// Whether this is a PCI-to-PCI bridge.
    pub is_bridge: bool,
}

fn addr(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress {
        segment,
        bus,
        device,
        function,
    }
}

/// Enumerates segment 0 from bus 0, bridges first, then what is behind them.
pub fn enumerate(cfg: &dyn ConfigAccess) -> Vec<Found> {
    let mut found = Vec::new();
    let mut scanned = BTreeSet::new();
    scan_bus(cfg, 0, None, &mut scanned, &mut found);
    found
}

fn scan_bus(
    cfg: &dyn ConfigAccess,
    bus: u8,
    parent: Option<PciAddress>,
    scanned: &mut BTreeSet<u8>,
    found: &mut Vec<Found>,
) {
    if !scanned.insert(bus) {
        log::warn!("pcid: bus {bus:02x} reached twice; a bridge is misconfigured");
        return;
    }
    for device in 0..32u8 {
        for function in 0..8u8 {
            let a = addr(0, bus, device, function);
            let id = cfg.read32(a, 0x00);
            let vendor = (id & 0xFFFF) as u16;
            if vendor == 0xFFFF || vendor == 0 {
                if function == 0 {
                    break;
                }
                continue;
            }
            let class_reg = cfg.read32(a, 0x08);
            let header = (cfg.read32(a, 0x0C) >> 16) as u8;
            let is_bridge = header & 0x7F == 0x01;
            let bars = if header & 0x7F == 0x00 {
                read_bars(cfg, a)
            } else {
                Vec::new()
            };
            found.push(Found {
                function: PciFunction {
                    address: a,
                    vendor,
                    device: (id >> 16) as u16,
                    class: (class_reg >> 24) as u8,
                    subclass: (class_reg >> 16) as u8,
                    interface: (class_reg >> 8) as u8,
                    revision: class_reg as u8,
                    parent,
                    backend: FunctionBackend::Redox,
                },
                bars,
                is_bridge,
            });
            if is_bridge {
                let secondary = (cfg.read32(a, 0x18) >> 8) as u8;
                if secondary > bus {
                    scan_bus(cfg, secondary, Some(a), scanned, found);
                } else {
                    log::warn!(
                        "pcid: bridge {a} has secondary bus {secondary:02x}, not above {bus:02x}; \
                         not scanning behind it"
                    );
                }
            }
            // Only function 0 says whether functions 1..7 exist.
            if function == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
}

/// Sizes and decodes the six BARs of a type 0 header.
pub fn read_bars(cfg: &dyn ConfigAccess, a: PciAddress) -> Vec<Bar> {
    let command = cfg.read32(a, 0x04);
    // Stop decoding while BARs hold all-ones, so no access lands in the
    // address range they briefly claim.
    cfg.write32(
        a,
        0x04,
        command & !u32::from(COMMAND_IO | COMMAND_MEMORY) & 0xFFFF,
    );
    let mut bars = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let off = 0x10 + 4 * u16::from(index);
        let original = cfg.read32(a, off);
        cfg.write32(a, off, u32::MAX);
        let mask = cfg.read32(a, off);
        cfg.write32(a, off, original);
        if original & 1 == 1 {
            // I/O BAR: bits 31:2 are the address (§6.2.5.1). A function that
            // decodes only 16 bits of I/O address hardwires bits 31:16 to 0.
            let mut size_mask = mask & !0x3;
            if size_mask != 0 && size_mask & 0xFFFF_0000 == 0 {
                size_mask |= 0xFFFF_0000;
            }
            if size_mask != 0 {
                let size = u64::from((!size_mask).wrapping_add(1));
                bars.push(Bar {
                    index,
                    kind: BarKind::Io,
                    address: u64::from(original & !0x3),
                    size: size.max(4),
                });
            }
            index += 1;
            continue;
        }
        let prefetchable = original & 0x8 != 0;
        match (original >> 1) & 0x3 {
            0b10 if index < 5 => {
                let off_hi = off + 4;
                let original_hi = cfg.read32(a, off_hi);
                cfg.write32(a, off_hi, u32::MAX);
                let mask_hi = cfg.read32(a, off_hi);
                cfg.write32(a, off_hi, original_hi);
                let mask64 = (u64::from(mask_hi) << 32) | u64::from(mask & !0xF);
                if mask64 != 0 {
                    bars.push(Bar {
                        index,
                        kind: BarKind::Memory64 { prefetchable },
                        address: (u64::from(original_hi) << 32) | u64::from(original & !0xF),
                        size: (!mask64).wrapping_add(1),
                    });
                }
                index += 2;
            }
            0b00 => {
                let size_mask = mask & !0xF;
                if size_mask != 0 {
                    bars.push(Bar {
                        index,
                        kind: BarKind::Memory32 { prefetchable },
                        address: u64::from(original & !0xF),
                        size: u64::from((!size_mask).wrapping_add(1)),
                    });
                }
                index += 1;
            }
            _ => {
                // Reserved type (or a 64-bit BAR in the last slot): skip it.
                index += 1;
            }
        }
    }
    cfg.write32(a, 0x04, command & 0xFFFF);
    bars
}

/// Turns on memory (and I/O, if the function has I/O BARs) decoding and bus
/// mastering, as Redox's pcid does before handing a function to its driver.
/// Returns the new command register value.
pub fn enable(cfg: &dyn ConfigAccess, a: PciAddress, bars: &[Bar]) -> u16 {
    let reg = cfg.read32(a, 0x04);
    let mut command = reg as u16 | COMMAND_MEMORY | COMMAND_BUS_MASTER;
    if bars.iter().any(|b| b.kind == BarKind::Io) {
        command |= COMMAND_IO;
    }
    // Writing 0 to the status half leaves its write-1-to-clear bits alone.
    cfg.write32(a, 0x04, u32::from(command));
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A configuration space model: per function 64 dwords plus BAR size masks.
    #[derive(Default)]
    struct Model {
        regs: RefCell<BTreeMap<(PciAddress, u16), u32>>,
        /// Writable bits of each BAR dword (the rest read back as the original).
        bar_masks: BTreeMap<(PciAddress, u16), u32>,
        writes: RefCell<Vec<(PciAddress, u16, u32)>>,
    }

    impl Model {
        fn function(&mut self, a: PciAddress, id: u32, class: u32, header: u8) {
            let mut r = self.regs.borrow_mut();
            r.insert((a, 0x00), id);
            r.insert((a, 0x08), class);
            r.insert((a, 0x0C), u32::from(header) << 16);
        }
        fn bar(&mut self, a: PciAddress, off: u16, value: u32, mask: u32) {
            self.regs.borrow_mut().insert((a, off), value);
            self.bar_masks.insert((a, off), mask);
        }
        fn set(&mut self, a: PciAddress, off: u16, value: u32) {
            self.regs.borrow_mut().insert((a, off), value);
        }
        fn get(&self, a: PciAddress, off: u16) -> u32 {
            self.read32(a, off)
        }
    }

    impl ConfigAccess for Model {
        fn read32(&self, a: PciAddress, off: u16) -> u32 {
            let r = self.regs.borrow();
            if !r.contains_key(&(a, 0)) {
                return u32::MAX;
            }
            r.get(&(a, off)).copied().unwrap_or(0)
        }
        fn write32(&self, a: PciAddress, off: u16, value: u32) {
            self.writes.borrow_mut().push((a, off, value));
            let mut r = self.regs.borrow_mut();
            if !r.contains_key(&(a, 0)) {
                return;
            }
            // BAR slots without a registered mask are unimplemented: hardwired to 0.
            let mask = match self.bar_masks.get(&(a, off)) {
                Some(m) => Some(*m),
                None if (0x10..=0x24).contains(&off) => Some(0),
                None => None,
            };
            let stored = match mask {
                Some(mask) => {
                    let old = r.get(&(a, off)).copied().unwrap_or(0);
                    // Address bits at or above the size are writable; the
                    // rest (type bits, hardwired zeros) keep their value.
                    (value & mask) | (old & !mask)
                }
                None => value,
            };
            r.insert((a, off), stored);
        }
    }

    /// QEMU-like machine: host bridge, a bridge to bus 1 with an NVMe
    /// controller behind it, and a multi-function device on bus 0.
    fn machine() -> Model {
        let mut m = Model::default();
        m.function(addr(0, 0, 0, 0), 0x29C0_8086, 0x0600_0000, 0x00);
        // PCIe root port at 00:1c.0 → secondary bus 1.
        m.function(addr(0, 0, 0x1C, 0), 0x7450_1B36, 0x0604_0000, 0x01);
        m.set(addr(0, 0, 0x1C, 0), 0x18, 0x0001_0100);
        // NVMe at 01:00.0: BAR0/1 64-bit non-prefetchable 16 KiB at 0xFEBF_0000.
        let nvme = addr(0, 1, 0, 0);
        m.function(nvme, 0x0010_1B36, 0x0108_0202, 0x00);
        m.bar(nvme, 0x10, 0xFEBF_0004, 0xFFFF_C000);
        m.bar(nvme, 0x14, 0x0000_0000, 0xFFFF_FFFF);
        // Multi-function device 00:1f.{0,3}; 1f.3 has an I/O BAR of 32 ports.
        m.function(addr(0, 0, 0x1F, 0), 0x2918_8086, 0x0601_0002, 0x80);
        let smbus = addr(0, 0, 0x1F, 3);
        m.function(smbus, 0x2930_8086, 0x0C05_0002, 0x00);
        m.bar(smbus, 0x20, 0x0000_0701, 0x0000_FFE0);
        m
    }

    #[test]
    fn walks_bridges_records_parents_and_multifunction_devices() {
        let m = machine();
        let found = enumerate(&m);
        let addrs: Vec<String> = found
            .iter()
            .map(|f| f.function.address.to_string())
            .collect();
        assert_eq!(
            addrs,
            [
                "0000:00:00.0",
                "0000:00:1c.0",
                "0000:01:00.0",
                "0000:00:1f.0",
                "0000:00:1f.3"
            ]
        );
        let nvme = &found[2];
        assert_eq!(nvme.function.parent, Some(addr(0, 0, 0x1C, 0)));
        assert_eq!(
            (
                nvme.function.class,
                nvme.function.subclass,
                nvme.function.interface
            ),
            (1, 8, 2)
        );
        assert_eq!(
            (nvme.function.vendor, nvme.function.device),
            (0x1B36, 0x0010)
        );
        assert!(found[1].is_bridge && !nvme.is_bridge);
        assert_eq!(found[0].function.parent, None);
    }

    #[test]
    fn sizes_64_bit_memory_and_io_bars_and_restores_registers() {
        let m = machine();
        let found = enumerate(&m);
        assert_eq!(
            found[2].bars,
            vec![Bar {
                index: 0,
                kind: BarKind::Memory64 {
                    prefetchable: false
                },
                address: 0xFEBF_0000,
                size: 0x4000,
            }]
        );
        assert_eq!(
            found[4].bars,
            vec![Bar {
                index: 4,
                kind: BarKind::Io,
                address: 0x700,
                size: 0x20,
            }]
        );
        let nvme = addr(0, 1, 0, 0);
        assert_eq!(m.get(nvme, 0x10), 0xFEBF_0004, "BAR0 restored");
        assert_eq!(m.get(nvme, 0x14), 0, "BAR1 restored");
        // Decoding was off while the BARs held all-ones.
        let writes = m.writes.borrow();
        let first_bar_write = writes
            .iter()
            .position(|&(a, off, _)| a == nvme && off == 0x10)
            .unwrap();
        let disable = writes[..first_bar_write]
            .iter()
            .rev()
            .find(|&&(a, off, _)| a == nvme && off == 0x04)
            .unwrap();
        assert_eq!(disable.2 & u32::from(COMMAND_MEMORY | COMMAND_IO), 0);
    }

    #[test]
    fn enable_sets_memory_and_bus_master_and_io_only_with_io_bars() {
        let m = machine();
        let found = enumerate(&m);
        let nvme = &found[2];
        let cmd = enable(&m, nvme.function.address, &nvme.bars);
        assert_eq!(cmd, COMMAND_MEMORY | COMMAND_BUS_MASTER);
        assert_eq!(m.get(nvme.function.address, 0x04) as u16, cmd);
        let smbus = &found[4];
        let cmd = enable(&m, smbus.function.address, &smbus.bars);
        assert_eq!(cmd, COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER);
    }

    #[test]
    fn a_bridge_looping_back_does_not_hang() {
        let mut m = machine();
        // A bridge on bus 1 claiming bus 1 again, and one claiming bus 0.
        m.function(addr(0, 1, 2, 0), 0x7450_1B36, 0x0604_0000, 0x01);
        m.set(addr(0, 1, 2, 0), 0x18, 0x0001_0101);
        m.function(addr(0, 1, 3, 0), 0x7450_1B36, 0x0604_0000, 0x01);
        m.set(addr(0, 1, 3, 0), 0x18, 0x0000_0100);
        let found = enumerate(&m);
        assert_eq!(found.len(), 7);
    }

    #[test]
    fn empty_bus_and_all_ones_reads_find_nothing() {
        let m = Model::default();
        assert!(enumerate(&m).is_empty());
    }
}
