//! Redox specifics a driver needs besides the channel.
//!
//! * BARs: on Redox only pcid can read configuration space, so pcid tells
//!   a driver where its BARs are in `Welcome` (`FunctionBackend::Redox {
//!   bars, .. }`, [`crate::function::Bar`], PROTOCOL.md §4) and the driver
//!   maps them with `pcid_hw::redox::PhysMap`.
//! * Scheme paths ([`function_dir`]).
//! * Daemon start-up in `daemon` (fork with a readiness pipe, `INIT_NOTIFY`,
//!   and on Redox `setrens(0, 0)`; portable to every Unix so it is tested on
//!   Linux) and, with `target_os = "redox"`, waiting with deadlines in `event`
//!   (event queues, `/scheme/time` timers).
//!
//! Names are portable so they are unit-tested on every host.

use crate::function::PciAddress;

#[cfg(unix)]
pub mod daemon;
#[cfg(target_os = "redox")]
pub mod event;
pub mod timer;

/// Root of pcid's scheme.
pub const PCI_SCHEME_ROOT: &str = "/scheme/pci";

/// Name of a function's directory in pcid's scheme, as Redox's pcid lists
/// functions (pci_types' address display with `:` replaced by `--`):
/// `00-00--04.0`. [`parse_function_name`] reads it back.
pub fn function_name(address: PciAddress) -> String {
    format!(
        "{:02x}-{:02x}--{:02x}.{:x}",
        address.segment, address.bus, address.device, address.function
    )
}

/// Directory of a function in pcid's scheme: `/scheme/pci/00-00--04.0`
/// ([`function_name`]).
pub fn function_dir(address: PciAddress) -> String {
    format!("{PCI_SCHEME_ROOT}/{}", function_name(address))
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
}
