//! Data durability with a volatile write cache: acknowledged writes survive a
//! clean two-phase shutdown, and (negative control) are lost on a power cut
//! without shutdown, so the positive test is known to be able to fail.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use common::{pattern, Rig};
use nvme_sim::SimConfig;
use nvmed::ShutdownOutcome;

const BLOCK: usize = 512;
/// Writes: (first LBA, blocks).
const WRITES: [(u64, usize); 4] = [(0, 1), (10, 8), (100, 64), (1000, 300)];

fn rig_with_file(path: &Path) -> Rig {
    Rig::new(SimConfig {
        backing_file: Some(path.to_path_buf()),
        volatile_write_cache: true,
        namespace_blocks: 4096,
        block_size: BLOCK as u32,
        shutdown_latency_ms: 250,
        ..SimConfig::default()
    })
}

fn file_blocks(path: &Path, lba: u64, blocks: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(lba * BLOCK as u64)).unwrap();
    let mut out = vec![0u8; blocks * BLOCK];
    f.read_exact(&mut out).unwrap();
    out
}

/// Writes every range (acknowledged, not flushed) and returns the data.
fn write_all(rig: &Rig) -> (common::SimDriver, Vec<Vec<u8>>) {
    let ctrl = rig.bring_up().unwrap();
    assert!(ctrl.info().volatile_write_cache);
    let mut datas = Vec::new();
    for (i, (lba, blocks)) in WRITES.iter().enumerate() {
        let data = pattern(blocks * BLOCK, 0x40 + i as u8);
        ctrl.write(1, *lba, &data).unwrap();
        datas.push(data);
    }
    assert!(
        rig.sim.dirty_blocks() > 0,
        "writes must sit in the volatile cache"
    );
    (ctrl, datas)
}

#[test]
fn acknowledged_writes_are_in_the_file_after_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1.img");
    let rig = rig_with_file(&path);
    let (ctrl, datas) = write_all(&rig);

    let begun = ctrl.begin().unwrap();
    assert!(begun.queues_deleted);
    let report = ctrl.finish(Duration::from_secs(2)).unwrap();
    assert_eq!(report.outcome, ShutdownOutcome::Clean);
    // Power goes away right after shutdown, as it would on poweroff.
    rig.sim.power_cut();
    drop(ctrl);

    for ((lba, blocks), data) in WRITES.iter().zip(&datas) {
        assert_eq!(
            &file_blocks(&path, *lba, *blocks),
            data,
            "LBA {lba}+{blocks} missing from the backing file"
        );
    }
}

#[test]
fn negative_control_power_cut_without_shutdown_loses_cached_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1.img");
    let rig = rig_with_file(&path);
    let (ctrl, datas) = write_all(&rig);

    rig.sim.power_cut();
    drop(ctrl);

    for ((lba, blocks), data) in WRITES.iter().zip(&datas) {
        let on_disk = file_blocks(&path, *lba, *blocks);
        assert_ne!(&on_disk, data, "LBA {lba}+{blocks} unexpectedly durable");
        assert!(
            on_disk.iter().all(|&b| b == 0),
            "LBA {lba}: file must be untouched"
        );
    }
}

#[test]
fn power_cut_during_shutdown_before_completion_loses_data() {
    // Cutting power while SHST is still 01b (a shutdownd that does not wait
    // for finish) loses the cache: the wait in finish is what makes it safe.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1.img");
    let rig = rig_with_file(&path);
    let (ctrl, datas) = write_all(&rig);
    ctrl.begin().unwrap();
    rig.clock.advance(Duration::from_millis(100));
    rig.sim.power_cut();
    let (lba, blocks) = WRITES[3];
    assert_ne!(file_blocks(&path, lba, blocks), datas[3]);
}
