//! The driver survives a controller that posts random completion entries:
//! wrong command identifiers, wrong submission queue identifiers, garbage
//! status and head pointers, phantom entries ahead of the real one. Every
//! call returns (within its deadline on the fake clock) either success or a
//! typed error; nothing panics.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Rig;
use nvme_sim::{SimConfig, SimController, SimDma, SimDmaBuffer};
use nvme_spec::cmd::{QueueDw10, SubmissionEntry, CQ_ENTRY_SIZE, SQ_ENTRY_SIZE};
use nvme_spec::regs::{decode_doorbell, offset, Doorbell};
use nvme_spec::{AdminOpcode, Aqa};
use nvmed::{Controller, NvmeError, Options};
use pcid_hw::{Clock, DmaAllocator, DmaBuffer, HwError, RegisterIo, PAGE_SIZE};
use proptest::prelude::*;

/// DMA allocator that remembers every buffer so the hostile BAR can write
/// into completion queues behind the driver's back.
#[derive(Clone)]
struct SpyDma {
    inner: SimDma,
    bufs: Arc<Mutex<Vec<Arc<SimDmaBuffer>>>>,
}

struct SpyBuf(Arc<SimDmaBuffer>);

impl DmaBuffer for SpyBuf {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn device_address(&self, offset: usize) -> Result<u64, HwError> {
        self.0.device_address(offset)
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), HwError> {
        self.0.read(offset, out)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), HwError> {
        self.0.write(offset, data)
    }
}

impl DmaAllocator for SpyDma {
    type Buffer = SpyBuf;
    fn allocate(&self, len: usize) -> Result<SpyBuf, HwError> {
        let b = Arc::new(self.inner.allocate(len)?);
        self.bufs.lock().unwrap().push(b.clone());
        Ok(SpyBuf(b))
    }
}

impl SpyDma {
    /// CPU access at a bus address (within one page).
    fn at(&self, addr: u64, f: impl FnOnce(&SimDmaBuffer, usize)) {
        let bufs = self.bufs.lock().unwrap();
        for b in bufs.iter() {
            for page in 0..b.len() / PAGE_SIZE {
                let base = b.device_address(page * PAGE_SIZE).unwrap();
                if addr >= base && addr < base + PAGE_SIZE as u64 {
                    f(b, page * PAGE_SIZE + (addr - base) as usize);
                    return;
                }
            }
        }
    }
}

/// One injection: after a submission doorbell, overwrite the completion
/// entry `ahead` slots past the driver's head with `bytes`.
#[derive(Debug, Clone)]
struct Injection {
    ahead: u8,
    bytes: [u8; 16],
}

#[derive(Default)]
struct Tracked {
    asq: u64,
    acq: u64,
    admin_entries: u16,
    io_cq: Option<(u64, u16)>,
    cq_head: [u16; 2],
}

/// BAR0 of the model with a hostile twist.
struct Hostile {
    sim: SimController,
    dma: SpyDma,
    tracked: Mutex<Tracked>,
    script: Mutex<VecDeque<Option<Injection>>>,
}

impl RegisterIo for Hostile {
    fn size(&self) -> usize {
        self.sim.size()
    }
    fn read32(&self, off: usize) -> u32 {
        self.sim.read32(off)
    }
    fn write32(&self, off: usize, value: u32) {
        {
            let mut t = self.tracked.lock().unwrap();
            match off {
                offset::AQA => t.admin_entries = Aqa::from_bits(value).acqs() + 1,
                offset::ASQ => t.asq = (t.asq & !0xFFFF_FFFF) | u64::from(value),
                0x2C => t.asq = (t.asq & 0xFFFF_FFFF) | (u64::from(value) << 32),
                offset::ACQ => t.acq = (t.acq & !0xFFFF_FFFF) | u64::from(value),
                0x34 => t.acq = (t.acq & 0xFFFF_FFFF) | (u64::from(value) << 32),
                _ => {}
            }
            if let Some(Doorbell::SqTail(0)) = decode_doorbell(off, 0) {
                // Learn where the I/O completion queue lives.
                let n = t.admin_entries.max(1);
                let slot = (value as u16 + n - 1) % n;
                let mut raw = [0u8; SQ_ENTRY_SIZE];
                self.dma
                    .at(t.asq + u64::from(slot) * SQ_ENTRY_SIZE as u64, |b, o| {
                        let _ = b.read(o, &mut raw);
                    });
                if let Ok(e) = SubmissionEntry::from_bytes(&raw) {
                    if e.opcode() == AdminOpcode::CreateIoCq.0 {
                        t.io_cq = Some((e.prp1, QueueDw10::from_bits(e.cdw10).qsize() + 1));
                        t.cq_head[1] = 0;
                    }
                }
            }
            if let Some(Doorbell::CqHead(q)) = decode_doorbell(off, 0) {
                if q < 2 {
                    t.cq_head[usize::from(q)] = value as u16;
                }
            }
        }
        self.sim.write32(off, value);
        if let Some(Doorbell::SqTail(q)) = decode_doorbell(off, 0) {
            let inj = self.script.lock().unwrap().pop_front().flatten();
            if let Some(inj) = inj {
                let t = self.tracked.lock().unwrap();
                let (base, entries) = match q {
                    0 => (t.acq, t.admin_entries),
                    _ => match t.io_cq {
                        Some(c) => c,
                        None => return,
                    },
                };
                let entries = entries.max(1);
                let slot = (t.cq_head[usize::from(q.min(1))] + u16::from(inj.ahead)) % entries;
                self.dma
                    .at(base + u64::from(slot) * CQ_ENTRY_SIZE as u64, |b, o| {
                        let _ = b.write(o, &inj.bytes);
                    });
            }
        }
    }
}

fn injection() -> impl Strategy<Value = Option<Injection>> {
    proptest::option::weighted(
        0.6,
        (0u8..3, proptest::array::uniform16(any::<u8>()))
            .prop_map(|(ahead, bytes)| Injection { ahead, bytes }),
    )
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u8),
    Read(u64, u8),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..200, 1u8..80).prop_map(|(l, n)| Op::Write(l, n)),
        (0u64..200, 1u8..80).prop_map(|(l, n)| Op::Read(l, n)),
        Just(Op::Flush),
    ]
}

/// Every error must be one of the typed variants a hostile completion can
/// cause (this is a compile-time exhaustive match, so new variants are seen).
fn check_error(e: &NvmeError) {
    match e {
        NvmeError::Timeout { .. }
        | NvmeError::ControllerFatal { .. }
        | NvmeError::DeviceGone { .. }
        | NvmeError::CommandFailed { .. }
        | NvmeError::InvalidCompletion { .. }
        | NvmeError::QueueFull { .. }
        | NvmeError::ShuttingDown
        | NvmeError::Unusable { .. }
        | NvmeError::NotBegun
        | NvmeError::Unsupported { .. }
        | NvmeError::BadData { .. }
        | NvmeError::InvalidRequest { .. }
        | NvmeError::Dma { .. } => {
            let _ = e.to_string();
        }
    }
}

const COMMAND_TIMEOUT: Duration = Duration::from_millis(20);

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_completion_entries_give_typed_errors_only(
        script in proptest::collection::vec(injection(), 0..60),
        ops in proptest::collection::vec(op(), 1..12),
    ) {
        let rig = Rig::new(SimConfig {
            start_state: nvme_sim::StartState::Disabled,
            namespace_blocks: 512,
            mdts: 2,
            ..SimConfig::default()
        });
        let dma = SpyDma { inner: rig.sim.dma(), bufs: Arc::default() };
        let bar = Hostile {
            sim: rig.sim.clone(),
            dma: dma.clone(),
            tracked: Mutex::default(),
            script: Mutex::new(script.into_iter().collect()),
        };
        let options = Options { command_timeout: COMMAND_TIMEOUT, ..Options::default() };
        let start = rig.clock.now();
        let ctrl = match Controller::bring_up("0000:00:09.0", bar, dma, rig.clock.clone(), options) {
            Ok(c) => c,
            Err(e) => {
                check_error(&e);
                // Bring-up: a reset, an enable and at most six admin commands.
                prop_assert!(rig.clock.now() - start < Duration::from_secs(1));
                return Ok(());
            }
        };
        for op in ops {
            let t = rig.clock.now();
            let r = match op {
                Op::Write(lba, n) => ctrl.write(1, lba, &vec![0x5A; usize::from(n) * 512]),
                Op::Read(lba, n) => ctrl.read(1, lba, &mut vec![0; usize::from(n) * 512]),
                Op::Flush => ctrl.flush(1),
            };
            if let Err(e) = &r {
                check_error(e);
            }
            // At most one command timeout per command (MDTS 16 KiB: ≤ 3 commands).
            prop_assert!(rig.clock.now() - t <= COMMAND_TIMEOUT * 3);
        }
        match ctrl.begin() {
            Ok(_) => {
                let t = rig.clock.now();
                let report = ctrl.finish(Duration::from_millis(100)).unwrap();
                let _ = report.to_string();
                prop_assert!(rig.clock.now() - t <= Duration::from_millis(100));
            }
            Err(e) => check_error(&e),
        }
    }
}

/// Replaces the real completion of the first I/O command with an entry for a
/// command that does not exist: the driver discards it and reports
/// `InvalidCompletion` at its deadline (shows the injection really reaches
/// the driver).
#[test]
fn a_completion_for_an_unknown_command_is_discarded_and_reported() {
    let rig = Rig::new(SimConfig {
        start_state: nvme_sim::StartState::Disabled,
        ..SimConfig::default()
    });
    let dma = SpyDma {
        inner: rig.sim.dma(),
        bufs: Arc::default(),
    };
    // Bring-up: Identify ×3, Set Features, Create CQ, Create SQ — untouched.
    let mut script: VecDeque<Option<Injection>> = std::iter::repeat_n(None, 6).collect();
    let bogus = nvme_spec::CompletionEntry {
        sq_id: 1,
        cid: 0x7777,
        ..Default::default()
    }
    .with_phase(true);
    script.push_back(Some(Injection {
        ahead: 0,
        bytes: bogus.to_bytes(),
    }));
    let bar = Hostile {
        sim: rig.sim.clone(),
        dma: dma.clone(),
        tracked: Mutex::default(),
        script: Mutex::new(script),
    };
    let ctrl = Controller::bring_up(
        "0000:00:09.0",
        bar,
        dma,
        rig.clock.clone(),
        Options {
            command_timeout: COMMAND_TIMEOUT,
            ..Options::default()
        },
    )
    .unwrap();
    let t = rig.clock.now();
    match ctrl.write(1, 0, &[1u8; 512]) {
        Err(NvmeError::InvalidCompletion {
            step,
            discarded,
            last_cid,
            last_sq,
            ..
        }) => {
            assert_eq!(step, "Write");
            assert_eq!(discarded, 1);
            assert_eq!((last_cid, last_sq), (0x7777, 1));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rig.clock.now() - t, COMMAND_TIMEOUT);
    // The queue keeps working afterwards.
    ctrl.write(1, 1, &[2u8; 512]).unwrap();
    let mut back = [0u8; 512];
    ctrl.read(1, 1, &mut back).unwrap();
    assert_eq!(back, [2u8; 512]);
}
