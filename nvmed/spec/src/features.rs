//! Feature identifiers for Set Features / Get Features (NVMe Base Specification
//! 1.4, §5.21.1).

/// Feature identifiers (FID, Command Dword 10 bits 7:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
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

impl FeatureId {
    /// Decodes a feature identifier; `None` when this crate does not know it.
    pub fn from_u8(fid: u8) -> Option<Self> {
        Some(match fid {
            0x01 => Self::Arbitration,
            0x02 => Self::PowerManagement,
            0x04 => Self::TemperatureThreshold,
            0x06 => Self::VolatileWriteCache,
            0x07 => Self::NumberOfQueues,
            0x08 => Self::InterruptCoalescing,
            0x0B => Self::AsyncEventConfiguration,
            _ => return None,
        })
    }
}
