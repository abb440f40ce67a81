//! Hardware access for userspace drivers: register I/O, DMA memory and time.
//!
//! Driver logic (for example the NVMe driver in `nvmed`) is written against the
//! three traits here and contains no `unsafe` code. Backends implement them:
//!
//! * `linux` — BAR mapped from sysfs `resource0`, DMA from locked pages whose
//!   physical addresses come from `/proc/self/pagemap` (needs root);
//! * `redox` — BAR and DMA through Redox's physmap / physical allocation;
//! * the simulated NVMe controller in `nvme_sim`, which implements the traits
//!   in-process without any real hardware.
//!
//! All `unsafe` code in the workspace lives in the Linux and Redox backend
//! modules of this crate; every block carries a `// SAFETY:` comment.

use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(any(target_os = "linux", target_os = "redox"))]
mod pages;
#[cfg(target_os = "redox")]
pub mod redox;

/// Size of a DMA page. Device addresses are contiguous only within one page.
pub const PAGE_SIZE: usize = 4096;

/// Errors from a hardware backend.
#[derive(Debug, thiserror::Error)]
pub enum HwError {
    /// An access fell outside a register window or DMA buffer.
    #[error("access of {len} bytes at offset {offset:#x} is outside a region of {size:#x} bytes")]
    OutOfBounds {
        /// Offset of the access.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// DMA memory could not be allocated.
    #[error("cannot allocate {len} bytes of DMA memory: {reason}")]
    Allocation {
        /// Requested length in bytes.
        len: usize,
        /// Why the backend refused.
        reason: String,
    },
    /// The physical (bus) address of DMA memory cannot be found, e.g. because
    /// `/proc/self/pagemap` hides page frame numbers from processes without
    /// `CAP_SYS_ADMIN`.
    #[error("no physical address for DMA memory: {reason}")]
    NoPhysicalAddress {
        /// Why the address is unavailable.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done, e.g. "mmap /sys/bus/pci/devices/0000:00:04.0/resource0".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Memory-mapped register window of a device (one BAR).
///
/// Accesses are volatile and not reordered with respect to each other or to
/// [`DmaBuffer`] accesses made by the same thread: a backend issues the fences
/// needed so that queue memory written before a doorbell write is visible to
/// the device when the doorbell lands.
pub trait RegisterIo: Send + Sync {
    /// Size of the register window in bytes.
    fn size(&self) -> usize;
    /// Reads the 32-bit register at `offset` (must be 4-byte aligned and inside the window;
    /// a backend returns all-ones for an access outside it, like a bus master abort).
    fn read32(&self, offset: usize) -> u32;
    /// Writes the 32-bit register at `offset` (ignored outside the window).
    fn write32(&self, offset: usize, value: u32);
    /// Reads a 64-bit register as two 32-bit reads, low half first.
    fn read64(&self, offset: usize) -> u64 {
        let lo = u64::from(self.read32(offset));
        let hi = u64::from(self.read32(offset + 4));
        lo | (hi << 32)
    }
    /// Writes a 64-bit register as two 32-bit writes, low half first.
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// A zeroed, page-aligned DMA buffer that a device can read and write.
///
/// The CPU sees it through copying accessors (so driver code needs no raw
/// pointers); the device sees it at bus addresses from [`DmaBuffer::device_address`].
pub trait DmaBuffer: Send {
    /// Length in bytes (a multiple of [`PAGE_SIZE`]).
    fn len(&self) -> usize;
    /// True when the buffer has no bytes (never, for a successful allocation).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bus address of byte `offset`. Addresses are contiguous within one page only.
    fn device_address(&self, offset: usize) -> Result<u64, HwError>;
    /// Copies `out.len()` bytes starting at `offset` out of the buffer.
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HwError>;
    /// Copies `data` into the buffer at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), HwError>;
}

/// Allocates DMA memory for one device.
pub trait DmaAllocator: Send + Sync {
    /// The buffer type this allocator hands out.
    type Buffer: DmaBuffer;
    /// Allocates at least `len` bytes, rounded up to whole pages, zeroed.
    fn allocate(&self, len: usize) -> Result<Self::Buffer, HwError>;
}

/// A monotonic clock with the ability to wait.
///
/// Drivers take all time from a `Clock` so tests can substitute a fake clock
/// that advances only when the code under test sleeps.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;
    /// Waits for `duration`.
    fn sleep(&self, duration: Duration);
}

/// The real clock: `std::time::Instant` and `std::thread::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep(&self, duration: Duration) {
        (**self).sleep(duration)
    }
}

impl<T: RegisterIo + ?Sized> RegisterIo for std::sync::Arc<T> {
    fn size(&self) -> usize {
        (**self).size()
    }
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
    fn read64(&self, offset: usize) -> u64 {
        (**self).read64(offset)
    }
    fn write64(&self, offset: usize, value: u64) {
        (**self).write64(offset, value)
    }
}

impl<T: DmaAllocator + ?Sized> DmaAllocator for std::sync::Arc<T> {
    type Buffer = T::Buffer;
    fn allocate(&self, len: usize) -> Result<Self::Buffer, HwError> {
        (**self).allocate(len)
    }
}

/// A fake clock for deterministic tests: time moves only when someone sleeps
/// on it or calls [`FakeClock::advance`].
#[derive(Debug, Default)]
pub struct FakeClock {
    nanos: std::sync::atomic::AtomicU64,
}

impl FakeClock {
    /// A fake clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }
    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let n = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(std::sync::atomic::Ordering::SeqCst))
    }
    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}
