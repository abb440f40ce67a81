//! A submission/completion queue pair in DMA memory (NVMe Base Specification
//! 1.4, §4.1 "Submission Queue & Completion Queue Definition").
//!
//! The driver keeps at most one command outstanding per queue pair, under the
//! lock that owns the pair, so command identifiers never collide. Completion
//! entries are validated (phase tag, submission queue identifier, command
//! identifier, SQ head pointer) before they are believed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use log::warn;
use nvme_spec::cmd::{CompletionEntry, SubmissionEntry, CQ_ENTRY_SIZE, SQ_ENTRY_SIZE};
use pcid_hw::{Clock, DmaAllocator, DmaBuffer, RegisterIo, PAGE_SIZE};

use crate::poll::Backoff;
use crate::regs::{Doorbells, Registers};
use crate::NvmeError;

/// Most entries a queue may have so that it fits in one DMA page: only one
/// page is guaranteed to be physically contiguous, and the queues are created
/// physically contiguous (CAP.CQR may require it).
pub(crate) const MAX_ENTRIES_PER_PAGE: u16 = (PAGE_SIZE / SQ_ENTRY_SIZE) as u16;

/// One submission queue and the completion queue it posts to.
pub(crate) struct QueuePair<B: DmaBuffer> {
    qid: u16,
    entries: u16,
    sq: B,
    cq: B,
    sq_tail: u16,
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
    doorbells: Doorbells,
}

/// What the wait for one completion needs besides the queue.
pub(crate) struct WaitCtx<'a, R, C: ?Sized> {
    pub regs: &'a Registers<R>,
    pub clock: &'a C,
    pub name: &'a str,
    pub timeout: Duration,
    pub backoff: Backoff,
    pub stats: &'a IoStatCounters,
}

/// Counters of what waiting for completions cost (see [`crate::IoStats`]).
#[derive(Debug, Default)]
pub(crate) struct IoStatCounters {
    commands: AtomicU64,
    looks: AtomicU64,
    sleeps: AtomicU64,
    slept_us: AtomicU64,
    waited_us: AtomicU64,
}

impl IoStatCounters {
    /// A snapshot.
    pub(crate) fn snapshot(&self) -> crate::IoStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::IoStats {
            commands: get(&self.commands),
            completion_looks: get(&self.looks),
            sleeps: get(&self.sleeps),
            slept: Duration::from_micros(get(&self.slept_us)),
            waited: Duration::from_micros(get(&self.waited_us)),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl<B: DmaBuffer> QueuePair<B> {
    /// Allocates the queue memory for queue pair `qid` with `entries` entries.
    pub(crate) fn new<D: DmaAllocator<Buffer = B>>(
        dma: &D,
        qid: u16,
        entries: u16,
        dstrd: u8,
    ) -> Result<Self, NvmeError> {
        let entries = entries.clamp(2, MAX_ENTRIES_PER_PAGE);
        let sq = dma
            .allocate(usize::from(entries) * SQ_ENTRY_SIZE)
            .map_err(NvmeError::dma("allocate submission queue"))?;
        let cq = dma
            .allocate(usize::from(entries) * CQ_ENTRY_SIZE)
            .map_err(NvmeError::dma("allocate completion queue"))?;
        Ok(Self {
            qid,
            entries,
            sq,
            cq,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            next_cid: 0,
            doorbells: Doorbells::new(qid, dstrd),
        })
    }

    /// The queue memory, for keeping it when the queues may still exist in
    /// the controller.
    pub(crate) fn into_buffers(self) -> [B; 2] {
        [self.sq, self.cq]
    }

    /// Queue identifier.
    pub(crate) fn qid(&self) -> u16 {
        self.qid
    }
    /// Number of entries in each queue.
    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }
    /// Bus address of the submission queue.
    pub(crate) fn sq_address(&self) -> Result<u64, NvmeError> {
        self.sq
            .device_address(0)
            .map_err(NvmeError::dma("submission queue address"))
    }
    /// Bus address of the completion queue.
    pub(crate) fn cq_address(&self) -> Result<u64, NvmeError> {
        self.cq
            .device_address(0)
            .map_err(NvmeError::dma("completion queue address"))
    }

    /// Places `entry` (with a fresh command identifier) in the submission
    /// queue and rings the tail doorbell. Returns the command identifier.
    fn submit<R: RegisterIo>(
        &mut self,
        regs: &Registers<R>,
        step: &'static str,
        mut entry: SubmissionEntry,
    ) -> Result<u16, NvmeError> {
        let next_tail = (self.sq_tail + 1) % self.entries;
        if next_tail == self.sq_head {
            return Err(NvmeError::QueueFull {
                step,
                qid: self.qid,
            });
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        entry.set_cid(cid);
        self.sq
            .write(usize::from(self.sq_tail) * SQ_ENTRY_SIZE, &entry.to_bytes())
            .map_err(NvmeError::dma(step))?;
        self.sq_tail = next_tail;
        regs.ring_sq_tail(self.doorbells, self.sq_tail);
        Ok(cid)
    }

    /// Consumes the completion entry at the head if its phase tag says it is
    /// new, and rings the head doorbell.
    fn poll_one<R: RegisterIo>(
        &mut self,
        regs: &Registers<R>,
        step: &'static str,
    ) -> Result<Option<CompletionEntry>, NvmeError> {
        let slot = usize::from(self.cq_head) * CQ_ENTRY_SIZE;
        // The phase tag lives in dword 3. Look at that dword on its own first:
        // a device may still be writing the entry while the CPU copies it, and
        // only once the new phase is visible are dwords 0..=2 known to be
        // complete (the backend's read is ordered with an acquire fence).
        let mut dw3 = [0u8; 4];
        self.cq
            .read(slot + 12, &mut dw3)
            .map_err(NvmeError::dma(step))?;
        let dw3_phase = dw3[2] & 1 == 1;
        if dw3_phase != self.phase {
            return Ok(None);
        }
        let mut raw = [0u8; CQ_ENTRY_SIZE];
        self.cq.read(slot, &mut raw).map_err(NvmeError::dma(step))?;
        let entry = CompletionEntry::from_bytes(&raw).map_err(|e| NvmeError::BadData {
            step,
            reason: e.to_string(),
        })?;
        if entry.phase() != self.phase {
            return Ok(None);
        }
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        regs.ring_cq_head(self.doorbells, self.cq_head);
        Ok(Some(entry))
    }

    /// Submits `entry` and waits for its completion. A completion with an
    /// error status is [`NvmeError::CommandFailed`]; entries that belong to no
    /// outstanding command are logged and discarded. While waiting, CSTS is
    /// checked so that a fatal or vanished controller ends the wait at once.
    pub(crate) fn execute<R: RegisterIo, C: Clock + ?Sized>(
        &mut self,
        ctx: &WaitCtx<'_, R, C>,
        command: &'static str,
        entry: SubmissionEntry,
    ) -> Result<CompletionEntry, NvmeError> {
        let cid = self.submit(ctx.regs, command, entry)?;
        let start = ctx.clock.now();
        IoStatCounters::add(&ctx.stats.commands, 1);
        let result = self.wait_for_completion(ctx, command, cid, start);
        IoStatCounters::add(
            &ctx.stats.waited_us,
            u64::try_from(ctx.clock.now().saturating_sub(start).as_micros()).unwrap_or(u64::MAX),
        );
        result
    }

    /// Waits (bounded by `ctx.timeout` from `start`) for the completion of
    /// command `cid`, polling the completion queue with back-off.
    fn wait_for_completion<R: RegisterIo, C: Clock + ?Sized>(
        &mut self,
        ctx: &WaitCtx<'_, R, C>,
        command: &'static str,
        cid: u16,
        start: Duration,
    ) -> Result<CompletionEntry, NvmeError> {
        let deadline = start.saturating_add(ctx.timeout);
        let mut backoff = ctx.backoff;
        let mut discarded: u32 = 0;
        let mut last_bad = (0u16, 0u16);
        let mut run_without_sleep: u32 = 0;
        loop {
            IoStatCounters::add(&ctx.stats.looks, 1);
            if let Some(c) = self.poll_one(ctx.regs, command)? {
                if c.cid == cid && c.sq_id == self.qid {
                    if c.sq_head < self.entries {
                        self.sq_head = c.sq_head;
                    } else {
                        warn!(
                            "{}: {command}: completion reports SQ head {} beyond queue size {}; ignored",
                            ctx.name, c.sq_head, self.entries
                        );
                        self.sq_head = self.sq_tail;
                    }
                    if c.status().is_success() {
                        return Ok(c);
                    }
                    return Err(NvmeError::CommandFailed {
                        command,
                        status: c.status(),
                    });
                }
                discarded = discarded.saturating_add(1);
                last_bad = (c.cid, c.sq_id);
                warn!(
                    "{}: {command}: discarding unexpected completion (command {:#06x} on SQ {}, expected {:#06x} on SQ {})",
                    ctx.name, c.cid, c.sq_id, cid, self.qid
                );
                run_without_sleep += 1;
                // A device that keeps posting garbage must not keep us
                // spinning without the clock moving.
                if run_without_sleep < u32::from(self.entries) {
                    continue;
                }
            }
            run_without_sleep = 0;
            let csts = ctx.regs.csts(command)?;
            if csts.cfs() {
                return Err(NvmeError::ControllerFatal { step: command });
            }
            let now = ctx.clock.now();
            if now >= deadline {
                // The command may still complete later; the submission slot is
                // given up so the queue does not fill with lost commands.
                self.sq_head = self.sq_tail;
                if discarded > 0 {
                    return Err(NvmeError::InvalidCompletion {
                        step: command,
                        expected_cid: cid,
                        expected_sq: self.qid,
                        discarded,
                        last_cid: last_bad.0,
                        last_sq: last_bad.1,
                    });
                }
                return Err(NvmeError::Timeout {
                    step: command,
                    waited: now.saturating_sub(start),
                });
            }
            let pause = backoff.next_delay().min(deadline - now);
            IoStatCounters::add(&ctx.stats.sleeps, 1);
            IoStatCounters::add(
                &ctx.stats.slept_us,
                u64::try_from(pause.as_micros()).unwrap_or(u64::MAX),
            );
            ctx.clock.sleep(pause);
        }
    }
}
