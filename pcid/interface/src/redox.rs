//! Redox specifics a driver needs besides the channel.
//!
//! * The BAR listing pcid serves at `/scheme/pci/<SS>-<BB>--<DD>.<F>/bars`
//!   ([`Bar`], [`format_bars`], [`parse_bars`]): on Redox only pcid can read
//!   configuration space, so a driver learns where its BARs are from this
//!   file and maps them with `pcid_hw::redox::PhysMap`. The format is text,
//!   one BAR per line, documented in `PROTOCOL.md` ("Transport on Redox"):
//!   `<index> <kind> <address> <size>` with kind `mem32`, `mem32-pf`, `mem64`,
//!   `mem64-pf` or `io`, and address/size as `0x`-prefixed hex.
//! * Scheme paths ([`function_dir`]).
//! * Daemon start-up in `daemon` (fork with a readiness pipe, `INIT_NOTIFY`,
//!   and on Redox `setrens(0, 0)`; portable to every Unix so it is tested on
//!   Linux) and, with `target_os = "redox"`, waiting with deadlines in `event`
//!   (event queues, `/scheme/time` timers).
//!
//! Parsing is portable so it is unit-tested on every host.

use std::fmt::Write as _;

use crate::function::PciAddress;

#[cfg(unix)]
pub mod daemon;
#[cfg(target_os = "redox")]
pub mod event;
pub mod timer;

/// Root of pcid's scheme.
pub const PCI_SCHEME_ROOT: &str = "/scheme/pci";
/// Largest accepted BAR listing, in bytes (6 lines of at most ~50 bytes fit easily).
pub const MAX_BARS_LEN: usize = 1024;

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

/// Error parsing a BAR listing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BAR listing line {line}: {reason}")]
pub struct BarParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Formats BARs as pcid serves them in the `bars` file.
pub fn format_bars(bars: &[Bar]) -> String {
    let mut out = String::new();
    for bar in bars {
        let kind = match bar.kind {
            BarKind::Memory32 {
                prefetchable: false,
            } => "mem32",
            BarKind::Memory32 { prefetchable: true } => "mem32-pf",
            BarKind::Memory64 {
                prefetchable: false,
            } => "mem64",
            BarKind::Memory64 { prefetchable: true } => "mem64-pf",
            BarKind::Io => "io",
        };
        let _ = writeln!(
            out,
            "{} {kind} {:#x} {:#x}",
            bar.index, bar.address, bar.size
        );
    }
    out
}

/// The memory BAR in slot `index` (the lower slot of a 64-bit BAR), if the
/// function implements one there.
pub fn memory_bar(bars: &[Bar], index: u8) -> Option<Bar> {
    bars.iter()
        .find(|b| b.index == index && b.kind != BarKind::Io)
        .copied()
}

/// Parses a BAR listing (the `bars` file). Empty lines are ignored.
pub fn parse_bars(text: &str) -> Result<Vec<Bar>, BarParseError> {
    if text.len() > MAX_BARS_LEN {
        return Err(BarParseError {
            line: 0,
            reason: format!("{} bytes, more than {MAX_BARS_LEN}", text.len()),
        });
    }
    let mut bars: Vec<Bar> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| BarParseError {
            line: i + 1,
            reason,
        };
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [index, kind, address, size] = fields[..] else {
            return Err(err(format!("expected 4 fields, found {}", fields.len())));
        };
        let index: u8 = index
            .parse()
            .ok()
            .filter(|i| *i <= 5)
            .ok_or_else(|| err(format!("BAR index {index:?} is not 0..=5")))?;
        let kind = match kind {
            "mem32" => BarKind::Memory32 {
                prefetchable: false,
            },
            "mem32-pf" => BarKind::Memory32 { prefetchable: true },
            "mem64" => BarKind::Memory64 {
                prefetchable: false,
            },
            "mem64-pf" => BarKind::Memory64 { prefetchable: true },
            "io" => BarKind::Io,
            other => return Err(err(format!("unknown BAR kind {other:?}"))),
        };
        let hex = |s: &str, what: &str| {
            s.strip_prefix("0x")
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or_else(|| err(format!("{what} {s:?} is not 0x-prefixed hex")))
        };
        let address = hex(address, "address")?;
        let size = hex(size, "size")?;
        if size == 0 || !size.is_power_of_two() {
            return Err(err(format!("size {size:#x} is not a power of two")));
        }
        if address.checked_add(size).is_none() {
            return Err(err(format!("{address:#x} + {size:#x} overflows")));
        }
        if bars.iter().any(|b| b.index == index) {
            return Err(err(format!("BAR {index} listed twice")));
        }
        bars.push(Bar {
            index,
            kind,
            address,
            size,
        });
    }
    Ok(bars)
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
    fn bar_listing_round_trips() {
        let bars = vec![
            Bar {
                index: 0,
                kind: BarKind::Memory64 {
                    prefetchable: false,
                },
                address: 0xFEBF_0000,
                size: 0x4000,
            },
            Bar {
                index: 4,
                kind: BarKind::Io,
                address: 0xC000,
                size: 0x20,
            },
            Bar {
                index: 5,
                kind: BarKind::Memory32 { prefetchable: true },
                address: 0xE000_0000,
                size: 0x100_0000,
            },
        ];
        let text = format_bars(&bars);
        assert_eq!(
            text,
            "0 mem64 0xfebf0000 0x4000\n4 io 0xc000 0x20\n5 mem32-pf 0xe0000000 0x1000000\n"
        );
        assert_eq!(parse_bars(&text).unwrap(), bars);
        assert_eq!(parse_bars("").unwrap(), vec![]);
    }

    #[test]
    fn memory_bar_skips_io_and_absent_slots() {
        let bars = parse_bars("0 io 0xc000 0x20\n2 mem64 0xfebf0000 0x4000\n").unwrap();
        assert_eq!(memory_bar(&bars, 0), None);
        assert_eq!(memory_bar(&bars, 1), None);
        assert_eq!(memory_bar(&bars, 2).map(|b| b.address), Some(0xFEBF_0000));
    }

    #[test]
    fn bad_bar_listings_are_typed_errors() {
        for (text, line) in [
            ("0 mem64 0xfebf0000", 1),
            ("6 mem64 0xfebf0000 0x4000", 1),
            ("0 mem16 0xfebf0000 0x4000", 1),
            ("0 mem64 febf0000 0x4000", 1),
            ("0 mem64 0xfebf0000 0x3000", 1),
            ("0 mem64 0xffffffffffffffff 0x1000", 1),
            ("0 io 0x10 0x10\n\n0 io 0x20 0x10", 3),
        ] {
            let err = parse_bars(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
        assert!(parse_bars(&"0 io 0x10 0x10\n".repeat(100)).is_err());
    }
}
