//! Feature identifiers and selectors for Set Features / Get Features (NVMe
//! Base Specification 1.4, §5.9 and §5.21.1).

use open_enum::open_enum;

/// Feature identifiers (FID, Command Dword 10 bits 7:0; §5.21.1).
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum FeatureId {
    /// 01h: Arbitration (§5.21.1.1).
    Arbitration = 0x01,
    /// 02h: Power Management (§5.21.1.2).
    PowerManagement = 0x02,
    /// 04h: Temperature Threshold (§5.21.1.4).
    TemperatureThreshold = 0x04,
    /// 06h: Volatile Write Cache (§5.21.1.6).
    VolatileWriteCache = 0x06,
    /// 07h: Number of Queues (§5.21.1.7).
    NumberOfQueues = 0x07,
    /// 08h: Interrupt Coalescing (§5.21.1.8).
    InterruptCoalescing = 0x08,
    /// 0Bh: Asynchronous Event Configuration (§5.21.1.11).
    AsyncEventConfiguration = 0x0B,
}

/// SEL: which value Get Features returns (Command Dword 10 bits 10:8;
/// §5.9). A 3-bit field; 100b–111b are reserved.
#[open_enum]
#[repr(u8)]
#[derive(Debug, Clone, Copy, Hash)]
pub enum FeatureSelect {
    /// 000b: the current value.
    Current = 0b000,
    /// 001b: the default value.
    Default = 0b001,
    /// 010b: the saved value.
    Saved = 0b010,
    /// 011b: the supported capabilities of the feature.
    SupportedCapabilities = 0b011,
}

impl FeatureId {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}

impl FeatureSelect {
    /// From the raw field value.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
    /// The raw field value.
    pub const fn into_bits(self) -> u8 {
        self.0
    }
}
