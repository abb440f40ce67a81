//! The RedoxFS scenario (`redox-e2e --redoxfs`): a file system on NVMe, a
//! file written just before shutdown, and two ways of powering off, side by
//! side in one run.
//!
//! * **This project's way.** Redox's `redoxfs` (unmodified, built from the
//!   pinned sources) mounts the RedoxFS on the first controller's namespace
//!   through the `disk.*` scheme of this project's nvmed, exactly as
//!   Redox's init mounts its root (`redoxfs <disk> file`). A test program
//!   writes a file (one `write(2)`, no `fsync`), then `shutdown` (shutdownd
//!   under coreutils' name, no options) runs: by default it unmounts the
//!   root file system `file` before every device (the kernel's scheme
//!   unmount; the `file` participant's row), then shuts the controllers down
//!   two-phase, then powers off.
//! * **Redox's way today.** The same image with Redox's own nvmed and pcid
//!   and nothing of this project; the program writes the file and does what
//!   Redox's `shutdown` does: it writes `shutdown` to `/scheme/sys/kstop`.
//!
//! The host then reads the file back from each run's image and reads QEMU's
//! trace. Every controller's namespace has its own id (controller *k* has
//! namespace *k*+1), so the trace tells which controller each I/O command
//! went to. This project's way must show, for every controller, an NVMe
//! Flush and then the shutdown notification (CC.SHN=01b) after the file
//! system's last write; Redox's way shows neither.
//!
//! What each run proves, honestly: QEMU writes completed writes straight into
//! the image file, and RedoxFS commits every `write(2)` before answering it,
//! so the file is in the image either way — QEMU cannot lose data that sat
//! in a volatile write cache. What differs is what a real disk would see:
//! without a Flush and a shutdown notification, a drive with a volatile
//! write cache may lose the last writes at power-off, and the drive counts
//! an unsafe shutdown; and without the unmount, RedoxFS's final cleanup
//! commit never happens.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::boot::{self, nvme_image, Booted, NVME_IMAGE_BYTES};
use super::console::field;
use super::image::{self, DriverEntry, DriverMatch, Guest, AHCID, E1000D};
use super::run::{output, progress};
use super::steps::Artifacts;
use super::{Options, RedoxError};
use crate::qemu::markers;
use crate::qemu::report::check_mode;
use crate::qemu::trace::{opcode, NvmeTrace};

/// The scheme RedoxFS is mounted as (Redox's root file system's name).
pub const MOUNT: &str = "file";
/// The file written just before shutdown.
pub const FILE: &str = "written-before-shutdown.txt";
/// The disk scheme of the first NVMe controller (slot 1 on q35's root bus), as Redox's NVMe driver and this project's name it.
pub const FS_DISK: &str = "/scheme/disk.pci-00-00-01.0-nvme/1";

/// Which way the machine is powered off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// This project's nvmed and `shutdown` (shutdownd).
    Ours,
    /// Redox's own pcid and nvmed, and `kstop` as Redox's `shutdown` does.
    Redox,
}

impl Way {
    /// Suffix of the run's files (`console<suffix>.log`, images).
    pub fn suffix(self) -> &'static str {
        match self {
            Way::Ours => "-ours",
            Way::Redox => "-redox",
        }
    }

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Way::Ours => "this project (nvmed + shutdown)",
            Way::Redox => "Redox today (Redox's nvmed + kstop)",
        }
    }
}

/// The file's content: unique to the run and the way (no spaces: init.rc
/// lines have no quoting).
pub fn content(way: Way, nonce: u64) -> String {
    format!("written-just-before-shutdown{}-{nonce:016x}", way.suffix())
}

/// The guest: PCI and drivers come up, RedoxFS is mounted from the first
/// controller, the file is written, then the machine goes down.
pub fn guest(opts: &Options, project_bin: &Path, art: &Artifacts, way: Way, nonce: u64) -> Guest {
    let mut lines = vec![
        format!("redoxfs {FS_DISK} {MOUNT}"),
        format!("redox-e2e-probe ls /scheme/{MOUNT}"),
        format!(
            "redox-e2e-probe write /scheme/{MOUNT}/{FILE} {}",
            content(way, nonce)
        ),
    ];
    match way {
        Way::Ours => {
            lines.push(format!("echo {}", markers::REPORT_BEGIN));
            // Run as `shutdown`, shutdownd unmounts Redox's root file system
            // (`file`) before every device by default: nothing to configure.
            lines.push("shutdown --json -".to_string());
        }
        Way::Redox => lines.push("redox-e2e-probe kstop".to_string()),
    }
    let base = boot::guest(opts, project_bin);
    Guest {
        after_drivers: lines,
        env: vec![("RUST_LOG".to_string(), opts.log.clone())],
        drivers: drivers(way),
        test_bins: vec![project_bin.join("redox-e2e-probe"), art.redoxfs.clone()],
        // The shipped nvmed, no test build: what an image would carry.
        test_drivers: Vec::new(),
        integrate: match way {
            Way::Ours => base.integrate,
            Way::Redox => None,
        },
        ..base
    }
}

/// The match table: Redox's own AHCI and e1000 drivers and an NVMe driver —
/// this project's shipped `nvmed` (put in by `integrate.sh`), or Redox's.
pub fn drivers(way: Way) -> Vec<DriverEntry> {
    vec![
        AHCID,
        E1000D,
        DriverEntry {
            name: "NVMe storage",
            matches: DriverMatch::Class {
                class: 1,
                subclass: 8,
            },
            program: "nvmed",
            from_base: way == Way::Redox,
        },
    ]
}

/// QEMU's arguments: those of the default boot without its canary
/// controller, with every controller in its own slot and its namespace
/// given its own id (controller *k*: slot *k*+1, namespace *k*+1), so that
/// QEMU's trace can tell them apart ([`NvmeTrace::bar0_of`]).
pub fn qemu_args(opts: &Options, disk: &Path, work: &Path) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    for a in boot::qemu_args(opts, disk, work) {
        if a.contains("id=canary") || a.contains("drive=canary") {
            // Drop the option name pushed just before.
            out.pop();
            continue;
        }
        if a.starts_with("nvme,serial=") {
            let serial = crate::qemu::host::serial(i);
            out.push(format!(
                "nvme,id=ctrl{i},serial={serial},addr={:#04x}",
                slot(i)
            ));
            out.push("-device".to_string());
            out.push(format!("nvme-ns,drive=nvme{i},bus=ctrl{i},nsid={}", i + 1));
            i += 1;
        } else {
            out.push(a);
        }
    }
    out
}

/// PCI slot of controller `k` (slots 0x01.. are free on QEMU's q35 here:
/// the NIC is at 0x1e, the chipset's functions at 0x1f).
fn slot(k: usize) -> u8 {
    k as u8 + 1
}

/// Fresh images: a RedoxFS on the first controller (a small README so the
/// mount has something to list), empty ones for the others.
pub fn images(opts: &Options, art: &Artifacts, work: &Path) -> Result<(), RedoxError> {
    let tree = work.join("fs-tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree).map_err(RedoxError::io("create fs-tree"))?;
    fs::write(
        tree.join("README"),
        "RedoxFS on NVMe for redox-e2e --redoxfs\n",
    )
    .map_err(RedoxError::io("write fs-tree/README"))?;
    output(
        Command::new(&art.image_tool)
            .arg("redoxfs")
            .arg(&tree)
            .arg(nvme_image(work, 0))
            .arg((NVME_IMAGE_BYTES >> 20).to_string()),
    )
    .map_err(RedoxError::Setup)?;
    for i in 1..opts.controllers {
        let p = nvme_image(work, i);
        let f = fs::File::create(&p).map_err(RedoxError::io(format!("create {}", p.display())))?;
        f.set_len(NVME_IMAGE_BYTES)
            .map_err(RedoxError::io(format!("size {}", p.display())))?;
    }
    Ok(())
}

/// What one way's run showed.
#[derive(Debug, Clone)]
pub struct WayResult {
    /// Which way.
    pub way: Way,
    /// The file as the host read it back from the image.
    pub file_found: bool,
    /// Writes to the file system's namespace in QEMU's trace.
    pub fs_writes: usize,
    /// Flush commands per controller (namespace order).
    pub flushes: Vec<usize>,
    /// Controllers whose shutdown notification QEMU acted on.
    pub notified: usize,
    /// The participant's row (this project's way only).
    pub participant: Option<shutdownd::DeviceReport>,
    /// Boot to power-off.
    pub qemu_ms: f64,
}

fn read_back(art: &Artifacts, image: &Path) -> Result<String, RedoxError> {
    output(
        Command::new(&art.image_tool)
            .arg("cat")
            .arg(image)
            .arg(format!("/{FILE}")),
    )
    .map_err(|e| RedoxError::Check(format!("reading {FILE} back from {}: {e}", image.display())))
}

/// Checks one run; returns what it showed.
pub fn check(
    opts: &Options,
    art: &Artifacts,
    booted: &Booted,
    work: &Path,
    way: Way,
    nonce: u64,
) -> Result<WayResult, RedoxError> {
    let c = &booted.console;
    let what = way.label();
    if !c.drivers_up {
        return Err(RedoxError::Stage {
            stage: "pcid ready",
            detail: format!("{what}: drivers never came up (last lines: {})", c.tail(8)),
        });
    }
    let probe = |name: &str| {
        c.probes
            .iter()
            .find(|p| field(p, "what") == Some(name))
            .ok_or_else(|| {
                RedoxError::Check(format!(
                    "{what}: the probe printed no {name} line (last lines: {})",
                    c.tail(8)
                ))
            })
    };
    for name in ["ls", "write"] {
        let p = probe(name)?;
        if field(p, "ok") != Some("true") {
            return Err(RedoxError::Check(format!(
                "{what}: {name} on the mounted RedoxFS failed: {}",
                field(p, "error").unwrap_or("?").replace('_', " ")
            )));
        }
    }
    if booted.status.is_none_or(|s| !s.success()) || !c.kstop {
        return Err(RedoxError::Stage {
            stage: "power-off",
            detail: format!(
                "{what}: QEMU did not power off by itself after kstop (last lines: {})",
                c.tail(6)
            ),
        });
    }
    let expected = content(way, nonce);
    let found = read_back(art, &nvme_image(work, 0))?;
    if found.trim_end() != expected {
        return Err(RedoxError::Check(format!(
            "{what}: {FILE} in the image holds {found:?}, expected {expected:?}"
        )));
    }
    let text = fs::read_to_string(&booted.trace)
        .map_err(RedoxError::io(format!("read {}", booted.trace.display())))?;
    let trace = NvmeTrace::parse(&text);
    let fs_writes = trace.io_of(1, opcode::WRITE).count();
    if fs_writes == 0 {
        return Err(RedoxError::Check(format!(
            "{what}: QEMU's trace shows no write to the file system's namespace"
        )));
    }
    let flushes: Vec<usize> = (1..=opts.controllers as u32)
        .map(|ns| trace.io_of(ns, opcode::FLUSH).count())
        .collect();
    let mut result = WayResult {
        way,
        file_found: true,
        fs_writes,
        flushes,
        notified: trace.notified(),
        participant: None,
        qemu_ms: booted.elapsed.as_secs_f64() * 1000.0,
    };
    match way {
        Way::Redox => {
            if result.flushes.iter().any(|&n| n > 0) || result.notified > 0 {
                return Err(RedoxError::Check(format!(
                    "{what}: expected no Flush and no shutdown notification, QEMU's trace shows \
                     flushes {:?} and {} notified controller(s)",
                    result.flushes, result.notified
                )));
            }
        }
        Way::Ours => {
            result.participant = Some(check_report_order(opts, booted)?);
            check_trace_order(opts, &trace)?;
        }
    }
    Ok(result)
}

/// The report: the file system's row first and `clean`, every controller
/// `clean`, and no controller's Begin before the file system was done.
fn check_report_order(
    opts: &Options,
    booted: &Booted,
) -> Result<shutdownd::DeviceReport, RedoxError> {
    let report = booted
        .console
        .report()
        .ok_or_else(|| {
            RedoxError::Check(format!(
                "shutdownd printed no complete report (last lines: {})",
                booted.console.tail(8)
            ))
        })?
        .map_err(|e| RedoxError::Check(e.to_string()))?;
    check_mode(&report, "two-phase").map_err(RedoxError::Check)?;
    let first = report
        .devices
        .first()
        .ok_or_else(|| RedoxError::Check("the report lists nothing".to_string()))?;
    if first.kind != "participant" || first.driver != MOUNT {
        return Err(RedoxError::Check(format!(
            "the report's first row is {} {}, expected the file system participant {MOUNT:?}",
            first.kind, first.driver
        )));
    }
    if first.outcome != "clean" {
        return Err(RedoxError::Check(format!(
            "the file system participant ended {} ({})",
            first.outcome, first.detail
        )));
    }
    let fs_done = first.done_ms.unwrap_or(f64::MAX);
    let nvme: Vec<&shutdownd::DeviceReport> = report
        .devices
        .iter()
        .filter(|d| d.driver == "nvmed")
        .collect();
    if nvme.len() != opts.controllers {
        return Err(RedoxError::Check(format!(
            "the report lists {} nvmed devices, expected {}",
            nvme.len(),
            opts.controllers
        )));
    }
    for d in &nvme {
        if d.outcome != "clean" {
            return Err(RedoxError::Check(format!(
                "controller {}: outcome {} ({})",
                d.label(),
                d.outcome,
                d.detail
            )));
        }
    }
    for d in nvme {
        let begin = d.begin_sent_ms.unwrap_or(f64::MIN);
        if begin < fs_done {
            return Err(RedoxError::Check(format!(
                "controller {} got Begin at {begin} ms, before the file system was done at {fs_done} ms",
                d.label()
            )));
        }
    }
    Ok(first.clone())
}

/// QEMU's trace: for every controller, a Flush and then the shutdown
/// notification, both after the file system's last write.
fn check_trace_order(opts: &Options, trace: &NvmeTrace) -> Result<(), RedoxError> {
    let last_fs_write = trace
        .last_io(1, opcode::WRITE)
        .ok_or_else(|| RedoxError::Check("no write to the file system's namespace".to_string()))?;
    for k in 0..opts.controllers {
        let nsid = k as u32 + 1;
        let bar0 = trace.bar0_of(0, slot(k), 0).ok_or_else(|| {
            RedoxError::Check(format!(
                "QEMU's trace does not show where controller {k}'s BAR0 (00:{:02x}.0) was mapped",
                slot(k)
            ))
        })?;
        let flush = trace
            .io_of(nsid, opcode::FLUSH)
            .map(|c| c.line)
            .find(|&l| l > last_fs_write)
            .ok_or_else(|| {
                RedoxError::Check(format!(
                    "controller {k} (namespace {nsid}): no Flush after the file system's last write (trace line {last_fs_write})"
                ))
            })?;
        let shn = trace
            .controllers
            .get(&bar0)
            .and_then(|c| c.normal_shn_lines.iter().copied().find(|&l| l > flush))
            .ok_or_else(|| {
                RedoxError::Check(format!(
                    "controller {k} (BAR0 {bar0:#x}): no shutdown notification after its Flush (trace line {flush})"
                ))
            })?;
        if let Some(w) = trace.last_io(nsid, opcode::WRITE).filter(|&w| w > shn) {
            return Err(RedoxError::Check(format!(
                "controller {k}: a write (trace line {w}) after its shutdown notification (line {shn})"
            )));
        }
    }
    if trace.notified() != opts.controllers {
        return Err(RedoxError::Check(format!(
            "QEMU's trace shows {} of {} controllers notified",
            trace.notified(),
            opts.controllers
        )));
    }
    Ok(())
}

/// Runs both ways, this project's first; returns what each showed.
pub fn run(
    opts: &Options,
    art: &Artifacts,
    project_bin: &Path,
    work: &Path,
) -> Result<Vec<WayResult>, RedoxError> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let log = opts.cache.join("logs").join("image.log");
    let mut results = Vec::new();
    for way in [Way::Ours, Way::Redox] {
        let dir = work.join(format!("fs{}", way.suffix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(RedoxError::io(format!("create {}", dir.display())))?;
        let guest = guest(opts, project_bin, art, way, nonce);
        image::initfs_tree(&opts.repo, art, &guest, &dir.join("initfs"), &log)?;
        let disk = image::boot_disk(art, &dir.join("initfs"), &dir, &log)?;
        images(opts, art, &dir)?;
        progress(format!("redoxfs scenario: {}", way.label()));
        let booted = boot::boot_with(opts, qemu_args(opts, &disk, &dir), &dir, "")?;
        let r = check(opts, art, &booted, &dir, way, nonce)?;
        progress(format!(
            "redoxfs scenario: {}: file found in the image; trace: {} write(s) to the file system, \
             Flush per controller {:?}, {} controller(s) notified",
            way.label(),
            r.fs_writes,
            r.flushes,
            r.notified
        ));
        results.push(r);
    }
    Ok(results)
}
