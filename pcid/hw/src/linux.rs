//! Linux backend: a PCI function reached through sysfs, DMA from locked pages.
//!
//! * [`SysfsBar`] maps a BAR through `<function>/resourceN` and implements
//!   [`RegisterIo`] with volatile 32-bit accesses.
//! * [`enable_device`] sets Memory Space Enable and Bus Master Enable in the
//!   function's Command register through `<function>/config`
//!   (PCI Local Bus Specification 3.0, §6.2.2: Command register at offset 04h,
//!   bit 1 Memory Space, bit 2 Bus Master).
//! * [`LockedDmaAllocator`] hands out page-granular anonymous mappings that are
//!   populated and locked in memory; the physical address of each page comes
//!   from `/proc/self/pagemap` (Linux `Documentation/admin-guide/mm/pagemap.rst`:
//!   bits 0–54 PFN, bit 63 present). Only a process with `CAP_SYS_ADMIN` sees
//!   real PFNs; others read zero, which this backend reports as an error rather
//!   than handing a device address 0.
//!
//! There is no IOMMU translation here: bus addresses are physical addresses,
//! which holds for a function that no kernel driver has claimed on a machine
//! (or guest) without an enabled IOMMU. Locked pages may still be migrated by
//! memory compaction unless `/proc/sys/vm/compact_unevictable_allowed` is 0;
//! whoever sets up the machine (the QEMU guest's init does) writes that.
//!
//! Ordering: a register write is preceded by a release fence and a register
//! read followed by an acquire fence; DMA buffers are copied with volatile
//! accesses bracketed by the same fences. Queue entries written into a
//! [`LockedDmaBuffer`] before a doorbell write are therefore globally visible
//! before the doorbell reaches the device, and completion entries read after a
//! register read are not read early.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::pages::MappedPages;

use crate::{DmaAllocator, DmaBuffer, HwError, RegisterIo, PAGE_SIZE};

/// Offset of the Command register in configuration space.
const PCI_COMMAND: u64 = 0x04;
/// Command register: Memory Space Enable.
pub const PCI_COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: Bus Master Enable.
pub const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// Pagemap entry: the page is present in RAM.
const PAGEMAP_PRESENT: u64 = 1 << 63;
/// Pagemap entry: page frame number, bits 0–54.
const PAGEMAP_PFN_MASK: u64 = (1 << 55) - 1;

fn os_error(what: impl Into<String>, source: std::io::Error) -> HwError {
    HwError::Os {
        what: what.into(),
        source,
    }
}

/// A BAR of a PCI function mapped into this process from sysfs.
///
/// Accesses are 32-bit volatile loads and stores. An access that is not
/// 4-byte aligned or not wholly inside the window reads as all-ones and
/// writes are dropped, as a master abort would on a real bus.
#[derive(Debug)]
pub struct SysfsBar {
    base: NonNull<u8>,
    len: usize,
    path: PathBuf,
}

// SAFETY: the mapping is owned by this value and only accessed through
// volatile loads/stores of whole registers; MMIO registers may be accessed
// from any thread, and the value has no thread-affine state.
unsafe impl Send for SysfsBar {}
// SAFETY: all accesses through `&self` are single volatile register loads or
// stores, which the device serialises; there is no Rust-visible shared state.
unsafe impl Sync for SysfsBar {}

impl SysfsBar {
    /// Maps BAR `index` (0–5) of the function at `function_dir`
    /// (e.g. `/sys/bus/pci/devices/0000:00:04.0`) through its `resource<index>` file.
    pub fn open(function_dir: impl AsRef<Path>, index: u8) -> Result<Self, HwError> {
        if index > 5 {
            return Err(os_error(
                format!("map BAR{index} of {}", function_dir.as_ref().display()),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "BAR index must be 0-5"),
            ));
        }
        Self::map_file(function_dir.as_ref().join(format!("resource{index}")))
    }

    /// Maps the whole of `path` (a sysfs `resourceN` file, or any regular file
    /// for tests) as a register window. The window size is the file's size.
    pub fn map_file(path: impl AsRef<Path>) -> Result<Self, HwError> {
        let path = path.as_ref().to_path_buf();
        let what = || format!("map {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| os_error(what(), e))?;
        let size = file.metadata().map_err(|e| os_error(what(), e))?.len();
        let len = usize::try_from(size).map_err(|_| {
            os_error(
                what(),
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file too large to map"),
            )
        })?;
        if len == 0 {
            return Err(os_error(
                what(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "region has size 0 (BAR not implemented?)",
                ),
            ));
        }
        // SAFETY: mapping a fresh region chosen by the kernel (addr = NULL) cannot
        // overlap any Rust object; `file` is a valid open descriptor for the call's
        // duration and the mapping stays valid after it is closed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error(what(), std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| {
            os_error(
                what(),
                std::io::Error::other("mmap returned a null mapping"),
            )
        })?;
        log::debug!("mapped {} ({len:#x} bytes)", path.display());
        Ok(Self { base, len, path })
    }

    /// The file this window was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn register(&self, offset: usize) -> Option<*mut u32> {
        let end = offset.checked_add(4)?;
        if offset % 4 != 0 || end > self.len {
            return None;
        }
        // SAFETY: `offset + 4 <= len`, so the resulting pointer and the 4 bytes
        // after it lie inside the mapping; the base is page aligned and the
        // offset a multiple of 4, so the pointer is aligned for u32.
        Some(unsafe { self.base.as_ptr().add(offset) }.cast::<u32>())
    }
}

impl RegisterIo for SysfsBar {
    fn size(&self) -> usize {
        self.len
    }

    fn read32(&self, offset: usize) -> u32 {
        let Some(reg) = self.register(offset) else {
            log::warn!(
                "{}: read32 at {offset:#x} outside window of {:#x} bytes",
                self.path.display(),
                self.len
            );
            return u32::MAX;
        };
        // SAFETY: `reg` is an aligned pointer inside the live mapping (see `register`).
        let value = unsafe { std::ptr::read_volatile(reg) };
        // Later reads of DMA memory must not be satisfied before this register read.
        fence(Ordering::Acquire);
        value
    }

    fn write32(&self, offset: usize, value: u32) {
        let Some(reg) = self.register(offset) else {
            log::warn!(
                "{}: write32 at {offset:#x} outside window of {:#x} bytes dropped",
                self.path.display(),
                self.len
            );
            return;
        };
        // Everything written to DMA memory so far must be visible before the
        // device sees this write (e.g. a doorbell).
        fence(Ordering::Release);
        // SAFETY: `reg` is an aligned pointer inside the live mapping (see `register`).
        unsafe { std::ptr::write_volatile(reg, value) };
    }
}

impl Drop for SysfsBar {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `map_file`,
        // which no other object refers to; it is unmapped once, here.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        if rc != 0 {
            log::warn!(
                "munmap {}: {}",
                self.path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Sets Memory Space Enable and Bus Master Enable in the Command register of
/// the function at `function_dir`, through its sysfs `config` file.
///
/// Returns the Command register value written. Writing `config` past the
/// first 64 bytes needs root; the Command register is in the standard header.
pub fn enable_device(function_dir: impl AsRef<Path>) -> Result<u16, HwError> {
    let path = function_dir.as_ref().join("config");
    let what = |step: &str| format!("{step} command register in {}", path.display());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| os_error(what("open"), e))?;
    let old = read_command(&file).map_err(|e| os_error(what("read"), e))?;
    let new = old | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    if new != old {
        file.write_all_at(&new.to_le_bytes(), PCI_COMMAND)
            .map_err(|e| os_error(what("write"), e))?;
    }
    let back = read_command(&file).map_err(|e| os_error(what("re-read"), e))?;
    if back & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) != PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER {
        return Err(os_error(
            what("set"),
            std::io::Error::other(format!(
                "wrote {new:#06x} but the register reads back {back:#06x}"
            )),
        ));
    }
    log::debug!("{}: command {old:#06x} -> {back:#06x}", path.display());
    Ok(back)
}

fn read_command(file: &File) -> std::io::Result<u16> {
    let mut buf = [0u8; 2];
    file.read_exact_at(&mut buf, PCI_COMMAND)?;
    Ok(u16::from_le_bytes(buf))
}

/// Decodes one `/proc/<pid>/pagemap` entry into a page frame number.
///
/// Fails when the page is not present or the PFN reads as 0 (the kernel hides
/// PFNs from processes without `CAP_SYS_ADMIN`).
pub fn pfn_from_pagemap_entry(entry: u64) -> Result<u64, String> {
    if entry & PAGEMAP_PRESENT == 0 {
        return Err(format!("page not present (pagemap entry {entry:#018x})"));
    }
    let pfn = entry & PAGEMAP_PFN_MASK;
    if pfn == 0 {
        return Err("pagemap gives no PFN: need root (CAP_SYS_ADMIN)".to_string());
    }
    Ok(pfn)
}

/// Allocates DMA buffers from locked anonymous memory, with bus addresses
/// taken from `/proc/self/pagemap`.
#[derive(Debug)]
pub struct LockedDmaAllocator {
    pagemap: File,
}

impl LockedDmaAllocator {
    /// Opens `/proc/self/pagemap` and checks, with one probe page, that it
    /// reveals physical addresses (it does only for root).
    pub fn new() -> Result<Self, HwError> {
        let pagemap =
            File::open("/proc/self/pagemap").map_err(|e| os_error("open /proc/self/pagemap", e))?;
        let this = Self { pagemap };
        // Probe: fails with the clear "need root" message when PFNs are hidden.
        drop(this.allocate(PAGE_SIZE)?);
        Ok(this)
    }

    fn physical_address(&self, virt: usize) -> Result<u64, HwError> {
        let index = (virt / PAGE_SIZE) as u64;
        let mut buf = [0u8; 8];
        self.pagemap
            .read_exact_at(&mut buf, index * 8)
            .map_err(|e| os_error("read /proc/self/pagemap", e))?;
        let pfn = pfn_from_pagemap_entry(u64::from_le_bytes(buf))
            .map_err(|reason| HwError::NoPhysicalAddress { reason })?;
        pfn.checked_mul(PAGE_SIZE as u64)
            .ok_or_else(|| HwError::NoPhysicalAddress {
                reason: format!("PFN {pfn:#x} out of range"),
            })
    }
}

impl DmaAllocator for LockedDmaAllocator {
    type Buffer = LockedDmaBuffer;

    fn allocate(&self, len: usize) -> Result<LockedDmaBuffer, HwError> {
        let pages = len.max(1).div_ceil(PAGE_SIZE);
        let len = pages.checked_mul(PAGE_SIZE).ok_or(HwError::Allocation {
            len,
            reason: "size overflows".to_string(),
        })?;
        // SAFETY: an anonymous private mapping at a kernel-chosen address cannot
        // alias any existing Rust object; no file descriptor is involved.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(HwError::Allocation {
                len,
                reason: format!("mmap: {}", std::io::Error::last_os_error()),
            });
        }
        let Some(base) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(HwError::Allocation {
                len,
                reason: "mmap returned a null mapping".to_string(),
            });
        };
        // From here on the mapping is owned by `buffer`, whose Drop unmaps it.
        let mut buffer = LockedDmaBuffer {
            // SAFETY: `base..base + len` is the whole-page anonymous mapping just
            // created; `buffer` owns it and unmaps it only when dropped.
            pages: unsafe { MappedPages::new(base, len) },
        };
        // SAFETY: `base`/`len` is the mapping just created and owned by `buffer`.
        if unsafe { libc::mlock(base.as_ptr().cast(), len) } != 0 {
            return Err(HwError::Allocation {
                len,
                reason: format!("mlock: {}", std::io::Error::last_os_error()),
            });
        }
        // A forked child must not share (and copy-on-write away) pages a device writes to.
        // SAFETY: as above; madvise only changes how the kernel treats the range on fork.
        if unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_DONTFORK) } != 0 {
            return Err(HwError::Allocation {
                len,
                reason: format!(
                    "madvise(MADV_DONTFORK): {}",
                    std::io::Error::last_os_error()
                ),
            });
        }
        // Keep khugepaged from collapsing (and so moving) these pages into a huge page.
        // EINVAL means a kernel without transparent huge pages: nothing to prevent.
        // SAFETY: as above; the advice only affects how the kernel backs the range.
        if unsafe { libc::madvise(base.as_ptr().cast(), len, libc::MADV_NOHUGEPAGE) } != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(HwError::Allocation {
                len,
                reason: format!(
                    "madvise(MADV_NOHUGEPAGE): {}",
                    std::io::Error::last_os_error()
                ),
            });
        }
        for page in 0..pages {
            let virt = base.as_ptr() as usize + page * PAGE_SIZE;
            buffer.pages.push_page(self.physical_address(virt)?);
        }
        Ok(buffer)
    }
}

/// A page-granular, zeroed, locked DMA buffer (see [`LockedDmaAllocator`]).
#[derive(Debug)]
pub struct LockedDmaBuffer {
    pages: MappedPages,
}

impl DmaBuffer for LockedDmaBuffer {
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

impl Drop for LockedDmaBuffer {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `allocate`,
        // owned solely by this buffer; it is unlocked and unmapped once, here.
        let rc = unsafe {
            libc::munlock(self.pages.base().as_ptr().cast(), self.pages.len());
            libc::munmap(self.pages.base().as_ptr().cast(), self.pages.len())
        };
        if rc != 0 {
            log::warn!("munmap DMA buffer: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn is_root() -> bool {
        // Reading our own status avoids an unsafe getuid() call.
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
            })
            .unwrap_or(false)
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("pcid_hw-linux-{}-{name}", std::process::id()))
    }

    #[test]
    fn bar_over_a_file_reads_writes_and_bounds_checks() {
        let path = temp_path("bar");
        let mut f = File::create(&path).unwrap();
        let mut bytes = vec![0u8; 8192];
        bytes[0..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        bytes[8188..8192].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        f.write_all(&bytes).unwrap();
        drop(f);

        let bar = SysfsBar::map_file(&path).unwrap();
        assert_eq!(bar.size(), 8192);
        assert_eq!(bar.read32(0), 0x1234_5678);
        assert_eq!(bar.read32(8188), 0xdead_beef);
        // Outside the window or misaligned: all-ones, like a master abort.
        assert_eq!(bar.read32(8192), u32::MAX);
        assert_eq!(bar.read32(8190), u32::MAX);
        assert_eq!(bar.read32(2), u32::MAX);
        assert_eq!(bar.read32(usize::MAX - 1), u32::MAX);
        // Writes inside land in the file; writes outside are dropped.
        bar.write32(16, 0xa5a5_5a5a);
        bar.write64(24, 0x0102_0304_0506_0708);
        bar.write32(8192, 1);
        bar.write32(usize::MAX - 3, 1);
        assert_eq!(bar.read32(16), 0xa5a5_5a5a);
        assert_eq!(bar.read64(24), 0x0102_0304_0506_0708);
        drop(bar);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 8192);
        assert_eq!(&back[16..20], &0xa5a5_5a5au32.to_le_bytes());
        assert_eq!(&back[24..32], &0x0102_0304_0506_0708u64.to_le_bytes());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bar_errors_are_typed_and_name_the_file() {
        let missing = temp_path("missing-dir");
        let err = SysfsBar::open(&missing, 0).unwrap_err();
        assert!(matches!(err, HwError::Os { .. }), "{err}");
        assert!(err.to_string().contains("resource0"), "{err}");
        let err = SysfsBar::open(&missing, 6).unwrap_err();
        assert!(err.to_string().contains("BAR index"), "{err}");

        let empty = temp_path("empty");
        File::create(&empty).unwrap();
        let err = SysfsBar::map_file(&empty).unwrap_err();
        assert!(err.to_string().contains("size 0"), "{err}");
        std::fs::remove_file(&empty).unwrap();
    }

    #[test]
    fn enable_device_sets_memory_and_bus_master_in_a_config_file() {
        let dir = temp_path("function");
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = vec![0u8; 256];
        config[4] = 0x00;
        config[5] = 0x04; // INTx disable set; must be preserved.
        std::fs::write(dir.join("config"), &config).unwrap();
        let value = enable_device(&dir).unwrap();
        assert_eq!(value, 0x0406);
        let back = std::fs::read(dir.join("config")).unwrap();
        assert_eq!(u16::from_le_bytes([back[4], back[5]]), 0x0406);
        // Idempotent.
        assert_eq!(enable_device(&dir).unwrap(), 0x0406);

        // A config file too short to hold the register gives a typed error.
        std::fs::write(dir.join("config"), [0u8; 3]).unwrap();
        let err = enable_device(&dir).unwrap_err();
        assert!(matches!(err, HwError::Os { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pagemap_entries_decode() {
        assert_eq!(pfn_from_pagemap_entry(PAGEMAP_PRESENT | 0x1234), Ok(0x1234));
        // Soft-dirty / exclusive / file bits (55–62) are not part of the PFN.
        assert_eq!(
            pfn_from_pagemap_entry(PAGEMAP_PRESENT | (0xff << 55) | 7),
            Ok(7)
        );
        let err = pfn_from_pagemap_entry(PAGEMAP_PRESENT).unwrap_err();
        assert!(err.contains("need root"), "{err}");
        let err = pfn_from_pagemap_entry(0x1234).unwrap_err();
        assert!(err.contains("not present"), "{err}");
    }

    #[test]
    fn locked_buffers_have_physical_pages_and_bounds_checks() {
        if !is_root() {
            eprintln!(
                "skipped: /proc/self/pagemap shows PFNs to root only and this test is not root"
            );
            return;
        }
        let alloc = LockedDmaAllocator::new().unwrap();
        let buf = alloc.allocate(3 * PAGE_SIZE - 100).unwrap();
        assert_eq!(buf.len(), 3 * PAGE_SIZE);
        let mut zero = vec![0xffu8; buf.len()];
        buf.read(0, &mut zero).unwrap();
        assert!(zero.iter().all(|&b| b == 0), "fresh buffer is zeroed");

        let mut pages = Vec::new();
        for p in 0..3 {
            let a = buf.device_address(p * PAGE_SIZE).unwrap();
            assert_ne!(a, 0);
            assert_eq!(a % PAGE_SIZE as u64, 0);
            assert_eq!(buf.device_address(p * PAGE_SIZE + 123).unwrap(), a + 123);
            pages.push(a);
        }
        pages.sort_unstable();
        pages.dedup();
        assert_eq!(pages.len(), 3, "each page has its own frame");

        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        buf.write(3, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        buf.read(3, &mut back).unwrap();
        assert_eq!(back, data);

        assert!(matches!(
            buf.device_address(3 * PAGE_SIZE),
            Err(HwError::OutOfBounds { .. })
        ));
        assert!(matches!(
            buf.write(3 * PAGE_SIZE - 1, &[0, 0]),
            Err(HwError::OutOfBounds { .. })
        ));
        assert!(matches!(
            buf.read(usize::MAX, &mut [0]),
            Err(HwError::OutOfBounds { .. })
        ));
    }

    /// Runs this test binary again as user `nobody` to check the message a
    /// process without privilege gets.
    #[test]
    fn unprivileged_process_gets_need_root_error() {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("PCID_HW_UNPRIVILEGED_CHILD").is_some() {
            let err = LockedDmaAllocator::new().unwrap_err();
            assert!(matches!(err, HwError::NoPhysicalAddress { .. }), "{err}");
            assert!(err.to_string().contains("need root"), "{err}");
            return;
        }
        if !is_root() {
            // Not root: this process itself is the unprivileged case.
            let err = LockedDmaAllocator::new().unwrap_err();
            assert!(err.to_string().contains("need root"), "{err}");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "linux::tests::unprivileged_process_gets_need_root_error",
                "--test-threads=1",
            ])
            .env("PCID_HW_UNPRIVILEGED_CHILD", "1")
            .uid(65534)
            .gid(65534)
            .output();
        match out {
            Ok(out) => assert!(
                out.status.success(),
                "child as nobody failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            // The test binary may live where `nobody` cannot execute it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("skipped: cannot run the test binary as nobody: {e}");
            }
            Err(e) => panic!("spawn {}: {e}", exe.display()),
        }
    }
}
