//! Controller bring-up, identification and I/O.
//!
//! # DMA memory outlives the controller's use of it
//!
//! Queues, PRP lists and data buffers are DMA memory the controller reads and
//! writes on its own. The rule this module keeps: **memory the controller may
//! still access is neither freed nor reused before the controller has been
//! reset** (CC.EN=0 and CSTS.RDY=0, waited for within CAP.TO).
//!
//! * From the moment bring-up writes CC.EN=1, the [`Controller`] owns all the
//!   memory, and dropping it — also when bring-up fails half-way — first
//!   resets the controller, then frees the memory. If the reset does not
//!   complete in time, the memory is never freed by this process (it is
//!   leaked on purpose and logged; the operating system reclaims it when the
//!   process exits, which a userspace driver cannot prevent).
//! * A command that did not complete (timed out, or the controller went fatal
//!   or away) may still be executed later: its data buffer and PRP list page
//!   are *quarantined* — kept, never reused — until that reset, and the I/O
//!   path continues with new ones. After [`Options::max_quarantined_commands`]
//!   such commands, or when no new memory can be had, I/O is refused
//!   ([`NvmeError::Unusable`]) rather than risk reuse.
//! * The same holds for an Identify buffer or an I/O queue pair whose command
//!   did not complete, and for the I/O queues [`Controller::begin`] retires.
//! * A command that completed (with success or an error status) is done with
//!   its memory.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use log::{debug, error, info, warn};
use nvme_spec::cmd::{NumberOfQueues, SubmissionEntry, CQ_ENTRY_SIZE_LOG2, SQ_ENTRY_SIZE_LOG2};
use nvme_spec::identify::{
    Cns, IdentifyController, IdentifyNamespace, NamespaceList, IDENTIFY_SIZE,
};
use nvme_spec::status::GenericStatus;
use nvme_spec::{Aqa, Cap, Cc, CommandSetSelect, NvmOpcode, ShutdownNotification, Version};
use pcid_hw::{Clock, DmaAllocator, DmaBuffer, RegisterIo, PAGE_SIZE};

use crate::lifecycle::{Lifecycle, LifecycleCell, ShutdownState};
use crate::poll::{wait_for, Backoff, ShutdownPolling};
use crate::queue::{IoStatCounters, QueuePair, WaitCtx, MAX_ENTRIES_PER_PAGE};
use crate::regs::Registers;
use crate::{lock, NvmeError};

/// Tunables of the driver. [`Options::default`] suits real controllers and the model.
#[derive(Debug, Clone)]
pub struct Options {
    /// Entries in each admin queue (clamped to 2..=64 so a queue fits one page).
    pub admin_queue_entries: u16,
    /// Entries in each I/O queue (clamped to 2..=64 and to CAP.MQES + 1).
    pub io_queue_entries: u16,
    /// Deadline for one admin or I/O command.
    pub command_timeout: Duration,
    /// Used for CSTS.RDY waits when CAP.TO is 0 (the controller gives no bound).
    pub ready_timeout_fallback: Duration,
    /// Largest transfer per command in bytes, further bounded by MDTS.
    pub max_transfer_bytes: usize,
    /// First delay between polls of a register or completion queue.
    pub poll_initial: Duration,
    /// Longest delay between polls of a completion queue or CSTS.RDY.
    pub poll_max: Duration,
    /// When `finish` looks at CSTS.SHST (see [`ShutdownPolling`]).
    pub shutdown_polling: ShutdownPolling,
    /// When a normal shutdown has not completed near the deadline, write
    /// CC.SHN=10b (abrupt) and report that it did.
    pub escalate_to_abrupt: bool,
    /// Share of the finish deadline kept for the abrupt shutdown when
    /// escalating, capped at [`Options::abrupt_reserve_max`].
    pub abrupt_reserve_fraction: f64,
    /// Upper bound of the time kept for an abrupt shutdown.
    pub abrupt_reserve_max: Duration,
    /// Budget reported by `begin` when the controller's RTD3E is 0.
    pub default_shutdown_budget: Duration,
    /// I/O commands that may complete after the driver gave up on them, whose
    /// buffers are quarantined until the controller is reset; one more and
    /// I/O is refused.
    pub max_quarantined_commands: u32,
    /// Unit tests of this crate only: switches that break the DMA lifetime
    /// rule, so negative controls can show that the simulated controller's
    /// checks catch a driver that breaks it.
    #[cfg(test)]
    pub(crate) break_rules: BreakRules,
}

/// See [`Options::break_rules`].
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BreakRules {
    /// Reuse a timed-out command's buffers at once.
    pub(crate) no_quarantine: bool,
    /// Free DMA memory without resetting the controller first.
    pub(crate) no_reset_before_free: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            admin_queue_entries: 32,
            io_queue_entries: 64,
            command_timeout: Duration::from_secs(5),
            ready_timeout_fallback: Duration::from_secs(30),
            max_transfer_bytes: 256 * 1024,
            poll_initial: Duration::from_micros(50),
            poll_max: Duration::from_millis(1),
            shutdown_polling: ShutdownPolling::default(),
            escalate_to_abrupt: true,
            abrupt_reserve_fraction: 0.1,
            abrupt_reserve_max: Duration::from_secs(1),
            default_shutdown_budget: Duration::from_secs(1),
            max_quarantined_commands: 16,
            #[cfg(test)]
            break_rules: BreakRules::default(),
        }
    }
}

/// What the controller says about itself (registers and Identify Controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI vendor ID from Identify.
    pub vendor_id: u16,
    /// Serial number (SN).
    pub serial: String,
    /// Model number (MN).
    pub model: String,
    /// Firmware revision (FR).
    pub firmware: String,
    /// NVMe version from the VS register.
    pub version: Version,
    /// RTD3 Entry Latency in µs (0 = not reported).
    pub rtd3e_us: u32,
    /// Whether a volatile write cache is present (VWC bit 0).
    pub volatile_write_cache: bool,
    /// Raw MDTS (power of two of the minimum page size; 0 = no limit).
    pub mdts: u8,
    /// Largest transfer this driver issues per command, in bytes.
    pub max_transfer_bytes: usize,
    /// Number of namespaces (NN).
    pub namespace_count: u32,
    /// The CAP register.
    pub cap: Cap,
}

/// An active namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// Namespace identifier.
    pub nsid: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Logical block size in bytes (from the LBA format in use).
    pub block_size: u32,
}

impl Namespace {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// The I/O queue pair with its bounce buffer and PRP list page.
pub(crate) struct IoPath<B: DmaBuffer> {
    pub(crate) queue: QueuePair<B>,
    data: B,
    prp_list: B,
    /// Commands whose buffers were quarantined.
    quarantined: u32,
    /// Why I/O is refused, once it is.
    pub(crate) disabled: Option<String>,
}

/// A controller that has been brought up: admin queue, one I/O queue pair,
/// identified namespaces. All methods take `&self`; the type is `Send + Sync`
/// so I/O and the shutdown protocol can run on different threads.
pub struct Controller<R: RegisterIo, D: DmaAllocator, C: Clock> {
    pub(crate) name: String,
    pub(crate) regs: Registers<R>,
    pub(crate) clock: C,
    pub(crate) options: Options,
    pub(crate) info: ControllerInfo,
    namespaces: Vec<Namespace>,
    /// `None` only while the controller is being dropped.
    pub(crate) admin: Mutex<Option<QueuePair<D::Buffer>>>,
    pub(crate) io: Mutex<Option<IoPath<D::Buffer>>>,
    pub(crate) lifecycle: LifecycleCell,
    pub(crate) shutdown: Mutex<ShutdownState<IoPath<D::Buffer>>>,
    /// Memory the controller may still access (quarantined buffers), freed
    /// only after a reset.
    quarantine: Mutex<Vec<D::Buffer>>,
    /// Bound on CSTS.RDY transitions (CAP.TO, or the fallback).
    ready_timeout: Duration,
    /// What waiting for completions cost so far.
    stats: IoStatCounters,
    dma: D,
}

/// What waiting for command completions has cost (completions are polled:
/// see [`Controller::io_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStats {
    /// Commands submitted (admin and I/O).
    pub commands: u64,
    /// Looks at a completion queue (each one a memory read of an entry's
    /// phase tag).
    pub completion_looks: u64,
    /// Pauses between looks (each one a sleep of the waiting thread).
    pub sleeps: u64,
    /// Total time asked for in those pauses.
    pub slept: Duration,
    /// Total time from submission to completion (or giving up).
    pub waited: Duration,
}

impl std::fmt::Display for IoStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} commands, {} completion looks, {} sleeps ({:.3} ms asked), {:.3} ms waited",
            self.commands,
            self.completion_looks,
            self.sleeps,
            self.slept.as_secs_f64() * 1000.0,
            self.waited.as_secs_f64() * 1000.0
        )
    }
}

/// Exclusive use of the I/O queue pair for one request, which may take
/// several commands (a read-modify-write, a transfer split by MDTS, a flush).
/// Obtained through [`Controller::io`]: once a request has been accepted,
/// [`Controller::begin`] waits for it to end before it takes the queues out
/// of service, so an accepted request is never cut in half by a shutdown.
pub struct IoSession<'a, R: RegisterIo, D: DmaAllocator, C: Clock> {
    ctrl: &'a Controller<R, D, C>,
    io: &'a mut IoPath<D::Buffer>,
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> Controller<R, D, C> {
    /// Brings the controller up from whatever state it is in (NVMe Base
    /// Specification 1.4, §7.6.1 "Initialization"): reset (CC.EN=0, wait
    /// CSTS.RDY=0 within CAP.TO), admin queue setup (AQA/ASQ/ACQ), CC
    /// configuration (CSS=NVM, MPS=4 KiB, IOSQES=6, IOCQES=4), enable (wait
    /// CSTS.RDY=1 within CAP.TO), Identify Controller and namespaces, Set
    /// Features Number of Queues, and creation of I/O queue pair 1.
    ///
    /// `name` identifies the device in log lines (e.g. its PCI address).
    pub fn bring_up(
        name: impl Into<String>,
        regs: R,
        dma: D,
        clock: C,
        options: Options,
    ) -> Result<Self, NvmeError> {
        let name = name.into();
        let regs = Registers::new(regs);
        let cap = regs.cap("read CAP")?;
        let version = regs.version();
        debug!("{name}: {cap:?}, version {version}");
        if cap.css() & Cap::CSS_NVM == 0 {
            return Err(NvmeError::Unsupported {
                step: "read CAP",
                reason: format!("CAP.CSS={:#x} lacks the NVM command set", cap.css()),
            });
        }
        if cap.min_page_size() > PAGE_SIZE as u64 || cap.max_page_size() < PAGE_SIZE as u64 {
            return Err(NvmeError::Unsupported {
                step: "read CAP",
                reason: format!(
                    "memory page sizes {}..={} exclude {PAGE_SIZE}",
                    cap.min_page_size(),
                    cap.max_page_size()
                ),
            });
        }
        let ready_timeout = if cap.to() == 0 {
            options.ready_timeout_fallback
        } else {
            cap.timeout()
        };
        let backoff = Backoff::new(options.poll_initial, options.poll_max);
        let dstrd = cap.dstrd();

        // Reset: clear CC.EN and wait for CSTS.RDY=0 (§7.6.1 step 1).
        let cc = regs.cc("read CC before reset")?;
        let csts = regs.csts("read CSTS before reset")?;
        info!(
            "{name}: found controller in state CC.EN={} CSTS.RDY={} CSTS.CFS={} SHST={:?}",
            cc.en(),
            csts.rdy(),
            csts.cfs(),
            csts.shutdown_status()
        );
        if cc.en() && !csts.rdy() && !csts.cfs() {
            // An enable is in progress; the spec asks the host not to clear
            // EN before RDY has followed it.
            let r = wait_for(
                &clock,
                "wait CSTS.RDY=1 before reset",
                ready_timeout,
                backoff,
                || {
                    Ok(regs
                        .csts("wait CSTS.RDY=1 before reset")?
                        .rdy()
                        .then_some(()))
                },
            );
            if let Err(e) = r {
                warn!("{name}: {e}; resetting anyway");
            }
        }
        if cc.en() {
            regs.set_cc(cc.with_en(false).with_shutdown(ShutdownNotification::None));
        }
        wait_for(
            &clock,
            "wait CSTS.RDY=0 after reset",
            ready_timeout,
            backoff,
            || {
                let csts = regs.csts("wait CSTS.RDY=0 after reset")?;
                Ok((!csts.rdy()).then_some(()))
            },
        )?;

        // Admin queue (§7.6.1 step 3).
        let admin_entries = options
            .admin_queue_entries
            .clamp(2, MAX_ENTRIES_PER_PAGE)
            .min(u16::try_from(cap.max_queue_entries()).unwrap_or(u16::MAX));
        let admin = QueuePair::new(&dma, 0, admin_entries, dstrd)?;
        let admin_entries = admin.entries();
        let aqa = Aqa::for_entries(admin_entries, admin_entries)
            .map_err(NvmeError::encode("program AQA"))?;
        regs.set_admin_queues(aqa, admin.sq_address()?, admin.cq_address()?);

        // Configure and enable (§7.6.1 steps 4-6).
        let cc = Cc::new()
            .with_command_set(CommandSetSelect::Nvm)
            .with_mps(0)
            .with_ams(0)
            .with_shutdown(ShutdownNotification::None)
            .with_iosqes(SQ_ENTRY_SIZE_LOG2)
            .with_iocqes(CQ_ENTRY_SIZE_LOG2)
            .with_en(true);
        regs.set_cc(cc);

        // From here on the controller may access the admin queues: the memory
        // belongs to `this`, whose drop resets the controller before freeing
        // it — also when a step below fails.
        let mut this = Self {
            name,
            regs,
            clock,
            info: ControllerInfo {
                vendor_id: 0,
                serial: String::new(),
                model: String::new(),
                firmware: String::new(),
                version,
                rtd3e_us: 0,
                volatile_write_cache: false,
                mdts: 0,
                max_transfer_bytes: 0,
                namespace_count: 0,
                cap,
            },
            namespaces: Vec::new(),
            admin: Mutex::new(Some(admin)),
            io: Mutex::new(None),
            lifecycle: LifecycleCell::new(Lifecycle::Running),
            shutdown: Mutex::new(ShutdownState::default()),
            quarantine: Mutex::new(Vec::new()),
            ready_timeout,
            stats: IoStatCounters::default(),
            options,
            dma,
        };
        wait_for(
            &this.clock,
            "wait CSTS.RDY=1 after enable",
            ready_timeout,
            backoff,
            || {
                let csts = this.regs.csts("wait CSTS.RDY=1 after enable")?;
                if csts.cfs() {
                    return Err(NvmeError::ControllerFatal {
                        step: "wait CSTS.RDY=1 after enable",
                    });
                }
                Ok(csts.rdy().then_some(()))
            },
        )?;
        info!("{}: controller enabled (NVMe {version})", this.name);
        this.identify()?;
        this.create_io_queues()?;
        Ok(this)
    }

    /// The name given at construction (used in log lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Identity and limits of the controller.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// The active namespaces found at bring-up.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    /// The namespace with identifier `nsid`.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace, NvmeError> {
        self.namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .copied()
            .ok_or_else(|| NvmeError::InvalidRequest {
                reason: format!("no active namespace {nsid}"),
            })
    }

    pub(crate) fn wait_ctx(&self) -> WaitCtx<'_, R, C> {
        WaitCtx {
            regs: &self.regs,
            clock: &self.clock,
            name: &self.name,
            timeout: self.options.command_timeout,
            backoff: Backoff::new(self.options.poll_initial, self.options.poll_max),
            stats: &self.stats,
        }
    }

    /// What waiting for completions has cost so far. Completions are
    /// polled, not signalled by interrupt: a command is looked for at once,
    /// then after pauses that start at [`Options::poll_initial`] and double
    /// up to [`Options::poll_max`]; an idle controller costs nothing.
    pub fn io_stats(&self) -> IoStats {
        self.stats.snapshot()
    }

    /// Runs one admin command to completion.
    pub(crate) fn admin_command(
        &self,
        command: &'static str,
        entry: SubmissionEntry,
    ) -> Result<nvme_spec::CompletionEntry, NvmeError> {
        self.admin_command_within(command, entry, self.options.command_timeout)
    }

    /// Runs one admin command, waiting at most `timeout` for its completion.
    pub(crate) fn admin_command_within(
        &self,
        command: &'static str,
        entry: SubmissionEntry,
        timeout: Duration,
    ) -> Result<nvme_spec::CompletionEntry, NvmeError> {
        let mut admin = lock(&self.admin);
        let admin = admin.as_mut().ok_or_else(|| NvmeError::Unusable {
            reason: "the controller is being released".to_string(),
        })?;
        let mut ctx = self.wait_ctx();
        ctx.timeout = timeout.min(self.options.command_timeout);
        admin.execute(&ctx, command, entry)
    }

    /// Runs an Identify command into a fresh 4 KiB buffer and returns its bytes.
    fn identify_raw(
        &self,
        command: &'static str,
        cns: Cns,
        nsid: u32,
        buf: &D::Buffer,
    ) -> Result<Vec<u8>, NvmeError> {
        buf.write(0, &[0u8; IDENTIFY_SIZE])
            .map_err(NvmeError::dma(command))?;
        let prp1 = buf.device_address(0).map_err(NvmeError::dma(command))?;
        self.admin_command(command, SubmissionEntry::identify(0, cns, nsid, prp1, 0))?;
        let mut out = vec![0u8; IDENTIFY_SIZE];
        buf.read(0, &mut out).map_err(NvmeError::dma(command))?;
        Ok(out)
    }

    /// Identify Controller, the active namespace list and each namespace
    /// (§5.15.2–§5.15.4).
    fn identify(&mut self) -> Result<(), NvmeError> {
        let buf = self
            .dma
            .allocate(IDENTIFY_SIZE)
            .map_err(NvmeError::dma("allocate Identify buffer"))?;
        let result = self.identify_into(&buf);
        if result.as_ref().is_err_and(abandons_command) {
            // The controller may still write the Identify data.
            lock(&self.quarantine).push(buf);
        }
        result
    }

    fn identify_into(&mut self, buf: &D::Buffer) -> Result<(), NvmeError> {
        let raw = self.identify_raw("Identify Controller", Cns::Controller, 0, buf)?;
        let id = IdentifyController::from_bytes(&raw).map_err(|e| NvmeError::BadData {
            step: "Identify Controller",
            reason: e.to_string(),
        })?;
        let mdts_bytes = id.max_transfer_bytes(self.info.cap.min_page_size());
        // One PRP list page addresses 512 pages, plus the page in PRP1.
        let prp_limit = (PAGE_SIZE / 8) * PAGE_SIZE;
        let mut max_transfer = self.options.max_transfer_bytes.clamp(PAGE_SIZE, prp_limit);
        if let Some(m) = mdts_bytes {
            max_transfer = max_transfer.min(usize::try_from(m).unwrap_or(usize::MAX));
        }
        self.info = ControllerInfo {
            vendor_id: id.vid,
            serial: id.serial(),
            model: id.model(),
            firmware: id.firmware(),
            version: self.info.version,
            rtd3e_us: id.rtd3e,
            volatile_write_cache: id.volatile_write_cache(),
            mdts: id.mdts,
            max_transfer_bytes: max_transfer,
            namespace_count: id.nn,
            cap: self.info.cap,
        };
        info!(
            "{}: serial {:?}, model {:?}, firmware {:?}, RTD3E {} us, VWC {}, MDTS {}, {} namespace(s)",
            self.name,
            id.serial(),
            id.model(),
            id.firmware(),
            id.rtd3e,
            id.volatile_write_cache(),
            id.mdts,
            id.nn
        );

        let ids = match self.identify_raw(
            "Identify Active Namespace List",
            Cns::ActiveNamespaceList,
            0,
            buf,
        ) {
            Ok(raw) => NamespaceList::from_bytes(&raw)
                .map_err(|e| NvmeError::BadData {
                    step: "Identify Active Namespace List",
                    reason: e.to_string(),
                })?
                .active(),
            Err(NvmeError::CommandFailed { status, .. })
                if status.as_generic() == Some(GenericStatus::InvalidField) =>
            {
                // Controllers before NVMe 1.1 lack CNS 02h: probe 1..=NN.
                (1..=id.nn.min(1024)).collect()
            }
            Err(e) => return Err(e),
        };
        let mut namespaces = Vec::new();
        for nsid in ids {
            let raw = self.identify_raw("Identify Namespace", Cns::Namespace, nsid, buf)?;
            let ns = IdentifyNamespace::from_bytes(&raw).map_err(|e| NvmeError::BadData {
                step: "Identify Namespace",
                reason: e.to_string(),
            })?;
            if ns.is_inactive() {
                continue;
            }
            let Some(block_size) = ns.block_size() else {
                warn!(
                    "{}: namespace {nsid}: unusable LBA format {:?}; skipped",
                    self.name,
                    ns.current_format()
                );
                continue;
            };
            if block_size as usize > max_transfer {
                warn!(
                    "{}: namespace {nsid}: block size {block_size} exceeds the transfer limit {max_transfer}; skipped",
                    self.name
                );
                continue;
            }
            if ns.current_format().ms() != 0 && ns.flbas.extended() {
                warn!(
                    "{}: namespace {nsid}: extended-LBA metadata is not supported; skipped",
                    self.name
                );
                continue;
            }
            info!(
                "{}: namespace {nsid}: {} blocks of {block_size} bytes",
                self.name, ns.nsze
            );
            namespaces.push(Namespace {
                nsid,
                blocks: ns.nsze,
                block_size,
            });
        }
        self.namespaces = namespaces;
        Ok(())
    }

    /// Set Features Number of Queues (§5.21.1.7), then Create I/O Completion
    /// Queue 1 and Create I/O Submission Queue 1 (§5.3, §5.4).
    fn create_io_queues(&mut self) -> Result<(), NvmeError> {
        let c = self.admin_command(
            "Set Features (Number of Queues)",
            SubmissionEntry::set_number_of_queues(0, 1, 1)
                .map_err(NvmeError::encode("Set Features (Number of Queues)"))?,
        )?;
        let granted = NumberOfQueues::from(c.dw0);
        debug!(
            "{}: controller grants {} I/O SQs and {} I/O CQs",
            self.name,
            granted.sq_count(),
            granted.cq_count()
        );
        let entries = self
            .options
            .io_queue_entries
            .clamp(2, MAX_ENTRIES_PER_PAGE)
            .min(u16::try_from(self.info.cap.max_queue_entries()).unwrap_or(u16::MAX));
        let queue = QueuePair::new(&self.dma, 1, entries, self.info.cap.dstrd())?;
        let buffers = self.create_io_queue_pair(&queue).and_then(|()| {
            let data = self
                .dma
                .allocate(self.info.max_transfer_bytes)
                .map_err(NvmeError::dma("allocate I/O bounce buffer"))?;
            let prp_list = self
                .dma
                .allocate(PAGE_SIZE)
                .map_err(NvmeError::dma("allocate PRP list"))?;
            Ok((data, prp_list))
        });
        let (data, prp_list) = match buffers {
            Ok(b) => b,
            Err(e) => {
                // The queues may exist in the controller: keep their memory.
                lock(&self.quarantine).extend(queue.into_buffers());
                return Err(e);
            }
        };
        info!(
            "{}: I/O queue pair 1 created ({} entries, up to {} bytes per command)",
            self.name,
            queue.entries(),
            self.info.max_transfer_bytes
        );
        *lock(&self.io) = Some(IoPath {
            queue,
            data,
            prp_list,
            quarantined: 0,
            disabled: None,
        });
        Ok(())
    }

    /// Create I/O Completion Queue, then Create I/O Submission Queue, for `queue`.
    fn create_io_queue_pair(&self, queue: &QueuePair<D::Buffer>) -> Result<(), NvmeError> {
        self.admin_command(
            "Create I/O Completion Queue",
            SubmissionEntry::create_io_cq(
                0,
                queue.qid(),
                queue.entries().into(),
                queue.cq_address()?,
            )
            .map_err(NvmeError::encode("Create I/O Completion Queue"))?,
        )?;
        self.admin_command(
            "Create I/O Submission Queue",
            SubmissionEntry::create_io_sq(
                0,
                queue.qid(),
                queue.entries().into(),
                queue.sq_address()?,
                queue.qid(),
            )
            .map_err(NvmeError::encode("Create I/O Submission Queue"))?,
        )?;
        Ok(())
    }

    /// Checks a block request against the namespace and returns it.
    fn check_request(&self, nsid: u32, lba: u64, len: usize) -> Result<Namespace, NvmeError> {
        let ns = self.namespace(nsid)?;
        let bs = ns.block_size as usize;
        if len % bs != 0 {
            return Err(NvmeError::InvalidRequest {
                reason: format!("length {len} is not a multiple of the block size {bs}"),
            });
        }
        let blocks = (len / bs) as u64;
        if lba.checked_add(blocks).is_none_or(|end| end > ns.blocks) {
            return Err(NvmeError::InvalidRequest {
                reason: format!(
                    "blocks {lba}..{lba}+{blocks} are outside namespace {nsid} of {} blocks",
                    ns.blocks
                ),
            });
        }
        Ok(ns)
    }

    /// Blocks per command for namespace `ns`.
    fn chunk_blocks(&self, ns: &Namespace) -> usize {
        let per = self.info.max_transfer_bytes / ns.block_size as usize;
        per.clamp(1, 65536)
    }

    /// Locks the I/O path if new I/O is still accepted.
    fn io_path(&self) -> Result<MutexGuard<'_, Option<IoPath<D::Buffer>>>, NvmeError> {
        let guard = lock(&self.io);
        if self.lifecycle.get() != Lifecycle::Running || guard.is_none() {
            return Err(NvmeError::ShuttingDown);
        }
        if let Some(reason) = guard.as_ref().and_then(|io| io.disabled.clone()) {
            return Err(NvmeError::Unusable { reason });
        }
        Ok(guard)
    }

    /// Runs one request with exclusive use of the I/O queue pair. The
    /// request is accepted only while no shutdown has begun (otherwise
    /// [`NvmeError::ShuttingDown`]); once accepted it runs to its end even if
    /// [`Controller::begin`] is called meanwhile: `begin` waits for it
    /// (bounded by its own limit) before it flushes and deletes the queues.
    pub fn io<T>(
        &self,
        f: impl FnOnce(&mut IoSession<'_, R, D, C>) -> Result<T, NvmeError>,
    ) -> Result<T, NvmeError> {
        let mut guard = self.io_path()?;
        let io = guard.as_mut().ok_or(NvmeError::ShuttingDown)?;
        let mut session = IoSession { ctrl: self, io };
        f(&mut session)
    }

    /// Writes `data` (a whole number of blocks) to namespace `nsid` from block
    /// `lba`, split into commands of at most the MDTS-bounded transfer size.
    /// Returns once every command completed successfully. After shutdown has
    /// begun, fails with [`NvmeError::ShuttingDown`]; a write accepted before
    /// is completed first.
    pub fn write(&self, nsid: u32, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        self.io(|s| s.write(nsid, lba, data))
    }

    /// Reads blocks from namespace `nsid` starting at `lba` into `buf` (a
    /// whole number of blocks), split like [`Controller::write`].
    pub fn read(&self, nsid: u32, lba: u64, buf: &mut [u8]) -> Result<(), NvmeError> {
        self.io(|s| s.read(nsid, lba, buf))
    }

    /// Flush (§6.8): makes every completed write to `nsid` durable.
    pub fn flush(&self, nsid: u32) -> Result<(), NvmeError> {
        self.io(|s| s.flush(nsid))
    }

    /// Issues one Read or Write of `len` bytes between the bounce buffer and
    /// blocks from `lba`, with PRP1/PRP2 or a PRP list (§4.3).
    fn transfer(
        &self,
        io: &mut IoPath<D::Buffer>,
        op: NvmOpcode,
        command: &'static str,
        ns: &Namespace,
        lba: u64,
        len: usize,
    ) -> Result<(), NvmeError> {
        // The builder checks the count: one command moves 1..=65536 blocks.
        let blocks =
            u32::try_from(len / ns.block_size as usize).map_err(|_| NvmeError::InvalidRequest {
                reason: format!("{len} bytes in one command"),
            })?;
        let mut entry = SubmissionEntry::read_write(op, 0, ns.nsid, lba, blocks, 0, 0)
            .map_err(NvmeError::encode(command))?;
        (entry.prp1, entry.prp2) = build_prps(&io.data, &io.prp_list, len, command)?;
        let ctx = self.wait_ctx();
        match io.queue.execute(&ctx, command, entry) {
            Ok(_) => Ok(()),
            Err(e) => {
                if abandons_command(&e) {
                    self.quarantine_io_buffers(io, command);
                }
                Err(e)
            }
        }
    }

    /// The command just given up on may still transfer data later: keep its
    /// buffers until the controller is reset, and go on with new ones — or,
    /// past the limit or without memory, refuse further I/O.
    fn quarantine_io_buffers(&self, io: &mut IoPath<D::Buffer>, command: &'static str) {
        #[cfg(test)]
        if self.options.break_rules.no_quarantine {
            return;
        }
        io.quarantined = io.quarantined.saturating_add(1);
        let fresh = if io.quarantined > self.options.max_quarantined_commands {
            Err(format!(
                "{} I/O commands did not complete; their memory is quarantined until the controller is reset",
                io.quarantined
            ))
        } else {
            self.dma
                .allocate(io.data.len())
                .and_then(|d| Ok((d, self.dma.allocate(PAGE_SIZE)?)))
                .map_err(|e| format!("no memory to replace quarantined I/O buffers: {e}"))
        };
        match fresh {
            Ok((data, prp_list)) => {
                let mut q = lock(&self.quarantine);
                q.push(std::mem::replace(&mut io.data, data));
                q.push(std::mem::replace(&mut io.prp_list, prp_list));
                warn!(
                    "{}: {command} did not complete; its buffers are quarantined until the \
                     controller is reset ({} so far)",
                    self.name, io.quarantined
                );
            }
            Err(reason) => {
                error!("{}: {reason}; I/O is refused from now on", self.name);
                // The buffers stay in `io`, never used again.
                io.disabled = Some(reason);
            }
        }
    }

    /// Resets the controller (CC.EN=0, then CSTS.RDY=0 within CAP.TO) so
    /// that it no longer accesses any of this driver's memory. A device that
    /// is gone (registers read all-ones) accesses nothing either.
    fn reset_for_release(&self) -> Result<(), NvmeError> {
        const STEP: &str = "reset the controller before releasing its DMA memory";
        let cc = match self.regs.cc(STEP) {
            Ok(cc) => cc,
            Err(NvmeError::DeviceGone { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if cc.en() {
            self.regs
                .set_cc(cc.with_en(false).with_shutdown(ShutdownNotification::None));
        }
        let backoff = Backoff::new(self.options.poll_initial, self.options.poll_max);
        wait_for(
            &self.clock,
            "wait CSTS.RDY=0 before releasing DMA memory",
            self.ready_timeout,
            backoff,
            || match self.regs.csts(STEP) {
                Ok(csts) => Ok((!csts.rdy()).then_some(())),
                Err(NvmeError::DeviceGone { .. }) => Ok(Some(())),
                Err(e) => Err(e),
            },
        )
    }

    /// Never frees the DMA memory: for a controller that could not be reset.
    fn leak_dma_memory(&mut self) {
        let admin = self
            .admin
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let io = self.io.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        let retired = self
            .shutdown
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .retired_io
            .take();
        let quarantined =
            std::mem::take(self.quarantine.get_mut().unwrap_or_else(|e| e.into_inner()));
        std::mem::forget((admin, io, retired, quarantined));
    }
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> IoSession<'_, R, D, C> {
    /// The controller.
    pub fn controller(&self) -> &Controller<R, D, C> {
        self.ctrl
    }

    fn usable(&self) -> Result<(), NvmeError> {
        match &self.io.disabled {
            Some(reason) => Err(NvmeError::Unusable {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes `data` (a whole number of blocks) to namespace `nsid` from
    /// block `lba`, split into commands of at most the MDTS-bounded transfer
    /// size; returns once every command completed successfully.
    pub fn write(&mut self, nsid: u32, lba: u64, data: &[u8]) -> Result<(), NvmeError> {
        let ctrl = self.ctrl;
        let ns = ctrl.check_request(nsid, lba, data.len())?;
        let chunk = ctrl.chunk_blocks(&ns) * ns.block_size as usize;
        for (i, part) in data.chunks(chunk).enumerate() {
            self.usable()?;
            let first = lba + (i * chunk / ns.block_size as usize) as u64;
            self.io
                .data
                .write(0, part)
                .map_err(NvmeError::dma("Write"))?;
            ctrl.transfer(self.io, NvmOpcode::Write, "Write", &ns, first, part.len())?;
        }
        Ok(())
    }

    /// Reads blocks from namespace `nsid` starting at `lba` into `buf` (a
    /// whole number of blocks), split like [`IoSession::write`].
    pub fn read(&mut self, nsid: u32, lba: u64, buf: &mut [u8]) -> Result<(), NvmeError> {
        let ctrl = self.ctrl;
        let ns = ctrl.check_request(nsid, lba, buf.len())?;
        let chunk = ctrl.chunk_blocks(&ns) * ns.block_size as usize;
        for (i, part) in buf.chunks_mut(chunk).enumerate() {
            self.usable()?;
            let first = lba + (i * chunk / ns.block_size as usize) as u64;
            ctrl.transfer(self.io, NvmOpcode::Read, "Read", &ns, first, part.len())?;
            self.io.data.read(0, part).map_err(NvmeError::dma("Read"))?;
        }
        Ok(())
    }

    /// Flush (§6.8): makes every completed write to `nsid` durable.
    pub fn flush(&mut self, nsid: u32) -> Result<(), NvmeError> {
        self.ctrl.namespace(nsid)?;
        self.usable()?;
        let ctx = self.ctrl.wait_ctx();
        self.io
            .queue
            .execute(&ctx, "Flush", SubmissionEntry::flush(0, nsid))?;
        Ok(())
    }
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> Drop for Controller<R, D, C> {
    /// Resets the controller before the DMA memory goes (see the module
    /// documentation); if that fails, keeps the memory.
    fn drop(&mut self) {
        #[cfg(test)]
        if self.options.break_rules.no_reset_before_free {
            return;
        }
        match self.reset_for_release() {
            Ok(()) => debug!("{}: controller reset; releasing its DMA memory", self.name),
            Err(e) => {
                error!(
                    "{}: {e}; the controller may still access its DMA memory, which this \
                     process therefore never frees",
                    self.name
                );
                self.leak_dma_memory();
            }
        }
    }
}

/// Whether a command that ended with `e` may still be executed by the
/// controller later (it did not complete): then its memory must be kept.
pub(crate) fn abandons_command(e: &NvmeError) -> bool {
    !matches!(
        e,
        NvmeError::CommandFailed { .. }
            | NvmeError::QueueFull { .. }
            | NvmeError::InvalidRequest { .. }
    )
}

/// Builds PRP entries for `len` bytes at offset 0 of `data` (§4.3): PRP1 is
/// the first page; PRP2 is the second page when the transfer spans exactly
/// two pages, or the address of a PRP list naming pages 2..n.
pub(crate) fn build_prps<B: DmaBuffer>(
    data: &B,
    prp_list: &B,
    len: usize,
    step: &'static str,
) -> Result<(u64, u64), NvmeError> {
    let pages = len.div_ceil(PAGE_SIZE).max(1);
    let addr = |page: usize| {
        data.device_address(page * PAGE_SIZE)
            .map_err(NvmeError::dma(step))
    };
    let prp1 = addr(0)?;
    let prp2 = match pages {
        1 => 0,
        2 => addr(1)?,
        n => {
            if n - 1 > PAGE_SIZE / 8 {
                return Err(NvmeError::InvalidRequest {
                    reason: format!("{n} pages exceed one PRP list"),
                });
            }
            let mut list = Vec::with_capacity((n - 1) * 8);
            for p in 1..n {
                list.extend_from_slice(&addr(p)?.to_le_bytes());
            }
            prp_list.write(0, &list).map_err(NvmeError::dma(step))?;
            prp_list.device_address(0).map_err(NvmeError::dma(step))?
        }
    };
    Ok((prp1, prp2))
}
