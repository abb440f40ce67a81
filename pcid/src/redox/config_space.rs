//! Configuration space: the access trait pcid's Redox logic is written
//! against, and the routing between ECAM and the configuration ports.
//!
//! Everything that reads or writes configuration space on Redox (enumeration,
//! enabling a function, Redox's driver interface, the `access` node acpid
//! uses) goes through [`ConfigAccess`], so it is unit-tested on any host
//! against a model of configuration space.
//!
//! [`Router`] decides, for every single access, which mechanism serves it —
//! the same per-access rule Redox's pcid (`cfg_access`) has:
//!
//! * a function on a bus that an ECAM region from the ACPI MCFG table decodes
//!   is reached through that region (offsets `0x000..=0xFFC`);
//! * any other function is reached through configuration mechanism #1, ports
//!   `0xCF8`/`0xCFC`, which only knows segment 0 and offsets `0x00..=0xFC`.
//!
//! Where Redox's pcid panics (an unaligned offset, an offset past the
//! configuration space, a segment or offset the ports cannot express), the
//! router reads all-ones and drops writes, as a master abort would.

use pcid_interface::function::PciAddress;

use super::mcfg::McfgEntry;

/// Size of one function's configuration space in ECAM.
pub const CONFIG_SPACE_LEN: u16 = 0x1000;
/// Size of one function's configuration space through the ports.
pub const LEGACY_CONFIG_SPACE_LEN: u16 = 0x100;

/// 32-bit access to configuration space.
///
/// `offset` is a multiple of 4 below [`CONFIG_SPACE_LEN`]; implementations
/// read all-ones and ignore writes for anything they cannot reach.
pub trait ConfigAccess {
    /// Reads the dword at `offset` of `address`.
    fn read32(&self, address: PciAddress, offset: u16) -> u32;
    /// Writes the dword at `offset` of `address`.
    fn write32(&self, address: PciAddress, offset: u16, value: u32);
}

impl<T: ConfigAccess + ?Sized> ConfigAccess for &T {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        (**self).read32(address, offset)
    }
    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        (**self).write32(address, offset, value)
    }
}

/// One mapped ECAM window (a whole MCFG entry's buses).
pub trait EcamWindow {
    /// Reads the dword at byte `offset` of the window.
    fn read32(&self, offset: usize) -> u32;
    /// Writes the dword at byte `offset` of the window.
    fn write32(&self, offset: usize, value: u32);
}

/// Configuration mechanism #1 (ports `0xCF8`/`0xCFC`).
pub trait PortMechanism {
    /// Reads the dword at `offset` (`0x00..=0xFC`) of bus/device/function.
    fn read32(&self, bus: u8, device: u8, function: u8, offset: u8) -> u32;
    /// Writes the dword at `offset` (`0x00..=0xFC`) of bus/device/function.
    fn write32(&self, bus: u8, device: u8, function: u8, offset: u8, value: u32);
}

/// Which mechanism serves an access (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// ECAM region `index`, byte `offset` inside its window.
    Ecam {
        /// Index of the region.
        index: usize,
        /// Offset inside the region's window.
        offset: usize,
    },
    /// The configuration ports.
    Ports {
        /// Register offset (`0x00..=0xFC`).
        offset: u8,
    },
    /// Nothing can reach it: reads are all-ones, writes are dropped.
    Unreachable,
}

/// ECAM regions plus the port fallback; see the module documentation.
#[derive(Debug)]
pub struct Router<W, P> {
    regions: Vec<(McfgEntry, W)>,
    ports: P,
}

impl<W: EcamWindow, P: PortMechanism> Router<W, P> {
    /// A router over mapped ECAM regions (possibly none) and the ports.
    pub fn new(regions: Vec<(McfgEntry, W)>, ports: P) -> Self {
        Self { regions, ports }
    }

    /// Number of ECAM regions in use.
    pub fn ecam_regions(&self) -> usize {
        self.regions.len()
    }

    /// Where an access to `offset` of `address` goes.
    pub fn route(&self, address: PciAddress, offset: u16) -> Route {
        if offset % 4 != 0 || offset >= CONFIG_SPACE_LEN {
            return Route::Unreachable;
        }
        if let Some((index, off)) = self
            .regions
            .iter()
            .enumerate()
            .find_map(|(i, (entry, _))| entry.offset_of(address, offset).map(|o| (i, o)))
        {
            return Route::Ecam { index, offset: off };
        }
        if address.segment == 0 && offset < LEGACY_CONFIG_SPACE_LEN {
            // `offset < 0x100` was just checked, so it fits a byte.
            return Route::Ports {
                offset: offset as u8,
            };
        }
        Route::Unreachable
    }
}

impl<W: EcamWindow, P: PortMechanism> ConfigAccess for Router<W, P> {
    fn read32(&self, address: PciAddress, offset: u16) -> u32 {
        match self.route(address, offset) {
            Route::Ecam { index, offset } => self.regions[index].1.read32(offset),
            Route::Ports { offset } => {
                self.ports
                    .read32(address.bus, address.device, address.function, offset)
            }
            Route::Unreachable => u32::MAX,
        }
    }

    fn write32(&self, address: PciAddress, offset: u16, value: u32) {
        match self.route(address, offset) {
            Route::Ecam { index, offset } => self.regions[index].1.write32(offset, value),
            Route::Ports { offset } => {
                self.ports
                    .write32(address.bus, address.device, address.function, offset, value)
            }
            Route::Unreachable => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod model;

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Window {
        log: RefCell<Vec<(char, usize)>>,
    }
    impl EcamWindow for Window {
        fn read32(&self, offset: usize) -> u32 {
            self.log.borrow_mut().push(('r', offset));
            0xEC00_0000 | offset as u32
        }
        fn write32(&self, offset: usize, _value: u32) {
            self.log.borrow_mut().push(('w', offset));
        }
    }

    /// A port access: kind, bus, device, function, offset.
    type PortAccess = (char, u8, u8, u8, u8);

    #[derive(Default)]
    struct Ports {
        log: RefCell<Vec<PortAccess>>,
    }
    impl PortMechanism for Ports {
        fn read32(&self, bus: u8, device: u8, function: u8, offset: u8) -> u32 {
            self.log
                .borrow_mut()
                .push(('r', bus, device, function, offset));
            0x9000_0000 | u32::from(offset)
        }
        fn write32(&self, bus: u8, device: u8, function: u8, offset: u8, _value: u32) {
            self.log
                .borrow_mut()
                .push(('w', bus, device, function, offset));
        }
    }

    fn a(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            segment,
            bus,
            device,
            function,
        }
    }

    fn router() -> Router<Window, Ports> {
        // ECAM for buses 0..=0x3f only (a firmware that describes less than
        // every bus); bus 0x80 is left to the ports.
        Router::new(
            vec![(
                McfgEntry {
                    base: 0xB000_0000,
                    segment: 0,
                    start_bus: 0,
                    end_bus: 0x3F,
                },
                Window::default(),
            )],
            Ports::default(),
        )
    }

    #[test]
    fn each_access_goes_to_ecam_when_a_region_decodes_the_bus_else_to_the_ports() {
        let r = router();
        assert_eq!(
            r.read32(a(0, 1, 2, 3), 0x104),
            0xEC00_0000 | (1 << 20 | 2 << 15 | 3 << 12 | 0x104)
        );
        assert_eq!(r.read32(a(0, 0x80, 2, 3), 0x10), 0x9000_0010);
        r.write32(a(0, 0x80, 31, 7), 0xFC, 1);
        assert_eq!(
            *r.ports.log.borrow(),
            [('r', 0x80, 2, 3, 0x10), ('w', 0x80, 31, 7, 0xFC)]
        );
        assert_eq!(r.regions[0].1.log.borrow().len(), 1);
    }

    #[test]
    fn what_no_mechanism_reaches_reads_all_ones_and_drops_writes() {
        let r = router();
        // Extended space of a port-only bus, another segment, bad offsets.
        for (addr, off) in [
            (a(0, 0x80, 0, 0), 0x100),
            (a(1, 0, 0, 0), 0x00),
            (a(0, 0, 0, 0), 0x1000),
            (a(0, 0, 0, 0), 0x02),
        ] {
            assert_eq!(r.route(addr, off), Route::Unreachable, "{addr} {off:#x}");
            assert_eq!(r.read32(addr, off), u32::MAX);
            r.write32(addr, off, 0);
        }
        assert!(r.ports.log.borrow().is_empty());
        assert!(r.regions[0].1.log.borrow().is_empty());
    }

    #[test]
    fn without_mcfg_everything_on_segment_0_uses_the_ports() {
        let r: Router<Window, Ports> = Router::new(Vec::new(), Ports::default());
        assert_eq!(r.ecam_regions(), 0);
        assert_eq!(r.route(a(0, 0, 4, 0), 0x3C), Route::Ports { offset: 0x3C });
        assert_eq!(r.route(a(0, 0, 4, 0), 0x40 << 2), Route::Unreachable);
    }
}
