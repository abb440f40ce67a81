//! The `disk.*` interface ([`nvmed::disk::DiskService`]) against the
//! simulated controller: Redox's names and open rules, byte offsets against
//! a model of the disk, partitions, fsync as an NVMe Flush, and shutdown.

mod common;

use std::sync::Arc;

use common::{config, pattern, Rig, SimDriver};
use nvme_sim::{SimController, SimDma};
use nvmed::disk::{errno, scheme_name, DiskError, DiskService, OpenFlags};
use pcid_hw::FakeClock;

type Service = DiskService<SimController, SimDma, Arc<FakeClock>>;

const BLOCK: usize = 512;
const BLOCKS: u64 = 2048;

fn rig() -> Rig {
    Rig::new(config(&format!(
        "namespace_blocks = {BLOCKS}\nblock_size = {BLOCK}\nvolatile_write_cache = true"
    )))
}

fn service(ctrl: SimDriver) -> Service {
    DiskService::new(Arc::new(ctrl), "disk.pci-00-00-04.0-nvme")
}

const DATA: OpenFlags = OpenFlags {
    directory: false,
    stat: false,
};
const DIR: OpenFlags = OpenFlags {
    directory: true,
    stat: false,
};
const STAT: OpenFlags = OpenFlags {
    directory: false,
    stat: true,
};

fn errno_of<T: std::fmt::Debug>(r: Result<T, DiskError>) -> i32 {
    r.expect_err("expected an error").errno()
}

/// An MBR with two partitions: blocks 64..64+256 and 512..512+1024.
fn mbr() -> Vec<u8> {
    let mut s = vec![0u8; BLOCK];
    for (i, (start, len)) in [(64u32, 256u32), (512, 1024)].iter().enumerate() {
        let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&len.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

#[test]
fn scheme_names_follow_redox() {
    let a = |s: &str| s.parse().unwrap();
    assert_eq!(scheme_name(a("0000:00:01.0")), "disk.pci-00-00-01.0-nvme");
    assert_eq!(scheme_name(a("0001:1a:1f.7")), "disk.pci-01-1a-1f.7-nvme");
}

#[test]
fn the_root_lists_namespaces_and_partitions_as_redox_does() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    ctrl.write(1, 0, &mbr()).unwrap();
    let mut disk = service(ctrl);
    assert_eq!(disk.entry_names(), ["1", "1p0", "1p1"]);
    let root = disk.open("", DIR, 0).unwrap();
    let mut buf = [0u8; 64];
    let n = disk.read(root, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"1\n1p0\n1p1\n");
    // Read at an offset, as relibc's readdir fallback does.
    let n = disk.read(root, 2, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"1p0\n1p1\n");
    assert!(disk.stat(root).unwrap().directory);
    assert_eq!(disk.entries(root).unwrap(), ["1", "1p0", "1p1"]);
    assert_eq!(
        disk.path(root).unwrap(),
        "/scheme/disk.pci-00-00-04.0-nvme/"
    );
    // O_STAT opens the root too; a plain open is EISDIR.
    disk.open("/", STAT, 0).unwrap();
    assert_eq!(errno_of(disk.open("", DATA, 0)), errno::EISDIR);
}

#[test]
fn open_rules_access_names_and_locks() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    ctrl.write(1, 0, &mbr()).unwrap();
    let mut disk = service(ctrl);
    assert_eq!(errno_of(disk.open("1", DATA, 1000)), errno::EACCES);
    for bad in ["2", "1p2", "1p", "p0", "x", "1px", "-1", "99999999999"] {
        assert_eq!(errno_of(disk.open(bad, DATA, 0)), errno::ENOENT, "{bad}");
    }
    assert_eq!(errno_of(disk.open("1", DIR, 0)), errno::ENOTDIR);
    assert_eq!(errno_of(disk.open("1/", DATA, 0)), errno::ENOTDIR);

    // Locks: the namespace excludes its partitions and vice versa; two
    // partitions coexist; O_STAT takes no lock.
    let p0 = disk.open("1p0", DATA, 0).unwrap();
    let p1 = disk.open("/1p1", DATA, 0).unwrap();
    assert_eq!(errno_of(disk.open("1p0", DATA, 0)), errno::ENOLCK);
    assert_eq!(errno_of(disk.open("1", DATA, 0)), errno::ENOLCK);
    let st = disk.open("1", STAT, 0).unwrap();
    assert_eq!(disk.size(st).unwrap(), BLOCKS * BLOCK as u64);
    assert_eq!(errno_of(disk.read(st, 0, &mut [0u8; 8])), errno::EBADF);
    disk.close(p0);
    disk.close(p1);
    let whole = disk.open("1", DATA, 0).unwrap();
    assert_eq!(errno_of(disk.open("1p1", DATA, 0)), errno::ENOLCK);
    assert_eq!(
        disk.path(whole).unwrap(),
        "/scheme/disk.pci-00-00-04.0-nvme/1"
    );
    disk.close(whole);
    assert_eq!(errno_of(disk.read(whole, 0, &mut [0u8; 8])), errno::EBADF);
    assert_eq!(disk.open_handles(), 1, "only the O_STAT handle is left");
}

/// Deterministic pseudo-random numbers (no dependency, reproducible).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn byte_offsets_anywhere_agree_with_a_model_of_the_disk() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    let mut disk = service(ctrl);
    let size = BLOCKS as usize * BLOCK;
    let mut model = vec![0u8; size];
    let h = disk.open("1", DATA, 0).unwrap();
    let mut rng = Lcg(7);
    for round in 0..300u32 {
        // Offsets and lengths around block boundaries and the end.
        let offset = match rng.next() % 4 {
            0 => (rng.next() as usize % BLOCKS as usize) * BLOCK,
            1 => rng.next() as usize % size,
            2 => size - 1 - (rng.next() as usize % (3 * BLOCK)),
            _ => (rng.next() as usize % BLOCKS as usize) * BLOCK + BLOCK - 1,
        };
        let len = match rng.next() % 3 {
            0 => 1 + rng.next() as usize % 16,
            1 => BLOCK * (1 + rng.next() as usize % 4),
            _ => 1 + rng.next() as usize % (3 * BLOCK + 100),
        };
        if rng.next() % 2 == 0 {
            let data = pattern(len, round as u8);
            let n = disk.write(h, offset as u64, &data).unwrap();
            assert_eq!(n, len.min(size - offset), "write {len} at {offset}");
            model[offset..offset + n].copy_from_slice(&data[..n]);
        } else {
            let mut buf = vec![0xEEu8; len];
            let n = disk.read(h, offset as u64, &mut buf).unwrap();
            assert_eq!(n, len.min(size - offset), "read {len} at {offset}");
            assert_eq!(
                &buf[..n],
                &model[offset..offset + n],
                "read {len} at {offset}"
            );
        }
    }
    // The end: reads give 0, writes ENOSPC.
    assert_eq!(disk.read(h, size as u64, &mut [0u8; 4]).unwrap(), 0);
    assert_eq!(disk.read(h, u64::MAX, &mut [0u8; 4]).unwrap(), 0);
    assert_eq!(errno_of(disk.write(h, size as u64, &[1])), errno::ENOSPC);
    assert_eq!(disk.write(h, 5, &[]).unwrap(), 0);
    // What the model says is what the controller holds.
    let ctrl = disk.controller();
    let mut all = vec![0u8; size];
    ctrl.read(1, 0, &mut all).unwrap();
    assert!(all == model, "the namespace differs from the model");
}

#[test]
fn partitions_are_windows_onto_the_namespace() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    ctrl.write(1, 0, &mbr()).unwrap();
    let mut disk = service(ctrl);
    let p1 = disk.open("1p1", DATA, 0).unwrap();
    let st = disk.stat(p1).unwrap();
    assert_eq!(
        (st.size, st.blocks, st.block_size, st.directory),
        (1024 * BLOCK as u64, 1024, BLOCK as u32, false)
    );
    let data = pattern(3 * BLOCK + 7, 0x31);
    assert_eq!(disk.write(p1, 100, &data).unwrap(), data.len());
    // It landed at partition start (block 512) + 100 bytes.
    let mut back = vec![0u8; 4 * BLOCK];
    disk.controller().read(1, 512, &mut back).unwrap();
    assert_eq!(&back[100..100 + data.len()], &data[..]);
    // Writes and reads stop at the partition's end, not the disk's.
    let end = 1024 * BLOCK as u64;
    assert_eq!(disk.write(p1, end - 3, &[9u8; 10]).unwrap(), 3);
    assert_eq!(errno_of(disk.write(p1, end, &[9])), errno::ENOSPC);
    let mut tail = [0u8; 10];
    assert_eq!(disk.read(p1, end - 3, &mut tail).unwrap(), 3);
    assert_eq!(&tail[..3], &[9, 9, 9]);
    assert_eq!(disk.read(p1, end, &mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn fsync_is_a_flush_of_the_namespace() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    let mut disk = service(ctrl);
    let h = disk.open("1", DATA, 0).unwrap();
    disk.write(h, 0, &pattern(2 * BLOCK, 5)).unwrap();
    assert!(rig.sim.dirty_blocks() > 0);
    let before = rig.sim.stats().flushes;
    disk.fsync(h).unwrap();
    assert_eq!(rig.sim.stats().flushes, before + 1);
    assert_eq!(rig.sim.dirty_blocks(), 0);
    assert_eq!(disk.counters().syncs, 1);
}

#[test]
fn after_begin_requests_fail_at_once_with_eshutdown() {
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    let mut disk = service(ctrl);
    let h = disk.open("1", DATA, 0).unwrap();
    disk.write(h, 10, b"before").unwrap();
    let begun = disk.controller().begin().unwrap();
    assert!(begun.flushed);
    let t0 = rig.now();
    assert_eq!(errno_of(disk.read(h, 0, &mut [0u8; 8])), errno::ESHUTDOWN);
    assert_eq!(errno_of(disk.write(h, 0, b"after")), errno::ESHUTDOWN);
    assert_eq!(errno_of(disk.fsync(h)), errno::ESHUTDOWN);
    disk.close(h);
    assert_eq!(errno_of(disk.open("1", DATA, 0)), errno::ESHUTDOWN);
    assert_eq!(rig.now(), t0, "refusals do not wait for anything");
    // Looking is still allowed.
    let st = disk.open("1", STAT, 0).unwrap();
    assert_eq!(disk.size(st).unwrap(), BLOCKS * BLOCK as u64);
    assert!(disk.open("", DIR, 0).is_ok());
    assert_eq!(disk.counters().refused, 4);
    // What was written before Begin was flushed by it.
    assert_eq!(rig.sim.dirty_blocks(), 0);
    assert_eq!(&rig.sim.read_durable(0, 1).unwrap()[10..16], b"before");
}

#[test]
fn a_gpt_disk_is_read_as_redox_reads_it() {
    // A GPT made by the same layout rules as partition.rs's unit tests,
    // written through the controller.
    let rig = rig();
    let ctrl = rig.bring_up().unwrap();
    let mut array = vec![0u8; 128 * 128];
    for (i, (first, last)) in [(40u64, 99u64), (200, 399)].iter().enumerate() {
        let e = &mut array[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&[0xAF; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let mut header = vec![0u8; BLOCK];
    header[..8].copy_from_slice(b"EFI PART");
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[72..80].copy_from_slice(&2u64.to_le_bytes());
    header[80..84].copy_from_slice(&128u32.to_le_bytes());
    header[84..88].copy_from_slice(&128u32.to_le_bytes());
    header[88..92].copy_from_slice(&nvmed::partition::crc32(&array).to_le_bytes());
    let crc = nvmed::partition::crc32(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    ctrl.write(1, 1, &header).unwrap();
    ctrl.write(1, 2, &array).unwrap();
    let mut disk = service(ctrl);
    assert_eq!(disk.entry_names(), ["1", "1p0", "1p1"]);
    let p1 = disk.open("1p1", DATA, 0).unwrap();
    assert_eq!(disk.size(p1).unwrap(), 200 * BLOCK as u64);
}
