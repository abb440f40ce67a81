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
fn begin_flushes_so_a_power_cut_before_completion_keeps_acknowledged_writes() {
    // Begin flushes every namespace before it deletes the queues and writes
    // CC.SHN: cutting power while SHST is still 01b (a shutdownd that does
    // not wait for finish) keeps every write acknowledged before Begin. The
    // negative control above shows the same cut without Begin loses them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1.img");
    let rig = rig_with_file(&path);
    let (ctrl, datas) = write_all(&rig);
    let flushes_before = rig.sim.stats().flushes;
    let begun = ctrl.begin().unwrap();
    assert!(begun.flushed, "{begun:?}");
    assert_eq!(
        rig.sim.stats().flushes,
        flushes_before + 1,
        "one Flush per namespace"
    );
    assert_eq!(rig.sim.dirty_blocks(), 0);
    rig.clock.advance(Duration::from_millis(100));
    rig.sim.power_cut();
    for ((lba, blocks), data) in WRITES.iter().zip(&datas) {
        assert_eq!(
            &file_blocks(&path, *lba, *blocks),
            data,
            "LBA {lba}+{blocks}"
        );
    }
}

#[test]
fn a_request_accepted_before_begin_completes_and_is_flushed_and_later_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1.img");
    let rig = rig_with_file(&path);
    let ctrl = rig.bring_up().unwrap();
    let data = pattern(8 * BLOCK, 0x77);
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let begun = std::thread::scope(|s| {
        let ctrl = &ctrl;
        let begin = s.spawn(move || {
            entered_rx.recv().unwrap();
            ctrl.begin().unwrap()
        });
        ctrl.io(|io| {
            entered_tx.send(()).unwrap();
            // The request was accepted; Begin starts meanwhile (it refuses
            // new requests at once) and must wait for this one to end.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !io.controller().is_shutting_down() {
                assert!(std::time::Instant::now() < deadline, "begin never started");
                std::thread::yield_now();
            }
            io.write(1, 50, &data)
        })
        .unwrap();
        begin.join().unwrap()
    });
    assert!(begun.flushed && begun.queues_deleted, "{begun:?}");
    assert!(matches!(
        ctrl.write(1, 0, &data),
        Err(nvmed::NvmeError::ShuttingDown)
    ));
    // Begin's flush came after the accepted write: it is durable.
    rig.sim.power_cut();
    assert_eq!(file_blocks(&path, 50, 8), data);
}
