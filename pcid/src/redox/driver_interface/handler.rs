//! What each request of Redox's driver interface does, over configuration
//! space. Register layouts are from the PCI Local Bus Specification 3.0
//! (§6.2 header, §6.7 capability list, §6.8.1 MSI, §6.8.2 MSI-X).
//!
//! The behaviour is Redox's pcid's (`driver_handler.rs`, `enable_function`,
//! pci_types 0.10), with these differences, each where Redox would panic or
//! misbehave:
//!
//! * `ReadConfig`/`WriteConfig` with an offset that is not a multiple of 4 or
//!   lies past 0xFFC are answered `Error(InvalidBitPattern)` (Redox's pcid
//!   panics on them);
//! * a capability list that loops is followed for at most
//!   [`MAX_CAPABILITIES`] entries; a vendor-specific capability whose length
//!   is not a multiple of 4 (or below 4) is answered with no data (Redox's
//!   pcid panics);
//! * MSI mask bits are written for 32-bit functions with per-vector masking
//!   too (at 0x0C, per the specification; pci_types only handles 64-bit ones);
//! * enabling a function writes 0 to the status half of the command dword,
//!   so the error bits firmware left set are not cleared as a side effect.

use pcid_interface::function::PciAddress;

use super::{
    FeatureInfo, FunctionConfig, LegacyInterruptLine, MsiInfo, MsixInfo, PciFeature, Request,
    Response, ServerError, SetFeatureInfo,
};
use crate::redox::config_space::{ConfigAccess, CONFIG_SPACE_LEN};

/// Command register: I/O Space Enable.
pub const COMMAND_IO: u32 = 1 << 0;
/// Command register: Memory Space Enable.
pub const COMMAND_MEMORY: u32 = 1 << 1;
/// Command register: Bus Master Enable.
pub const COMMAND_BUS_MASTER: u32 = 1 << 2;
/// Status register (bit of the command dword): capability list present.
pub const STATUS_CAPABILITIES: u32 = 1 << 20;
/// Longest capability list followed.
pub const MAX_CAPABILITIES: usize = 48;
/// Interrupt line given to a function whose line reads 0xFF (as Redox does).
pub const DEFAULT_IRQ: u8 = 9;

/// Capability ids (PCI Code and ID Assignment Specification).
const CAP_MSI: u8 = 0x05;
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;

/// An MSI capability (§6.8.1), as read at enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiCapability {
    /// Offset of the capability.
    pub offset: u16,
    /// Per-vector masking capable.
    pub per_vector_masking: bool,
    /// 64-bit address capable.
    pub is_64bit: bool,
    /// Multiple Message Capable (0..=5; reserved values read as 0).
    pub multiple_message_capable: u8,
}

impl MsiCapability {
    fn data_offset(&self) -> u16 {
        self.offset + if self.is_64bit { 0x0C } else { 0x08 }
    }
    fn mask_offset(&self) -> u16 {
        self.offset + if self.is_64bit { 0x10 } else { 0x0C }
    }
}

/// An MSI-X capability (§6.8.2), as read at enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixCapability {
    /// Offset of the capability.
    pub offset: u16,
    /// Entries in the table.
    pub table_size: u16,
    /// Table BIR (bits 2:0) and offset.
    pub table: u32,
    /// Pending bit array BIR (bits 2:0) and offset.
    pub pba: u32,
}

/// One entry of a function's capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// MSI.
    Msi(MsiCapability),
    /// MSI-X.
    MsiX(MsixCapability),
    /// Vendor specific (read when a driver asks).
    Vendor {
        /// Offset of the capability.
        offset: u16,
    },
    /// Anything else.
    Other {
        /// Capability id.
        id: u8,
        /// Offset of the capability.
        offset: u16,
    },
}

/// A function as pcid keeps it for Redox's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// What `RequestConfig` answers.
    pub config: FunctionConfig,
    /// The capability list, read at enumeration.
    pub capabilities: Vec<Capability>,
}

/// Reads the capability list of a function whose status says it has one.
pub fn read_capabilities(cfg: &dyn ConfigAccess, a: PciAddress) -> Vec<Capability> {
    let mut out = Vec::new();
    if cfg.read32(a, 0x04) & STATUS_CAPABILITIES == 0 {
        return out;
    }
    let mut offset = (cfg.read32(a, 0x34) & 0xFC) as u16;
    let mut visited = 0;
    while offset != 0 {
        visited += 1;
        if visited > MAX_CAPABILITIES {
            log::warn!("{a}: capability list longer than {MAX_CAPABILITIES} entries; it loops");
            break;
        }
        let dword = cfg.read32(a, offset);
        let id = dword as u8;
        let next = ((dword >> 8) & 0xFC) as u16;
        let control = (dword >> 16) as u16;
        match id {
            0 => {}
            CAP_MSI => {
                let mmc = ((control >> 1) & 0x7) as u8;
                out.push(Capability::Msi(MsiCapability {
                    offset,
                    per_vector_masking: control & (1 << 8) != 0,
                    is_64bit: control & (1 << 7) != 0,
                    multiple_message_capable: if mmc <= 5 { mmc } else { 0 },
                }));
            }
            CAP_MSIX => out.push(Capability::MsiX(MsixCapability {
                offset,
                table_size: (control & 0x7FF) + 1,
                table: cfg.read32(a, offset + 4),
                pba: cfg.read32(a, offset + 8),
            })),
            CAP_VENDOR => out.push(Capability::Vendor { offset }),
            id => out.push(Capability::Other { id, offset }),
        }
        offset = next;
    }
    out
}

/// The data of a vendor-specific capability: its bytes after the 3-byte
/// header (id, next, length), up to its length.
pub fn vendor_capability(cfg: &dyn ConfigAccess, a: PciAddress, offset: u16) -> Vec<u8> {
    let length = ((cfg.read32(a, offset) >> 16) & 0xFF) as u16;
    if length == 0 {
        log::warn!("{a}: vendor-specific capability at {offset:#x} has length 0");
        return Vec::new();
    }
    if length < 4 || length % 4 != 0 || offset + length > CONFIG_SPACE_LEN {
        log::warn!("{a}: vendor-specific capability at {offset:#x} has invalid length {length}");
        return Vec::new();
    }
    let mut raw = Vec::with_capacity(usize::from(length));
    for off in (offset..offset + length).step_by(4) {
        raw.extend_from_slice(&cfg.read32(a, off).to_le_bytes());
    }
    raw.split_off(3)
}

fn update(cfg: &dyn ConfigAccess, a: PciAddress, offset: u16, f: impl FnOnce(u32) -> u32) {
    let value = f(cfg.read32(a, offset));
    cfg.write32(a, offset, value);
}

fn set_bit(value: u32, bit: u32, on: bool) -> u32 {
    if on {
        value | (1 << bit)
    } else {
        value & !(1 << bit)
    }
}

/// Enables a function as Redox's pcid does when its channel is opened or a
/// driver asks (`EnableDevice`): bus mastering, memory and I/O decoding on;
/// MSI and MSI-X off (a previous driver may have left them on); interrupt
/// line 0xFF replaced by [`DEFAULT_IRQ`]. Records and returns the legacy
/// interrupt (none when the interrupt pin is 0 or invalid).
pub fn enable(cfg: &dyn ConfigAccess, f: &mut Function) -> Option<LegacyInterruptLine> {
    let a = f.config.addr;
    // Writing 0 to the status half leaves its write-1-to-clear bits alone.
    update(cfg, a, 0x04, |d| {
        (d & 0xFFFF) | COMMAND_BUS_MASTER | COMMAND_MEMORY | COMMAND_IO
    });
    for cap in &f.capabilities {
        match cap {
            Capability::Msi(m) => update(cfg, a, m.offset, |d| set_bit(d, 16, false)),
            Capability::MsiX(m) => update(cfg, a, m.offset, |d| set_bit(d, 31, false)),
            _ => {}
        }
    }
    let dword = cfg.read32(a, 0x3C);
    let pin = (dword >> 8) as u8;
    let mut line = dword as u8;
    if line == 0xFF {
        line = DEFAULT_IRQ;
    }
    cfg.write32(a, 0x3C, (dword & !0xFF) | u32::from(line));
    let legacy = match pin {
        0 => None,
        1..=4 => Some(LegacyInterruptLine {
            irq: line,
            phandled: None,
        }),
        other => {
            log::warn!("{a}: invalid interrupt pin {other}");
            None
        }
    };
    f.config.legacy_interrupt_line = legacy;
    legacy
}

fn msi(f: &Function) -> Option<MsiCapability> {
    f.capabilities.iter().find_map(|c| match c {
        Capability::Msi(m) => Some(*m),
        _ => None,
    })
}

fn msix(f: &Function) -> Option<MsixCapability> {
    f.capabilities.iter().find_map(|c| match c {
        Capability::MsiX(m) => Some(*m),
        _ => None,
    })
}

fn config_offset_ok(offset: u16) -> bool {
    offset % 4 == 0 && offset < CONFIG_SPACE_LEN
}

/// Answers one request for function `f`.
pub fn respond(cfg: &dyn ConfigAccess, f: &mut Function, request: Request) -> Response {
    let a = f.config.addr;
    match request {
        Request::EnableDevice => {
            enable(cfg, f);
            Response::EnabledDevice
        }
        Request::RequestConfig => Response::Config(f.config),
        Request::RequestFeatures => Response::AllFeatures(
            f.capabilities
                .iter()
                .filter_map(|c| match c {
                    Capability::Msi(_) => Some(PciFeature::Msi),
                    Capability::MsiX(_) => Some(PciFeature::MsiX),
                    _ => None,
                })
                .collect(),
        ),
        Request::RequestVendorCapabilities => Response::VendorCapabilities(
            f.capabilities
                .iter()
                .filter_map(|c| match c {
                    Capability::Vendor { offset } => Some(vendor_capability(cfg, a, *offset)),
                    _ => None,
                })
                .collect(),
        ),
        Request::EnableFeature(feature) => {
            // MSI and MSI-X must not be on at once: turn the other one off first.
            let (other, this) = match feature {
                PciFeature::Msi => (
                    msix(f).map(|m| (m.offset, 31)),
                    msi(f).map(|m| (m.offset, 16)),
                ),
                PciFeature::MsiX => (
                    msi(f).map(|m| (m.offset, 16)),
                    msix(f).map(|m| (m.offset, 31)),
                ),
            };
            if let Some((offset, bit)) = other {
                update(cfg, a, offset, |d| set_bit(d, bit, false));
            }
            match this {
                Some((offset, bit)) => {
                    update(cfg, a, offset, |d| set_bit(d, bit, true));
                    Response::FeatureEnabled(feature)
                }
                None => Response::Error(ServerError::NonexistentFeature(feature)),
            }
        }
        Request::FeatureInfo(feature) => match feature {
            PciFeature::Msi => match msi(f) {
                Some(m) => Response::FeatureInfo(
                    feature,
                    FeatureInfo::Msi(MsiInfo {
                        log2_multiple_message_capable: m.multiple_message_capable,
                        is_64bit: m.is_64bit,
                        has_per_vector_masking: m.per_vector_masking,
                    }),
                ),
                None => Response::Error(ServerError::NonexistentFeature(feature)),
            },
            PciFeature::MsiX => match msix(f) {
                Some(m) => Response::FeatureInfo(
                    feature,
                    FeatureInfo::MsiX(MsixInfo {
                        table_bar: (m.table & 0x7) as u8,
                        table_offset: m.table & !0x7,
                        table_size: m.table_size,
                        pba_bar: (m.pba & 0x7) as u8,
                        pba_offset: m.pba & !0x7,
                    }),
                ),
                None => Response::Error(ServerError::NonexistentFeature(feature)),
            },
        },
        Request::SetFeatureInfo(SetFeatureInfo::Msi(info)) => {
            let Some(m) = msi(f) else {
                return Response::Error(ServerError::NonexistentFeature(PciFeature::Msi));
            };
            if let Some(mme) = info.multi_message_enable {
                if mme > m.multiple_message_capable {
                    return Response::Error(ServerError::InvalidBitPattern);
                }
                update(cfg, a, m.offset, |d| {
                    (d & !(0x7 << 20)) | (u32::from(mme) << 20)
                });
            }
            if let Some(message) = info.message_address_and_data {
                if message.addr & 0b11 != 0 {
                    return Response::Error(ServerError::InvalidBitPattern);
                }
                let mme = (cfg.read32(a, m.offset) >> 20) & 0x7;
                let mme = if mme <= 5 { mme } else { 0 };
                // The function sets the low `mme` bits of the data itself.
                if message.data & ((1u32 << mme) - 1) != 0 {
                    return Response::Error(ServerError::InvalidBitPattern);
                }
                cfg.write32(a, m.offset + 4, message.addr as u32);
                if m.is_64bit {
                    cfg.write32(a, m.offset + 8, (message.addr >> 32) as u32);
                }
                cfg.write32(a, m.data_offset(), message.data);
            }
            if let Some(mask) = info.mask_bits {
                if m.per_vector_masking {
                    cfg.write32(a, m.mask_offset(), mask);
                }
            }
            Response::SetFeatureInfo(PciFeature::Msi)
        }
        Request::SetFeatureInfo(SetFeatureInfo::MsiX { function_mask }) => {
            let Some(m) = msix(f) else {
                return Response::Error(ServerError::NonexistentFeature(PciFeature::MsiX));
            };
            if let Some(mask) = function_mask {
                update(cfg, a, m.offset, |d| set_bit(d, 30, mask));
            }
            Response::SetFeatureInfo(PciFeature::MsiX)
        }
        Request::ReadConfig(offset) => {
            if !config_offset_ok(offset) {
                return Response::Error(ServerError::InvalidBitPattern);
            }
            Response::ReadConfig(cfg.read32(a, offset))
        }
        Request::WriteConfig(offset, value) => {
            if !config_offset_ok(offset) {
                return Response::Error(ServerError::InvalidBitPattern);
            }
            cfg.write32(a, offset, value);
            Response::WriteConfig
        }
    }
}
