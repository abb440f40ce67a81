//! The controller model: registers, queues, command execution and shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nvme_spec::cmd::{
    CreateCqDw11, CreateSqDw11, FeaturesDw10, IdentifyDw10, NumberOfQueues, QueueDw10, RwDw12,
    CQ_ENTRY_SIZE, CQ_ENTRY_SIZE_LOG2, SQ_ENTRY_SIZE, SQ_ENTRY_SIZE_LOG2,
};
use nvme_spec::features::{FeatureId, FeatureSelect};
use nvme_spec::identify::{
    AsciiString, Cns, Flbas, IdentifyController, IdentifyNamespace, LbaFormat, NamespaceList,
    QueueEntrySize, VolatileWriteCache, IDENTIFY_SIZE,
};
use nvme_spec::regs::{decode_doorbell, offset, Doorbell, QUEUE_BASE_MASK};
use nvme_spec::status::MediaStatus;
use nvme_spec::{
    AdminOpcode, Aqa, Cap, Cc, CommandSetSelect, CommandSpecificStatus, CompletionEntry, Csts,
    GenericStatus, NvmOpcode, ShutdownNotification, ShutdownStatus, SpecError, Status,
    SubmissionEntry, Version,
};
use pcid_hw::{Clock, DmaAllocator, RegisterIo, PAGE_SIZE};

use crate::config::{Fault, SimConfig, StartState};
use crate::dma::{DmaMemory, DmaViolation, SimDma, SimDmaBuffer};
use crate::store::Store;
use crate::SimError;

const PAGE: u64 = PAGE_SIZE as u64;
/// PCI vendor ID reported in Identify Controller (QEMU's, 1b36h).
const VENDOR_ID: u16 = 0x1b36;
/// CC bits a host can write (§3.1.5): EN, CSS, MPS, AMS, SHN, IOSQES, IOCQES.
const CC_WRITABLE: u32 = 0x00FF_FFF1;
/// AQA bits a host can write (§3.1.8): ASQS and ACQS.
const AQA_WRITABLE: u32 = 0x0FFF_0FFF;
/// Asynchronous Event Request Limit (Identify AERL, 0's based).
const AERL: u8 = 3;
/// Namespace ID of the only namespace.
const NSID: u32 = 1;
/// Smallest BAR0 (QEMU's controller exposes 16 KiB).
const MIN_BAR_SIZE: usize = 0x4000;

/// Counters and timestamps for tests and diagnostics. Times are readings of
/// the controller's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Commands fetched from any submission queue.
    pub commands_processed: u64,
    /// Commands fetched from the admin submission queue.
    pub admin_commands: u64,
    /// Commands fetched from I/O submission queues.
    pub io_commands: u64,
    /// Successful Read commands.
    pub reads: u64,
    /// Successful Write commands.
    pub writes: u64,
    /// Successful Flush commands.
    pub flushes: u64,
    /// Completion entries posted.
    pub completions_posted: u64,
    /// Completion entries posted with a non-success status.
    pub error_completions: u64,
    /// I/O commands fetched and never completed (fault `drops-commands`).
    pub dropped_commands: u64,
    /// I/O commands fetched whose execution was delayed (`read_latency_ms`,
    /// `write_latency_ms`).
    pub deferred_commands: u64,
    /// Delayed commands executed (and completed) since.
    pub deferred_commands_executed: u64,
    /// Doorbell writes naming no queue or an out-of-range value (ignored).
    pub invalid_doorbell_writes: u64,
    /// Doorbell writes while not ready, fatal or shut down (ignored).
    pub ignored_doorbell_writes: u64,
    /// CC.EN 0→1 transitions.
    pub enables: u64,
    /// CC.EN 1→0 transitions (controller resets).
    pub resets: u64,
    /// Times CSTS.CFS was raised.
    pub fatal_errors: u64,
    /// When the latest shutdown notification arrived.
    pub shutdown_requested_at: Option<Duration>,
    /// Kind of the latest shutdown, `Normal` or `Abrupt` (abrupt if a
    /// normal one was escalated).
    pub shutdown_kind: Option<ShutdownNotification>,
    /// When the latest shutdown completed (CSTS.SHST became 10b).
    pub shutdown_completed_at: Option<Duration>,
    /// Number of shutdowns that completed.
    pub shutdowns_completed: u64,
    /// Logical blocks written by Write commands.
    pub blocks_written: u64,
    /// Logical blocks read by Read commands.
    pub blocks_read: u64,
    /// Cached blocks written back to the medium (Flush, shutdown, cache off).
    pub cache_blocks_flushed: u64,
    /// Cached blocks lost (power cut, abrupt shutdown).
    pub cache_blocks_lost: u64,
}

#[derive(Debug, Clone)]
struct Sq {
    base: u64,
    size: u32,
    head: u32,
    tail: u32,
    cqid: u16,
}

#[derive(Debug, Clone)]
struct Cq {
    base: u64,
    size: u32,
    head: u32,
    tail: u32,
    phase: bool,
}

impl Cq {
    fn is_full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }
}

#[derive(Debug, Clone, Copy)]
struct Shutdown {
    /// `Normal` or `Abrupt`.
    kind: ShutdownNotification,
    /// When SHST becomes 10b; `None` if it never will (faults).
    complete_at: Option<Duration>,
    completed: bool,
}

/// Settings latched from CC when the controller was enabled.
#[derive(Debug, Clone, Copy)]
struct Enabled {
    /// When CSTS.RDY reads 1; `None` when enabling failed (CFS).
    ready_at: Option<Duration>,
}

/// An I/O command fetched and not executed yet (`read_latency_ms`,
/// `write_latency_ms`).
#[derive(Debug, Clone)]
struct Pending {
    /// Model-wide command tag (for the DMA lifetime checks).
    tag: u64,
    sqid: u16,
    cqid: u16,
    /// SQ head after the fetch (reported in the completion).
    sq_head: u32,
    cmd: SubmissionEntry,
    /// When it transfers its data and completes.
    due: Duration,
    /// Pages it will transfer to or from (data and PRP lists).
    pages: Vec<u64>,
}

struct State {
    cc: Cc,
    intms: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    enabled: Option<Enabled>,
    /// While disabled: CSTS.RDY keeps reading 1 until this time.
    rdy_until: Duration,
    cfs: bool,
    shutdown: Option<Shutdown>,
    removed: bool,
    powered_off: bool,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    /// Allocated I/O queues (1's based): submission, completion.
    queues_allocated: (u16, u16),
    aer_outstanding: u8,
    store: Store,
    stats: SimStats,
    /// Queue memory owned by firmware in the "enabled" start state.
    firmware_pages: Vec<SimDmaBuffer>,
    /// Delayed I/O commands, oldest first.
    pending: Vec<Pending>,
    /// Tag of the next fetched command.
    next_tag: u64,
}

struct Shared {
    label: String,
    config: SimConfig,
    cap: Cap,
    bar_size: usize,
    clock: Arc<dyn Clock>,
    memory: Arc<DmaMemory>,
    state: Mutex<State>,
}

/// A simulated NVMe controller; the value is BAR0 ([`RegisterIo`]).
///
/// Cheap to clone (all clones are the same controller) and `Send + Sync`.
#[derive(Clone)]
pub struct SimController {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimController")
            .field("label", &self.shared.label)
            .field("serial", &self.shared.config.serial)
            .finish()
    }
}

/// What executing one command produced.
enum Outcome {
    /// Post a completion with this result dword and status.
    Complete(u32, Status),
    /// Post nothing (held AER, dropped command).
    NoCompletion,
}

fn ok(dw0: u32) -> Outcome {
    Outcome::Complete(dw0, Status::SUCCESS)
}

fn err(status: impl Into<Status>) -> Outcome {
    Outcome::Complete(0, status.into().with_dnr(true))
}

impl SimController {
    /// Creates a controller from `config`, taking time from `clock`. Opens (or
    /// creates) the backing file if one is configured.
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Result<Self, SimError> {
        let label = config.serial.clone();
        Self::with_label(config, clock, label)
    }

    /// Like [`SimController::new`], naming the controller `label` (e.g. its PCI
    /// address) in log messages.
    pub fn with_label(
        config: SimConfig,
        clock: Arc<dyn Clock>,
        label: impl Into<String>,
    ) -> Result<Self, SimError> {
        config.validate()?;
        let store = Store::open(&config)?;
        let cap = Cap::new()
            .with_mqes(config.mqes)
            .with_cqr(true)
            .with_to(config.cap_to)
            .with_dstrd(config.doorbell_stride)
            .with_css(Cap::CSS_NVM)
            .with_mpsmin(0)
            .with_mpsmax(0);
        let stride = cap.doorbell_stride();
        let doorbells_end =
            offset::DOORBELL_BASE + 2 * (usize::from(config.max_io_queues) + 1) * stride;
        let bar_size = doorbells_end.next_power_of_two().max(MIN_BAR_SIZE);
        let memory = DmaMemory::new(config.dma_layout);
        let all = config.max_io_queues;
        let state = State {
            cc: Cc::new(),
            intms: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            enabled: None,
            rdy_until: Duration::ZERO,
            cfs: false,
            shutdown: None,
            removed: false,
            powered_off: false,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            queues_allocated: (all, all),
            aer_outstanding: 0,
            store,
            stats: SimStats::default(),
            firmware_pages: Vec::new(),
            pending: Vec::new(),
            next_tag: 1,
        };
        let ctrl = SimController {
            shared: Arc::new(Shared {
                label: label.into(),
                config,
                cap,
                bar_size,
                clock,
                memory,
                state: Mutex::new(state),
            }),
        };
        if ctrl.shared.config.start_state == StartState::Enabled {
            ctrl.enter_firmware_state()?;
        }
        Ok(ctrl)
    }

    /// Puts the controller in the state firmware leaves it: enabled and ready,
    /// with admin queues and I/O queue pair 1 in memory the driver does not own.
    fn enter_firmware_state(&self) -> Result<(), SimError> {
        let sh = &self.shared;
        let dma = self.dma();
        let mut pages = Vec::new();
        let mut page_addr = || -> Result<u64, SimError> {
            let buf = dma.allocate(PAGE_SIZE).map_err(|e| {
                SimError::Medium(std::io::Error::other(format!("firmware queue memory: {e}")))
            })?;
            let a = pcid_hw::DmaBuffer::device_address(&buf, 0).map_err(|e| {
                SimError::Medium(std::io::Error::other(format!("firmware queue memory: {e}")))
            })?;
            pages.push(buf);
            Ok(a)
        };
        let (asq, acq, iosq, iocq) = (page_addr()?, page_addr()?, page_addr()?, page_addr()?);
        let mut st = sh.lock();
        st.cc = Cc::new()
            .with_en(true)
            .with_iosqes(SQ_ENTRY_SIZE_LOG2)
            .with_iocqes(CQ_ENTRY_SIZE_LOG2);
        st.aqa = Aqa::new().with_asqs(31).with_acqs(31).into_bits();
        st.asq = asq;
        st.acq = acq;
        st.enabled = Some(Enabled {
            ready_at: Some(sh.clock.now()),
        });
        // Firmware issued a few admin commands and some reads.
        sh.add_sq(
            &mut st,
            0,
            Sq {
                base: asq,
                size: 32,
                head: 4,
                tail: 4,
                cqid: 0,
            },
        );
        sh.add_cq(
            &mut st,
            0,
            Cq {
                base: acq,
                size: 32,
                head: 4,
                tail: 4,
                phase: true,
            },
        );
        sh.add_sq(
            &mut st,
            1,
            Sq {
                base: iosq,
                size: 16,
                head: 3,
                tail: 3,
                cqid: 1,
            },
        );
        sh.add_cq(
            &mut st,
            1,
            Cq {
                base: iocq,
                size: 16,
                head: 3,
                tail: 3,
                phase: true,
            },
        );
        st.firmware_pages = pages;
        Ok(())
    }

    /// The DMA allocator whose buffers this controller can reach.
    pub fn dma(&self) -> SimDma {
        SimDma {
            memory: self.shared.memory.clone(),
        }
    }

    /// Every break of the DMA lifetime rule seen so far: memory freed while
    /// the controller may still access it, or accessed by the controller
    /// after it was freed or handed to another use (see [`crate::SimDma`]'s
    /// module). Empty when the driver kept the rule.
    pub fn dma_violations(&self) -> Vec<DmaViolation> {
        self.shared.memory.violations()
    }

    /// The configuration the controller was built from.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// The name used in log messages.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    /// The CAP register value.
    pub fn cap(&self) -> Cap {
        self.shared.cap
    }

    /// Counters and timestamps (after applying any time-dependent change due
    /// by now).
    pub fn stats(&self) -> SimStats {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        st.stats.clone()
    }

    /// Number of written blocks held only in the volatile write cache.
    pub fn dirty_blocks(&self) -> usize {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        st.store.dirty_blocks()
    }

    /// Whether the volatile write cache is currently enabled.
    pub fn write_cache_enabled(&self) -> bool {
        self.shared.lock().store.cache_enabled()
    }

    /// The backing file, if the namespace is file-backed.
    pub fn backing_file(&self) -> Option<std::path::PathBuf> {
        self.shared.lock().store.path().map(|p| p.to_path_buf())
    }

    /// Reads `count` blocks from `lba` of the durable medium (the backing file
    /// or memory), ignoring the volatile cache: what survives a power cut.
    pub fn read_durable(&self, lba: u64, count: u64) -> Result<Vec<u8>, SimError> {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        let mut out = range_buffer(&st.store, lba, count)?;
        st.store
            .read_durable(lba, &mut out)
            .map_err(SimError::Medium)?;
        Ok(out)
    }

    /// Reads `count` blocks from `lba` as a Read command would see them (cache
    /// over medium).
    pub fn read_visible(&self, lba: u64, count: u64) -> Result<Vec<u8>, SimError> {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        let mut out = range_buffer(&st.store, lba, count)?;
        st.store.read(lba, &mut out).map_err(SimError::Medium)?;
        Ok(out)
    }

    /// The device disappears: from now on every register reads all-ones and
    /// writes are dropped. The write cache is not written back.
    pub fn surprise_remove(&self) {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        if !st.removed {
            log::warn!("{}: surprise removal", self.shared.label);
        }
        st.removed = true;
        // Off the bus, the device accesses no memory any more.
        self.shared.clear_queues(&mut st);
    }

    /// Whether the device reads all-ones (removed or powered off).
    pub fn is_gone(&self) -> bool {
        let st = self.shared.lock();
        st.removed || st.powered_off
    }

    /// Power is lost: anything still in the volatile write cache is gone,
    /// every queue is lost, and registers read all-ones until
    /// [`SimController::power_on`]. A shutdown that completed before this
    /// moment (by the clock) has already written the cache back.
    pub fn power_cut(&self) {
        let mut st = self.shared.lock();
        self.shared.tick(&mut st);
        let lost = st.store.discard_cache();
        st.stats.cache_blocks_lost += lost as u64;
        log::warn!(
            "{}: power cut, {lost} cached blocks lost",
            self.shared.label
        );
        st.powered_off = true;
        self.shared.clear_queues(&mut st);
        st.enabled = None;
        st.shutdown = None;
        st.cfs = false;
        st.cc = Cc::new();
    }

    /// Power returns after [`SimController::power_cut`] (or a removal): the
    /// controller is in its power-on reset state (CC = 0, not ready); the
    /// medium keeps what was durable.
    pub fn power_on(&self) {
        let mut st = self.shared.lock();
        let lost = st.store.discard_cache();
        st.stats.cache_blocks_lost += lost as u64;
        st.powered_off = false;
        st.removed = false;
        self.shared.clear_queues(&mut st);
        st.enabled = None;
        st.shutdown = None;
        st.cfs = false;
        st.cc = Cc::new();
        st.aqa = 0;
        st.asq = 0;
        st.acq = 0;
        st.intms = 0;
        st.rdy_until = Duration::ZERO;
        let all = self.shared.config.max_io_queues;
        st.queues_allocated = (all, all);
        if self.shared.config.volatile_write_cache {
            // Power-on default of the Volatile Write Cache feature.
            let _ = st.store.set_cache_enabled(true);
        }
    }

    /// Checks the model's internal invariants (queue pointers inside their
    /// queues, every SQ bound to an existing CQ, queue IDs within limits,
    /// counters that add up). Returns the first violation found; meant for
    /// property tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        let sh = &self.shared;
        let st = sh.lock();
        for (qid, sq) in &st.sqs {
            if sq.size < 2 || sq.head >= sq.size || sq.tail >= sq.size {
                return Err(format!("SQ {qid} pointers out of range: {sq:?}"));
            }
            if !st.cqs.contains_key(&sq.cqid) {
                return Err(format!("SQ {qid} bound to missing CQ {}", sq.cqid));
            }
            if (*qid == 0) != (sq.cqid == 0) {
                return Err(format!("SQ {qid} bound to CQ {}", sq.cqid));
            }
        }
        for (qid, cq) in &st.cqs {
            if cq.size < 2 || cq.head >= cq.size || cq.tail >= cq.size {
                return Err(format!("CQ {qid} pointers out of range: {cq:?}"));
            }
        }
        let max = sh.config.max_io_queues;
        if st.sqs.keys().chain(st.cqs.keys()).any(|&q| q > max) {
            return Err("queue ID above the supported maximum".into());
        }
        if st.enabled.is_none() && !(st.sqs.is_empty() && st.cqs.is_empty()) {
            return Err("queues exist while the controller is disabled".into());
        }
        if st.aer_outstanding > AERL + 1 {
            return Err(format!("{} AERs outstanding", st.aer_outstanding));
        }
        if let Some(s) = st.shutdown {
            if s.completed && s.complete_at.is_none() {
                return Err("shutdown completed without a completion time".into());
            }
        }
        let s = &st.stats;
        if s.admin_commands + s.io_commands != s.commands_processed {
            return Err(format!("command counters disagree: {s:?}"));
        }
        if s.completions_posted + s.dropped_commands > s.commands_processed {
            return Err(format!("more completions than commands: {s:?}"));
        }
        if s.error_completions > s.completions_posted {
            return Err(format!("error completions exceed completions: {s:?}"));
        }
        Ok(())
    }

    /// BAR0 offset of the submission queue `qid` tail doorbell.
    pub fn sq_doorbell(&self, qid: u16) -> usize {
        nvme_spec::regs::sq_tail_doorbell(qid, self.shared.cap.dstrd())
    }

    /// BAR0 offset of the completion queue `qid` head doorbell.
    pub fn cq_doorbell(&self, qid: u16) -> usize {
        nvme_spec::regs::cq_head_doorbell(qid, self.shared.cap.dstrd())
    }
}

fn range_buffer(store: &Store, lba: u64, count: u64) -> Result<Vec<u8>, SimError> {
    if !store.in_range(lba, count) {
        return Err(SimError::OutOfRange {
            lba,
            count,
            blocks: store.blocks(),
        });
    }
    let len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(store.block_size()))
        .ok_or(SimError::OutOfRange {
            lba,
            count,
            blocks: store.blocks(),
        })?;
    Ok(vec![0u8; len])
}

impl RegisterIo for SimController {
    fn size(&self) -> usize {
        self.shared.bar_size
    }

    fn read32(&self, off: usize) -> u32 {
        let sh = &self.shared;
        let mut st = sh.lock();
        sh.tick(&mut st);
        if st.removed || st.powered_off || off >= sh.bar_size {
            return u32::MAX;
        }
        if off % 4 != 0 {
            return 0;
        }
        let now = sh.clock.now();
        match off {
            0x00 => sh.cap.into_bits() as u32,
            0x04 => (sh.cap.into_bits() >> 32) as u32,
            offset::VS => Version::new(1, 4, 0).into_bits(),
            offset::INTMS | offset::INTMC => st.intms,
            offset::CC => st.cc.into_bits(),
            offset::CSTS => sh.csts(&st, now).into_bits(),
            offset::AQA => st.aqa,
            offset::ASQ => st.asq as u32,
            0x2C => (st.asq >> 32) as u32,
            offset::ACQ => st.acq as u32,
            0x34 => (st.acq >> 32) as u32,
            _ => 0,
        }
    }

    fn write32(&self, off: usize, value: u32) {
        let sh = &self.shared;
        let mut st = sh.lock();
        sh.tick(&mut st);
        if st.removed || st.powered_off || off >= sh.bar_size || off % 4 != 0 {
            return;
        }
        match off {
            offset::INTMS => st.intms |= value,
            offset::INTMC => st.intms &= !value,
            offset::CC => sh.write_cc(&mut st, value),
            offset::AQA => st.aqa = value & AQA_WRITABLE,
            offset::ASQ => st.asq = (st.asq & !0xFFFF_FFFF) | (u64::from(value) & QUEUE_BASE_MASK),
            0x2C => st.asq = (st.asq & 0xFFFF_FFFF) | (u64::from(value) << 32),
            offset::ACQ => st.acq = (st.acq & !0xFFFF_FFFF) | (u64::from(value) & QUEUE_BASE_MASK),
            0x34 => st.acq = (st.acq & 0xFFFF_FFFF) | (u64::from(value) << 32),
            o if o >= offset::DOORBELL_BASE => sh.doorbell(&mut st, o, value),
            // CAP, VS, CSTS and NSSR (CAP.NSSRS = 0) are read-only here.
            _ => {}
        }
    }
}

impl Drop for Shared {
    /// The controller goes away (e.g. the process exits): a shutdown whose
    /// latency has elapsed by now has completed, even if nobody read CSTS;
    /// anything else still in the volatile cache is lost.
    fn drop(&mut self) {
        let this: &Shared = self;
        let mut st = this.lock();
        this.tick(&mut st);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has(&self, fault: Fault) -> bool {
        self.config.has_fault(fault)
    }

    fn csts(&self, st: &State, now: Duration) -> Csts {
        let rdy = match st.enabled {
            Some(e) => e.ready_at.is_some_and(|t| now >= t),
            None => now < st.rdy_until,
        };
        let shst = match st.shutdown {
            None => ShutdownStatus::Normal,
            Some(s) if s.completed => ShutdownStatus::Complete,
            Some(_) => ShutdownStatus::Occurring,
        };
        Csts::new()
            .with_rdy(rdy)
            .with_cfs(st.cfs)
            .with_shutdown_status(shst)
    }

    fn is_ready(&self, st: &State) -> bool {
        st.enabled
            .and_then(|e| e.ready_at)
            .is_some_and(|t| self.clock.now() >= t)
    }

    /// Applies time-dependent changes that are due: completes a shutdown
    /// whose latency has elapsed.
    fn tick(&self, st: &mut State) {
        let now = self.clock.now();
        self.run_pending(st, now);
        let Some(mut s) = st.shutdown else { return };
        let Some(at) = s.complete_at else { return };
        if s.completed || now < at || st.removed || st.powered_off {
            return;
        }
        match s.kind {
            ShutdownNotification::Abrupt if self.config.abrupt_flushes_cache => {
                self.write_back(st, "abrupt shutdown")
            }
            ShutdownNotification::Abrupt => {
                let lost = st.store.discard_cache();
                st.stats.cache_blocks_lost += lost as u64;
                if lost > 0 {
                    log::warn!(
                        "{}: abrupt shutdown discarded {lost} cached blocks",
                        self.label
                    );
                }
            }
            // Normal (start_shutdown stores nothing else).
            _ => self.write_back(st, "normal shutdown"),
        }
        s.completed = true;
        st.shutdown = Some(s);
        st.stats.shutdown_completed_at = Some(at);
        st.stats.shutdowns_completed += 1;
        log::info!("{}: {:?} shutdown complete at {:?}", self.label, s.kind, at);
    }

    fn write_back(&self, st: &mut State, why: &str) {
        match st.store.flush() {
            Ok(n) => st.stats.cache_blocks_flushed += n as u64,
            Err(e) => {
                log::error!("{}: {why}: writing the cache back failed: {e}", self.label);
                self.fatal(st, "cache write-back failed");
            }
        }
    }

    fn fatal(&self, st: &mut State, why: &str) {
        if !st.cfs {
            log::error!("{}: controller fatal status: {why}", self.label);
            st.stats.fatal_errors += 1;
        }
        st.cfs = true;
    }

    fn clear_queues(&self, st: &mut State) {
        // Commands in flight are abandoned and every queue is gone: nothing
        // of the host's memory is in use any more.
        for p in std::mem::take(&mut st.pending) {
            self.memory.unpin(&p.pages);
        }
        let sqs: Vec<u16> = st.sqs.keys().copied().collect();
        for qid in sqs {
            self.remove_sq(st, qid);
        }
        let cqs: Vec<u16> = st.cqs.keys().copied().collect();
        for qid in cqs {
            self.remove_cq(st, qid);
        }
        st.aer_outstanding = 0;
        st.firmware_pages.clear();
    }

    fn sq_pages(sq: &Sq) -> Vec<u64> {
        DmaMemory::pages_of(sq.base, sq.size as usize * SQ_ENTRY_SIZE)
    }

    fn cq_pages(cq: &Cq) -> Vec<u64> {
        DmaMemory::pages_of(cq.base, cq.size as usize * CQ_ENTRY_SIZE)
    }

    /// Creates submission queue `qid`; its memory is in use until it is deleted.
    fn add_sq(&self, st: &mut State, qid: u16, sq: Sq) {
        self.memory.pin(&Self::sq_pages(&sq));
        if let Some(old) = st.sqs.insert(qid, sq) {
            self.memory.unpin(&Self::sq_pages(&old));
        }
    }

    /// Creates completion queue `qid`; its memory is in use until it is deleted.
    fn add_cq(&self, st: &mut State, qid: u16, cq: Cq) {
        self.memory.pin(&Self::cq_pages(&cq));
        if let Some(old) = st.cqs.insert(qid, cq) {
            self.memory.unpin(&Self::cq_pages(&old));
        }
    }

    /// Deletes submission queue `qid` with the commands of it still in flight.
    fn remove_sq(&self, st: &mut State, qid: u16) -> bool {
        let Some(sq) = st.sqs.remove(&qid) else {
            return false;
        };
        self.memory.unpin(&Self::sq_pages(&sq));
        let (aborted, kept): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut st.pending)
            .into_iter()
            .partition(|p| p.sqid == qid);
        st.pending = kept;
        for p in aborted {
            self.memory.unpin(&p.pages);
        }
        true
    }

    fn remove_cq(&self, st: &mut State, qid: u16) {
        if let Some(cq) = st.cqs.remove(&qid) {
            self.memory.unpin(&Self::cq_pages(&cq));
        }
    }

    fn write_cc(&self, st: &mut State, value: u32) {
        let now = self.clock.now();
        let old = st.cc;
        let new = Cc::from_bits(value & CC_WRITABLE);
        st.cc = new;
        if old.en() && !new.en() {
            self.reset(st, now);
            return;
        }
        if !old.en() && new.en() {
            self.enable(st, now);
        }
        let shn = new.shutdown();
        if shn != old.shutdown() {
            match shn {
                ShutdownNotification::Normal | ShutdownNotification::Abrupt => {
                    self.start_shutdown(st, shn, now)
                }
                // None, and the reserved 11b.
                _ => {}
            }
        }
    }

    /// CC.EN 1→0: controller reset (§7.3.2).
    fn reset(&self, st: &mut State, now: Duration) {
        let was_ready = self.is_ready(st);
        self.clear_queues(st);
        st.enabled = None;
        st.cfs = false;
        st.shutdown = None;
        st.rdy_until = if was_ready {
            now + Duration::from_millis(self.config.reset_latency_ms)
        } else {
            Duration::ZERO
        };
        let all = self.config.max_io_queues;
        st.queues_allocated = (all, all);
        st.stats.resets += 1;
        log::debug!("{}: controller reset", self.label);
    }

    /// CC.EN 0→1: validate CC/AQA and create the admin queues (§7.6.1).
    fn enable(&self, st: &mut State, now: Duration) {
        st.stats.enables += 1;
        let cc = st.cc;
        let aqa = Aqa::from_bits(st.aqa);
        let problem = if cc.command_set() != CommandSetSelect::Nvm {
            Some(format!("unsupported CC.CSS {:#b}", cc.command_set().0))
        } else if cc.mps() != 0 {
            Some(format!(
                "unsupported CC.MPS {} (only 4 KiB pages)",
                cc.mps()
            ))
        } else if cc.ams() != 0 {
            Some(format!("unsupported CC.AMS {}", cc.ams()))
        } else if cc.iosqes() != SQ_ENTRY_SIZE_LOG2 {
            Some(format!("unsupported CC.IOSQES {}", cc.iosqes()))
        } else if cc.iocqes() != CQ_ENTRY_SIZE_LOG2 {
            Some(format!("unsupported CC.IOCQES {}", cc.iocqes()))
        } else if aqa.asqs() == 0 || aqa.acqs() == 0 {
            Some(format!(
                "admin queue sizes too small (AQA {:#x})",
                aqa.into_bits()
            ))
        } else if u32::from(aqa.asqs()) > u32::from(self.config.mqes)
            || u32::from(aqa.acqs()) > u32::from(self.config.mqes)
        {
            Some(format!(
                "admin queue sizes exceed MQES (AQA {:#x})",
                aqa.into_bits()
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            st.enabled = Some(Enabled { ready_at: None });
            self.fatal(st, &format!("enable with invalid settings: {p}"));
            return;
        }
        let latency = if self.has(Fault::SlowReady) {
            self.cap.timeout() + Duration::from_secs(1)
        } else {
            Duration::from_millis(self.config.ready_latency_ms)
        };
        let asq = st.asq;
        let acq = st.acq;
        self.add_sq(
            st,
            0,
            Sq {
                base: asq,
                size: u32::from(aqa.asqs()) + 1,
                head: 0,
                tail: 0,
                cqid: 0,
            },
        );
        self.add_cq(
            st,
            0,
            Cq {
                base: acq,
                size: u32::from(aqa.acqs()) + 1,
                head: 0,
                tail: 0,
                phase: true,
            },
        );
        st.enabled = Some(Enabled {
            ready_at: Some(now + latency),
        });
        log::debug!("{}: enabled, ready in {latency:?}", self.label);
    }

    /// CC.SHN written with 01b or 10b (§7.6.2); `kind` is one of the two.
    fn start_shutdown(&self, st: &mut State, kind: ShutdownNotification, now: Duration) {
        let latency = Duration::from_millis(if kind == ShutdownNotification::Abrupt {
            self.config.abrupt_latency_ms
        } else {
            self.config.shutdown_latency_ms
        });
        match st.shutdown {
            // An abrupt notification during a normal shutdown takes over.
            Some(mut s) if !s.completed && s.kind == ShutdownNotification::Normal => {
                if kind == ShutdownNotification::Abrupt {
                    s.kind = ShutdownNotification::Abrupt;
                    s.complete_at = s.complete_at.map(|t| t.min(now + latency));
                    st.shutdown = Some(s);
                    st.stats.shutdown_kind = Some(ShutdownNotification::Abrupt);
                    log::info!("{}: normal shutdown escalated to abrupt", self.label);
                }
                return;
            }
            Some(_) => return,
            None => {}
        }
        st.stats.shutdown_requested_at = Some(now);
        st.stats.shutdown_kind = Some(kind);
        st.stats.shutdown_completed_at = None;
        log::info!("{}: {kind:?} shutdown requested at {now:?}", self.label);
        if self.has(Fault::SurpriseRemoval) {
            log::warn!("{}: surprise removal (injected fault)", self.label);
            st.removed = true;
            // Off the bus, the device accesses no memory any more.
            self.clear_queues(st);
            st.shutdown = Some(Shutdown {
                kind,
                complete_at: None,
                completed: false,
            });
            return;
        }
        let complete_at = if self.has(Fault::FatalStatus) {
            self.fatal(st, "injected fault at shutdown");
            None
        } else if self.has(Fault::ShutdownNeverCompletes) {
            None
        } else if st.enabled.is_none() {
            // Nothing to quiesce on a disabled controller.
            Some(now)
        } else {
            Some(now + latency)
        };
        st.shutdown = Some(Shutdown {
            kind,
            complete_at,
            completed: false,
        });
        self.tick(st);
    }

    fn doorbell(&self, st: &mut State, off: usize, value: u32) {
        let Some(db) = decode_doorbell(off, self.cap.dstrd()) else {
            self.invalid_doorbell(st, off, value, "not a doorbell register");
            return;
        };
        if !self.is_ready(st) || st.cfs || st.shutdown.is_some() {
            st.stats.ignored_doorbell_writes += 1;
            log::debug!(
                "{}: doorbell {db:?} = {value} ignored (controller not accepting commands)",
                self.label
            );
            return;
        }
        match db {
            Doorbell::SqTail(qid) => {
                let Some(sq) = st.sqs.get_mut(&qid) else {
                    self.invalid_doorbell(st, off, value, "no such submission queue");
                    return;
                };
                if value >= sq.size {
                    let size = sq.size;
                    self.invalid_doorbell(st, off, value, &format!("SQ {qid} has {size} entries"));
                    return;
                }
                sq.tail = value;
                self.process_sq(st, qid);
            }
            Doorbell::CqHead(qid) => {
                let Some(cq) = st.cqs.get_mut(&qid) else {
                    self.invalid_doorbell(st, off, value, "no such completion queue");
                    return;
                };
                if value >= cq.size {
                    let size = cq.size;
                    self.invalid_doorbell(st, off, value, &format!("CQ {qid} has {size} entries"));
                    return;
                }
                // The new head may only consume entries the controller posted.
                let posted = (cq.tail + cq.size - cq.head) % cq.size;
                let consumed = (value + cq.size - cq.head) % cq.size;
                if consumed > posted {
                    let (h, t) = (cq.head, cq.tail);
                    self.invalid_doorbell(
                        st,
                        off,
                        value,
                        &format!("CQ {qid} head would pass the tail (head {h}, tail {t})"),
                    );
                    return;
                }
                cq.head = value;
                let waiting: Vec<u16> = st
                    .sqs
                    .iter()
                    .filter(|(_, s)| s.cqid == qid && s.head != s.tail)
                    .map(|(&id, _)| id)
                    .collect();
                for sqid in waiting {
                    self.process_sq(st, sqid);
                }
            }
        }
    }

    fn invalid_doorbell(&self, st: &mut State, off: usize, value: u32, why: &str) {
        st.stats.invalid_doorbell_writes += 1;
        log::warn!(
            "{}: invalid doorbell write {value:#x} at {off:#x} ignored: {why}",
            self.label
        );
    }

    /// Fetches and executes commands from SQ `sqid` until it is empty, its CQ
    /// is full, or the controller stops accepting commands.
    fn process_sq(&self, st: &mut State, sqid: u16) {
        loop {
            if st.cfs || st.shutdown.is_some() || st.removed {
                return;
            }
            let Some(sq) = st.sqs.get(&sqid).cloned() else {
                return;
            };
            if sq.head == sq.tail {
                return;
            }
            match st.cqs.get(&sq.cqid) {
                None => {
                    self.fatal(
                        st,
                        &format!("SQ {sqid} completes to missing CQ {}", sq.cqid),
                    );
                    return;
                }
                Some(cq) if cq.is_full() => return,
                Some(_) => {}
            }
            let mut raw = [0u8; SQ_ENTRY_SIZE];
            let addr = sq
                .base
                .wrapping_add(u64::from(sq.head) * SQ_ENTRY_SIZE as u64);
            if let Err(e) = self.memory.read_bus(addr, &mut raw) {
                self.fatal(st, &format!("fetching from SQ {sqid}: {e}"));
                return;
            }
            let new_head = (sq.head + 1) % sq.size;
            if let Some(s) = st.sqs.get_mut(&sqid) {
                s.head = new_head;
            }
            let cmd = match SubmissionEntry::from_bytes(&raw) {
                Ok(c) => c,
                Err(e) => {
                    self.fatal(st, &format!("decoding SQ {sqid} entry: {e}"));
                    return;
                }
            };
            st.stats.commands_processed += 1;
            let outcome = if sqid == 0 {
                st.stats.admin_commands += 1;
                self.admin(st, &cmd)
            } else {
                st.stats.io_commands += 1;
                if self.defer(st, sqid, sq.cqid, new_head, &cmd) {
                    continue;
                }
                self.io(st, &cmd, None)
            };
            self.complete(st, sqid, sq.cqid, new_head, &cmd, outcome);
        }
    }

    /// Posts the completion of `cmd` (fetched from `sqid`, leaving its head
    /// at `sq_head`) to `cqid`.
    fn complete(
        &self,
        st: &mut State,
        sqid: u16,
        cqid: u16,
        sq_head: u32,
        cmd: &SubmissionEntry,
        outcome: Outcome,
    ) {
        match outcome {
            Outcome::Complete(dw0, status) => {
                if !status.is_success() {
                    st.stats.error_completions += 1;
                    log::debug!(
                        "{}: SQ {sqid} cid {} opcode {:#04x}: {status}",
                        self.label,
                        cmd.cid(),
                        cmd.opcode()
                    );
                }
                let entry = CompletionEntry {
                    dw0,
                    dw1: 0,
                    sq_head: sq_head as u16,
                    sq_id: sqid,
                    cid: cmd.cid(),
                    ..Default::default()
                }
                .with_status(status);
                self.post(st, cqid, entry);
            }
            Outcome::NoCompletion => {}
        }
    }

    /// The delay before an I/O command's execution (`read_latency_ms`,
    /// `write_latency_ms`), if it has one.
    fn latency_of(&self, cmd: &SubmissionEntry) -> Option<Duration> {
        let ms = match NvmOpcode(cmd.opcode()) {
            NvmOpcode::Read => self.config.read_latency_ms,
            NvmOpcode::Write => self.config.write_latency_ms,
            _ => 0,
        };
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Keeps a just-fetched Read or Write with a latency for later: its data
    /// and PRP list pages are handed to it and in use until it completes.
    /// Returns false (execute now) for any other command, one whose transfer
    /// cannot be resolved (it fails at once), or under `drops-commands`.
    fn defer(
        &self,
        st: &mut State,
        sqid: u16,
        cqid: u16,
        sq_head: u32,
        cmd: &SubmissionEntry,
    ) -> bool {
        if self.has(Fault::DropsCommands) {
            return false;
        }
        let Some(latency) = self.latency_of(cmd) else {
            return false;
        };
        let blocks = u64::from(RwDw12::from(cmd.cdw12).blocks());
        if cmd.nsid != NSID || !st.store.in_range(cmd.slba(), blocks) {
            return false;
        }
        let len = blocks as usize * st.store.block_size();
        let Ok((segments, lists)) = self.prp_segments(cmd.prp1, cmd.prp2, len, None) else {
            return false;
        };
        let mut pages: Vec<u64> = segments
            .iter()
            .flat_map(|&(a, n)| DmaMemory::pages_of(a, n))
            .chain(lists)
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let tag = st.next_tag;
        st.next_tag += 1;
        self.memory.claim(&pages, tag);
        self.memory.pin(&pages);
        st.stats.deferred_commands += 1;
        log::debug!(
            "{}: SQ {sqid} cid {} (command #{tag}) executes in {latency:?}",
            self.label,
            cmd.cid()
        );
        st.pending.push(Pending {
            tag,
            sqid,
            cqid,
            sq_head,
            cmd: *cmd,
            due: self.clock.now() + latency,
            pages,
        });
        true
    }

    /// Executes and completes the delayed commands that are due (while their
    /// completion queue has room).
    fn run_pending(&self, st: &mut State, now: Duration) {
        if st.cfs || st.removed || st.powered_off {
            return;
        }
        let mut i = 0;
        while i < st.pending.len() {
            let p = &st.pending[i];
            let room = st.cqs.get(&p.cqid).is_some_and(|cq| !cq.is_full());
            if p.due > now || !room {
                i += 1;
                continue;
            }
            let p = st.pending.remove(i);
            let outcome = self.io(st, &p.cmd, Some(p.tag));
            self.memory.unpin(&p.pages);
            st.stats.deferred_commands_executed += 1;
            log::debug!(
                "{}: command #{} (cid {}) executed late",
                self.label,
                p.tag,
                p.cmd.cid()
            );
            self.complete(st, p.sqid, p.cqid, p.sq_head, &p.cmd, outcome);
        }
    }

    /// Writes a completion entry with the queue's current phase tag.
    fn post(&self, st: &mut State, cqid: u16, mut entry: CompletionEntry) {
        let Some(cq) = st.cqs.get_mut(&cqid) else {
            return;
        };
        entry.set_phase(cq.phase);
        // Wrapping: an address past the top of the bus is simply unmapped.
        let addr = cq
            .base
            .wrapping_add(u64::from(cq.tail) * CQ_ENTRY_SIZE as u64);
        if let Err(e) = self.memory.write_bus(addr, &entry.to_bytes()) {
            self.fatal(st, &format!("posting to CQ {cqid}: {e}"));
            return;
        }
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        st.stats.completions_posted += 1;
    }

    // ---- data transfer --------------------------------------------------------

    /// Resolves PRP1/PRP2 (and PRP lists) for a transfer of `len` bytes into
    /// bus segments (§4.3), and returns the PRP list pages read on the way.
    /// Memory page size is 4 KiB (CC.MPS = 0). With `tag`, the list reads
    /// are that command's and checked against the DMA lifetime rule.
    #[allow(clippy::type_complexity)]
    fn prp_segments(
        &self,
        prp1: u64,
        prp2: u64,
        len: usize,
        tag: Option<u64>,
    ) -> Result<(Vec<(u64, usize)>, Vec<u64>), Status> {
        let invalid_offset = || Status::from(GenericStatus::PrpOffsetInvalid).with_dnr(true);
        let transfer_error = || Status::from(GenericStatus::DataTransferError).with_dnr(true);
        let mut segs = Vec::new();
        let mut lists = Vec::new();
        if len == 0 {
            return Ok((segs, lists));
        }
        if prp1 & 0x3 != 0 {
            return Err(invalid_offset());
        }
        let first = len.min(PAGE_SIZE - (prp1 % PAGE) as usize);
        segs.push((prp1, first));
        let mut remaining = len - first;
        if remaining == 0 {
            return Ok((segs, lists));
        }
        if remaining <= PAGE_SIZE {
            if prp2 % PAGE != 0 {
                return Err(invalid_offset());
            }
            segs.push((prp2, remaining));
            return Ok((segs, lists));
        }
        // PRP2 points to a PRP list; the last entry of a full list page chains
        // to the next list page.
        if prp2 & 0x7 != 0 {
            return Err(invalid_offset());
        }
        let mut cursor = prp2;
        let max_pages = remaining.div_ceil(PAGE_SIZE) + 1;
        for _ in 0..max_pages {
            let needed = remaining.div_ceil(PAGE_SIZE);
            let slots = (PAGE_SIZE - (cursor % PAGE) as usize) / 8;
            let (data_entries, chained) = if needed > slots {
                (slots - 1, true)
            } else {
                (needed, false)
            };
            let mut list = vec![0u8; slots * 8];
            self.memory
                .read_bus_for(cursor, &mut list, tag)
                .map_err(|_| transfer_error())?;
            lists.push(cursor & !(PAGE - 1));
            let entry = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&list[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            };
            for i in 0..data_entries {
                let e = entry(i);
                if e % PAGE != 0 {
                    return Err(invalid_offset());
                }
                let n = remaining.min(PAGE_SIZE);
                segs.push((e, n));
                remaining -= n;
            }
            if !chained {
                return Ok((segs, lists));
            }
            let next = entry(slots - 1);
            if next % PAGE != 0 {
                return Err(invalid_offset());
            }
            cursor = next;
        }
        Err(transfer_error())
    }

    /// Copies `data` to the host through PRPs (for command `tag`, if delayed).
    fn write_host(
        &self,
        prp1: u64,
        prp2: u64,
        data: &[u8],
        tag: Option<u64>,
    ) -> Result<(), Status> {
        let (segs, _) = self.prp_segments(prp1, prp2, data.len(), tag)?;
        let mut at = 0;
        for (addr, n) in segs {
            self.memory
                .write_bus_for(addr, &data[at..at + n], tag)
                .map_err(|_| Status::from(GenericStatus::DataTransferError).with_dnr(true))?;
            at += n;
        }
        Ok(())
    }

    /// Copies `len` bytes from the host through PRPs (for command `tag`, if
    /// delayed).
    fn read_host(
        &self,
        prp1: u64,
        prp2: u64,
        len: usize,
        tag: Option<u64>,
    ) -> Result<Vec<u8>, Status> {
        let (segs, _) = self.prp_segments(prp1, prp2, len, tag)?;
        let mut data = vec![0u8; len];
        let mut at = 0;
        for (addr, n) in segs {
            self.memory
                .read_bus_for(addr, &mut data[at..at + n], tag)
                .map_err(|_| Status::from(GenericStatus::DataTransferError).with_dnr(true))?;
            at += n;
        }
        Ok(data)
    }

    fn transfer_out(&self, cmd: &SubmissionEntry, data: &[u8]) -> Outcome {
        match self.write_host(cmd.prp1, cmd.prp2, data, None) {
            Ok(()) => ok(0),
            Err(s) => Outcome::Complete(0, s),
        }
    }

    // ---- admin commands (§5) ---------------------------------------------------

    fn admin(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        if cmd.cdw0.fuse() != 0 || cmd.cdw0.psdt() != 0 {
            return err(GenericStatus::InvalidField);
        }
        match AdminOpcode(cmd.opcode()) {
            AdminOpcode::Identify => self.identify(st, cmd),
            AdminOpcode::SetFeatures => self.set_features(st, cmd),
            AdminOpcode::GetFeatures => self.get_features(st, cmd),
            AdminOpcode::CreateIoCq => self.create_cq(st, cmd),
            AdminOpcode::CreateIoSq => self.create_sq(st, cmd),
            AdminOpcode::DeleteIoSq => self.delete_sq(st, cmd),
            AdminOpcode::DeleteIoCq => self.delete_cq(st, cmd),
            AdminOpcode::GetLogPage => self.get_log_page(cmd),
            // Bit 0 of Dword 0 set: the command was not aborted (§5.1).
            AdminOpcode::Abort => ok(1),
            AdminOpcode::AsyncEventRequest => {
                if st.aer_outstanding > AERL {
                    err(CommandSpecificStatus::AsyncEventLimitExceeded)
                } else {
                    // Held until an event occurs; this model raises none.
                    st.aer_outstanding += 1;
                    Outcome::NoCompletion
                }
            }
            // Keep Alive and opcodes the model does not know.
            _ => err(GenericStatus::InvalidOpcode),
        }
    }

    fn identify_controller(&self) -> Result<IdentifyController, SpecError> {
        Ok(IdentifyController {
            vid: VENDOR_ID,
            ssvid: VENDOR_ID,
            sn: AsciiString::new("serial", &self.config.serial)?,
            mn: AsciiString::new("model", &self.config.model)?,
            fr: AsciiString::new("firmware", &self.config.firmware)?,
            mdts: self.config.mdts,
            ver: Version::new(1, 4, 0).into_bits(),
            rtd3e: self.config.rtd3e_us,
            // An I/O controller.
            cntrltype: 1,
            // Outstanding Asynchronous Event Requests, 0's based.
            aerl: AERL,
            sqes: QueueEntrySize::exactly(SQ_ENTRY_SIZE_LOG2)?,
            cqes: QueueEntrySize::exactly(CQ_ENTRY_SIZE_LOG2)?,
            nn: 1,
            // VWC reports that a cache is present, not whether it is enabled.
            vwc: VolatileWriteCache::new().with_present(self.config.volatile_write_cache),
            ..Default::default()
        })
    }

    fn identify(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let data = match IdentifyDw10::from(cmd.cdw10).cns() {
            Cns::Controller => match self.identify_controller() {
                Ok(id) => id.to_bytes(),
                Err(e) => {
                    log::error!("{}: Identify Controller: {e}", self.label);
                    return err(GenericStatus::InternalError);
                }
            },
            Cns::Namespace => match cmd.nsid {
                NSID => IdentifyNamespace {
                    nguid: self.nguid(),
                    ..self.identify_namespace(st.store.blocks())
                }
                .to_bytes(),
                // Capabilities common to all namespaces (§5.15.2): no size.
                0xFFFF_FFFF => self.identify_namespace(0).to_bytes(),
                _ => return err(GenericStatus::InvalidNamespace),
            },
            Cns::ActiveNamespaceList => {
                if cmd.nsid >= 0xFFFF_FFFE {
                    return err(GenericStatus::InvalidNamespace);
                }
                let list = if cmd.nsid < NSID {
                    NamespaceList::from_ids(&[NSID])
                } else {
                    Ok(NamespaceList::default())
                };
                match list {
                    Ok(list) => list.to_bytes(),
                    Err(e) => {
                        log::error!("{}: Active Namespace ID list: {e}", self.label);
                        return err(GenericStatus::InternalError);
                    }
                }
            }
            Cns::NamespaceDescriptorList => {
                if cmd.nsid != NSID {
                    return err(GenericStatus::InvalidNamespace);
                }
                // One descriptor (§5.15.2.3): NIDT 2 (NGUID), NIDL 16.
                let mut b = [0u8; IDENTIFY_SIZE];
                b[0] = 2;
                b[1] = 16;
                b[4..20].copy_from_slice(&self.nguid());
                b
            }
            _ => return err(GenericStatus::InvalidField),
        };
        self.transfer_out(cmd, &data)
    }

    /// A namespace GUID derived from the serial number (FNV-1a, twice).
    fn nguid(&self) -> [u8; 16] {
        let hash = |seed: u64| {
            self.config.serial.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&hash(0xcbf2_9ce4_8422_2325).to_be_bytes());
        g[8..].copy_from_slice(&hash(0x6c62_272e_07bb_0142).to_be_bytes());
        g
    }

    fn identify_namespace(&self, blocks: u64) -> IdentifyNamespace {
        let mut ns = IdentifyNamespace {
            nsze: blocks,
            ncap: blocks,
            nuse: blocks,
            nsfeat: 0,
            nlbaf: 0,
            flbas: Flbas::new().with_format(0),
            ..Default::default()
        };
        // 512 or 4096 (SimConfig::validate): LBADS 9 or 12.
        ns.lbaf[0] = LbaFormat::new().with_lbads(self.config.block_size.trailing_zeros() as u8);
        ns
    }

    fn set_features(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let dw10 = FeaturesDw10::from(cmd.cdw10);
        if dw10.sv() {
            return err(CommandSpecificStatus::FeatureNotSaveable);
        }
        match dw10.fid() {
            FeatureId::NumberOfQueues => {
                let req = NumberOfQueues::from(cmd.cdw11);
                if req.nsq() == 0xFFFF || req.ncq() == 0xFFFF {
                    return err(GenericStatus::InvalidField);
                }
                if st.sqs.keys().chain(st.cqs.keys()).any(|&q| q != 0) {
                    return err(GenericStatus::CommandSequenceError);
                }
                let max = self.config.max_io_queues;
                let nsq = (req.nsq().saturating_add(1)).min(max);
                let ncq = (req.ncq().saturating_add(1)).min(max);
                st.queues_allocated = (nsq, ncq);
                self.queue_counts(nsq, ncq)
            }
            FeatureId::VolatileWriteCache if self.config.volatile_write_cache => {
                let enable = cmd.cdw11 & 1 != 0;
                let dirty = st.store.dirty_blocks();
                match st.store.set_cache_enabled(enable) {
                    Ok(()) => {
                        if !enable {
                            st.stats.cache_blocks_flushed += dirty as u64;
                        }
                        ok(0)
                    }
                    Err(e) => {
                        log::error!("{}: disabling the write cache: {e}", self.label);
                        err(GenericStatus::InternalError)
                    }
                }
            }
            _ => err(GenericStatus::InvalidField),
        }
    }

    fn get_features(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let dw10 = FeaturesDw10::from(cmd.cdw10);
        let sel = dw10.select();
        if sel.0 > FeatureSelect::SupportedCapabilities.0 {
            return err(GenericStatus::InvalidField);
        }
        // Supported capabilities: changeable (bit 2), neither saveable nor
        // namespace specific.
        const CHANGEABLE: u32 = 0b100;
        match dw10.fid() {
            FeatureId::NumberOfQueues => match sel {
                FeatureSelect::SupportedCapabilities => ok(CHANGEABLE),
                FeatureSelect::Current => {
                    let (nsq, ncq) = st.queues_allocated;
                    self.queue_counts(nsq, ncq)
                }
                _ => self.queue_counts(self.config.max_io_queues, self.config.max_io_queues),
            },
            FeatureId::VolatileWriteCache if self.config.volatile_write_cache => match sel {
                FeatureSelect::Current => ok(u32::from(st.store.cache_enabled())),
                FeatureSelect::SupportedCapabilities => ok(CHANGEABLE),
                _ => ok(1),
            },
            _ => err(GenericStatus::InvalidField),
        }
    }

    /// A Number of Queues completion value (§5.21.1.7) for 1's based counts.
    fn queue_counts(&self, nsq: u16, ncq: u16) -> Outcome {
        match NumberOfQueues::from_counts(nsq.into(), ncq.into()) {
            Ok(counts) => ok(counts.into_bits()),
            Err(e) => {
                log::error!("{}: Number of Queues: {e}", self.label);
                err(GenericStatus::InternalError)
            }
        }
    }

    fn get_log_page(&self, cmd: &SubmissionEntry) -> Outcome {
        let lid = cmd.cdw10 & 0xFF;
        let numd = ((cmd.cdw10 >> 16) | ((cmd.cdw11 & 0xFFFF) << 16)) as u64 + 1;
        let len = numd * 4;
        let log_offset = u64::from(cmd.cdw12) | (u64::from(cmd.cdw13) << 32);
        // Error Information (one 64-byte entry), SMART / Health Information,
        // Firmware Slot Information (§5.14.1.1–3): zero-filled apart from
        // the active firmware slot.
        let mut page = match lid {
            0x01 => vec![0u8; 64],
            0x02 | 0x03 => vec![0u8; 512],
            _ => return err(CommandSpecificStatus::InvalidLogPage),
        };
        if lid == 0x03 {
            // AFI: slot 1 active; FRS1 = firmware revision.
            page[0] = 1;
            let fr = self.config.firmware.as_bytes();
            for (i, b) in page.iter_mut().skip(8).take(8).enumerate() {
                *b = fr.get(i).copied().unwrap_or(b' ');
            }
        }
        if log_offset % 4 != 0 || log_offset >= page.len() as u64 {
            return err(GenericStatus::InvalidField);
        }
        if !self.within_mdts(usize::try_from(len).unwrap_or(usize::MAX)) {
            return err(GenericStatus::InvalidField);
        }
        // Only the bytes the log holds are transferred.
        let from = log_offset as usize;
        let to = page
            .len()
            .min(from.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)));
        self.transfer_out(cmd, &page[from..to])
    }

    fn within_mdts(&self, len: usize) -> bool {
        self.config.mdts == 0 || len <= PAGE_SIZE << self.config.mdts
    }

    fn create_cq(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let dw10 = QueueDw10::from(cmd.cdw10);
        let dw11 = CreateCqDw11::from(cmd.cdw11);
        let qid = dw10.qid();
        if qid == 0 || qid > st.queues_allocated.1 || st.cqs.contains_key(&qid) {
            return err(CommandSpecificStatus::InvalidQueueId);
        }
        if dw10.qsize() == 0 || dw10.qsize() > self.config.mqes {
            return err(CommandSpecificStatus::InvalidQueueSize);
        }
        if !dw11.pc() {
            return err(GenericStatus::InvalidField);
        }
        if cmd.prp1 % PAGE != 0 {
            return err(GenericStatus::PrpOffsetInvalid);
        }
        if dw11.ien() && dw11.iv() > self.config.max_io_queues {
            return err(CommandSpecificStatus::InvalidInterruptVector);
        }
        self.add_cq(
            st,
            qid,
            Cq {
                base: cmd.prp1,
                size: u32::from(dw10.qsize()) + 1,
                head: 0,
                tail: 0,
                phase: true,
            },
        );
        log::debug!(
            "{}: created CQ {qid} ({} entries)",
            self.label,
            u32::from(dw10.qsize()) + 1
        );
        ok(0)
    }

    fn create_sq(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let dw10 = QueueDw10::from(cmd.cdw10);
        let dw11 = CreateSqDw11::from(cmd.cdw11);
        let qid = dw10.qid();
        if qid == 0 || qid > st.queues_allocated.0 || st.sqs.contains_key(&qid) {
            return err(CommandSpecificStatus::InvalidQueueId);
        }
        if dw10.qsize() == 0 || dw10.qsize() > self.config.mqes {
            return err(CommandSpecificStatus::InvalidQueueSize);
        }
        let cqid = dw11.cqid();
        if cqid == 0 || !st.cqs.contains_key(&cqid) {
            return err(CommandSpecificStatus::CompletionQueueInvalid);
        }
        if !dw11.pc() {
            return err(GenericStatus::InvalidField);
        }
        if cmd.prp1 % PAGE != 0 {
            return err(GenericStatus::PrpOffsetInvalid);
        }
        self.add_sq(
            st,
            qid,
            Sq {
                base: cmd.prp1,
                size: u32::from(dw10.qsize()) + 1,
                head: 0,
                tail: 0,
                cqid,
            },
        );
        log::debug!("{}: created SQ {qid} -> CQ {cqid}", self.label);
        ok(0)
    }

    fn delete_sq(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let qid = QueueDw10::from(cmd.cdw10).qid();
        if qid == 0 || !self.remove_sq(st, qid) {
            return err(CommandSpecificStatus::InvalidQueueId);
        }
        log::debug!("{}: deleted SQ {qid}", self.label);
        ok(0)
    }

    fn delete_cq(&self, st: &mut State, cmd: &SubmissionEntry) -> Outcome {
        let qid = QueueDw10::from(cmd.cdw10).qid();
        if qid == 0 || !st.cqs.contains_key(&qid) {
            return err(CommandSpecificStatus::InvalidQueueId);
        }
        if st.sqs.values().any(|s| s.cqid == qid) {
            return err(CommandSpecificStatus::InvalidQueueDeletion);
        }
        self.remove_cq(st, qid);
        log::debug!("{}: deleted CQ {qid}", self.label);
        ok(0)
    }

    // ---- NVM commands (§6) -----------------------------------------------------

    /// Executes an NVM command; `tag` names a delayed command whose data
    /// transfers are checked against the DMA lifetime rule.
    fn io(&self, st: &mut State, cmd: &SubmissionEntry, tag: Option<u64>) -> Outcome {
        if self.has(Fault::DropsCommands) {
            st.stats.dropped_commands += 1;
            log::debug!(
                "{}: dropping I/O command cid {} (injected fault)",
                self.label,
                cmd.cid()
            );
            return Outcome::NoCompletion;
        }
        if cmd.cdw0.fuse() != 0 || cmd.cdw0.psdt() != 0 {
            return err(GenericStatus::InvalidField);
        }
        let op = NvmOpcode(cmd.opcode());
        match op {
            NvmOpcode::Flush => {
                if cmd.nsid != NSID && cmd.nsid != 0xFFFF_FFFF {
                    return err(GenericStatus::InvalidNamespace);
                }
                match st.store.flush() {
                    Ok(n) => {
                        st.stats.flushes += 1;
                        st.stats.cache_blocks_flushed += n as u64;
                        ok(0)
                    }
                    Err(e) => {
                        log::error!("{}: flush failed: {e}", self.label);
                        err(MediaStatus::WriteFault)
                    }
                }
            }
            NvmOpcode::Read | NvmOpcode::Write => self.read_write(st, op, cmd, tag),
            _ => err(GenericStatus::InvalidOpcode),
        }
    }

    fn read_write(
        &self,
        st: &mut State,
        op: NvmOpcode,
        cmd: &SubmissionEntry,
        tag: Option<u64>,
    ) -> Outcome {
        if cmd.nsid != NSID {
            return err(GenericStatus::InvalidNamespace);
        }
        let dw12 = RwDw12::from(cmd.cdw12);
        let slba = cmd.slba();
        let blocks = u64::from(dw12.blocks());
        if !st.store.in_range(slba, blocks) {
            return err(GenericStatus::LbaOutOfRange);
        }
        let len = blocks as usize * st.store.block_size();
        if !self.within_mdts(len) {
            return err(GenericStatus::InvalidField);
        }
        if op == NvmOpcode::Write {
            let data = match self.read_host(cmd.prp1, cmd.prp2, len, tag) {
                Ok(d) => d,
                Err(s) => return Outcome::Complete(0, s),
            };
            match st.store.write(slba, &data, dw12.fua()) {
                Ok(()) => {
                    st.stats.writes += 1;
                    st.stats.blocks_written += blocks;
                    ok(0)
                }
                Err(e) => {
                    log::error!("{}: write of {blocks} blocks at {slba}: {e}", self.label);
                    err(MediaStatus::WriteFault)
                }
            }
        } else {
            let mut data = vec![0u8; len];
            if let Err(e) = st.store.read(slba, &mut data) {
                log::error!("{}: read of {blocks} blocks at {slba}: {e}", self.label);
                return err(MediaStatus::UnrecoveredReadError);
            }
            match self.write_host(cmd.prp1, cmd.prp2, &data, tag) {
                Ok(()) => {
                    st.stats.reads += 1;
                    st.stats.blocks_read += blocks;
                    ok(0)
                }
                Err(s) => Outcome::Complete(0, s),
            }
        }
    }
}
