//! Fuzz target for the simulated NVMe controller (`nvme_sim`): its register
//! file, doorbells and command parsing, driven only through the public API a
//! driver uses (BAR0 register reads/writes and DMA memory) plus the model's
//! power and clock controls.
//!
//! The first bytes choose a configuration (start state, cache, doorbell
//! stride, MDTS, block size, queue limits, faults); the harness then resets
//! and enables the controller like a host and creates I/O queue pair 1. The
//! rest of the input is a program of operations: arbitrary 64-byte
//! submission entries on the admin queue or I/O queue 1 (optionally with PRP1
//! and PRP2 pointed into a mapped data buffer, so data transfers and PRP-list
//! walks are reached), raw register and doorbell writes anywhere in BAR0,
//! clock jumps, completion draining, resets, power cuts and removals.
//!
//! Checked after every operation: no panic, the model's internal invariants
//! (`SimController::check_consistency`), CSTS never has reserved bits set
//! nor SHST = 11b, and a removed or powered-off device reads all-ones.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nvme_sim::{DmaLayout, Fault, SimConfig, SimController, SimDma, SimDmaBuffer, StartState};
use nvme_spec::regs::offset;
use pcid_hw::{DmaAllocator, DmaBuffer, FakeClock, RegisterIo, PAGE_SIZE};

const SQE: usize = 64;
const CQE: usize = 16;
const ADMIN_ENTRIES: u32 = 16;
const IO_ENTRIES: u32 = 16;
const DATA_PAGES: usize = 8;

/// Reads bytes off the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn sqe(&mut self) -> Option<[u8; SQE]> {
        let (head, rest) = self.0.split_at_checked(SQE)?;
        self.0 = rest;
        let mut b = [0u8; SQE];
        b.copy_from_slice(head);
        Some(b)
    }
}

/// A host-side queue pair in the model's DMA memory.
struct Queue {
    qid: u16,
    sq: SimDmaBuffer,
    cq: SimDmaBuffer,
    entries: u32,
    tail: u32,
    head: u32,
    phase: bool,
}

impl Queue {
    fn new(dma: &SimDma, qid: u16, entries: u32) -> Option<Self> {
        Some(Self {
            qid,
            sq: dma.allocate(PAGE_SIZE).ok()?,
            cq: dma.allocate(PAGE_SIZE).ok()?,
            entries,
            tail: 0,
            head: 0,
            phase: true,
        })
    }
    fn sq_addr(&self) -> u64 {
        self.sq.device_address(0).unwrap_or(0)
    }
    fn cq_addr(&self) -> u64 {
        self.cq.device_address(0).unwrap_or(0)
    }
    fn reset(&mut self) {
        self.tail = 0;
        self.head = 0;
        self.phase = true;
        let _ = self.cq.write(0, &[0u8; PAGE_SIZE]);
    }
    fn submit(&mut self, ctrl: &SimController, entry: &[u8; SQE]) {
        let _ = self.sq.write(self.tail as usize * SQE, entry);
        self.tail = (self.tail + 1) % self.entries;
        ctrl.write32(ctrl.sq_doorbell(self.qid), self.tail);
    }
    /// Consumes new completion entries and rings the CQ head doorbell.
    fn drain(&mut self, ctrl: &SimController) {
        let mut n = 0;
        loop {
            let mut e = [0u8; CQE];
            if self.cq.read(self.head as usize * CQE, &mut e).is_err() {
                return;
            }
            let phase = e[14] & 1 == 1;
            if phase != self.phase || n >= self.entries {
                break;
            }
            n += 1;
            self.head += 1;
            if self.head == self.entries {
                self.head = 0;
                self.phase = !self.phase;
            }
        }
        if n > 0 {
            ctrl.write32(ctrl.cq_doorbell(self.qid), self.head);
        }
    }
}

struct Host {
    ctrl: SimController,
    clock: Arc<FakeClock>,
    admin: Queue,
    io: Queue,
    data: SimDmaBuffer,
}

fn sqe_raw(opcode: u8, cid: u16, dw10: u32, dw11: u32, prp1: u64) -> [u8; SQE] {
    let mut b = [0u8; SQE];
    b[0] = opcode;
    b[2..4].copy_from_slice(&cid.to_le_bytes());
    b[24..32].copy_from_slice(&prp1.to_le_bytes());
    b[40..44].copy_from_slice(&dw10.to_le_bytes());
    b[44..48].copy_from_slice(&dw11.to_le_bytes());
    b
}

impl Host {
    fn advance_ms(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }

    /// Reset, program the admin queue, enable, and (if `io_queues`) create
    /// I/O queue pair 1.
    fn restart(&mut self, io_queues: bool) {
        let c = &self.ctrl;
        c.write32(offset::CC, 0);
        self.advance_ms(200);
        self.admin.reset();
        self.io.reset();
        let e = ADMIN_ENTRIES - 1;
        c.write32(offset::AQA, e << 16 | e);
        c.write64(offset::ASQ, self.admin.sq_addr());
        c.write64(offset::ACQ, self.admin.cq_addr());
        // EN, IOSQES = 6, IOCQES = 4.
        c.write32(offset::CC, 1 | 6 << 16 | 4 << 20);
        self.advance_ms(200);
        if !io_queues {
            return;
        }
        let q = u32::from(self.io.qid) | (IO_ENTRIES - 1) << 16;
        let cq = sqe_raw(0x05, 0xF001, q, 1, self.io.cq_addr());
        let sq = sqe_raw(
            0x01,
            0xF002,
            q,
            1 | u32::from(self.io.qid) << 16,
            self.io.sq_addr(),
        );
        self.admin.submit(c, &cq);
        self.admin.submit(c, &sq);
        self.admin.drain(c);
    }

    fn with_prps(&self, mut b: [u8; SQE], sel: u8) -> [u8; SQE] {
        if sel & 0x80 != 0 {
            let off = usize::from(b[24]) * 64 % (DATA_PAGES * PAGE_SIZE);
            let page = usize::from(sel & 0x07);
            // Offset 0 of the data buffer's page `page`, or an unaligned
            // offset, as PRP1; page `page` as PRP2.
            let prp1 = self
                .data
                .device_address(if sel & 0x40 != 0 { off } else { 0 });
            let prp2 = self.data.device_address(page * PAGE_SIZE);
            if let (Ok(p1), Ok(p2)) = (prp1, prp2) {
                b[24..32].copy_from_slice(&p1.to_le_bytes());
                b[32..40].copy_from_slice(&p2.to_le_bytes());
            }
        }
        if sel & 0x20 != 0 {
            // No fuse or SGL bits: get past the first field check.
            b[1] &= 0x3C;
        }
        if sel & 0x10 != 0 {
            b[4..8].copy_from_slice(&1u32.to_le_bytes());
        }
        b
    }

    fn check(&self) {
        if let Err(e) = self.ctrl.check_consistency() {
            panic!("model invariant broken: {e}");
        }
        let csts = self.ctrl.read32(offset::CSTS);
        if self.ctrl.is_gone() {
            assert_eq!(csts, u32::MAX, "a gone device reads all-ones");
        } else {
            assert_eq!(csts & !0x3F, 0, "reserved CSTS bits: {csts:#x}");
            assert_ne!((csts >> 2) & 3, 3, "CSTS.SHST = 11b is reserved");
            assert_eq!(self.ctrl.read32(offset::VS), 0x0001_0400);
        }
    }
}

fn config(input: &mut Input) -> Option<SimConfig> {
    let a = input.u8()?;
    let b = input.u8()?;
    let c = input.u8()?;
    let faults: Vec<Fault> = Fault::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| c & (1 << i) != 0 && c & 0x80 != 0)
        .map(|(_, f)| f)
        .collect();
    Some(SimConfig {
        start_state: if a & 1 != 0 {
            StartState::Enabled
        } else {
            StartState::Disabled
        },
        volatile_write_cache: a & 2 != 0,
        abrupt_flushes_cache: a & 4 != 0,
        dma_layout: if a & 8 != 0 {
            DmaLayout::Contiguous
        } else {
            DmaLayout::Scattered
        },
        block_size: if a & 0x10 != 0 { 4096 } else { 512 },
        doorbell_stride: (a >> 5) & 3,
        mdts: b & 7,
        mqes: [1, 7, 15, 63, 1023][usize::from(b >> 3) % 5],
        max_io_queues: u16::from((b >> 6) & 3) + 1,
        shutdown_latency_ms: u64::from(c & 0x70) * 10,
        namespace_blocks: 256,
        faults,
        ..SimConfig::default()
    })
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input(bytes);
    let Some(cfg) = config(&mut input) else {
        return;
    };
    let clock = Arc::new(FakeClock::new());
    let Ok(ctrl) = SimController::new(cfg, clock.clone()) else {
        return;
    };
    let dma = ctrl.dma();
    let (Some(admin), Some(io), Ok(data)) = (
        Queue::new(&dma, 0, ADMIN_ENTRIES),
        Queue::new(&dma, 1, IO_ENTRIES),
        dma.allocate(DATA_PAGES * PAGE_SIZE),
    ) else {
        return;
    };
    let mut h = Host {
        ctrl,
        clock,
        admin,
        io,
        data,
    };
    h.restart(true);
    h.check();
    let mut steps = 0;
    while let Some(op) = input.u8() {
        steps += 1;
        if steps > 256 {
            break;
        }
        let ctrl = h.ctrl.clone();
        match op % 12 {
            0..=2 => {
                let Some(sel) = input.u8() else { break };
                let Some(b) = input.sqe() else { break };
                let b = h.with_prps(b, sel);
                h.admin.submit(&ctrl, &b);
            }
            3..=5 => {
                let Some(sel) = input.u8() else { break };
                let Some(b) = input.sqe() else { break };
                let b = h.with_prps(b, sel);
                h.io.submit(&ctrl, &b);
            }
            6 => {
                h.admin.drain(&ctrl);
                h.io.drain(&ctrl);
            }
            7 => {
                // A controller register (0x00..0x40), 32 or 64 bits.
                let (Some(off), Some(v)) = (input.u8(), input.u32()) else {
                    break;
                };
                let off = usize::from(off & 0x3C);
                if op & 0x80 != 0 {
                    ctrl.write64(off & !7, u64::from(v) << 32 | u64::from(v.rotate_left(7)));
                } else {
                    ctrl.write32(off, v);
                }
            }
            8 => {
                // Anywhere in BAR0 and beyond, including doorbells.
                let (Some(off), Some(v)) = (input.u16(), input.u32()) else {
                    break;
                };
                ctrl.write32(usize::from(off), v);
                let _ = ctrl.read32(usize::from(off).wrapping_mul(3));
            }
            9 => {
                let Some(ms) = input.u16() else { break };
                h.advance_ms(u64::from(ms));
            }
            // Without I/O queues, fuzzed admin commands create them (and
            // Set Features Number of Queues is still allowed).
            10 => h.restart(op & 0x80 == 0),
            _ => match op >> 4 {
                0 => ctrl.power_cut(),
                1 => ctrl.power_on(),
                2 => ctrl.surprise_remove(),
                _ => {
                    let _ = ctrl.read_visible(0, 8);
                    let _ = ctrl.read_durable(0, 8);
                    let _ = ctrl.stats();
                }
            },
        }
        h.check();
    }
    // Whatever happened, the namespace can still be inspected.
    assert!(h.ctrl.read_visible(0, 8).is_ok());
    assert!(h.ctrl.read_durable(0, 8).is_ok());
});
