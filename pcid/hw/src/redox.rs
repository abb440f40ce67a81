//! Redox backend: BARs and ECAM through physmap, DMA from physically allocated
//! memory, legacy configuration ports.
//!
//! Redox gives a privileged userspace process access to hardware through the
//! kernel's `memory` scheme and the process scheme:
//!
//! * [`PhysMap`] maps a physical range (a BAR, or the ECAM window of a PCI
//!   segment) by opening `/scheme/memory/physical@<type>` and `mmap`ing it
//!   with the physical address as the file offset, as Redox's own drivers do.
//!   It implements [`RegisterIo`] with volatile 32-bit accesses.
//! * [`RedoxDmaAllocator`] allocates zeroed, physically contiguous pages from
//!   `/scheme/memory/zeroed@wb?phys_contiguous` and learns each page's
//!   physical address through the `/scheme/memory/translation` handle.
//!   x86 keeps DMA coherent with write-back caching, so buffers are mapped
//!   write-back there; other architectures map them uncacheable.
//! * [`LegacyConfigPorts`] is PCI configuration mechanism #1 (ports `0xCF8`
//!   address, `0xCFC` data; PCI Local Bus Specification 3.0, §3.2.2.3.2), used
//!   when the ACPI MCFG table is absent. Port access rights are granted per
//!   thread by the kernel (the `Iopl` verb of a process-scheme handle opened
//!   with `dup(<thread fd>, "open_via_dup")`); this type acquires them on
//!   first use in each thread.
//!
//! Ordering is the same as in the Linux backend: a register write is preceded
//! by a release fence and a register read followed by an acquire fence; DMA
//! copies are volatile and bracketed by fences, so queue entries written
//! before a doorbell are visible to the device when the doorbell lands.
//!
//! All of this needs the privileges Redox gives drivers (root, before
//! `setrens(0, 0)`): open the memory scheme first, drop privileges after.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::pages::MappedPages;

use libredox::call::MmapArgs;
use libredox::flag;
use libredox::Fd;

use crate::{DmaAllocator, DmaBuffer, HwError, RegisterIo, PAGE_SIZE};

/// Caching behaviour requested for a physical mapping (the suffix of
/// `/scheme/memory/physical@<type>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Write-back (`wb`): ordinary RAM.
    WriteBack,
    /// Uncacheable (`uc`): device registers, ECAM.
    Uncacheable,
    /// Write-combining (`wc`): frame buffers.
    WriteCombining,
}

impl MemoryType {
    fn suffix(self) -> &'static str {
        match self {
            MemoryType::WriteBack => "wb",
            MemoryType::Uncacheable => "uc",
            MemoryType::WriteCombining => "wc",
        }
    }
}

/// Memory type used for DMA buffers on this architecture.
const DMA_MEMORY_TYPE: MemoryType = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
    MemoryType::WriteBack
} else {
    MemoryType::Uncacheable
};

fn redox_error(what: impl Into<String>, err: libredox::error::Error) -> HwError {
    HwError::Os {
        what: what.into(),
        source: std::io::Error::from(err),
    }
}

/// Rounds `len` up to whole pages; `None` on overflow.
fn page_round(len: usize) -> Option<usize> {
    len.max(1).checked_next_multiple_of(PAGE_SIZE)
}

/// A physical address range mapped into this process (a BAR or an ECAM window).
#[derive(Debug)]
pub struct PhysMap {
    base: NonNull<u8>,
    /// Mapped length (whole pages).
    mapped: usize,
    /// Offset of `phys` inside the first mapped page (small BARs need not
    /// be page aligned).
    start: usize,
    /// Length the caller asked for; accesses are bounded by this.
    len: usize,
    phys: u64,
}

// SAFETY: the mapping is owned by this value and only accessed with volatile
// 32-bit loads and stores, which are safe to issue from any thread; device
// registers have no Rust-level aliasing invariants.
unsafe impl Send for PhysMap {}
// SAFETY: as above: `&self` methods only perform volatile accesses.
unsafe impl Sync for PhysMap {}

impl PhysMap {
    /// Maps `len` bytes of physical address space starting at `phys`. The
    /// pages containing the range are mapped; accesses are bounded by `len`.
    pub fn map(phys: u64, len: usize, memory_type: MemoryType) -> Result<Self, HwError> {
        let what = format!("physmap {phys:#x}+{len:#x}@{}", memory_type.suffix());
        if phys == 0 || len == 0 {
            return Err(HwError::Os {
                what,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "physical address or length is zero",
                ),
            });
        }
        let start = (phys % PAGE_SIZE as u64) as usize;
        let page = phys - start as u64;
        let mapped = start
            .checked_add(len)
            .and_then(page_round)
            .ok_or_else(|| HwError::Os {
                what: what.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "length overflows"),
            })?;
        let path = format!("/scheme/memory/physical@{}", memory_type.suffix());
        let fd = Fd::open(&path, flag::O_CLOEXEC | flag::O_RDWR, 0)
            .map_err(|e| redox_error(format!("{what}: open {path}"), e))?;
        // SAFETY: a shared mapping of the physical-memory scheme at an address
        // the kernel chooses; it cannot alias any Rust object. The kernel
        // refuses ranges that are ordinary RAM owned by someone else.
        let ptr = unsafe {
            libredox::call::mmap(MmapArgs {
                addr: std::ptr::null_mut(),
                length: mapped,
                prot: flag::PROT_READ | flag::PROT_WRITE,
                flags: flag::MAP_SHARED,
                fd: fd.raw(),
                offset: page,
            })
        }
        .map_err(|e| redox_error(format!("{what}: mmap"), e))?;
        // The mapping stays valid after the fd is closed (dropped here).
        drop(fd);
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| HwError::Os {
            what,
            source: std::io::Error::other("mmap returned a null mapping"),
        })?;
        Ok(Self {
            base,
            mapped,
            start,
            len,
            phys,
        })
    }

    /// Physical address of the start of the mapping.
    pub fn physical_address(&self) -> u64 {
        self.phys
    }

    fn register(&self, offset: usize) -> Option<*mut u32> {
        let end = offset.checked_add(4)?;
        if offset % 4 != 0 || end > self.len || (self.start + offset) % 4 != 0 {
            return None;
        }
        // SAFETY: `start + offset + 4 <= start + len <= mapped`, so the pointer
        // and the 4 bytes after it lie inside the mapping; the base is page
        // aligned and `start + offset` a multiple of 4, so the pointer is
        // aligned for u32.
        Some(unsafe { self.base.as_ptr().add(self.start + offset) }.cast::<u32>())
    }
}

impl RegisterIo for PhysMap {
    fn size(&self) -> usize {
        self.len
    }

    fn read32(&self, offset: usize) -> u32 {
        let Some(reg) = self.register(offset) else {
            log::warn!(
                "physmap {:#x}: read32 at {offset:#x} outside window of {:#x} bytes",
                self.phys,
                self.len
            );
            return u32::MAX;
        };
        // SAFETY: `reg` is an aligned pointer inside the live mapping (see `register`).
        let value = unsafe { std::ptr::read_volatile(reg) };
        fence(Ordering::Acquire);
        value
    }

    fn write32(&self, offset: usize, value: u32) {
        let Some(reg) = self.register(offset) else {
            log::warn!(
                "physmap {:#x}: write32 at {offset:#x} outside window of {:#x} bytes dropped",
                self.phys,
                self.len
            );
            return;
        };
        fence(Ordering::Release);
        // SAFETY: `reg` is an aligned pointer inside the live mapping (see `register`).
        unsafe { std::ptr::write_volatile(reg, value) };
    }
}

impl Drop for PhysMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`mapped` describe exactly the mapping created in `map`,
        // owned solely by this value and unmapped once, here.
        let result = unsafe { libredox::call::munmap(self.base.as_ptr().cast(), self.mapped) };
        if let Err(err) = result {
            log::warn!("physmap {:#x}: munmap failed: {err}", self.phys);
        }
    }
}

/// Allocates DMA memory: zeroed, physically contiguous pages with known bus addresses.
pub struct RedoxDmaAllocator {
    /// Handle to `/scheme/memory/translation` (virtual → physical).
    translation: Fd,
}

impl std::fmt::Debug for RedoxDmaAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedoxDmaAllocator")
            .field("translation_fd", &self.translation.raw())
            .finish()
    }
}

impl RedoxDmaAllocator {
    /// Opens the translation handle. Needs root; call before `setrens(0, 0)`.
    pub fn new() -> Result<Self, HwError> {
        let translation = Fd::open("/scheme/memory/translation", flag::O_CLOEXEC, 0)
            .map_err(|e| redox_error("open /scheme/memory/translation", e))?;
        Ok(Self { translation })
    }

    /// Physical address of the page containing virtual address `virt`.
    fn translate(&self, virt: usize) -> Result<u64, HwError> {
        let mut buf = virt.to_ne_bytes();
        self.translation
            .call_rw(&mut buf, syscall::CallFlags::empty(), &[])
            .map_err(|e| redox_error(format!("translate {virt:#x}"), e))?;
        let phys = usize::from_ne_bytes(buf) as u64;
        if phys == 0 {
            return Err(HwError::Allocation {
                len: PAGE_SIZE,
                reason: format!("no physical page behind {virt:#x}"),
            });
        }
        Ok(phys)
    }
}

impl DmaAllocator for RedoxDmaAllocator {
    type Buffer = RedoxDmaBuffer;

    fn allocate(&self, len: usize) -> Result<RedoxDmaBuffer, HwError> {
        let len = page_round(len).ok_or(HwError::Allocation {
            len,
            reason: "size overflows".to_string(),
        })?;
        let path = format!(
            "/scheme/memory/zeroed@{}?phys_contiguous",
            DMA_MEMORY_TYPE.suffix()
        );
        let fd = Fd::open(&path, flag::O_CLOEXEC, 0).map_err(|e| HwError::Allocation {
            len,
            reason: format!("open {path}: {e}"),
        })?;
        // SAFETY: a private mapping of fresh zeroed memory at a kernel-chosen
        // address; it cannot alias any existing Rust object.
        let ptr = unsafe {
            libredox::call::mmap(MmapArgs {
                addr: std::ptr::null_mut(),
                length: len,
                prot: flag::PROT_READ | flag::PROT_WRITE,
                flags: flag::MAP_PRIVATE,
                fd: fd.raw(),
                offset: 0,
            })
        }
        .map_err(|e| HwError::Allocation {
            len,
            reason: format!("mmap {path}: {e}"),
        })?;
        drop(fd);
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| HwError::Allocation {
            len,
            reason: "mmap returned a null mapping".to_string(),
        })?;
        // From here on the mapping is owned by `buffer`, whose Drop unmaps it.
        let mut buffer = RedoxDmaBuffer {
            // SAFETY: `base..base + len` is the whole-page mapping just created;
            // `buffer` owns it and unmaps it only when dropped.
            pages: unsafe { MappedPages::new(base, len) },
        };
        for page in 0..len / PAGE_SIZE {
            let virt = base.as_ptr() as usize + page * PAGE_SIZE;
            buffer.pages.push_page(self.translate(virt)?);
        }
        Ok(buffer)
    }
}

/// A zeroed, page-granular DMA buffer from [`RedoxDmaAllocator`].
#[derive(Debug)]
pub struct RedoxDmaBuffer {
    pages: MappedPages,
}

impl DmaBuffer for RedoxDmaBuffer {
    fn len(&self) -> usize {
        self.pages.len()
    }

    fn device_address(&self, offset: usize) -> Result<u64, HwError> {
        self.pages.device_address(offset)
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HwError> {
        self.pages.read(offset, out)
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), HwError> {
        self.pages.write(offset, data)
    }
}

impl Drop for RedoxDmaBuffer {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `allocate`,
        // owned solely by this buffer and unmapped once, here. The driver stops
        // the device from using the buffer before dropping it.
        let result =
            unsafe { libredox::call::munmap(self.pages.base().as_ptr().cast(), self.pages.len()) };
        if let Err(err) = result {
            log::warn!("DMA buffer: munmap failed: {err}");
        }
    }
}

/// PCI configuration mechanism #1 through I/O ports `0xCF8`/`0xCFC`
/// (segment 0, offsets below 256 only).
#[derive(Debug)]
pub struct LegacyConfigPorts {
    _private: (),
}

thread_local! {
    /// Whether this thread already holds I/O port rights.
    static PORT_RIGHTS: Cell<bool> = const { Cell::new(false) };
}

/// Configuration address port.
const CONFIG_ADDRESS: u16 = 0xCF8;
/// Configuration data port.
const CONFIG_DATA: u16 = 0xCFC;

impl LegacyConfigPorts {
    /// Acquires I/O port rights for the calling thread (other threads acquire
    /// them on their first access).
    pub fn new() -> Result<Self, HwError> {
        acquire_port_rights()?;
        Ok(Self { _private: () })
    }

    fn address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(bus) << 16)
            | (u32::from(device & 0x1F) << 11)
            | (u32::from(function & 0x7) << 8)
            | u32::from(offset & 0xFC)
    }

    /// Reads the dword at `offset` (rounded down to a multiple of 4) of a function.
    /// Returns all-ones if port rights cannot be obtained, like a master abort.
    pub fn read32(&self, bus: u8, device: u8, function: u8, offset: u8) -> u32 {
        if let Err(err) = acquire_port_rights() {
            log::error!("PCI config read: {err}");
            return u32::MAX;
        }
        port_io::read(Self::address(bus, device, function, offset))
    }

    /// Writes the dword at `offset` (rounded down to a multiple of 4) of a function.
    pub fn write32(&self, bus: u8, device: u8, function: u8, offset: u8, value: u32) {
        if let Err(err) = acquire_port_rights() {
            log::error!("PCI config write dropped: {err}");
            return;
        }
        port_io::write(Self::address(bus, device, function, offset), value);
    }
}

/// A descriptor closed when dropped (the proc-scheme handle below).
struct CloseOnDrop(usize);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = libredox::call::close(self.0);
    }
}

/// The calling thread's descriptor in the process scheme.
fn current_thread_fd() -> usize {
    extern "C" {
        /// relibc (ffce2c2 and later): the fd of the calling thread in the
        /// process scheme, which relibc keeps open for the thread's lifetime.
        fn redox_cur_thrfd_v0() -> usize;
    }
    // SAFETY: relibc's accessor takes no arguments, has no preconditions
    // and only returns a descriptor number owned by relibc (not closed here).
    unsafe { redox_cur_thrfd_v0() }
}

/// Asks the kernel for I/O port rights for the calling thread, once per thread.
///
/// How the January 2026 kernel (a919d262, `scheme/proc.rs`) grants them:
/// duplicating a thread's process-scheme descriptor with the name
/// `open_via_dup` gives a handle whose `SYS_CALL` takes a verb as its first
/// metadata word; `ProcSchemeVerb::Iopl` sets the I/O permission of the
/// context making the call, i.e. of this thread only. Both steps go through
/// relibc's stable entry points (`redox_dup_v1`, `redox_sys_call_v0`, via
/// libredox) rather than raw system calls, so a kernel that changes its call
/// numbers only needs a matching relibc. Only a root process before
/// `setrens` may do this (Redox's own drivers do the same in
/// `drivers/common`, `acquire_port_io_rights`).
fn acquire_port_rights() -> Result<(), HwError> {
    if PORT_RIGHTS.with(Cell::get) {
        return Ok(());
    }
    let handle = libredox::call::dup(current_thread_fd(), "open_via_dup")
        .map(CloseOnDrop)
        .map_err(|e| redox_error("open the thread's handle for I/O port rights", e))?;
    libredox::call::call_rw(
        handle.0,
        &mut [],
        syscall::CallFlags::empty(),
        &[syscall::ProcSchemeVerb::Iopl as u64],
    )
    .map_err(|e| redox_error("acquire I/O port rights (Iopl)", e))?;
    PORT_RIGHTS.with(|rights| rights.set(true));
    Ok(())
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod port_io {
    use syscall::io::{Io, Pio};

    /// Writes the configuration address, then reads the data port.
    /// Callers hold I/O port rights (checked by `acquire_port_rights`).
    pub(super) fn read(address: u32) -> u32 {
        Pio::<u32>::new(super::CONFIG_ADDRESS).write(address);
        Pio::<u32>::new(super::CONFIG_DATA).read()
    }

    /// Writes the configuration address, then the data port.
    pub(super) fn write(address: u32, value: u32) {
        Pio::<u32>::new(super::CONFIG_ADDRESS).write(address);
        Pio::<u32>::new(super::CONFIG_DATA).write(value);
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
mod port_io {
    /// No configuration ports on this architecture: reads see a master abort.
    pub(super) fn read(_address: u32) -> u32 {
        u32::MAX
    }

    /// No configuration ports on this architecture: writes are dropped.
    pub(super) fn write(_address: u32, _value: u32) {}
}
