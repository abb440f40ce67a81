//! Page-granular memory shared with a device: the CPU side of a DMA buffer,
//! common to the Linux and Redox backends (each owns and frees the mapping;
//! this type only accesses it).
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::{HwError, PAGE_SIZE};

/// A mapping of whole pages and the bus address of each page.
#[derive(Debug)]
pub(crate) struct MappedPages {
    base: NonNull<u8>,
    len: usize,
    /// Bus (physical) address of each page, in order.
    phys: Vec<u64>,
}

// SAFETY: the owner of a `MappedPages` owns its mapping exclusively; moving it
// to another thread moves that ownership. Accesses through `&self` are
// volatile copies.
unsafe impl Send for MappedPages {}

impl MappedPages {
    /// Describes the mapping `base..base + len` (whole pages), with no page
    /// addresses yet ([`MappedPages::push_page`] adds them in order).
    ///
    /// # Safety
    /// `base..base + len` must be readable and writable memory that stays
    /// mapped for as long as this value is used, and `len` a multiple of
    /// [`PAGE_SIZE`].
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self {
            base,
            len,
            phys: Vec::with_capacity(len / PAGE_SIZE),
        }
    }

    /// Records the bus address of the next page.
    pub(crate) fn push_page(&mut self, phys: u64) {
        self.phys.push(phys);
    }

    /// Start of the mapping (for the owner to unmap it).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), HwError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(HwError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Bus address of byte `offset`.
    pub(crate) fn device_address(&self, offset: usize) -> Result<u64, HwError> {
        self.check(offset, 1)?;
        let page = self
            .phys
            .get(offset / PAGE_SIZE)
            .ok_or(HwError::OutOfBounds {
                offset,
                len: 1,
                size: self.phys.len() * PAGE_SIZE,
            })?;
        Ok(page + (offset % PAGE_SIZE) as u64)
    }

    /// Copies bytes out with volatile loads between acquire fences.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HwError> {
        self.check(offset, out.len())?;
        fence(Ordering::Acquire);
        // SAFETY: `check` proved `offset..offset + out.len()` lies inside the
        // mapping, which stays mapped while `self` is used (contract of `new`);
        // `out` is a distinct Rust buffer.
        unsafe { volatile_copy_from(self.base.as_ptr().add(offset), out) };
        fence(Ordering::Acquire);
        Ok(())
    }

    /// Copies bytes in with volatile stores between release fences.
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result<(), HwError> {
        self.check(offset, data.len())?;
        fence(Ordering::Release);
        // SAFETY: `check` proved `offset..offset + data.len()` lies inside the
        // mapping, which stays mapped while `self` is used (contract of `new`);
        // `data` is a distinct Rust buffer.
        unsafe { volatile_copy_to(self.base.as_ptr().add(offset), data) };
        fence(Ordering::Release);
        Ok(())
    }
}

/// Copies `out.len()` bytes from device-shared memory at `src` with volatile
/// loads (8 bytes at a time where aligned), so that no load is elided or
/// merged across calls while a device may be writing.
///
/// # Safety
/// `src..src + out.len()` must be readable memory not aliased by `out`.
unsafe fn volatile_copy_from(src: *const u8, out: &mut [u8]) {
    let mut i = 0;
    let n = out.len();
    while i < n && (src as usize + i) % 8 != 0 {
        // SAFETY: i < n, inside the caller's range.
        out[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
    while i + 8 <= n {
        // SAFETY: 8 bytes at src+i are inside the range and the address is 8-aligned.
        let word = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
        out[i..i + 8].copy_from_slice(&word.to_ne_bytes());
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, inside the caller's range.
        out[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
}

/// Copies `data` into device-shared memory at `dst` with volatile stores.
///
/// # Safety
/// `dst..dst + data.len()` must be writable memory not aliased by `data`.
unsafe fn volatile_copy_to(dst: *mut u8, data: &[u8]) {
    let mut i = 0;
    let n = data.len();
    while i < n && (dst as usize + i) % 8 != 0 {
        // SAFETY: i < n, inside the caller's range.
        unsafe { std::ptr::write_volatile(dst.add(i), data[i]) };
        i += 1;
    }
    while i + 8 <= n {
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[i..i + 8]);
        // SAFETY: 8 bytes at dst+i are inside the range and the address is 8-aligned.
        unsafe { std::ptr::write_volatile(dst.add(i).cast::<u64>(), u64::from_ne_bytes(word)) };
        i += 8;
    }
    while i < n {
        // SAFETY: i < n, inside the caller's range.
        unsafe { std::ptr::write_volatile(dst.add(i), data[i]) };
        i += 1;
    }
}
