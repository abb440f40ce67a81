//! Redox's own driver interface, as pcid serves it on a function's `channel`.
//!
//! Redox's drivers (ahcid, e1000d, xhcid, virtio-*d, …) link Redox's
//! `pcid_interface` and talk to pcid with requests such as "give me my
//! configuration", "enable MSI-X", "read configuration dword 0x40". This
//! module is this project's implementation of that interface, written from
//! Redox's sources (base `drivers/pcid/src/driver_interface`, January 2026),
//! so those drivers run unchanged under this pcid:
//!
//! * the message types ([`Request`], [`Response`] and what they carry), with
//!   the same names and field order as Redox's;
//! * their encoding ([`codec`]): Redox serialises them with serde's derived
//!   layout through bincode 1's default configuration, which this module
//!   reproduces byte for byte without either crate;
//! * the answers ([`handler`]): what each request does to configuration
//!   space, over [`ConfigAccess`](super::config_space::ConfigAccess).
//!
//! # The exchange on a channel
//!
//! The driver writes one encoded [`Request`] per `write`; pcid answers it at
//! once by queuing `u64` little-endian length + encoded [`Response`], which
//! the driver then reads (`read_exact` of 8 bytes, then of the length).
//! Requests are strictly answered in order. The same channel also carries
//! this project's shutdown protocol (frames starting with the magic `PCID`);
//! `super::state` tells the two apart by the first byte of a write (a request
//! starts with its variant index, 0–8).
//!
//! Everything here is portable and unit-tested on any host, including golden
//! byte vectors derived by hand from serde's and bincode 1's rules (see
//! [`codec`]).

pub mod codec;
pub mod handler;

use pcid_interface::function::PciAddress;

pub use codec::DecodeError;

/// A PCI feature a driver can ask about or enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PciFeature {
    /// Message Signalled Interrupts.
    Msi,
    /// MSI-X.
    MsiX,
}

/// Whether a feature is on (Redox defines it; its pcid never sends it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureStatus {
    /// On.
    Enabled,
    /// Off.
    Disabled,
}

/// Address and data of an MSI message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiAddrAndData {
    /// Message address (dword aligned).
    pub addr: u64,
    /// Message data.
    pub data: u32,
}

/// What `SetFeatureInfo(Msi(..))` changes; absent fields are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiSetFeatureInfo {
    /// Multiple Message Enable (log2 of the vectors, 0..=5).
    pub multi_message_enable: Option<u8>,
    /// Message address and data.
    pub message_address_and_data: Option<MsiAddrAndData>,
    /// Per-vector mask bits.
    pub mask_bits: Option<u32>,
}

/// Settings of a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetFeatureInfo {
    /// MSI settings.
    Msi(MsiSetFeatureInfo),
    /// MSI-X settings.
    MsiX {
        /// Function Mask (masks every vector of the function).
        function_mask: Option<bool>,
    },
}

/// A driver's request (Redox's `PcidClientRequest`), variant indices 0–8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// 0: enable the function again (bus master, memory, I/O; MSI/MSI-X off).
    EnableDevice,
    /// 1: the function's configuration.
    RequestConfig,
    /// 2: which of MSI and MSI-X the function has.
    RequestFeatures,
    /// 3: the vendor-specific capabilities.
    RequestVendorCapabilities,
    /// 4: turn a feature on (and the other one off).
    EnableFeature(PciFeature),
    /// 5: a feature's parameters.
    FeatureInfo(PciFeature),
    /// 6: change a feature's settings.
    SetFeatureInfo(SetFeatureInfo),
    /// 7: read a configuration dword.
    ReadConfig(u16),
    /// 8: write a configuration dword.
    WriteConfig(u16, u32),
}

/// MSI parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiInfo {
    /// Multiple Message Capable (log2 of the vectors the function supports).
    pub log2_multiple_message_capable: u8,
    /// 64-bit message address.
    pub is_64bit: bool,
    /// Per-vector masking.
    pub has_per_vector_masking: bool,
}

/// MSI-X parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixInfo {
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR.
    pub table_offset: u32,
    /// Entries in the table.
    pub table_size: u16,
    /// BAR holding the pending bit array.
    pub pba_bar: u8,
    /// Offset of the pending bit array in that BAR.
    pub pba_offset: u32,
}

/// A feature's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureInfo {
    /// MSI.
    Msi(MsiInfo),
    /// MSI-X.
    MsiX(MsixInfo),
}

/// Why pcid refused a request (Redox's `PcidServerResponseError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerError {
    /// The function has no such feature.
    NonexistentFeature(PciFeature),
    /// A value is out of range for the register it goes to.
    InvalidBitPattern,
}

/// A BAR as Redox's interface describes it (`PciBar`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciBar {
    /// Not implemented (or the upper half of a 64-bit BAR).
    None,
    /// 32-bit memory BAR.
    Memory32 {
        /// Base address.
        addr: u32,
        /// Size in bytes.
        size: u32,
    },
    /// 64-bit memory BAR.
    Memory64 {
        /// Base address.
        addr: u64,
        /// Size in bytes.
        size: u64,
    },
    /// I/O BAR (not sized, as in Redox).
    Port(u16),
}

/// The expansion ROM BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciRom {
    /// Base address.
    pub addr: u32,
    /// Size in bytes.
    pub size: u32,
    /// ROM decoding enabled.
    pub enabled: bool,
}

/// The legacy (INTx) interrupt of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyInterruptLine {
    /// Interrupt line (the IRQ number the driver opens as `/scheme/irq/<irq>`).
    pub irq: u8,
    /// Device-tree interrupt (phandle, cells, cell count); always `None` here:
    /// this pcid supports ACPI/port-based x86 machines, not device trees.
    pub phandled: Option<(u32, [u32; 3], u64)>,
}

/// All identifying information of a function (Redox's `FullDeviceId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullDeviceId {
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Class code.
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub interface: u8,
    /// Revision id.
    pub revision: u8,
}

/// What `RequestConfig` answers (Redox's `SubdriverArguments { func: PciFunction }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionConfig {
    /// Address.
    pub addr: PciAddress,
    /// The six BAR slots.
    pub bars: [PciBar; 6],
    /// Expansion ROM, if implemented.
    pub rom: Option<PciRom>,
    /// Legacy interrupt, filled in when the function is enabled.
    pub legacy_interrupt_line: Option<LegacyInterruptLine>,
    /// Identification.
    pub full_device_id: FullDeviceId,
}

/// pcid's answer (Redox's `PcidClientResponse`), variant indices 0–10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// 0: answer to `EnableDevice`.
    EnabledDevice,
    /// 1: answer to `RequestConfig`.
    Config(FunctionConfig),
    /// 2: answer to `RequestFeatures`.
    AllFeatures(Vec<PciFeature>),
    /// 3: answer to `RequestVendorCapabilities`: each capability's bytes
    /// after its 3-byte header (Redox's `VendorSpecificCapability { data }`).
    VendorCapabilities(Vec<Vec<u8>>),
    /// 4: answer to `EnableFeature`.
    FeatureEnabled(PciFeature),
    /// 5: defined by Redox, never sent.
    FeatureStatus(PciFeature, FeatureStatus),
    /// 6: a refused request.
    Error(ServerError),
    /// 7: answer to `FeatureInfo`.
    FeatureInfo(PciFeature, FeatureInfo),
    /// 8: answer to `SetFeatureInfo`.
    SetFeatureInfo(PciFeature),
    /// 9: answer to `ReadConfig`.
    ReadConfig(u32),
    /// 10: answer to `WriteConfig`.
    WriteConfig,
}

#[cfg(test)]
mod tests;
