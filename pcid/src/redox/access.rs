//! `/scheme/pci/access`: byte-granular configuration-space access for acpid.
//!
//! acpid's AML interpreter reads and writes PCI configuration space
//! (`PCI_Config` operation regions, also while evaluating `\_S5` at
//! power-off) through this node with the `call` system call, as Redox's pcid
//! defines it:
//!
//! * `metadata[0]`: [`READ`] (1) or [`WRITE`] (2);
//! * `metadata[1]`: the packed address `segment << 28 | bus << 20 |
//!   device << 15 | function << 12 | offset` ([`pack`], [`unpack`]);
//! * the payload: the bytes to read into or write from, any length and any
//!   alignment. Configuration space is accessed in dwords, so bytes that do
//!   not fill a whole dword are merged into the dword read first
//!   (read-modify-write);
//! * the answer: the payload length.
//!
//! Errors, as Redox's pcid answers them: a payload longer than 65535 bytes,
//! an unknown `metadata[0]` or a missing `metadata[1]` is `EINVAL`
//! ([`AccessError`]). Where Redox's pcid panics — a range running past the
//! 4 KiB configuration space — this one answers `EINVAL` as well.
//!
//! Redox's pcid writes each merged dword back to the *next* dword offset (its
//! loop advances the offset before the write); this implementation writes it
//! where it was read, which is what acpid's callers mean. A dword the payload
//! covers entirely is written without being read first.

use pcid_interface::function::PciAddress;

use super::config_space::{ConfigAccess, CONFIG_SPACE_LEN};

/// `metadata[0]` of a read.
pub const READ: u64 = 1;
/// `metadata[0]` of a write.
pub const WRITE: u64 = 2;

/// Why an access request is refused (`EINVAL`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// `metadata[0]` is neither read nor write, or missing.
    #[error("unknown access kind {0:?} (1 = read, 2 = write)")]
    Kind(Option<u64>),
    /// `metadata[1]` (the address) is missing.
    #[error("no address in metadata[1]")]
    NoAddress,
    /// The payload is longer than 65535 bytes.
    #[error("payload of {0} bytes is longer than 65535")]
    TooLong(usize),
    /// The range runs past the end of configuration space.
    #[error("bytes {offset:#x}..{end:#x} run past the 4 KiB configuration space")]
    OutOfRange {
        /// First byte.
        offset: u16,
        /// One past the last byte.
        end: usize,
    },
}

/// Packs an address and offset as `metadata[1]`.
pub fn pack(address: PciAddress, offset: u16) -> u64 {
    (u64::from(address.segment) << 28)
        | (u64::from(address.bus) << 20)
        | (u64::from(address.device & 0x1F) << 15)
        | (u64::from(address.function & 0x7) << 12)
        | u64::from(offset & 0xFFF)
}

/// Unpacks `metadata[1]` (bits above the segment are ignored, as in Redox).
pub fn unpack(value: u64) -> (PciAddress, u16) {
    (
        PciAddress {
            segment: ((value >> 28) & 0xFFFF) as u16,
            bus: ((value >> 20) & 0xFF) as u8,
            device: ((value >> 15) & 0x1F) as u8,
            function: ((value >> 12) & 0x7) as u8,
        },
        (value & 0xFFF) as u16,
    )
}

/// Serves one `call` on the `access` node; returns the payload length.
pub fn call(
    cfg: &dyn ConfigAccess,
    payload: &mut [u8],
    metadata: &[u64],
) -> Result<usize, AccessError> {
    if payload.len() > usize::from(u16::MAX) {
        return Err(AccessError::TooLong(payload.len()));
    }
    let write = match metadata.first() {
        Some(&READ) => false,
        Some(&WRITE) => true,
        other => return Err(AccessError::Kind(other.copied())),
    };
    let (address, offset) = unpack(*metadata.get(1).ok_or(AccessError::NoAddress)?);
    let end = usize::from(offset) + payload.len();
    if end > usize::from(CONFIG_SPACE_LEN) {
        return Err(AccessError::OutOfRange { offset, end });
    }
    let start = usize::from(offset);
    if payload.is_empty() {
        return Ok(0);
    }
    let mut dword = start & !3;
    while dword < end {
        // Bytes of this dword that the payload covers.
        let first = dword.max(start);
        let last = (dword + 4).min(end);
        let reg = dword as u16;
        if write {
            let mut bytes = if first == dword && last == dword + 4 {
                [0; 4]
            } else {
                cfg.read32(address, reg).to_le_bytes()
            };
            bytes[first - dword..last - dword]
                .copy_from_slice(&payload[first - start..last - start]);
            cfg.write32(address, reg, u32::from_le_bytes(bytes));
        } else {
            let bytes = cfg.read32(address, reg).to_le_bytes();
            payload[first - start..last - start]
                .copy_from_slice(&bytes[first - dword..last - dword]);
        }
        dword += 4;
    }
    Ok(payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redox::config_space::model::{addr, Model};

    fn model() -> (Model, PciAddress) {
        let a = addr(0, 0, 0x1F, 0);
        let mut m = Model::default();
        m.function(a, 0x8086, 0x2918, 0x0601_0002, 0x80);
        m.set(a, 0x40, 0x4433_2211);
        m.set(a, 0x44, 0x8877_6655);
        m.set(a, 0x48, 0xCCBB_AA99);
        (m, a)
    }

    #[test]
    fn metadata_packs_like_acpid_packs_it() {
        let a = addr(0, 0x12, 0x1F, 3);
        let packed = pack(a, 0x3C);
        assert_eq!(packed, (0x12 << 20) | (0x1F << 15) | (3 << 12) | 0x3C);
        assert_eq!(unpack(packed), (a, 0x3C));
        let b = addr(0xABCD, 0xFF, 31, 7);
        assert_eq!(unpack(pack(b, 0xFFF)), (b, 0xFFF));
    }

    #[test]
    fn reads_of_any_size_and_alignment() {
        let (m, a) = model();
        let mut id = [0u8; 4];
        assert_eq!(call(&m, &mut id, &[READ, pack(a, 0)]), Ok(4));
        assert_eq!(u32::from_le_bytes(id), 0x2918_8086);
        let mut device = [0u8; 2];
        call(&m, &mut device, &[READ, pack(a, 2)]).unwrap();
        assert_eq!(u16::from_le_bytes(device), 0x2918);
        // Across three dwords.
        let mut span = [0u8; 7];
        call(&m, &mut span, &[READ, pack(a, 0x43)]).unwrap();
        assert_eq!(span, [0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA]);
        assert!(m.writes().is_empty(), "a read writes nothing");
    }

    #[test]
    fn writes_merge_partial_dwords_in_place() {
        let (m, a) = model();
        // One byte: read-modify-write of the same dword (not the next one).
        call(&m, &mut [0xEE], &[WRITE, pack(a, 0x41)]).unwrap();
        assert_eq!(m.get(a, 0x40), 0x4433_EE11);
        assert_eq!(m.get(a, 0x44), 0x8877_6655);
        // Across a dword boundary: both dwords merged.
        call(&m, &mut [1, 2, 3, 4], &[WRITE, pack(a, 0x46)]).unwrap();
        assert_eq!(m.get(a, 0x44), 0x0201_6655);
        assert_eq!(m.get(a, 0x48), 0xCCBB_0403);
        // A whole aligned dword is written without being read.
        m.clear_writes();
        call(
            &m,
            &mut 0xDEAD_BEEFu32.to_le_bytes(),
            &[WRITE, pack(a, 0x40)],
        )
        .unwrap();
        assert_eq!(m.get(a, 0x40), 0xDEAD_BEEF);
        let offsets: Vec<u16> = m.writes().iter().map(|w| w.offset).collect();
        assert_eq!(offsets, [0x40]);
    }

    #[test]
    fn bad_requests_are_refused_before_any_access() {
        let (m, a) = model();
        let mut b = [0u8; 4];
        assert_eq!(
            call(&m, &mut b, &[3, pack(a, 0)]),
            Err(AccessError::Kind(Some(3)))
        );
        assert_eq!(call(&m, &mut b, &[]), Err(AccessError::Kind(None)));
        assert_eq!(call(&m, &mut b, &[READ]), Err(AccessError::NoAddress));
        assert_eq!(
            call(&m, &mut b, &[WRITE, pack(a, 0xFFE)]),
            Err(AccessError::OutOfRange {
                offset: 0xFFE,
                end: 0x1002
            })
        );
        let mut big = vec![0u8; 65536];
        assert_eq!(
            call(&m, &mut big, &[READ, pack(a, 0)]),
            Err(AccessError::TooLong(65536))
        );
        assert!(m.writes().is_empty());
        // The last bytes of configuration space and an empty payload are fine.
        assert_eq!(call(&m, &mut b, &[READ, pack(a, 0xFFC)]), Ok(4));
        assert_eq!(call(&m, &mut [], &[WRITE, pack(a, 0x41)]), Ok(0));
        assert!(m.writes().is_empty());
        // An absent function reads all-ones.
        call(&m, &mut b, &[READ, pack(addr(0, 9, 9, 0), 0)]).unwrap();
        assert_eq!(b, [0xFF; 4]);
    }
}
