//! The controller model driven by raw register writes and hand-built
//! submission queue entries, on a fake clock.

mod common;

use std::time::Duration;

use common::{pattern, Host, QueuePair};
use nvme_sim::{DmaLayout, Fault, SimConfig, StartState};
use nvme_spec::cmd::{FeaturesDw10, NumberOfQueues};
use nvme_spec::features::FeatureId;
use nvme_spec::identify::{Cns, IdentifyController, IdentifyNamespace, NamespaceList};
use nvme_spec::regs::offset;
use nvme_spec::ShutdownNotification;
use nvme_spec::{
    AdminOpcode, Cap, Cc, CommandSetSelect, CommandSpecificStatus, CompletionEntry, GenericStatus,
    NvmOpcode, ShutdownNotification as Shn, ShutdownStatus, Status, SubmissionEntry,
};
use pcid_hw::{DmaAllocator, DmaBuffer, RegisterIo, PAGE_SIZE};

fn config() -> SimConfig {
    SimConfig {
        namespace_blocks: 4096,
        ..SimConfig::default()
    }
}

fn generic(c: &CompletionEntry) -> Option<GenericStatus> {
    c.status().as_generic()
}

fn specific(c: &CompletionEntry) -> Option<CommandSpecificStatus> {
    c.status().as_command_specific()
}

fn write_cmd(nsid: u32, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> SubmissionEntry {
    SubmissionEntry::read_write(NvmOpcode::Write, 0, nsid, slba, blocks, prp1, prp2).unwrap()
}

fn read_cmd(nsid: u32, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> SubmissionEntry {
    SubmissionEntry::read_write(NvmOpcode::Read, 0, nsid, slba, blocks, prp1, prp2).unwrap()
}

/// Runs an I/O command on `q` and returns its completion.
fn io(h: &mut Host, q: &mut QueuePair, mut e: SubmissionEntry) -> CompletionEntry {
    let cid = h.cid();
    e.set_cid(cid);
    let c = q.run(&h.ctrl, &e).expect("I/O command completed");
    assert_eq!(c.cid, cid);
    assert_eq!(c.sq_id, q.qid);
    c
}

#[test]
fn registers_report_capabilities() {
    let h = Host::unstarted(SimConfig {
        mqes: 255,
        cap_to: 20,
        ..config()
    });
    let cap = Cap::from_bits(h.ctrl.read64(offset::CAP));
    assert_eq!(cap.mqes(), 255);
    assert!(cap.cqr());
    assert_eq!(cap.to(), 20);
    assert_eq!(cap.dstrd(), 0);
    assert_eq!(cap.css(), Cap::CSS_NVM);
    assert_eq!((cap.mpsmin(), cap.mpsmax()), (0, 0));
    assert!(!cap.nssrs());
    assert_eq!(h.ctrl.read32(offset::VS), 0x0001_0400);
    // Outside the BAR: all-ones, like a master abort.
    assert_eq!(h.ctrl.read32(h.ctrl.size()), u32::MAX);
    assert!(h.ctrl.size() >= 0x4000);
}

#[test]
fn starts_enabled_like_firmware_left_it_and_needs_a_reset() {
    let mut h = Host::unstarted(SimConfig {
        ready_latency_ms: 20,
        reset_latency_ms: 5,
        ..config()
    });
    assert!(h.cc().en());
    assert!(h.csts().rdy());
    let fw_asq = h.ctrl.read64(offset::ASQ);
    assert_ne!(fw_asq, 0);
    assert_ne!(fw_asq, h.admin.sq_addr());
    // Reset: RDY follows after the reset latency.
    h.ctrl
        .write32(offset::CC, h.cc().with_en(false).into_bits());
    assert!(h.csts().rdy(), "RDY cleared before the reset latency");
    h.advance_ms(5);
    assert!(!h.csts().rdy());
    // Enable: RDY rises after the ready latency, not before.
    h.try_enable(Cc::new().with_iosqes(6).with_iocqes(4));
    h.advance_ms(19);
    assert!(!h.csts().rdy());
    h.advance_ms(1);
    assert!(h.csts().rdy());
    // The firmware's I/O queue pair is gone after the reset.
    let c = h.admin(SubmissionEntry::delete_io_sq(0, 1));
    assert_eq!(specific(&c), Some(CommandSpecificStatus::InvalidQueueId));
    assert_eq!(h.ctrl.stats().resets, 1);
    assert_eq!(h.ctrl.stats().enables, 1);
}

#[test]
fn disabled_start_state() {
    let h = Host::unstarted(SimConfig {
        start_state: StartState::Disabled,
        ..config()
    });
    assert_eq!(h.cc().into_bits(), 0);
    assert_eq!(h.csts().into_bits(), 0);
}

#[test]
fn cc_and_aqa_keep_only_writable_bits() {
    let h = Host::unstarted(SimConfig {
        start_state: StartState::Disabled,
        ..config()
    });
    // Everything but EN: no enable happens.
    h.ctrl.write32(offset::CC, 0xFFFF_FFFE);
    assert_eq!(h.cc().into_bits(), 0x00FF_FFF0);
    h.ctrl.write32(offset::AQA, 0xFFFF_FFFF);
    assert_eq!(h.ctrl.read32(offset::AQA), 0x0FFF_0FFF);
    h.ctrl.write64(offset::ASQ, 0x1234_5678_9ABC_DEFF);
    assert_eq!(h.ctrl.read64(offset::ASQ), 0x1234_5678_9ABC_D000);
    // Read-only registers ignore writes.
    let cap = h.ctrl.read64(offset::CAP);
    h.ctrl.write64(offset::CAP, 0);
    h.ctrl.write32(offset::VS, 0);
    h.ctrl.write32(offset::CSTS, 0xF);
    assert_eq!(h.ctrl.read64(offset::CAP), cap);
    assert_eq!(h.ctrl.read32(offset::VS), 0x0001_0400);
    assert_eq!(h.csts().into_bits(), 0);
}

#[test]
fn invalid_settings_at_enable_raise_cfs() {
    for (name, cc) in [
        (
            "MPS 8 KiB",
            Cc::new().with_iosqes(6).with_iocqes(4).with_mps(1),
        ),
        ("IOSQES 5", Cc::new().with_iosqes(5).with_iocqes(4)),
        ("IOCQES 0", Cc::new().with_iosqes(6)),
        (
            "CSS admin only",
            Cc::new()
                .with_iosqes(6)
                .with_iocqes(4)
                .with_command_set(CommandSetSelect::AdminOnly),
        ),
        ("AMS 1", Cc::new().with_iosqes(6).with_iocqes(4).with_ams(1)),
    ] {
        let mut h = Host::unstarted(config());
        h.reset();
        h.try_enable(cc);
        h.advance_ms(10_000);
        let csts = h.csts();
        assert!(csts.cfs(), "{name}: no CFS");
        assert!(!csts.rdy(), "{name}: RDY");
        assert_eq!(h.ctrl.stats().fatal_errors, 1, "{name}");
        // A reset clears CFS, and a valid enable then works.
        h.reset();
        assert!(!h.csts().cfs(), "{name}: CFS survived reset");
        h.enable();
        let c = h.admin(SubmissionEntry::identify(0, Cns::Controller, 0, 0, 0));
        // PRP1 = 0 is not mapped: a data transfer error, not a crash.
        assert_eq!(generic(&c), Some(GenericStatus::DataTransferError));
    }
}

#[test]
fn identify_values_round_trip() {
    let mut h = Host::new(SimConfig {
        serial: "SN-42".into(),
        model: "Model X".into(),
        firmware: "FW9".into(),
        rtd3e_us: 4_500_000,
        volatile_write_cache: true,
        mdts: 6,
        namespace_blocks: 12345,
        block_size: 4096,
        ..config()
    });
    let buf = h.dma.allocate(2 * PAGE_SIZE).unwrap();
    // A buffer that starts mid-page needs PRP2 for the rest.
    let prp1 = buf.device_address(100 * 4).unwrap();
    let prp2 = buf.device_address(PAGE_SIZE).unwrap();
    let c = h.admin(SubmissionEntry::identify(0, Cns::Controller, 0, prp1, prp2));
    assert!(c.status().is_success(), "{}", c.status());
    let mut raw = vec![0u8; 4096];
    buf.read(400, &mut raw).unwrap();
    let id = IdentifyController::from_bytes(&raw).unwrap();
    assert_eq!(id.serial(), "SN-42");
    assert_eq!(id.model(), "Model X");
    assert_eq!(id.firmware(), "FW9");
    assert_eq!(id.rtd3e, 4_500_000);
    assert!(id.volatile_write_cache());
    assert_eq!(id.mdts, 6);
    assert_eq!(id.ver, 0x0001_0400);
    assert_eq!(id.nn, 1);
    assert_eq!((id.sqes.min(), id.cqes.min()), (6, 4));

    let c = h.admin(SubmissionEntry::identify(0, Cns::Namespace, 1, prp1, prp2));
    assert!(c.status().is_success());
    buf.read(400, &mut raw).unwrap();
    let ns = IdentifyNamespace::from_bytes(&raw).unwrap();
    assert_eq!(ns.nsze, 12345);
    assert_eq!(ns.block_size(), Some(4096));

    let c = h.admin(SubmissionEntry::identify(
        0,
        Cns::ActiveNamespaceList,
        0,
        prp1,
        prp2,
    ));
    assert!(c.status().is_success());
    buf.read(400, &mut raw).unwrap();
    assert_eq!(NamespaceList::from_bytes(&raw).unwrap().active(), vec![1]);
    let c = h.admin(SubmissionEntry::identify(
        0,
        Cns::ActiveNamespaceList,
        1,
        prp1,
        prp2,
    ));
    assert!(c.status().is_success());
    buf.read(400, &mut raw).unwrap();
    assert_eq!(
        NamespaceList::from_bytes(&raw).unwrap().active(),
        Vec::<u32>::new()
    );

    for nsid in [0, 2] {
        let c = h.admin(SubmissionEntry::identify(
            0,
            Cns::Namespace,
            nsid,
            prp1,
            prp2,
        ));
        assert_eq!(
            generic(&c),
            Some(GenericStatus::InvalidNamespace),
            "nsid {nsid}"
        );
        assert!(c.status().dnr());
    }
    let mut e = SubmissionEntry::identify(0, Cns::Controller, 0, prp1, prp2);
    e.cdw10 = 0x55;
    assert_eq!(generic(&h.admin(e)), Some(GenericStatus::InvalidField));
    // PRP2 with an offset is rejected.
    let c = h.admin(SubmissionEntry::identify(
        0,
        Cns::Controller,
        0,
        prp1,
        prp2 + 8,
    ));
    assert_eq!(generic(&c), Some(GenericStatus::PrpOffsetInvalid));
}

#[test]
fn features_number_of_queues() {
    let mut h = Host::new(SimConfig {
        max_io_queues: 8,
        ..config()
    });
    let c = h.admin(SubmissionEntry::set_number_of_queues(0, 4, 2).unwrap());
    assert!(c.status().is_success());
    let got = NumberOfQueues::from_bits(c.dw0);
    assert_eq!((got.sq_count(), got.cq_count()), (4, 2));
    let c = h.admin(SubmissionEntry::set_number_of_queues(0, 100, 100).unwrap());
    let got = NumberOfQueues::from_bits(c.dw0);
    assert_eq!((got.sq_count(), got.cq_count()), (8, 8));
    let mut e = SubmissionEntry::new(AdminOpcode::GetFeatures.0, 0);
    e.cdw10 = FeaturesDw10::new()
        .with_fid(FeatureId::NumberOfQueues)
        .into_bits();
    let c = h.admin(e);
    assert!(c.status().is_success());
    assert_eq!(NumberOfQueues::from_bits(c.dw0).sq_count(), 8);
    let mut e = SubmissionEntry::set_number_of_queues(0, 1, 1).unwrap();
    e.cdw11 = 0xFFFF;
    assert_eq!(generic(&h.admin(e)), Some(GenericStatus::InvalidField));
    // Only one I/O queue allocated: qid 2 is invalid.
    let c = h.admin(SubmissionEntry::set_number_of_queues(0, 1, 1).unwrap());
    assert!(c.status().is_success());
    let q = QueuePair::new(&h.dma, 2, 8, 8);
    let c = h.admin(SubmissionEntry::create_io_cq(0, 2, 8, q.cq_addr()).unwrap());
    assert_eq!(specific(&c), Some(CommandSpecificStatus::InvalidQueueId));
    let _q1 = h.create_io(1, 8, 8);
    // Changing the count once queues exist is a sequence error.
    let c = h.admin(SubmissionEntry::set_number_of_queues(0, 2, 2).unwrap());
    assert_eq!(generic(&c), Some(GenericStatus::CommandSequenceError));
    // Unknown feature; saving is not supported.
    let mut e = SubmissionEntry::new(AdminOpcode::SetFeatures.0, 0);
    e.cdw10 = 0x7E;
    assert_eq!(generic(&h.admin(e)), Some(GenericStatus::InvalidField));
    let mut e = SubmissionEntry::set_number_of_queues(0, 1, 1).unwrap();
    e.cdw10 |= 1 << 31;
    assert_eq!(
        specific(&h.admin(e)),
        Some(CommandSpecificStatus::FeatureNotSaveable)
    );
}

#[test]
fn queue_creation_and_deletion_checks() {
    let mut h = Host::new(SimConfig {
        mqes: 63,
        max_io_queues: 4,
        ..config()
    });
    let q = QueuePair::new(&h.dma, 1, 8, 8);
    let (sq, cq) = (q.sq_addr(), q.cq_addr());
    let cases: Vec<(&str, SubmissionEntry, Status)> = vec![
        (
            "CQ qid 0",
            SubmissionEntry::create_io_cq(0, 0, 8, cq).unwrap(),
            CommandSpecificStatus::InvalidQueueId.into(),
        ),
        (
            "CQ qid above allocated",
            SubmissionEntry::create_io_cq(0, 5, 8, cq).unwrap(),
            CommandSpecificStatus::InvalidQueueId.into(),
        ),
        (
            "CQ size 1",
            SubmissionEntry::create_io_cq(0, 1, 1, cq).unwrap(),
            CommandSpecificStatus::InvalidQueueSize.into(),
        ),
        (
            "CQ size above MQES",
            SubmissionEntry::create_io_cq(0, 1, 65, cq).unwrap(),
            CommandSpecificStatus::InvalidQueueSize.into(),
        ),
        (
            "CQ not page aligned",
            SubmissionEntry::create_io_cq(0, 1, 8, cq + 64).unwrap(),
            GenericStatus::PrpOffsetInvalid.into(),
        ),
        (
            "CQ not contiguous",
            {
                let mut e = SubmissionEntry::create_io_cq(0, 1, 8, cq).unwrap();
                e.cdw11 = 0;
                e
            },
            GenericStatus::InvalidField.into(),
        ),
        (
            "SQ with missing CQ",
            SubmissionEntry::create_io_sq(0, 1, 8, sq, 1).unwrap(),
            CommandSpecificStatus::CompletionQueueInvalid.into(),
        ),
        (
            "SQ completing to admin CQ",
            SubmissionEntry::create_io_sq(0, 1, 8, sq, 0).unwrap(),
            CommandSpecificStatus::CompletionQueueInvalid.into(),
        ),
        (
            "delete SQ 0",
            SubmissionEntry::delete_io_sq(0, 0),
            CommandSpecificStatus::InvalidQueueId.into(),
        ),
        (
            "delete missing CQ",
            SubmissionEntry::delete_io_cq(0, 3),
            CommandSpecificStatus::InvalidQueueId.into(),
        ),
    ];
    for (name, e, want) in cases {
        let c = h.admin(e);
        assert_eq!(c.status().with_dnr(false), want, "{name}: {}", c.status());
        assert!(c.status().dnr(), "{name}: DNR");
    }
    let c = h.admin(SubmissionEntry::create_io_cq(0, 1, 8, cq).unwrap());
    assert!(c.status().is_success());
    let c = h.admin(SubmissionEntry::create_io_cq(0, 1, 8, cq).unwrap());
    assert_eq!(
        specific(&c),
        Some(CommandSpecificStatus::InvalidQueueId),
        "duplicate CQ"
    );
    let c = h.admin(SubmissionEntry::create_io_sq(0, 1, 8, sq, 1).unwrap());
    assert!(c.status().is_success());
    let c = h.admin(SubmissionEntry::create_io_sq(0, 1, 8, sq, 1).unwrap());
    assert_eq!(
        specific(&c),
        Some(CommandSpecificStatus::InvalidQueueId),
        "duplicate SQ"
    );
    let c = h.admin(SubmissionEntry::delete_io_cq(0, 1));
    assert_eq!(
        specific(&c),
        Some(CommandSpecificStatus::InvalidQueueDeletion)
    );
    let c = h.admin(SubmissionEntry::delete_io_sq(0, 1));
    assert!(c.status().is_success());
    let c = h.admin(SubmissionEntry::delete_io_cq(0, 1));
    assert!(c.status().is_success());
    let c = h.admin(SubmissionEntry::delete_io_sq(0, 1));
    assert_eq!(specific(&c), Some(CommandSpecificStatus::InvalidQueueId));
    assert_eq!(h.ctrl.stats().fatal_errors, 0);
}

#[test]
fn write_then_read_back_through_prp_forms() {
    let mut h = Host::new(SimConfig {
        mdts: 0,
        namespace_blocks: 16384,
        ..config()
    });
    let mut q = h.create_io(1, 16, 16);
    let buf = h.dma.allocate(1100 * PAGE_SIZE).unwrap();
    let list = h.dma.allocate(3 * PAGE_SIZE).unwrap();
    let back = h.dma.allocate(1100 * PAGE_SIZE).unwrap();

    // Builds PRP1/PRP2 for `len` bytes at `buf` offset `off`, with the PRP
    // list (if needed) starting at `list_off` in `list`.
    let prps =
        |b: &nvme_sim::SimDmaBuffer, off: usize, len: usize, list_off: usize| -> (u64, u64) {
            let prp1 = b.device_address(off).unwrap();
            let first = len.min(PAGE_SIZE - off % PAGE_SIZE);
            let rest = len - first;
            if rest == 0 {
                return (prp1, 0);
            }
            let pages: Vec<u64> = (0..rest.div_ceil(PAGE_SIZE))
                .map(|i| b.device_address(off + first + i * PAGE_SIZE).unwrap())
                .collect();
            if pages.len() == 1 {
                return (prp1, pages[0]);
            }
            // Fill list pages, chaining through the last slot of each page.
            let mut at = list_off;
            let mut i = 0;
            while i < pages.len() {
                let slots_left = (PAGE_SIZE - at % PAGE_SIZE) / 8;
                let remaining = pages.len() - i;
                if remaining > slots_left {
                    for _ in 0..slots_left - 1 {
                        list.write(at, &pages[i].to_le_bytes()).unwrap();
                        at += 8;
                        i += 1;
                    }
                    let next = (at / PAGE_SIZE + 1) * PAGE_SIZE;
                    list.write(at, &list.device_address(next).unwrap().to_le_bytes())
                        .unwrap();
                    at = next;
                } else {
                    list.write(at, &pages[i].to_le_bytes()).unwrap();
                    at += 8;
                    i += 1;
                }
            }
            (prp1, list.device_address(list_off).unwrap())
        };

    let cases = [
        ("one page, PRP1 only", 0usize, 8u16, 0usize),
        ("mid-page, PRP1 only", 512, 4, 0),
        ("PRP1 + PRP2", 1024, 10, 0),
        ("PRP list", 0, 64, 0),
        ("PRP list from mid-page list pointer", 2048, 100, 1024),
        (
            "chained PRP list (2 slots in the first list page)",
            0,
            40,
            PAGE_SIZE - 16,
        ),
        ("chained PRP list across 512 entries", 0, 8 * 520, 0),
    ];
    let mut lba = 0u64;
    for (seed, (name, off, blocks, list_off)) in cases.into_iter().enumerate() {
        let len = usize::from(blocks) * 512;
        let data = pattern(len, seed as u8 + 1);
        buf.write(off, &data).unwrap();
        let (p1, p2) = prps(&buf, off, len, list_off);
        let c = io(&mut h, &mut q, write_cmd(1, lba, blocks.into(), p1, p2));
        assert!(c.status().is_success(), "{name}: write {}", c.status());
        assert_eq!(
            h.ctrl.read_visible(lba, u64::from(blocks)).unwrap(),
            data,
            "{name}: medium"
        );
        back.write(off, &vec![0u8; len]).unwrap();
        let (p1, p2) = prps(&back, off, len, list_off);
        let c = io(&mut h, &mut q, read_cmd(1, lba, blocks.into(), p1, p2));
        assert!(c.status().is_success(), "{name}: read {}", c.status());
        let mut got = vec![0u8; len];
        back.read(off, &mut got).unwrap();
        assert_eq!(got, data, "{name}: read back");
        lba += u64::from(blocks);
    }
    let s = h.ctrl.stats();
    assert_eq!((s.reads, s.writes), (7, 7));
}

#[test]
fn malformed_io_commands_get_spec_status() {
    let mut h = Host::new(SimConfig {
        mdts: 1,
        namespace_blocks: 100,
        ..config()
    });
    let mut q = h.create_io(1, 32, 32);
    let buf = h.dma.allocate(4 * PAGE_SIZE).unwrap();
    let a0 = buf.device_address(0).unwrap();
    let a1 = buf.device_address(PAGE_SIZE).unwrap();
    let cases: Vec<(&str, SubmissionEntry, Status)> = vec![
        (
            "unknown opcode",
            SubmissionEntry::new(0x7F, 0),
            GenericStatus::InvalidOpcode.into(),
        ),
        (
            "namespace 2",
            write_cmd(2, 0, 1, a0, 0),
            GenericStatus::InvalidNamespace.into(),
        ),
        (
            "namespace 0",
            read_cmd(0, 0, 1, a0, 0),
            GenericStatus::InvalidNamespace.into(),
        ),
        (
            "flush namespace 3",
            SubmissionEntry::flush(0, 3),
            GenericStatus::InvalidNamespace.into(),
        ),
        (
            "past the end",
            write_cmd(1, 99, 2, a0, 0),
            GenericStatus::LbaOutOfRange.into(),
        ),
        (
            "LBA overflow",
            read_cmd(1, u64::MAX, 1, a0, 0),
            GenericStatus::LbaOutOfRange.into(),
        ),
        (
            "above MDTS (8 KiB)",
            read_cmd(1, 0, 17, a0, a1),
            GenericStatus::InvalidField.into(),
        ),
        (
            "unmapped PRP1",
            write_cmd(1, 0, 1, 0xdead_0000, 0),
            GenericStatus::DataTransferError.into(),
        ),
        (
            "unmapped PRP2",
            read_cmd(1, 0, 16, a0, 0x7000_0000),
            GenericStatus::DataTransferError.into(),
        ),
        (
            "PRP1 not dword aligned",
            write_cmd(1, 0, 1, a0 + 2, 0),
            GenericStatus::PrpOffsetInvalid.into(),
        ),
        (
            "PRP2 with offset",
            write_cmd(1, 0, 16, a0, a1 + 512),
            GenericStatus::PrpOffsetInvalid.into(),
        ),
        (
            "SGL requested",
            {
                let mut e = read_cmd(1, 0, 1, a0, 0);
                e.cdw0 = e.cdw0.with_psdt(1);
                e
            },
            GenericStatus::InvalidField.into(),
        ),
        (
            "fused",
            {
                let mut e = read_cmd(1, 0, 1, a0, 0);
                e.cdw0 = e.cdw0.with_fuse(1);
                e
            },
            GenericStatus::InvalidField.into(),
        ),
    ];
    for (name, e, want) in cases {
        let c = io(&mut h, &mut q, e);
        assert_eq!(c.status().with_dnr(false), want, "{name}: {}", c.status());
    }
    // Admin: unknown opcode.
    let c = h.admin(SubmissionEntry::new(0xEE, 0));
    assert_eq!(generic(&c), Some(GenericStatus::InvalidOpcode));
    assert_eq!(h.ctrl.stats().fatal_errors, 0);
    assert_eq!(h.ctrl.read_visible(0, 100).unwrap(), vec![0u8; 51200]);
}

#[test]
fn phase_tag_flips_across_wraps_and_full_cq_holds_commands() {
    let mut h = Host::new(config());
    let mut q = h.create_io(1, 8, 4);
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    let a = buf.device_address(0).unwrap();
    // 30 commands one at a time: the CQ wraps 7 times.
    for i in 0..30u64 {
        buf.write(0, &pattern(512, i as u8)).unwrap();
        let c = io(&mut h, &mut q, write_cmd(1, i, 1, a, 0));
        assert!(c.status().is_success());
    }
    // Submit 6 without consuming completions: a 4-entry CQ holds 3.
    for i in 0..6u64 {
        let mut e = read_cmd(1, i, 1, a, 0);
        e.set_cid(1000 + i as u16);
        q.push(&e);
    }
    q.ring_sq(&h.ctrl);
    let mut got = Vec::new();
    while let Some(c) = q.pop() {
        got.push(c.cid);
    }
    assert_eq!(got, vec![1000, 1001, 1002]);
    assert_eq!(h.ctrl.stats().io_commands, 33);
    // Freeing the CQ lets the controller continue with the held commands.
    q.ring_cq(&h.ctrl);
    while let Some(c) = q.pop() {
        got.push(c.cid);
        q.ring_cq(&h.ctrl);
    }
    assert_eq!(got, (1000..1006).collect::<Vec<_>>());
    // SQ head reported in the last completion matches our tail.
    assert_eq!(h.ctrl.stats().io_commands, 36);
}

#[test]
fn invalid_doorbell_writes_are_ignored_and_counted() {
    let mut h = Host::new(config());
    let mut q = h.create_io(1, 8, 8);
    let before = h.ctrl.stats();
    h.ctrl.write32(h.ctrl.sq_doorbell(5), 1); // no such SQ
    h.ctrl.write32(h.ctrl.cq_doorbell(5), 1); // no such CQ
    h.ctrl.write32(h.ctrl.sq_doorbell(1), 8); // tail beyond the queue
    h.ctrl.write32(h.ctrl.cq_doorbell(1), 3); // head passes the tail
    h.ctrl.write32(0x1002, 0); // unaligned: dropped before decoding
    let s = h.ctrl.stats();
    assert_eq!(
        s.invalid_doorbell_writes - before.invalid_doorbell_writes,
        4
    );
    assert_eq!(s.commands_processed, before.commands_processed);
    assert!(!h.csts().cfs());
    // The queue still works.
    let c = io(&mut h, &mut q, SubmissionEntry::flush(0, 1));
    assert!(c.status().is_success());
}

#[test]
fn nonzero_doorbell_stride() {
    let mut h = Host::new(SimConfig {
        doorbell_stride: 2,
        ..config()
    });
    assert_eq!(Cap::from_bits(h.ctrl.read64(offset::CAP)).dstrd(), 2);
    assert_eq!(h.ctrl.sq_doorbell(1), 0x1000 + 2 * 16);
    assert_eq!(h.ctrl.cq_doorbell(1), 0x1000 + 3 * 16);
    let mut q = h.create_io(1, 8, 8);
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    let a = buf.device_address(0).unwrap();
    buf.write(0, &pattern(1024, 9)).unwrap();
    let c = io(&mut h, &mut q, write_cmd(1, 7, 2, a, 0));
    assert!(c.status().is_success());
    assert_eq!(h.ctrl.read_visible(7, 2).unwrap(), pattern(1024, 9));
    // The stride-0 location of SQ 1's doorbell is not a doorbell now.
    let before = h.ctrl.stats();
    q.push(&SubmissionEntry::flush(77, 1));
    h.ctrl.write32(0x1008, q.sq_tail);
    let after = h.ctrl.stats();
    assert_eq!(after.commands_processed, before.commands_processed);
    assert_eq!(
        after.invalid_doorbell_writes,
        before.invalid_doorbell_writes + 1
    );
}

#[test]
fn normal_shutdown_takes_the_configured_latency() {
    let mut h = Host::new(SimConfig {
        shutdown_latency_ms: 4500,
        ..config()
    });
    let mut q = h.create_io(1, 8, 8);
    let t0 = h.now();
    h.request_shutdown(Shn::Normal);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Occurring);
    h.advance_ms(4499);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Occurring);
    h.advance_ms(1);
    let csts = h.csts();
    assert_eq!(csts.shutdown_status(), ShutdownStatus::Complete);
    assert!(csts.rdy() && !csts.cfs());
    let s = h.ctrl.stats();
    assert_eq!(s.shutdown_requested_at, Some(t0));
    assert_eq!(
        s.shutdown_completed_at,
        Some(t0 + Duration::from_millis(4500))
    );
    assert_eq!(s.shutdown_kind, Some(ShutdownNotification::Normal));
    // No commands after shutdown until a reset.
    q.push(&SubmissionEntry::flush(1, 1));
    q.ring_sq(&h.ctrl);
    assert!(q.pop().is_none());
    assert_eq!(h.ctrl.stats().ignored_doorbell_writes, 1);
    h.reset();
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Normal);
    h.enable();
    let c = h.admin(SubmissionEntry::set_number_of_queues(0, 1, 1).unwrap());
    assert!(c.status().is_success());
}

#[test]
fn completion_is_observed_at_the_latency_whatever_reads_first() {
    // Shutdown completion does not depend on CSTS being polled: stats read
    // after the latency see it too, timestamped at the latency.
    let h = Host::new(SimConfig {
        shutdown_latency_ms: 300,
        ..config()
    });
    h.request_shutdown(Shn::Normal);
    let t0 = h.now();
    h.advance_ms(10_000);
    assert_eq!(
        h.ctrl.stats().shutdown_completed_at,
        Some(t0 + Duration::from_millis(300))
    );
}

#[test]
fn abrupt_shutdown_and_escalation() {
    let h = Host::new(SimConfig {
        shutdown_latency_ms: 4000,
        abrupt_latency_ms: 50,
        ..config()
    });
    h.request_shutdown(Shn::Normal);
    h.advance_ms(1000);
    h.request_shutdown(Shn::Abrupt);
    h.advance_ms(49);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Occurring);
    h.advance_ms(1);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Complete);
    assert_eq!(
        h.ctrl.stats().shutdown_kind,
        Some(ShutdownNotification::Abrupt)
    );
}

fn cached(extra: SimConfig) -> Host {
    Host::new(SimConfig {
        volatile_write_cache: true,
        shutdown_latency_ms: 2000,
        ..extra
    })
}

/// Writes 8 blocks of pattern `seed` at `lba` through queue `q`.
fn write_blocks(h: &mut Host, q: &mut QueuePair, lba: u64, seed: u8) -> Vec<u8> {
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    let data = pattern(PAGE_SIZE, seed);
    buf.write(0, &data).unwrap();
    let c = io(
        h,
        q,
        write_cmd(1, lba, 8, buf.device_address(0).unwrap(), 0),
    );
    assert!(c.status().is_success());
    data
}

#[test]
fn power_cut_loses_cached_writes() {
    let mut h = cached(config());
    let mut q = h.create_io(1, 8, 8);
    let data = write_blocks(&mut h, &mut q, 16, 3);
    assert_eq!(h.ctrl.read_visible(16, 8).unwrap(), data);
    assert_eq!(h.ctrl.read_durable(16, 8).unwrap(), vec![0u8; PAGE_SIZE]);
    assert_eq!(h.ctrl.dirty_blocks(), 8);
    h.ctrl.power_cut();
    assert_eq!(h.ctrl.read32(offset::CSTS), u32::MAX);
    assert_eq!(h.ctrl.read_durable(16, 8).unwrap(), vec![0u8; PAGE_SIZE]);
    assert_eq!(h.ctrl.stats().cache_blocks_lost, 8);
    // After power returns, a Read sees the old contents.
    h.ctrl.power_on();
    h.reset();
    h.enable();
    let mut q = h.create_io(1, 8, 8);
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    buf.write(0, &[0xAA; PAGE_SIZE]).unwrap();
    let c = io(
        &mut h,
        &mut q,
        read_cmd(1, 16, 8, buf.device_address(0).unwrap(), 0),
    );
    assert!(c.status().is_success());
    let mut got = vec![0u8; PAGE_SIZE];
    buf.read(0, &mut got).unwrap();
    assert_eq!(got, vec![0u8; PAGE_SIZE]);
}

#[test]
fn flush_makes_cached_writes_durable() {
    let mut h = cached(config());
    let mut q = h.create_io(1, 8, 8);
    let data = write_blocks(&mut h, &mut q, 16, 4);
    let c = io(&mut h, &mut q, SubmissionEntry::flush(0, 1));
    assert!(c.status().is_success());
    assert_eq!(h.ctrl.dirty_blocks(), 0);
    h.ctrl.power_cut();
    assert_eq!(h.ctrl.read_durable(16, 8).unwrap(), data);
}

#[test]
fn normal_shutdown_writes_the_cache_back_when_it_completes() {
    let mut h = cached(config());
    let mut q = h.create_io(1, 8, 8);
    let data = write_blocks(&mut h, &mut q, 0, 5);
    h.request_shutdown(Shn::Normal);
    h.advance_ms(1999);
    // Still occurring: nothing written back yet.
    assert_eq!(h.ctrl.read_durable(0, 8).unwrap(), vec![0u8; PAGE_SIZE]);
    h.advance_ms(1);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Complete);
    h.ctrl.power_cut();
    assert_eq!(h.ctrl.read_durable(0, 8).unwrap(), data);
    assert_eq!(h.ctrl.stats().cache_blocks_lost, 0);
}

#[test]
fn power_cut_during_shutdown_loses_the_cache() {
    let mut h = cached(config());
    let mut q = h.create_io(1, 8, 8);
    write_blocks(&mut h, &mut q, 0, 6);
    h.request_shutdown(Shn::Normal);
    h.advance_ms(1000);
    h.ctrl.power_cut();
    assert_eq!(h.ctrl.read_durable(0, 8).unwrap(), vec![0u8; PAGE_SIZE]);
}

#[test]
fn abrupt_shutdown_discards_the_cache_unless_configured() {
    for keep in [false, true] {
        let mut h = cached(SimConfig {
            abrupt_flushes_cache: keep,
            ..config()
        });
        let mut q = h.create_io(1, 8, 8);
        let data = write_blocks(&mut h, &mut q, 0, 7);
        h.request_shutdown(Shn::Abrupt);
        assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Complete);
        let want = if keep { data } else { vec![0u8; PAGE_SIZE] };
        assert_eq!(h.ctrl.read_visible(0, 8).unwrap(), want, "keep={keep}");
        assert_eq!(h.ctrl.read_durable(0, 8).unwrap(), want, "keep={keep}");
    }
}

#[test]
fn fua_and_disabling_the_cache_write_through() {
    let mut h = cached(config());
    let mut q = h.create_io(1, 8, 8);
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    buf.write(0, &pattern(512, 1)).unwrap();
    let mut e = write_cmd(1, 0, 1, buf.device_address(0).unwrap(), 0);
    e.cdw12 |= 1 << 30; // FUA
    assert!(io(&mut h, &mut q, e).status().is_success());
    assert_eq!(h.ctrl.read_durable(0, 1).unwrap(), pattern(512, 1));
    let data = write_blocks(&mut h, &mut q, 8, 2);
    assert_eq!(h.ctrl.dirty_blocks(), 8);
    // Get Features VWC: enabled.
    let mut e = SubmissionEntry::new(AdminOpcode::GetFeatures.0, 0);
    e.cdw10 = 0x06;
    assert_eq!(h.admin(e).dw0, 1);
    let mut e = SubmissionEntry::new(AdminOpcode::SetFeatures.0, 0);
    e.cdw10 = 0x06;
    e.cdw11 = 0;
    assert!(h.admin(e).status().is_success());
    assert_eq!(h.ctrl.dirty_blocks(), 0);
    assert_eq!(h.ctrl.read_durable(8, 8).unwrap(), data);
    assert!(!h.ctrl.write_cache_enabled());
}

#[test]
fn backing_file_holds_flushed_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nvme0.img");
    let mut h = cached(SimConfig {
        backing_file: Some(path.clone()),
        namespace_blocks: 256,
        ..config()
    });
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 256 * 512);
    let mut q = h.create_io(1, 8, 8);
    let data = write_blocks(&mut h, &mut q, 100, 8);
    let at = 100 * 512;
    assert_eq!(
        &std::fs::read(&path).unwrap()[at..at + PAGE_SIZE],
        &[0u8; PAGE_SIZE][..]
    );
    assert!(io(&mut h, &mut q, SubmissionEntry::flush(0, 1))
        .status()
        .is_success());
    assert_eq!(
        &std::fs::read(&path).unwrap()[at..at + PAGE_SIZE],
        &data[..]
    );
    drop(q);
    drop(h);
    // A new controller on the same file sees the data.
    let h = Host::new(SimConfig {
        backing_file: Some(path.clone()),
        namespace_blocks: 256,
        ..config()
    });
    assert_eq!(h.ctrl.read_durable(100, 8).unwrap(), data);
}

#[test]
fn fault_shutdown_never_completes() {
    let h = Host::new(SimConfig {
        faults: vec![Fault::ShutdownNeverCompletes],
        ..config()
    });
    h.request_shutdown(Shn::Normal);
    h.advance_ms(3_600_000);
    let csts = h.csts();
    assert_eq!(csts.shutdown_status(), ShutdownStatus::Occurring);
    assert!(!csts.cfs());
    assert!(h.ctrl.stats().shutdown_completed_at.is_none());
}

#[test]
fn fault_fatal_status_at_shutdown() {
    let mut h = Host::new(SimConfig {
        faults: vec![Fault::FatalStatus],
        ..config()
    });
    assert!(!h.csts().cfs());
    h.request_shutdown(Shn::Normal);
    let csts = h.csts();
    assert!(csts.cfs());
    assert_eq!(csts.shutdown_status(), ShutdownStatus::Occurring);
    h.advance_ms(60_000);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Occurring);
    h.reset();
    assert!(!h.csts().cfs());
}

#[test]
fn fault_surprise_removal_at_shutdown() {
    let mut h = Host::new(SimConfig {
        faults: vec![Fault::SurpriseRemoval],
        ..config()
    });
    let mut q = h.create_io(1, 8, 8);
    assert!(io(&mut h, &mut q, SubmissionEntry::flush(0, 1))
        .status()
        .is_success());
    assert_ne!(h.ctrl.read32(offset::CSTS), u32::MAX);
    h.request_shutdown(Shn::Normal);
    for off in [
        0x00,
        0x04,
        0x08,
        offset::CC,
        offset::CSTS,
        offset::AQA,
        0x1000,
    ] {
        assert_eq!(h.ctrl.read32(off), u32::MAX, "offset {off:#x}");
    }
    assert_eq!(h.ctrl.read64(offset::CAP), u64::MAX);
    h.ctrl.write32(offset::CC, 0);
    assert_eq!(h.ctrl.read32(offset::CSTS), u32::MAX);
    assert!(h.ctrl.is_gone());
}

#[test]
fn surprise_removal_at_any_time() {
    let mut h = Host::new(config());
    let mut q = h.create_io(1, 8, 8);
    h.ctrl.surprise_remove();
    assert_eq!(h.ctrl.read32(offset::CSTS), u32::MAX);
    q.push(&SubmissionEntry::flush(9, 1));
    q.ring_sq(&h.ctrl);
    assert!(q.pop().is_none());
    assert_eq!(h.ctrl.stats().io_commands, 0);
}

#[test]
fn fault_slow_ready() {
    let mut h = Host::unstarted(SimConfig {
        faults: vec![Fault::SlowReady],
        cap_to: 4,
        ..config()
    });
    h.reset();
    h.try_enable(Cc::new().with_iosqes(6).with_iocqes(4));
    // CAP.TO = 2 s: not ready within it...
    assert!(!h.wait_csts(2000, |c| c.rdy()));
    // ...but eventually (CAP.TO + 1 s).
    assert!(h.wait_csts(1000, |c| c.rdy()));
    assert!(!h.csts().cfs());
}

#[test]
fn fault_drops_io_commands() {
    let mut h = Host::new(SimConfig {
        faults: vec![Fault::DropsCommands],
        ..config()
    });
    let mut q = h.create_io(1, 8, 8);
    q.push(&SubmissionEntry::flush(5, 1));
    q.ring_sq(&h.ctrl);
    assert!(q.pop().is_none());
    let s = h.ctrl.stats();
    assert_eq!((s.io_commands, s.dropped_commands, s.flushes), (1, 1, 0));
    // Admin commands still complete, shutdown still works.
    let c = h.admin(SubmissionEntry::delete_io_sq(0, 1));
    assert!(c.status().is_success());
    h.request_shutdown(Shn::Normal);
    h.advance_ms(10);
    assert_eq!(h.csts().shutdown_status(), ShutdownStatus::Complete);
}

#[test]
fn async_event_requests_are_held_and_limited() {
    let mut h = Host::new(config());
    for i in 0..4u16 {
        let mut e = SubmissionEntry::new(AdminOpcode::AsyncEventRequest.0, 200 + i);
        e.set_cid(200 + i);
        assert!(h.admin.run(&h.ctrl, &e).is_none(), "AER {i} completed");
    }
    let c = h.admin(SubmissionEntry::new(AdminOpcode::AsyncEventRequest.0, 0));
    assert_eq!(
        specific(&c),
        Some(CommandSpecificStatus::AsyncEventLimitExceeded)
    );
    let c = h.admin(SubmissionEntry::abort(0, 0, 200));
    assert!(c.status().is_success());
    assert_eq!(c.dw0 & 1, 1, "abort reports the command was not aborted");
}

#[test]
fn queue_memory_that_is_not_mapped_is_fatal() {
    let mut h = Host::new(config());
    // A CQ whose memory the host then frees.
    let q = QueuePair::new(&h.dma, 1, 8, 8);
    let (sq, cq) = (q.sq_addr(), q.cq_addr());
    assert!(h
        .admin(SubmissionEntry::create_io_cq(0, 1, 8, cq).unwrap())
        .status()
        .is_success());
    assert!(h
        .admin(SubmissionEntry::create_io_sq(0, 1, 8, sq, 1).unwrap())
        .status()
        .is_success());
    let QueuePair {
        sq: sqbuf,
        cq: cqbuf,
        ..
    } = q;
    sqbuf
        .write(0, &SubmissionEntry::flush(1, 1).to_bytes())
        .unwrap();
    drop(cqbuf);
    h.ctrl.write32(h.ctrl.sq_doorbell(1), 1);
    assert!(h.csts().cfs());
    assert_eq!(h.ctrl.stats().fatal_errors, 1);
}

#[test]
fn queues_larger_than_a_page_need_contiguous_memory() {
    for layout in [DmaLayout::Contiguous, DmaLayout::Scattered] {
        let mut h = Host::new(SimConfig {
            dma_layout: layout,
            ..config()
        });
        // 128 SQ entries = 8 KiB in a 2-page buffer.
        let sq = h.dma.allocate(2 * PAGE_SIZE).unwrap();
        let cq = h.dma.allocate(PAGE_SIZE).unwrap();
        let sqa = sq.device_address(0).unwrap();
        let cqa = cq.device_address(0).unwrap();
        assert!(h
            .admin(SubmissionEntry::create_io_cq(0, 1, 256, cqa).unwrap())
            .status()
            .is_success());
        assert!(h
            .admin(SubmissionEntry::create_io_sq(0, 1, 128, sqa, 1).unwrap())
            .status()
            .is_success());
        // Put a command in the 65th slot (second page) and ring up to it.
        for i in 0..65usize {
            sq.write(i * 64, &SubmissionEntry::flush(i as u16, 1).to_bytes())
                .unwrap();
        }
        h.ctrl.write32(h.ctrl.sq_doorbell(1), 65);
        let s = h.ctrl.stats();
        match layout {
            DmaLayout::Contiguous => {
                assert_eq!(s.flushes, 65);
                assert!(!h.csts().cfs());
            }
            DmaLayout::Scattered => {
                assert_eq!(s.flushes, 64);
                assert!(h.csts().cfs(), "fetch from an unmapped page must be fatal");
            }
        }
    }
}

#[test]
fn dropping_the_model_after_the_latency_completes_the_shutdown() {
    // The process running the model exits after the shutdown latency without
    // having polled CSTS: the data must be in the file anyway. Before the
    // latency it is lost.
    for (wait_ms, durable) in [(2000u64, true), (1999, false)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nvme.img");
        let mut h = cached(SimConfig {
            backing_file: Some(path.clone()),
            namespace_blocks: 64,
            ..config()
        });
        let mut q = h.create_io(1, 8, 8);
        let data = write_blocks(&mut h, &mut q, 8, 11);
        h.request_shutdown(Shn::Normal);
        h.advance_ms(wait_ms);
        drop(q);
        drop(h);
        let file = std::fs::read(&path).unwrap();
        let want = if durable { data } else { vec![0u8; PAGE_SIZE] };
        assert_eq!(
            &file[8 * 512..8 * 512 + PAGE_SIZE],
            &want[..],
            "after {wait_ms} ms"
        );
    }
}

#[test]
fn get_log_page_transfers_only_what_the_log_holds() {
    let mut h = Host::new(SimConfig {
        mdts: 0,
        firmware: "FW1.2".into(),
        ..config()
    });
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    buf.write(0, &[0xEE; PAGE_SIZE]).unwrap();
    let mut e = SubmissionEntry::new(AdminOpcode::GetLogPage.0, 0);
    e.prp1 = buf.device_address(0).unwrap();
    // Firmware Slot log, NUMD = 0xFFFF_FFFF (16 GiB asked for).
    e.cdw10 = 0x03 | (0xFFFF << 16);
    e.cdw11 = 0xFFFF;
    let c = h.admin(e);
    assert!(c.status().is_success(), "{}", c.status());
    let mut got = vec![0u8; PAGE_SIZE];
    buf.read(0, &mut got).unwrap();
    assert_eq!(got[0], 1);
    assert_eq!(&got[8..16], b"FW1.2   ");
    assert!(got[16..512].iter().all(|&b| b == 0));
    assert!(got[512..].iter().all(|&b| b == 0xEE), "wrote past the log");
    let mut e = SubmissionEntry::new(AdminOpcode::GetLogPage.0, 0);
    e.prp1 = buf.device_address(0).unwrap();
    e.cdw10 = 0x42;
    assert_eq!(
        specific(&h.admin(e)),
        Some(CommandSpecificStatus::InvalidLogPage)
    );
}

#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<nvme_sim::SimController>();
    send_sync::<nvme_sim::SimDma>();
    send::<nvme_sim::SimDmaBuffer>();

    // One thread polls registers while another runs I/O; both finish a fixed
    // amount of work (no timing involved) and the model stays consistent.
    let mut h = Host::new(config());
    let mut q = h.create_io(1, 8, 8);
    let buf = h.dma.allocate(PAGE_SIZE).unwrap();
    let a = buf.device_address(0).unwrap();
    let poller = h.ctrl.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            for _ in 0..20_000 {
                let csts = poller.read32(offset::CSTS);
                assert_eq!(csts & 1, 1);
                poller.stats();
            }
        });
        for i in 0..500u64 {
            let c = io(&mut h, &mut q, write_cmd(1, i % 64, 1, a, 0));
            assert!(c.status().is_success());
        }
    });
    assert_eq!(h.ctrl.stats().writes, 500);
    assert_eq!(h.ctrl.check_consistency(), Ok(()));
}
