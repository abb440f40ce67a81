//! A minimal host for driving the model through raw register writes and
//! hand-built queue entries (no driver code involved).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use nvme_sim::{SimConfig, SimController, SimDma, SimDmaBuffer};
use nvme_spec::cmd::{CQ_ENTRY_SIZE, SQ_ENTRY_SIZE};
use nvme_spec::regs::offset;
use nvme_spec::{Aqa, Cc, CompletionEntry, Csts, SubmissionEntry};
use pcid_hw::{Clock, DmaAllocator, DmaBuffer, FakeClock, RegisterIo, PAGE_SIZE};

/// One submission/completion queue pair as the host sees it.
pub struct QueuePair {
    pub qid: u16,
    pub sq: SimDmaBuffer,
    pub cq: SimDmaBuffer,
    pub sq_size: u32,
    pub cq_size: u32,
    pub sq_tail: u32,
    pub cq_head: u32,
    pub phase: bool,
}

impl QueuePair {
    pub fn new(dma: &SimDma, qid: u16, sq_size: u32, cq_size: u32) -> Self {
        assert!(sq_size as usize * SQ_ENTRY_SIZE <= PAGE_SIZE);
        assert!(cq_size as usize * CQ_ENTRY_SIZE <= PAGE_SIZE);
        Self {
            qid,
            sq: dma.allocate(PAGE_SIZE).unwrap(),
            cq: dma.allocate(PAGE_SIZE).unwrap(),
            sq_size,
            cq_size,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
        }
    }

    pub fn sq_addr(&self) -> u64 {
        self.sq.device_address(0).unwrap()
    }

    pub fn cq_addr(&self) -> u64 {
        self.cq.device_address(0).unwrap()
    }

    /// Places an entry at the tail (does not ring).
    pub fn push(&mut self, entry: &SubmissionEntry) {
        self.push_raw(&entry.to_bytes());
    }

    pub fn push_raw(&mut self, bytes: &[u8; 64]) {
        self.sq
            .write(self.sq_tail as usize * SQ_ENTRY_SIZE, bytes)
            .unwrap();
        self.sq_tail = (self.sq_tail + 1) % self.sq_size;
    }

    pub fn ring_sq(&self, ctrl: &SimController) {
        ctrl.write32(ctrl.sq_doorbell(self.qid), self.sq_tail);
    }

    /// Takes the next completion if its phase tag says it is new (does not
    /// ring the CQ head doorbell).
    pub fn pop(&mut self) -> Option<CompletionEntry> {
        let mut b = [0u8; CQ_ENTRY_SIZE];
        self.cq
            .read(self.cq_head as usize * CQ_ENTRY_SIZE, &mut b)
            .unwrap();
        let e = CompletionEntry::from_bytes(&b).unwrap();
        if e.phase() != self.phase {
            return None;
        }
        self.cq_head += 1;
        if self.cq_head == self.cq_size {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Some(e)
    }

    pub fn ring_cq(&self, ctrl: &SimController) {
        ctrl.write32(ctrl.cq_doorbell(self.qid), self.cq_head);
    }

    /// Submits one command and returns its completion, if any.
    pub fn run(
        &mut self,
        ctrl: &SimController,
        entry: &SubmissionEntry,
    ) -> Option<CompletionEntry> {
        self.push(entry);
        self.ring_sq(ctrl);
        let c = self.pop();
        if c.is_some() {
            self.ring_cq(ctrl);
        }
        c
    }
}

pub struct Host {
    pub ctrl: SimController,
    pub clock: Arc<FakeClock>,
    pub dma: SimDma,
    pub admin: QueuePair,
    next_cid: u16,
}

pub const ADMIN_ENTRIES: u32 = 16;

impl Host {
    /// Builds a controller and brings it up (reset, admin queue, enable).
    pub fn new(config: SimConfig) -> Self {
        let mut h = Self::unstarted(config);
        h.reset();
        h.enable();
        h
    }

    /// Builds a controller in its configured start state; nothing written.
    pub fn unstarted(config: SimConfig) -> Self {
        let clock = Arc::new(FakeClock::new());
        let ctrl = SimController::new(config, clock.clone()).unwrap();
        let dma = ctrl.dma();
        let admin = QueuePair::new(&dma, 0, ADMIN_ENTRIES, ADMIN_ENTRIES);
        Self {
            ctrl,
            clock,
            dma,
            admin,
            next_cid: 1,
        }
    }

    pub fn csts(&self) -> Csts {
        Csts::from_bits(self.ctrl.read32(offset::CSTS))
    }

    pub fn cc(&self) -> Cc {
        Cc::from_bits(self.ctrl.read32(offset::CC))
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    pub fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    /// Polls `cond` on CSTS every millisecond of fake time for at most `ms`.
    pub fn wait_csts(&self, ms: u64, cond: impl Fn(Csts) -> bool) -> bool {
        for _ in 0..=ms {
            if cond(self.csts()) {
                return true;
            }
            self.advance_ms(1);
        }
        false
    }

    pub fn reset(&mut self) {
        let cc = self.cc();
        self.ctrl.write32(offset::CC, cc.with_en(false).into_bits());
        let to = self.ctrl.cap().timeout().as_millis() as u64;
        assert!(self.wait_csts(to, |c| !c.rdy()), "RDY did not clear");
        self.admin = QueuePair::new(&self.dma, 0, ADMIN_ENTRIES, ADMIN_ENTRIES);
    }

    /// Programs the admin queue and sets CC.EN; waits for RDY within CAP.TO.
    pub fn enable(&mut self) {
        self.try_enable(Cc::new().with_iosqes(6).with_iocqes(4));
        let to = self.ctrl.cap().timeout().as_millis() as u64;
        assert!(
            self.wait_csts(to, |c| c.rdy() || c.cfs()),
            "RDY did not rise"
        );
        assert!(!self.csts().cfs(), "CFS after enable");
    }

    /// Programs the admin queue and writes `cc` with EN set; does not wait.
    pub fn try_enable(&mut self, cc: Cc) {
        self.ctrl.write32(
            offset::AQA,
            Aqa::for_entries(ADMIN_ENTRIES as u16, ADMIN_ENTRIES as u16)
                .unwrap()
                .into_bits(),
        );
        self.ctrl.write64(offset::ASQ, self.admin.sq_addr());
        self.ctrl.write64(offset::ACQ, self.admin.cq_addr());
        self.ctrl.write32(offset::CC, cc.with_en(true).into_bits());
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Runs an admin command; panics if no completion arrives.
    pub fn admin(&mut self, mut entry: SubmissionEntry) -> CompletionEntry {
        let cid = self.cid();
        entry.set_cid(cid);
        let c = self
            .admin
            .run(&self.ctrl, &entry)
            .expect("admin command completed");
        assert_eq!(c.cid, cid);
        assert_eq!(c.sq_id, 0);
        c
    }

    /// Creates I/O queue pair `qid` with the given sizes; asserts success.
    pub fn create_io(&mut self, qid: u16, sq_size: u32, cq_size: u32) -> QueuePair {
        let q = QueuePair::new(&self.dma, qid, sq_size, cq_size);
        let c = self.admin(SubmissionEntry::create_io_cq(0, qid, cq_size, q.cq_addr()).unwrap());
        assert!(c.status().is_success(), "create CQ: {}", c.status());
        let c =
            self.admin(SubmissionEntry::create_io_sq(0, qid, sq_size, q.sq_addr(), qid).unwrap());
        assert!(c.status().is_success(), "create SQ: {}", c.status());
        q
    }

    /// Writes CC.SHN (keeping EN and the rest of CC).
    pub fn request_shutdown(&self, shn: nvme_spec::ShutdownNotification) {
        let cc = self.cc();
        self.ctrl
            .write32(offset::CC, cc.with_shutdown(shn).into_bits());
    }
}

/// A buffer filled with a pattern derived from `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}
