//! Bring-up, identification and I/O of the real driver against the model.

mod common;

use common::{config, pattern, Rig};
use nvme_sim::{DmaLayout, SimConfig, StartState};
use nvmed::NvmeError;

#[test]
fn brings_up_a_controller_left_enabled_by_firmware() {
    let cfg = SimConfig {
        start_state: StartState::Enabled,
        ..SimConfig::default()
    };
    let rig = Rig::new(cfg);
    let before = rig.sim.stats();
    let ctrl = rig.bring_up().expect("bring-up from the enabled state");
    let after = rig.sim.stats();
    assert_eq!(
        after.resets,
        before.resets + 1,
        "the driver must reset first"
    );
    assert_eq!(after.enables, before.enables + 1);
    assert_eq!(ctrl.namespaces().len(), 1);
    // I/O works after the reset.
    let data = pattern(512, 1);
    ctrl.write(1, 7, &data).unwrap();
    let mut back = vec![0u8; 512];
    ctrl.read(1, 7, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn brings_up_a_controller_in_power_on_state() {
    let rig = Rig::new(config("start_state = \"disabled\""));
    let ctrl = rig.bring_up().expect("bring-up from reset");
    assert_eq!(rig.sim.stats().resets, 0, "no reset needed when disabled");
    assert!(!ctrl.is_shutting_down());
}

#[test]
fn identify_values_round_trip() {
    let rig = Rig::new(config(
        r#"
        serial = "SN-ROUNDTRIP-42"
        model = "Round Trip Model"
        firmware = "FW9.1"
        rtd3e_us = 4500000
        namespace_blocks = 4096
        block_size = 4096
        volatile_write_cache = true
        mdts = 3
        "#,
    ));
    let ctrl = rig.bring_up().unwrap();
    let info = ctrl.info();
    assert_eq!(info.serial, "SN-ROUNDTRIP-42");
    assert_eq!(info.model, "Round Trip Model");
    assert_eq!(info.firmware, "FW9.1");
    assert_eq!(info.rtd3e_us, 4_500_000);
    assert!(info.volatile_write_cache);
    assert_eq!(info.mdts, 3);
    assert_eq!(info.max_transfer_bytes, 8 * 4096);
    assert_eq!(info.version.to_string(), "1.4.0");
    assert_eq!(info.namespace_count, 1);
    let ns = ctrl.namespace(1).unwrap();
    assert_eq!(ns.blocks, 4096);
    assert_eq!(ns.block_size, 4096);
    assert_eq!(ns.bytes(), 4096 * 4096);

    let rig = Rig::new(config(
        "volatile_write_cache = false\nmdts = 0\nrtd3e_us = 0",
    ));
    let ctrl = rig.bring_up().unwrap();
    assert!(!ctrl.info().volatile_write_cache);
    assert_eq!(ctrl.info().rtd3e_us, 0);
    // MDTS 0 = no limit; the driver's own cap applies.
    assert_eq!(
        ctrl.info().max_transfer_bytes,
        nvmed::Options::default().max_transfer_bytes
    );
}

fn write_flush_read(layout: DmaLayout, block_size: u32, mdts: u8) {
    let cfg = SimConfig {
        dma_layout: layout,
        block_size,
        mdts,
        volatile_write_cache: true,
        namespace_blocks: 8192,
        ..SimConfig::default()
    };
    let rig = Rig::new(cfg);
    let ctrl = rig.bring_up().unwrap();
    let bs = block_size as usize;
    // One block (PRP1 only), two pages (PRP2 = page), many pages (PRP list),
    // and more than MDTS allows in one command (split).
    let sizes = [
        bs,
        8192,
        5 * 4096 + bs,
        3 * ctrl.info().max_transfer_bytes + 2 * bs,
    ];
    let mut lba = 3u64;
    for (i, &len) in sizes.iter().enumerate() {
        let len = len.next_multiple_of(bs);
        let data = pattern(len, i as u8 + 1);
        ctrl.write(1, lba, &data).unwrap();
        ctrl.flush(1).unwrap();
        let mut back = vec![0u8; len];
        ctrl.read(1, lba, &mut back).unwrap();
        assert_eq!(back, data, "size {len}");
        // The model's durable medium holds it too, after Flush.
        let durable = rig.sim.read_durable(lba, (len / bs) as u64).unwrap();
        assert_eq!(durable, data, "durable, size {len}");
        lba += (len / bs) as u64 + 1;
    }
    let stats = rig.sim.stats();
    assert!(
        stats.writes > sizes.len() as u64,
        "the large transfer must have been split: {stats:?}"
    );
    assert_eq!(stats.invalid_doorbell_writes, 0);
}

#[test]
fn write_flush_read_back_scattered_512() {
    write_flush_read(DmaLayout::Scattered, 512, 5);
}

#[test]
fn write_flush_read_back_scattered_4k_small_mdts() {
    write_flush_read(DmaLayout::Scattered, 4096, 1);
}

#[test]
fn write_flush_read_back_contiguous() {
    write_flush_read(DmaLayout::Contiguous, 512, 2);
}

#[test]
fn bad_requests_are_refused_before_reaching_the_device() {
    let rig = Rig::new(config("namespace_blocks = 100"));
    let ctrl = rig.bring_up().unwrap();
    let before = rig.sim.stats().io_commands;
    assert!(matches!(
        ctrl.write(1, 0, &[0u8; 100]),
        Err(NvmeError::InvalidRequest { .. })
    ));
    assert!(matches!(
        ctrl.write(1, 99, &[0u8; 1024]),
        Err(NvmeError::InvalidRequest { .. })
    ));
    assert!(matches!(
        ctrl.read(1, u64::MAX, &mut [0u8; 512]),
        Err(NvmeError::InvalidRequest { .. })
    ));
    assert!(matches!(
        ctrl.flush(2),
        Err(NvmeError::InvalidRequest { .. })
    ));
    assert_eq!(rig.sim.stats().io_commands, before);
    // The last block is fine.
    ctrl.write(1, 99, &[5u8; 512]).unwrap();
}

#[test]
fn controller_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<common::SimDriver>();
}
