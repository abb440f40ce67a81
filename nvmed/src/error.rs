//! Typed errors of the NVMe driver library.

use std::time::Duration;

use nvme_spec::{SpecError, Status};
use pcid_hw::HwError;

/// Everything that can go wrong talking to an NVMe controller. Every variant
/// names the step (or command) that failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// A wait did not end before its deadline.
    #[error("{step}: timed out after {waited:?}")]
    Timeout {
        /// What was being waited for, e.g. "wait CSTS.RDY=1 after enable".
        step: &'static str,
        /// How long the driver waited (measured on its clock).
        waited: Duration,
    },
    /// The controller reported Controller Fatal Status (CSTS.CFS=1).
    #[error("{step}: controller fatal status (CSTS.CFS=1)")]
    ControllerFatal {
        /// The step during which CFS was seen.
        step: &'static str,
    },
    /// The controller's registers read all-ones: it is no longer on the bus.
    #[error("{step}: device gone (registers read all-ones)")]
    DeviceGone {
        /// The step during which the device disappeared.
        step: &'static str,
    },
    /// A command completed with an error status.
    #[error("{command} failed: {status}")]
    CommandFailed {
        /// The command, e.g. "Create I/O Submission Queue".
        command: &'static str,
        /// The status field of its completion entry.
        status: Status,
    },
    /// No valid completion arrived before the deadline, but the controller
    /// posted completion entries that do not belong to any outstanding
    /// command (wrong command identifier or submission queue).
    #[error(
        "{step}: no valid completion for command {expected_cid:#06x} on SQ {expected_sq}; \
         discarded {discarded} unexpected completion entries (last: command {last_cid:#06x} on SQ {last_sq})"
    )]
    InvalidCompletion {
        /// The command being waited for.
        step: &'static str,
        /// Command identifier that was expected.
        expected_cid: u16,
        /// Submission queue that was expected.
        expected_sq: u16,
        /// How many unexpected entries were discarded.
        discarded: u32,
        /// Command identifier of the last unexpected entry.
        last_cid: u16,
        /// Submission queue identifier of the last unexpected entry.
        last_sq: u16,
    },
    /// The submission queue has no free slot (the controller has not
    /// consumed earlier entries).
    #[error("{step}: submission queue {qid} is full")]
    QueueFull {
        /// The command that could not be submitted.
        step: &'static str,
        /// The queue.
        qid: u16,
    },
    /// The controller cannot be used for this: e.g. I/O is refused after
    /// too many commands did not complete (their memory is quarantined until
    /// the controller is reset).
    #[error("the controller cannot be used: {reason}")]
    Unusable {
        /// Why.
        reason: String,
    },
    /// Shutdown has begun: no new I/O is accepted.
    #[error("the controller is shutting down: no new I/O is accepted")]
    ShuttingDown,
    /// `finish` was called before `begin`.
    #[error("shutdown finish requested before begin")]
    NotBegun,
    /// The controller lacks something this driver needs.
    #[error("{step}: unsupported controller: {reason}")]
    Unsupported {
        /// The step that found the problem.
        step: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The controller returned data this driver cannot use.
    #[error("{step}: invalid data from the controller: {reason}")]
    BadData {
        /// The step that found the problem.
        step: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The caller asked for something invalid (bad length, LBA range, namespace).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// DMA memory could not be allocated or accessed.
    #[error("{step}: DMA memory: {source}")]
    Dma {
        /// The step that needed the memory.
        step: &'static str,
        /// The backend error.
        #[source]
        source: HwError,
    },
}

impl NvmeError {
    /// A command or register value `step` could not encode (a count outside
    /// what its field holds): the request is invalid, nothing was submitted.
    pub(crate) fn encode(step: &'static str) -> impl FnOnce(SpecError) -> NvmeError {
        move |e| NvmeError::InvalidRequest {
            reason: format!("{step}: {e}"),
        }
    }

    /// Wraps a DMA backend error with the step that hit it.
    pub(crate) fn dma(step: &'static str) -> impl FnOnce(HwError) -> NvmeError {
        move |source| NvmeError::Dma { step, source }
    }
}
