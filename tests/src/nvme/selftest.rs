//! A self-test that proves the data path end to end: write a pattern unique
//! to the controller, flush, read it back and compare.

use log::info;
use pcid_hw::{Clock, DmaAllocator, RegisterIo};

use nvmed::{Controller, NvmeError};

/// Blocks written by [`run`], from LBA 0 of the first active namespace.
pub const SELFTEST_BLOCKS: usize = 8;

/// The self-test pattern for a controller with serial number `serial`: the
/// ASCII text `nvmed-selftest serial=<SN>` repeated back to back over `len`
/// bytes (the last copy cut short). Whoever inspects the medium afterwards
/// (for example the image file of a QEMU controller) can recompute it.
pub fn pattern(serial: &str, len: usize) -> Vec<u8> {
    let unit = format!("nvmed-selftest serial={serial}");
    unit.bytes().cycle().take(len).collect()
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelftestReport {
    /// Namespace written.
    pub nsid: u32,
    /// Bytes written and read back.
    pub bytes: usize,
}

/// Errors of the self-test.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    /// The controller has no active namespace.
    #[error("self-test: the controller has no active namespace")]
    NoNamespace,
    /// A command failed.
    #[error("self-test: {0}")]
    Nvme(#[from] NvmeError),
    /// The data read back differs from what was written.
    #[error(
        "self-test: data read back from namespace {nsid} differs from what was written \
         (first difference at byte {offset} of {len})"
    )]
    Mismatch {
        /// Namespace.
        nsid: u32,
        /// First differing byte.
        offset: usize,
        /// Bytes compared.
        len: usize,
    },
}

/// Writes [`pattern`] for the controller's serial number over
/// [`SELFTEST_BLOCKS`] blocks at LBA 0 of the first active namespace,
/// flushes, reads the blocks back and compares.
pub fn run<R: RegisterIo, D: DmaAllocator, C: Clock>(
    ctrl: &Controller<R, D, C>,
) -> Result<SelftestReport, SelftestError> {
    let ns = *ctrl
        .namespaces()
        .first()
        .ok_or(SelftestError::NoNamespace)?;
    let len = SELFTEST_BLOCKS * ns.block_size as usize;
    let data = pattern(&ctrl.info().serial, len);
    ctrl.write(ns.nsid, 0, &data)?;
    ctrl.flush(ns.nsid)?;
    let mut back = vec![0u8; len];
    ctrl.read(ns.nsid, 0, &mut back)?;
    if let Some(offset) = data.iter().zip(&back).position(|(a, b)| a != b) {
        return Err(SelftestError::Mismatch {
            nsid: ns.nsid,
            offset,
            len,
        });
    }
    info!(
        "{}: self-test passed: {len} bytes written, flushed and read back on namespace {}",
        ctrl.name(),
        ns.nsid
    );
    Ok(SelftestReport {
        nsid: ns.nsid,
        bytes: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_repeats_the_serial_text() {
        let p = pattern("SN1", 40);
        assert_eq!(&p[..21], b"nvmed-selftest serial");
        assert_eq!(&p[..25], b"nvmed-selftest serial=SN1");
        assert_eq!(&p[25..40], b"nvmed-selftest ");
        assert_eq!(pattern("X", 0), Vec::<u8>::new());
    }
}
