//! Redox specifics a driver needs besides the channel.
//!
//! * BARs ([`Bar`], [`BarKind`], [`memory_bar`]): on Redox only pcid can read
//!   configuration space, so pcid tells a driver where its BARs are in
//!   `Welcome` (`FunctionBackend::Redox { bars, .. }`, PROTOCOL.md §4) and
//!   the driver maps them with `pcid_hw::redox::PhysMap`.
//! * Scheme paths ([`function_dir`]).
//! * Daemon start-up in `daemon` (fork with a readiness pipe, `INIT_NOTIFY`,
//!   and on Redox `setrens(0, 0)`; portable to every Unix so it is tested on
//!   Linux) and, with `target_os = "redox"`, waiting with deadlines in `event`
//!   (event queues, `/scheme/time` timers).
//!
//! Names and BARs are portable so they are unit-tested on every host.

use crate::function::PciAddress;

#[cfg(unix)]
pub mod daemon;
#[cfg(target_os = "redox")]
pub mod event;
pub mod timer;

/// Root of pcid's scheme.
pub const PCI_SCHEME_ROOT: &str = "/scheme/pci";

/// Directory of a function in pcid's scheme, named as Redox's pcid lists
/// functions (pci_types' address display with `:` replaced by `--`):
/// `/scheme/pci/00-00--04.0`.
pub fn function_dir(address: PciAddress) -> String {
    format!(
        "{PCI_SCHEME_ROOT}/{:02x}-{:02x}--{:02x}.{:x}",
        address.segment, address.bus, address.device, address.function
    )
}

/// Parses the scheme directory name of a function (`00-00--04.0`; hex
/// fields of any width, so `0000-00--04.0` too).
pub fn parse_function_name(name: &str) -> Option<PciAddress> {
    let (segment, rest) = name.split_once('-')?;
    let (bus, rest) = rest.split_once("--")?;
    let (device, function) = rest.split_once('.')?;
    let all_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(all_hex(segment) && all_hex(bus) && all_hex(device) && all_hex(function)) {
        return None;
    }
    let address = PciAddress {
        segment: u16::from_str_radix(segment, 16).ok()?,
        bus: u8::from_str_radix(bus, 16).ok()?,
        device: u8::from_str_radix(device, 16).ok()?,
        function: u8::from_str_radix(function, 16).ok()?,
    };
    (address.device <= 31 && address.function <= 7).then_some(address)
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
    fn function_dir_uses_redox_naming_and_parses_back() {
        let a: PciAddress = "0000:00:04.0".parse().unwrap();
        assert_eq!(function_dir(a), "/scheme/pci/00-00--04.0");
        assert_eq!(parse_function_name("00-00--04.0"), Some(a));
        assert_eq!(parse_function_name("0000-00--04.0"), Some(a));
        let b: PciAddress = "0001:3a:1f.7".parse().unwrap();
        assert_eq!(parse_function_name("0001-3a--1f.7"), Some(b));
        for bad in [
            "",
            "0000-00-04.0",
            "0000-00--20.0",
            "0000-00--04.8",
            "x-00--04.0",
            "0000-00--04.",
        ] {
            assert_eq!(parse_function_name(bad), None, "{bad:?}");
        }
    }

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
