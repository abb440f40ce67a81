//! NVMe definitions shared by the `nvmed` driver and the `nvme_sim` controller model.
//!
//! Everything here follows the NVM Express Base Specification, revision 1.4
//! (section numbers in doc comments refer to that revision unless
//! stated otherwise); the I/O commands follow its NVM command set chapter (§6).
//!
//! * [`regs`] — controller registers (CAP, VS, CC, CSTS, AQA) as bit-field
//!   types, their offsets, and doorbell offsets using the CAP.DSTRD stride (§3.1).
//! * [`cmd`] — the 64-byte submission queue entry and the 16-byte completion
//!   queue entry (§4.2, §4.6), admin and NVM opcodes, and typed command dwords.
//! * [`status`] — the completion status field and its status codes (§4.6.1).
//! * [`identify`] — Identify CNS values and the 4096-byte Identify Controller,
//!   Identify Namespace and Active Namespace ID list structures (§5.15).
//! * [`features`] — feature identifiers used by Set/Get Features (§5.21).
//!
//! # How the layouts are written
//!
//! Registers and command dwords are [`bitfield_struct`] types: every bit of
//! the register is a named field or reserved padding, so the field positions
//! are checked by the compiler and reserved bits survive a read–modify–write.
//! Queue entries and data structures are `#[repr(C)]` structs deriving
//! [`zerocopy`]'s `FromBytes`/`IntoBytes`/`KnownLayout`/`Immutable`: the
//! derive proves the struct has no padding and accepts every bit pattern,
//! and `const` assertions pin each size (64-byte SQE, 16-byte CQE, 4096-byte
//! Identify pages) and the offsets of the fields the specification numbers.
//! Code enumerations (opcodes, status codes, CNS, feature identifiers, CC.SHN,
//! CSTS.SHST …) are [`open_enum`] newtypes: one table of named values per
//! enumeration, and a value the table does not name is kept as it is rather
//! than mapped to a default.
//!
//! NVMe structures are little-endian; the layouts use native integers, so the
//! crate refuses to build for a big-endian target.
//!
//! # Errors, not panics
//!
//! Every `from_bytes` takes a byte slice and returns [`SpecError::TooShort`]
//! when it is shorter than the structure. Builders that turn a 1's based count
//! into a 0's based field return [`SpecError::OutOfRange`] for a count the
//! field cannot hold, and text fields reject what is not printable ASCII or
//! too long ([`SpecError::InvalidText`]). Nothing here panics on its input.
//!
//! The generated `with_*`/`set_*` setters of the bit-field types panic when a
//! value does not fit its field, as `bitfield_struct` documents; values that
//! come from outside the program go through the `*_checked` variants or the
//! builders here, which check first.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(target_endian = "little"))]
compile_error!(
    "nvme_spec lays out NVMe's little-endian structures with native integers; \
     big-endian targets are not supported"
);

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

use zerocopy::FromBytes;

/// Errors from decoding or building NVMe data structures.
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
    /// A value does not fit the field that should hold it.
    #[error("{what} must be {min}..={max}, got {value}")]
    OutOfRange {
        /// Which value (field and unit).
        what: &'static str,
        /// The value supplied.
        value: u64,
        /// Smallest value the field can hold.
        min: u64,
        /// Largest value the field can hold.
        max: u64,
    },
    /// Text for a fixed-length ASCII field is too long or not printable ASCII.
    #[error("{what}: {reason}")]
    InvalidText {
        /// Which field.
        what: &'static str,
        /// What is wrong with the text.
        reason: String,
    },
}

/// Decodes a `T` from the first `size_of::<T>()` bytes of `bytes`.
pub(crate) fn read_prefix<T: FromBytes>(what: &'static str, bytes: &[u8]) -> Result<T, SpecError> {
    T::read_from_prefix(bytes)
        .map(|(value, _rest)| value)
        .map_err(|_| SpecError::TooShort {
            what,
            expected: size_of::<T>(),
            actual: bytes.len(),
        })
}

/// The 0's based encoding of a 1's based `count` for a field of `bits` bits
/// (at most 16): counts `1..=2^bits` fit, anything else is
/// [`SpecError::OutOfRange`].
pub(crate) fn zeros_based(what: &'static str, count: u32, bits: usize) -> Result<u16, SpecError> {
    let max = 1u32 << bits.min(16);
    match count
        .checked_sub(1)
        .filter(|_| count <= max)
        .map(u16::try_from)
    {
        Some(Ok(value)) => Ok(value),
        _ => Err(SpecError::OutOfRange {
            what,
            value: u64::from(count),
            min: 1,
            max: u64::from(max),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_based_checks_both_ends() {
        assert_eq!(zeros_based("n", 1, 12), Ok(0));
        assert_eq!(zeros_based("n", 4096, 12), Ok(0xFFF));
        assert_eq!(
            zeros_based("n", 4097, 12),
            Err(SpecError::OutOfRange {
                what: "n",
                value: 4097,
                min: 1,
                max: 4096
            })
        );
        assert!(zeros_based("n", 0, 16).is_err());
        assert_eq!(zeros_based("n", 65536, 16), Ok(0xFFFF));
        assert!(zeros_based("n", 65537, 16).is_err());
        assert!(zeros_based("n", u32::MAX, 16).is_err());
    }

    #[test]
    fn read_prefix_reports_sizes() {
        assert_eq!(read_prefix::<u32>("x", &[1, 0, 0, 0, 9]), Ok(1));
        assert_eq!(
            read_prefix::<u32>("x", &[1, 0]),
            Err(SpecError::TooShort {
                what: "x",
                expected: 4,
                actual: 2
            })
        );
    }
}
