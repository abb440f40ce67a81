//! A model of configuration space for the unit tests.
//!
//! Each function is 1024 dwords. A write changes only the bits its dword's
//! write mask allows (the rest keep their value, like read-only and hardwired
//! bits); the status half of the command dword is write-1-to-clear. By
//! default identification, class and header dwords are read-only, BAR and ROM
//! slots are hardwired to zero (unimplemented) until a test gives them a size,
//! and every other dword is writable. Every write is logged.

use std::cell::RefCell;
use std::collections::BTreeMap;

use pcid_interface::function::PciAddress;

use super::ConfigAccess;

/// A logged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub address: PciAddress,
    pub offset: u16,
    pub value: u32,
}

#[derive(Default)]
pub struct Model {
    spaces: RefCell<BTreeMap<PciAddress, Vec<u32>>>,
    masks: BTreeMap<(PciAddress, u16), u32>,
    writes: RefCell<Vec<Write>>,
}

pub fn addr(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress {
        segment,
        bus,
        device,
        function,
    }
}

impl Model {
    /// Adds a function: ids, class dword (class, subclass, interface,
    /// revision from high to low byte) and header type byte.
    pub fn function(&mut self, a: PciAddress, vendor: u16, device: u16, class: u32, header: u8) {
        let mut space = vec![0u32; 1024];
        space[0] = u32::from(vendor) | (u32::from(device) << 16);
        space[2] = class;
        space[3] = u32::from(header) << 16;
        self.spaces.borrow_mut().insert(a, space);
    }

    /// Sets a dword, whatever its mask.
    pub fn set(&self, a: PciAddress, offset: u16, value: u32) {
        if let Some(s) = self.spaces.borrow_mut().get_mut(&a) {
            s[usize::from(offset / 4)] = value;
        }
    }

    /// Reads a dword without logging.
    pub fn get(&self, a: PciAddress, offset: u16) -> u32 {
        self.read32(a, offset)
    }

    /// Sets the write mask of a dword.
    pub fn mask(&mut self, a: PciAddress, offset: u16, mask: u32) {
        self.masks.insert((a, offset), mask);
    }

    /// A 32-bit memory BAR of `size` bytes at `address` in slot `index`.
    pub fn bar_mem32(&mut self, a: PciAddress, index: u16, address: u32, size: u32, pf: bool) {
        let off = 0x10 + 4 * index;
        self.set(a, off, address | if pf { 0x8 } else { 0 });
        self.mask(a, off, !(size - 1) & !0xF);
    }

    /// A 64-bit memory BAR in slots `index`, `index + 1`.
    pub fn bar_mem64(&mut self, a: PciAddress, index: u16, address: u64, size: u64, pf: bool) {
        let off = 0x10 + 4 * index;
        let mask = !(size - 1);
        self.set(
            a,
            off,
            (address as u32 & !0xF) | 0x4 | if pf { 0x8 } else { 0 },
        );
        self.set(a, off + 4, (address >> 32) as u32);
        self.mask(a, off, mask as u32 & !0xF);
        self.mask(a, off + 4, (mask >> 32) as u32);
    }

    /// An I/O BAR of `size` ports at `port`.
    pub fn bar_io(&mut self, a: PciAddress, index: u16, port: u32, size: u32) {
        let off = 0x10 + 4 * index;
        self.set(a, off, port | 1);
        self.mask(a, off, !(size - 1) & !0x3);
    }

    /// A capability list: `(offset, dword 0 without the next pointer)`; the
    /// next pointers are filled in, the status bit and pointer set.
    pub fn capabilities(&mut self, a: PciAddress, caps: &[(u16, u32)]) {
        let status = self.get(a, 0x04) | 1 << 20;
        self.set(a, 0x04, status);
        self.set(a, 0x34, caps.first().map_or(0, |c| u32::from(c.0)));
        for (i, &(off, dword)) in caps.iter().enumerate() {
            let next = caps.get(i + 1).map_or(0, |c| u32::from(c.0));
            self.set(a, off, (dword & !0xFF00) | next << 8);
        }
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.borrow().clone()
    }

    /// Forgets the logged writes.
    pub fn clear_writes(&self) {
        self.writes.borrow_mut().clear();
    }

    fn default_mask(offset: u16) -> u32 {
        match offset {
            0x00 | 0x08 => 0,
            0x0C => 0x0000_FFFF,
            0x10..=0x24 | 0x30 => 0,
            _ => u32::MAX,
        }
    }
}

impl ConfigAccess for Model {
    fn read32(&self, a: PciAddress, offset: u16) -> u32 {
        assert!(offset % 4 == 0 && offset < 0x1000, "bad offset {offset:#x}");
        self.spaces
            .borrow()
            .get(&a)
            .map_or(u32::MAX, |s| s[usize::from(offset / 4)])
    }

    fn write32(&self, a: PciAddress, offset: u16, value: u32) {
        assert!(offset % 4 == 0 && offset < 0x1000, "bad offset {offset:#x}");
        self.writes.borrow_mut().push(Write {
            address: a,
            offset,
            value,
        });
        let mask = self
            .masks
            .get(&(a, offset))
            .copied()
            .unwrap_or_else(|| Self::default_mask(offset));
        let mut spaces = self.spaces.borrow_mut();
        let Some(space) = spaces.get_mut(&a) else {
            return;
        };
        let old = space[usize::from(offset / 4)];
        let mut new = (value & mask) | (old & !mask);
        if offset == 0x04 {
            // Status: write 1 to clear.
            let status = (old >> 16) & !(value >> 16);
            new = (new & 0xFFFF) | (status << 16);
        }
        space[usize::from(offset / 4)] = new;
    }
}
