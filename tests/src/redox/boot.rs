//! Booting the image under QEMU.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::console::{self, Console};
use super::image::{DriverEntry, Guest};
use super::run::progress;
use super::{Options, RedoxError};
use crate::qemu::host::{run_qemu, serial};
use crate::qemu::markers;
use crate::qemu::trace;

/// Size of each NVMe controller's image (sparse).
const NVME_IMAGE_BYTES: u64 = 64 << 20;

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

/// The guest's composition for these options.
pub fn guest(opts: &Options, project_bin: &Path) -> Guest {
    let mut shutdownd = "shutdownd --json - --deadline-ms 30000".to_string();
    if opts.sequential {
        shutdownd.push_str(" --sequential");
    }
    Guest {
        project_bin: project_bin.to_path_buf(),
        after_drivers: vec![
            "redox-e2e-probe schemes".to_string(),
            "redox-e2e-probe pci-access 0000:00:00.0".to_string(),
            format!("echo {}", markers::REPORT_BEGIN),
            shutdownd,
        ],
        env: vec![
            ("RUST_LOG".to_string(), opts.log.clone()),
            // nvmed's data check: write, flush and read back a pattern
            // unique to each controller at LBA 0.
            ("NVMED_SELFTEST".to_string(), "1".to_string()),
        ],
        drivers: vec![DriverEntry {
            name: "NVMe storage",
            keys: "class = 1\nsubclass = 8",
            program: "nvmed",
        }],
        start_pci: vec!["pcid".to_string()],
        base_bins: vec![],
        test_bins: vec![project_bin.join("redox-e2e-probe")],
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
        "-net",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-drive".to_string());
    args.push(format!("file={},format=raw", disk.display()));
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
    for i in 0..opts.controllers {
        let p = nvme_image(work, i);
        let f = fs::File::create(&p).map_err(RedoxError::io(format!("create {}", p.display())))?;
        f.set_len(NVME_IMAGE_BYTES)
            .map_err(RedoxError::io(format!("size {}", p.display())))?;
    }
    let trace_log = work.join("qemu-trace.log");
    let mut args = qemu_args(opts, disk, work);
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
    let log = work.join("console.log");
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
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[2], "nvme,serial=E2E-NVME-02,drive=nvme2");
        assert!(args
            .iter()
            .any(|a| a == "file=/w/nvme1.img,if=none,id=nvme1,format=raw"));
        assert!(args.windows(2).any(|w| w[0] == "-vga" && w[1] == "none"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
    }
}
