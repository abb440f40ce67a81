//! Booting the image under QEMU.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::console::{self, Console};
use super::image::{DriverEntry, DriverMatch, Guest, AHCID, E1000D};
use super::run::progress;
use super::{Options, RedoxError};
use crate::qemu::host::{run_qemu, serial};
use crate::qemu::markers;
use crate::qemu::trace;

/// Size of each NVMe controller's image (sparse).
pub const NVME_IMAGE_BYTES: u64 = 64 << 20;

/// What one boot produced.
#[derive(Debug)]
pub struct Booted {
    /// QEMU's exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The console.
    pub console: Console,
    /// QEMU's error output.
    pub stderr: String,
    /// Boot to exit (or kill).
    pub elapsed: Duration,
    /// QEMU's trace log.
    pub trace: PathBuf,
}

/// Image of controller `i`.
pub fn nvme_image(work: &Path, i: usize) -> PathBuf {
    work.join(format!("nvme{i}.img"))
}

/// PCI slot of the e1000 NIC (after the NVMe controllers' slots 1..=24).
pub const NIC_SLOT: u8 = 0x1e;
/// q35's built-in AHCI controller, which holds the boot disk on port 0.
pub const AHCI_FUNCTION: &str = "00-00-1f.2";

/// The canary: one more NVMe controller, which QEMU presents with Intel's
/// ids (`use-intel-id=on`, 8086:5845) so the match table can give it the
/// shipped `nvmed` while every other controller gets the test build. The
/// shipped driver sees `NVMED_SELFTEST=1` like the others; it must shut the
/// canary down `clean` and write nothing (its image stays all zeros).
pub mod canary {
    /// Slot on the root bus.
    pub const SLOT: u8 = 0x1d;
    /// Its PCI address in the guest.
    pub const ADDRESS: &str = "0000:00:1d.0";
    /// Its serial number.
    pub const SERIAL: &str = "E2E-CANARY";
}

/// Image of the canary controller.
pub fn canary_image(work: &Path) -> PathBuf {
    work.join("canary.img")
}

/// The initfs match table, in order (first match wins): the canary to the
/// shipped nvmed (put in by `initfs/integrate.sh`, as in any image), Redox's
/// own AHCI and e1000 drivers (entries as in base's tables), and the other
/// NVMe controllers to the test build of nvmed. The table starts the initfs
/// nvmed already, so `integrate.sh` adds no entry of its own here.
pub const DRIVERS: &[DriverEntry] = &[
    DriverEntry {
        name: "NVMe canary (the shipped nvmed)",
        matches: DriverMatch::Ids {
            class: None,
            vendor: 0x8086,
            devices: &[0x5845],
        },
        program: "nvmed",
        from_base: false,
    },
    AHCID,
    E1000D,
    DriverEntry {
        name: "NVMe storage (the test build of nvmed)",
        matches: DriverMatch::Class {
            class: 1,
            subclass: 8,
        },
        program: "nvmed-test",
        from_base: false,
    },
];

/// The guest's composition: PCI comes up the way Redox brings it up (hwd
/// starts acpid, then pcid with no arguments; init then runs pcid-spawner
/// on the initfs table), the probe looks at what came up, and `shutdown`
/// (shutdownd under coreutils' name) ends the run.
pub fn guest(opts: &Options, project_bin: &Path) -> Guest {
    let mut shutdown = "shutdown --json -".to_string();
    if opts.sequential {
        shutdown.push_str(" --sequential");
    }
    Guest {
        project_bin: project_bin.to_path_buf(),
        after_drivers: vec![
            "redox-e2e-probe schemes".to_string(),
            // acpid's request shapes on pcid's access node: the host bridge.
            "redox-e2e-probe pci-access 0000:00:00.0".to_string(),
            // ahcid serves the boot disk: its first sector is our MBR.
            format!("redox-e2e-probe disk /scheme/disk.pci-{AHCI_FUNCTION}_ahci/0"),
            // e1000d talks to the NIC: its MAC address.
            format!("redox-e2e-probe read /scheme/network.pci-00-00-{NIC_SLOT:02x}.0_e1000/mac"),
            format!("echo {}", markers::REPORT_BEGIN),
            shutdown,
        ],
        env: vec![
            ("RUST_LOG".to_string(), opts.log.clone()),
            // The test build's data check: write, flush and read back a
            // pattern unique to each controller at LBA 0. The shipped nvmed
            // on the canary ignores it.
            ("NVMED_SELFTEST".to_string(), "1".to_string()),
        ],
        drivers: DRIVERS.to_vec(),
        start_pci: vec!["hwd".to_string()],
        base_bins: vec!["hwd", "acpid"],
        test_bins: vec![project_bin.join("redox-e2e-probe")],
        test_drivers: vec![project_bin.join("nvmed-test")],
        integrate: Some(vec!["--with-nvmed", "--as-shutdown"]),
    }
}

/// QEMU's arguments (without the trace options).
pub fn qemu_args(opts: &Options, disk: &Path, work: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "qemu64",
        "-m",
        "1024",
        "-smp",
        "1",
        // Without a VGA card the bootloader finds no video modes and does
        // not wait in its mode menu.
        "-vga",
        "none",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The boot disk on q35's AHCI controller (port 0), an e1000 NIC with
    // QEMU's user networking at a fixed slot.
    args.push("-drive".to_string());
    args.push(format!("file={},format=raw", disk.display()));
    args.push("-netdev".to_string());
    args.push("user,id=net0".to_string());
    args.push("-device".to_string());
    args.push(format!("e1000,netdev=net0,addr={NIC_SLOT:#x}"));
    args.push("-drive".to_string());
    args.push(format!(
        "file={},if=none,id=canary,format=raw",
        canary_image(work).display()
    ));
    args.push("-device".to_string());
    args.push(format!(
        "nvme,serial={},drive=canary,use-intel-id=on,addr={:#04x}",
        canary::SERIAL,
        canary::SLOT
    ));
    for i in 0..opts.controllers {
        args.push("-drive".to_string());
        args.push(format!(
            "file={},if=none,id=nvme{i},format=raw",
            nvme_image(work, i).display()
        ));
        args.push("-device".to_string());
        args.push(format!("nvme,serial={},drive=nvme{i}", serial(i)));
    }
    args
}

/// The command that boots a kept image again (no trace, no deadline).
pub fn replay_command(opts: &Options, disk: &Path, work: &Path) -> String {
    format!(
        "qemu-system-x86_64 {}",
        qemu_args(opts, disk, work).join(" ")
    )
}

fn show(line: &str) -> bool {
    let l = console::clean(line);
    l.contains("===E2E-")
        || l.contains("===SHUTDOWN-")
        || l.contains(console::KERNEL_START)
        || l.contains(console::KSTOP)
        || l.contains("devices:")
}

/// Boots once: fresh NVMe images, QEMU with the trace, console captured.
pub fn boot(opts: &Options, disk: &Path, work: &Path) -> Result<Booted, RedoxError> {
    for p in (0..opts.controllers)
        .map(|i| nvme_image(work, i))
        .chain([canary_image(work)])
    {
        let f = fs::File::create(&p).map_err(RedoxError::io(format!("create {}", p.display())))?;
        f.set_len(NVME_IMAGE_BYTES)
            .map_err(RedoxError::io(format!("size {}", p.display())))?;
    }
    boot_with(opts, qemu_args(opts, disk, work), work, "")
}

/// Boots once with `args` (the images are already in place), QEMU's trace
/// in `qemu-trace<suffix>.log` and the console in `console<suffix>.log`.
pub fn boot_with(
    opts: &Options,
    mut args: Vec<String>,
    work: &Path,
    suffix: &str,
) -> Result<Booted, RedoxError> {
    let trace_log = work.join(format!("qemu-trace{suffix}.log"));
    args.extend(trace::qemu_args(&trace_log));
    progress(format!(
        "boot: {} NVMe controller(s), {} shutdown, deadline {} s",
        opts.controllers,
        if opts.sequential {
            "sequential"
        } else {
            "two-phase"
        },
        opts.timeout.as_secs()
    ));
    let (status, lines, stderr, elapsed) = run_qemu(&args, opts.timeout, opts.verbose, show)
        .map_err(|e| RedoxError::Stage {
            stage: "boot",
            detail: e.to_string(),
        })?;
    let console = Console::scan(lines.iter().map(String::as_str));
    let mut text = console.lines.join("\n");
    text.push('\n');
    if !stderr.is_empty() {
        text.push_str("--- QEMU stderr ---\n");
        text.push_str(&stderr);
    }
    let log = work.join(format!("console{suffix}.log"));
    fs::write(&log, text).map_err(RedoxError::io(format!("write {}", log.display())))?;
    progress(format!(
        "QEMU ran {:.1} s; console in {}, QEMU trace in {}",
        elapsed.as_secs_f64(),
        log.display(),
        trace_log.display()
    ));
    Ok(Booted {
        status,
        console,
        stderr,
        elapsed,
        trace: trace_log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_gets_its_own_image_and_serial() {
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 3;
        let args = qemu_args(&opts, Path::new("/w/boot.img"), Path::new("/w"));
        let devices: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| &w[1])
            .collect();
        assert_eq!(devices.len(), 5);
        assert_eq!(devices[0], "e1000,netdev=net0,addr=0x1e");
        assert_eq!(
            devices[1],
            "nvme,serial=E2E-CANARY,drive=canary,use-intel-id=on,addr=0x1d"
        );
        assert_eq!(devices[4], "nvme,serial=E2E-NVME-02,drive=nvme2");
        assert!(args
            .iter()
            .any(|a| a == "file=/w/nvme1.img,if=none,id=nvme1,format=raw"));
        assert!(args.windows(2).any(|w| w[0] == "-vga" && w[1] == "none"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
    }
}
