//! Simulated DMA memory: buffers with fake bus addresses that the controller
//! model resolves when it reads queues, PRP lists and data.
//!
//! Every mapped page lives in one map keyed by its bus address, shared by the
//! allocator, its buffers and the controller model. A buffer's pages are
//! unmapped when it is dropped, so a device access to freed memory fails like
//! an access to an address no one mapped. Bus addresses are never reused.
//!
//! # Lifetime checks
//!
//! The memory also checks the rule a driver must keep: *memory the controller
//! may still access is neither freed nor handed to another use*. It records a
//! [`DmaViolation`] when
//!
//! * the driver frees a page the controller may still access: a page of a live
//!   queue (from its creation — or the controller's enable, for the admin
//!   queues — until its deletion or a controller reset) or a page a command
//!   in flight will transfer to or from ([`DmaViolationKind::FreedWhileInUse`]);
//! * the controller accesses, for a command, a page that was freed since the
//!   command was fetched ([`DmaViolationKind::DeviceAccessedFreedMemory`]), or
//!   a page that has been handed to another use since — written by the CPU,
//!   or taken by a later command ([`DmaViolationKind::DeviceAccessedReassignedMemory`]).
//!
//! Commands the model completes at once cannot break the rule; commands it
//! completes late (`read_latency_ms`, `write_latency_ms` in
//! [`crate::SimConfig`]) can, when a driver gives up waiting and reuses the
//! command's buffers. A test asks [`crate::SimController::dma_violations`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use pcid_hw::{DmaAllocator, DmaBuffer, HwError, PAGE_SIZE};

use crate::config::DmaLayout;

const PAGE: u64 = PAGE_SIZE as u64;
/// First bus address handed out: above 4 GiB, so a driver that truncates bus
/// addresses to 32 bits is caught.
const BUS_BASE: u64 = 0x1_0000_0000;
/// Most DMA memory mapped at once (guards against a runaway allocation).
const MAX_MAPPED_BYTES: usize = 1 << 30;

/// A device access to a bus address that no buffer maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bus address {0:#x} is not mapped")]
pub struct BusFault(pub u64);

/// What a page was last handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The CPU (allocated, or written by the driver).
    Host,
    /// A command the controller fetched (its model-wide tag).
    Command(u64),
}

struct Page {
    data: Box<[u8]>,
    owner: Owner,
    /// Reasons the controller may access the page now (queues, commands in
    /// flight), counted.
    pins: u32,
}

/// How the lifetime rule was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaViolationKind {
    /// The driver freed memory the controller may still access.
    FreedWhileInUse,
    /// The controller accessed, for a command, memory freed since.
    DeviceAccessedFreedMemory,
    /// The controller accessed, for a command, memory handed to another use
    /// (the CPU or another command) since the command was fetched.
    DeviceAccessedReassignedMemory,
}

/// A break of the DMA lifetime rule, seen by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaViolation {
    /// What happened.
    pub kind: DmaViolationKind,
    /// Bus address of the page.
    pub address: u64,
    /// The details: which queue or command, which access.
    pub detail: String,
}

impl std::fmt::Display for DmaViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DmaViolationKind::FreedWhileInUse => "freed while the controller may access it",
            DmaViolationKind::DeviceAccessedFreedMemory => {
                "accessed by the controller after it was freed"
            }
            DmaViolationKind::DeviceAccessedReassignedMemory => {
                "accessed by the controller after it was handed to another use"
            }
        };
        write!(f, "DMA page {:#x} {what}: {}", self.address, self.detail)
    }
}

#[derive(Default)]
struct MemState {
    pages: HashMap<u64, Page>,
    /// Pages that were mapped and are no longer.
    freed: HashSet<u64>,
    next: u64,
    violations: Vec<DmaViolation>,
}

/// The shared bus-address space.
pub(crate) struct DmaMemory {
    state: Mutex<MemState>,
    layout: DmaLayout,
}

impl DmaMemory {
    pub(crate) fn new(layout: DmaLayout) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(MemState {
                next: BUS_BASE,
                ..MemState::default()
            }),
            layout,
        })
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Maps `len` bytes (rounded up to pages) and returns the page addresses.
    fn map(&self, len: usize) -> Result<Vec<u64>, HwError> {
        let npages = len.div_ceil(PAGE_SIZE).max(1);
        let mut st = self.lock();
        let mapped = st.pages.len().saturating_mul(PAGE_SIZE);
        if npages.saturating_mul(PAGE_SIZE) > MAX_MAPPED_BYTES.saturating_sub(mapped) {
            return Err(HwError::Allocation {
                len,
                reason: format!("simulated DMA memory is limited to {MAX_MAPPED_BYTES} bytes"),
            });
        }
        let n = npages as u64;
        let base = st.next;
        let addrs: Vec<u64> = match self.layout {
            DmaLayout::Contiguous => (0..n).map(|i| base + i * PAGE).collect(),
            // Descending, every other page: no two pages of a buffer are adjacent.
            DmaLayout::Scattered => (0..n).map(|i| base + 2 * (n - 1 - i) * PAGE).collect(),
        };
        st.next = match self.layout {
            DmaLayout::Contiguous => base + (n + 1) * PAGE,
            DmaLayout::Scattered => base + 2 * n * PAGE,
        };
        for &a in &addrs {
            st.pages.insert(
                a,
                Page {
                    data: vec![0u8; PAGE_SIZE].into_boxed_slice(),
                    owner: Owner::Host,
                    pins: 0,
                },
            );
        }
        Ok(addrs)
    }

    fn unmap(&self, addrs: &[u64]) {
        let mut st = self.lock();
        for &a in addrs {
            if let Some(p) = st.pages.remove(&a) {
                if p.pins > 0 {
                    st.violations.push(DmaViolation {
                        kind: DmaViolationKind::FreedWhileInUse,
                        address: a,
                        detail: format!(
                            "the driver freed it while the controller may access it ({} use(s): a live queue or a command in flight)",
                            p.pins
                        ),
                    });
                }
            }
            st.freed.insert(a);
        }
    }

    /// The start address of every page `len` bytes from `addr` touch.
    pub(crate) fn pages_of(addr: u64, len: usize) -> Vec<u64> {
        let first = addr & !(PAGE - 1);
        let last = addr.saturating_add(len.max(1) as u64 - 1) & !(PAGE - 1);
        (0..=(last - first) / PAGE)
            .map(|i| first + i * PAGE)
            .collect()
    }

    /// The controller may access these pages from now on (until [`Self::unpin`]).
    pub(crate) fn pin(&self, pages: &[u64]) {
        let mut st = self.lock();
        for a in pages {
            if let Some(p) = st.pages.get_mut(a) {
                p.pins += 1;
            }
        }
    }

    /// Ends one [`Self::pin`] of these pages.
    pub(crate) fn unpin(&self, pages: &[u64]) {
        let mut st = self.lock();
        for a in pages {
            if let Some(p) = st.pages.get_mut(a) {
                p.pins = p.pins.saturating_sub(1);
            }
        }
    }

    /// Hands these pages to command `tag` (it was just fetched).
    pub(crate) fn claim(&self, pages: &[u64], tag: u64) {
        let mut st = self.lock();
        for a in pages {
            if let Some(p) = st.pages.get_mut(a) {
                p.owner = Owner::Command(tag);
            }
        }
    }

    /// Checks a device access for command `tag` to the pages `len` bytes from
    /// `addr` touch: records a violation for a page freed or handed to
    /// another use since the command was fetched.
    fn check_access(st: &mut MemState, addr: u64, len: usize, tag: u64, write: bool) {
        let access = if write { "write" } else { "read" };
        for a in Self::pages_of(addr, len) {
            let (kind, detail) = match st.pages.get(&a) {
                None if st.freed.contains(&a) => (
                    DmaViolationKind::DeviceAccessedFreedMemory,
                    format!("device {access} for command #{tag}"),
                ),
                Some(p) if p.owner != Owner::Command(tag) => (
                    DmaViolationKind::DeviceAccessedReassignedMemory,
                    format!(
                        "device {access} for command #{tag}; the page now belongs to {}",
                        match p.owner {
                            Owner::Host => "the CPU (the driver wrote it)".to_string(),
                            Owner::Command(t) => format!("command #{t}"),
                        }
                    ),
                ),
                _ => continue,
            };
            st.violations.push(DmaViolation {
                kind,
                address: a,
                detail,
            });
        }
    }

    /// Device read of `out.len()` bytes at bus address `addr` (may span pages;
    /// every page touched must be mapped). With `tag`, the read is for that
    /// command and checked against the lifetime rule.
    pub(crate) fn read_bus_for(
        &self,
        addr: u64,
        out: &mut [u8],
        tag: Option<u64>,
    ) -> Result<(), BusFault> {
        let mut st = self.lock();
        if let Some(tag) = tag {
            Self::check_access(&mut st, addr, out.len(), tag, false);
        }
        let mut done = 0usize;
        while done < out.len() {
            let a = addr.checked_add(done as u64).ok_or(BusFault(addr))?;
            let (page, off) = (a & !(PAGE - 1), (a & (PAGE - 1)) as usize);
            let data = &st.pages.get(&page).ok_or(BusFault(a))?.data;
            let n = (PAGE_SIZE - off).min(out.len() - done);
            out[done..done + n].copy_from_slice(&data[off..off + n]);
            done += n;
        }
        Ok(())
    }

    /// Device read not tied to a command's data (queue entries).
    pub(crate) fn read_bus(&self, addr: u64, out: &mut [u8]) -> Result<(), BusFault> {
        self.read_bus_for(addr, out, None)
    }

    /// Device write of `data` at bus address `addr` (may span pages; every
    /// page touched must be mapped, checked before anything is written). With
    /// `tag`, the write is for that command and checked against the lifetime
    /// rule (and made anyway when the page is still mapped, as a device would).
    pub(crate) fn write_bus_for(
        &self,
        addr: u64,
        data: &[u8],
        tag: Option<u64>,
    ) -> Result<(), BusFault> {
        let mut st = self.lock();
        if let Some(tag) = tag {
            Self::check_access(&mut st, addr, data.len(), tag, true);
        }
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.checked_add(done as u64).ok_or(BusFault(addr))?;
            if !st.pages.contains_key(&(a & !(PAGE - 1))) {
                return Err(BusFault(a));
            }
            done += PAGE_SIZE - (a & (PAGE - 1)) as usize;
        }
        let mut done = 0usize;
        while done < data.len() {
            let a = addr + done as u64;
            let (page, off) = (a & !(PAGE - 1), (a & (PAGE - 1)) as usize);
            let n = (PAGE_SIZE - off).min(data.len() - done);
            if let Some(p) = st.pages.get_mut(&page) {
                p.data[off..off + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        Ok(())
    }

    /// Device write not tied to a command's data (completion entries).
    pub(crate) fn write_bus(&self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        self.write_bus_for(addr, data, None)
    }

    /// CPU write through a buffer: the pages are the host's again.
    fn write_cpu(&self, addr: u64, data: &[u8]) -> Result<(), BusFault> {
        self.write_bus_for(addr, data, None)?;
        let mut st = self.lock();
        for a in Self::pages_of(addr, data.len()) {
            if let Some(p) = st.pages.get_mut(&a) {
                p.owner = Owner::Host;
            }
        }
        Ok(())
    }

    /// Number of pages currently mapped.
    pub(crate) fn mapped_pages(&self) -> usize {
        self.lock().pages.len()
    }

    /// Every violation of the lifetime rule recorded so far.
    pub(crate) fn violations(&self) -> Vec<DmaViolation> {
        self.lock().violations.clone()
    }
}

/// Allocator of simulated DMA memory for one [`crate::SimController`]
/// (get it from [`crate::SimController::dma`]). Cheap to clone.
#[derive(Clone)]
pub struct SimDma {
    pub(crate) memory: Arc<DmaMemory>,
}

impl std::fmt::Debug for SimDma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDma")
            .field("layout", &self.memory.layout)
            .field("mapped_pages", &self.memory.mapped_pages())
            .finish()
    }
}

impl SimDma {
    /// Number of 4 KiB pages currently mapped (for leak checks in tests).
    pub fn mapped_pages(&self) -> usize {
        self.memory.mapped_pages()
    }

    /// Every break of the DMA lifetime rule seen so far (see the module
    /// documentation); empty when the driver kept the rule.
    pub fn violations(&self) -> Vec<DmaViolation> {
        self.memory.violations()
    }
}

impl DmaAllocator for SimDma {
    type Buffer = SimDmaBuffer;
    fn allocate(&self, len: usize) -> Result<SimDmaBuffer, HwError> {
        let pages = self.memory.map(len)?;
        Ok(SimDmaBuffer {
            memory: self.memory.clone(),
            pages,
        })
    }
}

/// A buffer of simulated DMA memory. Its pages are unmapped on drop.
pub struct SimDmaBuffer {
    memory: Arc<DmaMemory>,
    pages: Vec<u64>,
}

impl std::fmt::Debug for SimDmaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDmaBuffer")
            .field("pages", &self.pages)
            .finish()
    }
}

impl SimDmaBuffer {
    fn check(&self, offset: usize, len: usize) -> Result<(), HwError> {
        let size = self.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(HwError::OutOfBounds { offset, len, size });
        }
        Ok(())
    }

    /// Copies between the buffer and `out`/`data` page by page.
    fn for_each_page(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(u64, usize, usize),
    ) -> Result<(), HwError> {
        self.check(offset, len)?;
        let mut done = 0;
        while done < len {
            let o = offset + done;
            let (pi, po) = (o / PAGE_SIZE, o % PAGE_SIZE);
            let n = (PAGE_SIZE - po).min(len - done);
            let addr = self.pages[pi] + po as u64;
            f(addr, done, n);
            done += n;
        }
        Ok(())
    }
}

impl DmaBuffer for SimDmaBuffer {
    fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    fn device_address(&self, offset: usize) -> Result<u64, HwError> {
        if offset >= self.len() {
            return Err(HwError::OutOfBounds {
                offset,
                len: 1,
                size: self.len(),
            });
        }
        Ok(self.pages[offset / PAGE_SIZE] + (offset % PAGE_SIZE) as u64)
    }

    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HwError> {
        let mut result = Ok(());
        self.for_each_page(offset, out.len(), |addr, at, n| {
            if result.is_ok() {
                result = self.memory.read_bus(addr, &mut out[at..at + n]);
            }
        })?;
        // The pages belong to this buffer until it is dropped, so a fault here
        // means the map was corrupted; report it as an out-of-bounds access.
        result.map_err(|_| HwError::OutOfBounds {
            offset,
            len: out.len(),
            size: self.len(),
        })
    }

    fn write(&self, offset: usize, data: &[u8]) -> Result<(), HwError> {
        let mut result = Ok(());
        self.for_each_page(offset, data.len(), |addr, at, n| {
            if result.is_ok() {
                result = self.memory.write_cpu(addr, &data[at..at + n]);
            }
        })?;
        result.map_err(|_| HwError::OutOfBounds {
            offset,
            len: data.len(),
            size: self.len(),
        })
    }
}

impl Drop for SimDmaBuffer {
    fn drop(&mut self) {
        self.memory.unmap(&self.pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scattered_pages_are_not_adjacent() {
        let dma = SimDma {
            memory: DmaMemory::new(DmaLayout::Scattered),
        };
        let b = dma.allocate(3 * PAGE_SIZE).unwrap();
        let a0 = b.device_address(0).unwrap();
        let a1 = b.device_address(PAGE_SIZE).unwrap();
        let a2 = b.device_address(2 * PAGE_SIZE).unwrap();
        assert_eq!(a0 % PAGE, 0);
        assert!(a1 + PAGE < a0 && a2 + PAGE < a1, "{a0:#x} {a1:#x} {a2:#x}");
        assert_eq!(b.device_address(5).unwrap(), a0 + 5);
        // Running off the end of a page hits an unmapped page.
        let mut x = [0u8; 8];
        assert!(dma.memory.read_bus(a0 + PAGE - 4, &mut x).is_err());
    }

    #[test]
    fn cpu_and_device_views_agree() {
        let dma = SimDma {
            memory: DmaMemory::new(DmaLayout::Scattered),
        };
        let b = dma.allocate(2 * PAGE_SIZE).unwrap();
        let data: Vec<u8> = (0..200u8).collect();
        b.write(PAGE_SIZE - 100, &data).unwrap();
        let mut first = [0u8; 100];
        dma.memory
            .read_bus(b.device_address(PAGE_SIZE - 100).unwrap(), &mut first)
            .unwrap();
        assert_eq!(&first[..], &data[..100]);
        dma.memory
            .write_bus(b.device_address(PAGE_SIZE).unwrap(), &[9, 9])
            .unwrap();
        let mut back = [0u8; 200];
        b.read(PAGE_SIZE - 100, &mut back).unwrap();
        assert_eq!(&back[..100], &data[..100]);
        assert_eq!(&back[100..102], &[9, 9]);
        assert!(b.read(2 * PAGE_SIZE - 1, &mut [0u8; 2]).is_err());
        assert!(b.device_address(2 * PAGE_SIZE).is_err());
    }

    #[test]
    fn dropped_buffer_is_unmapped() {
        let dma = SimDma {
            memory: DmaMemory::new(DmaLayout::Contiguous),
        };
        let b = dma.allocate(1).unwrap();
        let a = b.device_address(0).unwrap();
        assert_eq!(dma.mapped_pages(), 1);
        drop(b);
        assert_eq!(dma.mapped_pages(), 0);
        assert_eq!(dma.memory.write_bus(a, &[1]), Err(BusFault(a)));
    }

    #[test]
    fn freeing_pinned_memory_and_late_device_accesses_are_violations() {
        let dma = SimDma {
            memory: DmaMemory::new(DmaLayout::Scattered),
        };
        let queue = dma.allocate(PAGE_SIZE).unwrap();
        let q = queue.device_address(0).unwrap();
        dma.memory.pin(&[q]);
        drop(queue);
        let v = dma.violations();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, DmaViolationKind::FreedWhileInUse);
        assert_eq!(v[0].address, q);

        // Command 7 owns a page; the CPU reuses it; the late device write is caught.
        let buf = dma.allocate(PAGE_SIZE).unwrap();
        let b = buf.device_address(0).unwrap();
        dma.memory.claim(&[b], 7);
        dma.memory.write_bus_for(b, &[1, 2], Some(7)).unwrap();
        assert_eq!(dma.violations().len(), 1, "its own page: fine");
        buf.write(0, &[9]).unwrap();
        dma.memory.write_bus_for(b, &[1, 2], Some(7)).unwrap();
        let v = dma.violations();
        assert_eq!(v[1].kind, DmaViolationKind::DeviceAccessedReassignedMemory);
        assert!(v[1].to_string().contains("the CPU"), "{}", v[1]);
        // Taken by command 8: a late read for 7 is caught too.
        dma.memory.claim(&[b], 8);
        dma.memory.read_bus_for(b, &mut [0u8; 4], Some(7)).unwrap();
        assert!(dma.violations()[2].to_string().contains("command #8"));
        // Freed: the device's access fails and is recorded.
        drop(buf);
        assert!(dma.memory.write_bus_for(b, &[1], Some(8)).is_err());
        assert_eq!(
            dma.violations()[3].kind,
            DmaViolationKind::DeviceAccessedFreedMemory
        );
        assert_eq!(DmaMemory::pages_of(b + 4000, 200), vec![b, b + PAGE]);
    }

    #[test]
    fn huge_allocation_is_refused() {
        let dma = SimDma {
            memory: DmaMemory::new(DmaLayout::Contiguous),
        };
        assert!(matches!(
            dma.allocate(usize::MAX / 2),
            Err(HwError::Allocation { .. })
        ));
    }
}
