//! NVMe definitions shared by the `nvmed` driver and the `nvme_sim` controller model.
//!
//! Everything here follows the NVM Express Base Specification, revision 1.4
//! (section numbers in doc comments refer to that revision unless stated
//! otherwise); the I/O commands follow its NVM command set chapter (§6).
//!
//! * [`regs`] — controller registers (CAP, VS, CC, CSTS, AQA, ASQ, ACQ) as typed
//!   newtypes, and doorbell offsets using the CAP.DSTRD stride (§3.1).
//! * [`cmd`] — 64-byte submission queue entries and 16-byte completion queue
//!   entries (§4.2, §4.6), admin and NVM opcodes, and typed command dwords.
//! * [`status`] — the completion status field and its status codes (§4.6.1).
//! * [`identify`] — Identify CNS values and the Identify Controller / Namespace
//!   data structures (§5.15).
//! * [`features`] — feature identifiers used by Set/Get Features (§5.21).
//!
//! Parsing never panics: every `from_bytes`/`parse` takes a byte slice and
//! returns a [`SpecError`] when it is too short.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod bits;
pub mod cmd;
pub mod features;
pub mod identify;
pub mod regs;
pub mod status;

pub use cmd::{AdminOpcode, CompletionEntry, NvmOpcode, SubmissionEntry};
pub use regs::{
    Aqa, Cap, Cc, CommandSetSelect, Csts, ShutdownNotification, ShutdownStatus, Version,
};
pub use status::{CommandSpecificStatus, GenericStatus, Status, StatusCodeType};

/// Errors from decoding NVMe data structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The input is shorter than the structure it should hold.
    #[error("{what} needs {expected} bytes, got {actual}")]
    TooShort {
        /// Which structure was being decoded.
        what: &'static str,
        /// Bytes required.
        expected: usize,
        /// Bytes supplied.
        actual: usize,
    },
}

/// Checks that `bytes` holds at least `expected` bytes.
pub(crate) fn need(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), SpecError> {
    if bytes.len() < expected {
        Err(SpecError::TooShort {
            what,
            expected,
            actual: bytes.len(),
        })
    } else {
        Ok(())
    }
}

/// Little-endian u16 at `at` (caller has checked the length).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// Little-endian u32 at `at` (caller has checked the length).
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Little-endian u64 at `at` (caller has checked the length).
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}
