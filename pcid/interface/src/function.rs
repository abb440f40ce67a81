//! The PCI function a driver process serves, as pcid describes it.

use std::fmt;
use std::str::FromStr;

/// A PCI function address: segment, bus, device, function (`0000:00:04.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI segment (domain).
    pub segment: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// Error parsing a [`PciAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {0:?}: expected SSSS:BB:DD.F, e.g. 0000:00:04.0")]
pub struct AddressParseError(pub String);

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = AddressParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressParseError(s.to_string());
        let (seg, rest) = s.split_once(':').ok_or_else(err)?;
        let (bus, rest) = rest.split_once(':').ok_or_else(err)?;
        let (dev, func) = rest.split_once('.').ok_or_else(err)?;
        let segment = u16::from_str_radix(seg, 16).map_err(|_| err())?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| err())?;
        let device = u8::from_str_radix(dev, 16).map_err(|_| err())?;
        let function = u8::from_str_radix(func, 16).map_err(|_| err())?;
        if seg.len() != 4 || device > 31 || function > 7 {
            return Err(err());
        }
        Ok(Self {
            segment,
            bus,
            device,
            function,
        })
    }
}

/// How the driver reaches the function's registers and DMA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionBackend {
    /// A simulated device: there is no hardware to reach. A test build of a
    /// driver may run a device model in-process; pcid's simulated bus tells
    /// it where the model's description is outside the protocol, in the
    /// driver's environment ([`crate::PCID_SIM_MODEL`]), the way a real bus
    /// tells a driver where its BARs are. A driver for real hardware refuses it.
    Simulated,
    /// A real function on Linux, reached through sysfs
    /// (`sysfs_path` is e.g. `/sys/bus/pci/devices/0000:00:04.0`).
    LinuxSysfs {
        /// Directory of the function in sysfs.
        sysfs_path: String,
    },
    /// A real function on Redox, reached through pcid's scheme. pcid reads
    /// configuration space for the driver (on Redox only pcid can), so it
    /// tells the driver what it needs to reach the device.
    Redox {
        /// The implemented BARs (at most 6), as pcid sized them.
        bars: Vec<Bar>,
        /// The legacy interrupt line (IRQ) when the function has an interrupt
        /// pin, as pcid set it up when it enabled the function.
        legacy_irq: Option<u8>,
    },
}

/// Everything pcid tells a driver about its function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Address of the function.
    pub address: PciAddress,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub interface: u8,
    /// Revision id.
    pub revision: u8,
    /// The bridge this function sits behind, if any.
    pub parent: Option<PciAddress>,
    /// How to reach the hardware.
    pub backend: FunctionBackend,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory space.
    Memory32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// 64-bit memory space (occupies two BAR slots).
    Memory64 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O space.
    Io,
}

/// One implemented BAR of a function (PCI Local Bus Specification 3.0, §6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR slot, 0..=5 (the lower slot of a 64-bit BAR).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Base address (physical memory address or I/O port).
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// The memory BAR in slot `index` (the lower slot of a 64-bit BAR), if the
/// function implements one there.
pub fn memory_bar(bars: &[Bar], index: u8) -> Option<Bar> {
    bars.iter()
        .find(|b| b.index == index && b.kind != BarKind::Io)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_bar_skips_io_and_absent_slots() {
        let bars = [
            Bar {
                index: 0,
                kind: BarKind::Io,
                address: 0xC000,
                size: 0x20,
            },
            Bar {
                index: 2,
                kind: BarKind::Memory64 {
                    prefetchable: false,
                },
                address: 0xFEBF_0000,
                size: 0x4000,
            },
        ];
        assert_eq!(memory_bar(&bars, 0), None);
        assert_eq!(memory_bar(&bars, 1), None);
        assert_eq!(memory_bar(&bars, 2).map(|b| b.address), Some(0xFEBF_0000));
    }
}
