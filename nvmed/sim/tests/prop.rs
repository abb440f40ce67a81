//! Property test: random register writes, doorbells, 64-byte commands, clock
//! jumps, power cuts and removals never panic the model, and its invariants
//! hold after every step.

mod common;

use common::{Host, QueuePair, ADMIN_ENTRIES};
use nvme_sim::{Fault, SimConfig, StartState};
use nvme_spec::regs::offset;
use nvme_spec::{Aqa, Cc, Csts, ShutdownStatus};
use pcid_hw::{DmaAllocator, DmaBuffer, RegisterIo, PAGE_SIZE};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A write to a controller register (0x00..0x40).
    Reg {
        off: usize,
        value: u32,
    },
    /// A write anywhere in the doorbell area, or a well-formed doorbell.
    Doorbell {
        qid: u16,
        cq: bool,
        value: u32,
    },
    RawWrite {
        off: usize,
        value: u32,
    },
    /// A command on the admin queue.
    Admin(Cmd),
    /// A command on I/O queue 1.
    Io(Cmd),
    /// Consume completions on both queues.
    Drain,
    Advance(u64),
    /// Reset and enable the way a host would.
    Restart,
    PowerCut,
    PowerOn,
    Remove,
}

#[derive(Debug, Clone)]
struct Cmd {
    bytes: [u8; 64],
    /// Point PRP1/PRP2 into the host's data buffer at these page offsets.
    prp: Option<(usize, usize)>,
}

fn cmd(opcodes: &'static [u8], io: bool) -> impl Strategy<Value = Cmd> {
    (
        proptest::collection::vec(any::<u8>(), 64),
        prop_oneof![1 => Just(None), 4 => proptest::sample::select(opcodes).prop_map(Some)],
        prop_oneof![
            1 => Just(None),
            2 => (0usize..8 * PAGE_SIZE, 0usize..8).prop_map(Some),
            3 => ((0usize..64).prop_map(|i| i * 512), 0usize..8).prop_map(Some)
        ],
        prop_oneof![1 => Just(None), 3 => Just(Some(1u32)), 1 => (0u32..4).prop_map(Some)],
        prop_oneof![
            1 => Just(None),
            // SLBA, CNS/FID, or QID | QSIZE << 16.
            2 => (0u32..300).prop_map(Some),
            1 => (0u32..16).prop_map(Some),
            2 => (0u32..6, 0u32..70).prop_map(|(q, s)| Some(q | s << 16))
        ],
        prop_oneof![
            1 => Just(None),
            // Upper SLBA zero, or PC | CQID << 16 for Create I/O SQ.
            3 => (0u32..2, 0u32..4).prop_map(move |(pc, cq)| Some(if io { 0 } else { pc | cq << 16 }))
        ],
        prop_oneof![1 => Just(None), 4 => (0u32..8).prop_map(Some), 1 => (0u32..64).prop_map(Some)],
    )
        .prop_map(|(v, op, prp, nsid, cdw10, cdw11, nlb)| {
            let mut bytes = [0u8; 64];
            bytes.copy_from_slice(&v);
            if let Some(op) = op {
                bytes[0] = op;
                // Usually no fuse / SGL bits, so commands get past the first check.
                bytes[1] &= 0x3C;
            }
            if let Some(n) = nsid {
                bytes[4..8].copy_from_slice(&n.to_le_bytes());
            }
            if let Some(d) = cdw10 {
                bytes[40..44].copy_from_slice(&d.to_le_bytes());
            }
            if let Some(d) = cdw11 {
                bytes[44..48].copy_from_slice(&d.to_le_bytes());
            }
            if let Some(n) = nlb {
                bytes[48..52].copy_from_slice(&n.to_le_bytes());
            }
            Cmd { bytes, prp }
        })
}

const ADMIN_OPS: &[u8] = &[
    0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18,
];
const IO_OPS: &[u8] = &[0x00, 0x01, 0x02, 0x08, 0x09];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => ((0usize..16).prop_map(|i| i * 4), any::<u32>())
            .prop_map(|(off, value)| Op::Reg { off, value }),
        3 => (0u16..6, any::<bool>(), prop_oneof![0u32..40, any::<u32>()])
            .prop_map(|(qid, cq, value)| Op::Doorbell { qid, cq, value }),
        1 => (0usize..0x5000, any::<u32>()).prop_map(|(off, value)| Op::RawWrite { off, value }),
        6 => cmd(ADMIN_OPS, false).prop_map(Op::Admin),
        8 => cmd(IO_OPS, true).prop_map(Op::Io),
        3 => Just(Op::Drain),
        2 => prop_oneof![0u64..10, 0u64..10_000].prop_map(Op::Advance),
        1 => Just(Op::Restart),
        1 => Just(Op::PowerCut),
        1 => Just(Op::PowerOn),
        1 => Just(Op::Remove),
    ]
}

fn config() -> impl Strategy<Value = SimConfig> {
    (
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        proptest::sample::subsequence(Fault::ALL.to_vec(), 0..2),
        0u8..4,
        0u64..3000,
    )
        .prop_map(|(enabled, vwc, dstrd, faults, mdts, latency)| SimConfig {
            start_state: if enabled {
                StartState::Enabled
            } else {
                StartState::Disabled
            },
            volatile_write_cache: vwc,
            doorbell_stride: dstrd,
            faults,
            mdts,
            shutdown_latency_ms: latency,
            namespace_blocks: 256,
            max_io_queues: 4,
            mqes: 63,
            ..SimConfig::default()
        })
}

struct World {
    h: Host,
    io: QueuePair,
    data: nvme_sim::SimDmaBuffer,
}

impl World {
    fn new(config: SimConfig) -> Self {
        let h = Host::unstarted(config);
        let data = h.dma.allocate(8 * PAGE_SIZE).unwrap();
        let io = QueuePair::new(&h.dma, 1, 16, 16);
        let mut w = World { h, io, data };
        w.restart();
        // Best effort: create I/O queue pair 1 (faults may prevent it).
        let cq = nvme_spec::SubmissionEntry::create_io_cq(1, 1, 16, w.io.cq_addr()).unwrap();
        let sq = nvme_spec::SubmissionEntry::create_io_sq(2, 1, 16, w.io.sq_addr(), 1).unwrap();
        w.submit_admin(&cq.to_bytes());
        w.submit_admin(&sq.to_bytes());
        w.drain();
        w
    }

    /// Reset and enable without asserting anything about the outcome.
    fn restart(&mut self) {
        let h = &mut self.h;
        h.ctrl.write32(offset::CC, 0);
        h.advance_ms(100);
        h.admin = QueuePair::new(&h.dma, 0, ADMIN_ENTRIES, ADMIN_ENTRIES);
        self.io.sq_tail = 0;
        self.io.cq_head = 0;
        self.io.phase = true;
        h.ctrl.write32(
            offset::AQA,
            Aqa::for_entries(ADMIN_ENTRIES as u16, ADMIN_ENTRIES as u16)
                .unwrap()
                .into_bits(),
        );
        h.ctrl.write64(offset::ASQ, h.admin.sq_addr());
        h.ctrl.write64(offset::ACQ, h.admin.cq_addr());
        h.ctrl.write32(
            offset::CC,
            Cc::new()
                .with_en(true)
                .with_iosqes(6)
                .with_iocqes(4)
                .into_bits(),
        );
        h.advance_ms(100);
    }

    fn with_prps(&self, c: &Cmd) -> [u8; 64] {
        let mut b = c.bytes;
        if let Some((off, page)) = c.prp {
            let prp1 = self.data.device_address(off).unwrap();
            let prp2 = self.data.device_address(page * PAGE_SIZE).unwrap();
            b[24..32].copy_from_slice(&prp1.to_le_bytes());
            b[32..40].copy_from_slice(&prp2.to_le_bytes());
        }
        b
    }

    fn submit_admin(&mut self, b: &[u8; 64]) {
        self.h.admin.push_raw(b);
        self.h.admin.ring_sq(&self.h.ctrl);
    }

    fn drain(&mut self) {
        for q in [&mut self.h.admin, &mut self.io] {
            let mut n = 0;
            while q.pop().is_some() && n < 64 {
                n += 1;
            }
            if n > 0 {
                q.ring_cq(&self.h.ctrl);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let ctrl = self.h.ctrl.clone();
        match op {
            Op::Reg { off, value } => ctrl.write32(*off, *value),
            Op::Doorbell { qid, cq, value } => {
                let off = if *cq {
                    ctrl.cq_doorbell(*qid)
                } else {
                    ctrl.sq_doorbell(*qid)
                };
                ctrl.write32(off, *value);
            }
            Op::RawWrite { off, value } => ctrl.write32(*off, *value),
            Op::Admin(c) => {
                let b = self.with_prps(c);
                self.submit_admin(&b);
            }
            Op::Io(c) => {
                let b = self.with_prps(c);
                self.io.push_raw(&b);
                self.io.ring_sq(&ctrl);
            }
            Op::Drain => self.drain(),
            Op::Advance(ms) => self.h.advance_ms(*ms),
            Op::Restart => self.restart(),
            Op::PowerCut => ctrl.power_cut(),
            Op::PowerOn => ctrl.power_on(),
            Op::Remove => ctrl.surprise_remove(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_keeps_the_model_consistent(
        config in config(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut w = World::new(config);
        prop_assert_eq!(w.h.ctrl.check_consistency(), Ok(()));
        for (i, op) in ops.iter().enumerate() {
            w.apply(op);
            if let Err(e) = w.h.ctrl.check_consistency() {
                return Err(TestCaseError::fail(format!("after op {i} {op:?}: {e}")));
            }
            let raw = w.h.ctrl.read32(offset::CSTS);
            if w.h.ctrl.is_gone() {
                prop_assert_eq!(raw, u32::MAX);
            } else {
                let csts = Csts::from_bits(raw);
                prop_assert_eq!(raw & !0x3F, 0, "reserved CSTS bits set: {:#x}", raw);
                prop_assert_ne!(csts.shutdown_status(), ShutdownStatus::Reserved);
                prop_assert_eq!(w.h.ctrl.read32(offset::CC) & !0x00FF_FFF1, 0);
                prop_assert_eq!(w.h.ctrl.read32(offset::VS), 0x0001_0400);
            }
        }
        // Whatever happened, the namespace can still be inspected.
        prop_assert!(w.h.ctrl.read_visible(0, 256).is_ok());
        prop_assert!(w.h.ctrl.read_durable(0, 256).is_ok());
    }

    #[test]
    fn random_commands_on_a_healthy_controller_always_complete(
        cmds in proptest::collection::vec((any::<bool>(), cmd(ADMIN_OPS, false), cmd(IO_OPS, true)), 1..60),
    ) {
        // No faults, no register noise: every command that is not an AER
        // gets exactly one completion, and the controller never goes fatal
        // unless a command made it use unmapped queue memory.
        let mut w = World::new(SimConfig {
            start_state: StartState::Disabled,
            namespace_blocks: 256,
            max_io_queues: 4,
            mqes: 63,
            ..SimConfig::default()
        });
        let mut aers = 0;
        for (admin, a, i) in &cmds {
            let before = w.h.ctrl.stats();
            let b = if *admin { w.with_prps(a) } else { w.with_prps(i) };
            if *admin {
                w.submit_admin(&b);
            } else {
                w.io.push_raw(&b);
                w.io.ring_sq(&w.h.ctrl.clone());
            }
            let after = w.h.ctrl.stats();
            let fatal = Csts::from_bits(w.h.ctrl.read32(offset::CSTS)).cfs();
            if !fatal && after.commands_processed > before.commands_processed {
                // An AER without fuse/SGL bits is held, up to AERL + 1 = 4.
                let held = *admin && b[0] == 0x0C && b[1] & 0xC3 == 0 && aers < 4;
                if held {
                    aers += 1;
                }
                let posted = after.completions_posted - before.completions_posted;
                prop_assert_eq!(posted, u64::from(!held), "command {:02x?}", &b[..16]);
            }
            w.drain();
            prop_assert_eq!(w.h.ctrl.check_consistency(), Ok(()));
        }
    }
}
