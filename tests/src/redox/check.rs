//! The host's checks after a Redox boot.

use std::fs;
use std::io::Read as _;
use std::path::Path;

use super::boot::{canary, canary_image, nvme_image, Booted, NIC_SLOT};
use super::console::{field, Console};
use super::{Options, RedoxError};
use crate::qemu::host::serial;
use crate::qemu::report::{check_mode, with_figures};
use crate::qemu::trace::NvmeTrace;
use crate::qemu::{selftest_pattern, SELFTEST_PATTERN_LEN};

/// What the checks found in a passing run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// shutdownd's report.
    pub report: shutdownd::Report,
    /// QEMU's NVMe trace.
    pub trace: NvmeTrace,
}

/// Which stage a boot stopped in, from what the console shows.
pub fn stage_failure(b: &Booted) -> Option<RedoxError> {
    let c = &b.console;
    let stage = |stage: &'static str, detail: String| Some(RedoxError::Stage { stage, detail });
    if let Some(status) = b.status {
        if !status.success() {
            return stage(
                "boot",
                format!("QEMU exited with {status}: {}", b.stderr.trim()),
            );
        }
    }
    if !c.kernel_started {
        return stage(
            "boot",
            format!(
                "the kernel never started (bootloader output: {})",
                c.tail(5)
            ),
        );
    }
    if !c.init_started {
        return stage(
            "init",
            format!("init never ran init.rc (last lines: {})", c.tail(8)),
        );
    }
    if !c.drivers_up {
        return stage(
            "pcid ready",
            format!(
                "pcid and pcid-spawner never returned (last lines: {})",
                c.tail(8)
            ),
        );
    }
    if c.report().is_none() {
        let what = if c.report_started {
            "shutdownd printed no complete report"
        } else {
            "shutdownd never started"
        };
        return stage("shutdown", format!("{what} (last lines: {})", c.tail(8)));
    }
    if let Some(f) = c.failures.first() {
        return stage("power-off", f.clone());
    }
    if b.status.is_none() {
        return stage(
            "power-off",
            format!(
                "QEMU was killed at the deadline after the report (last lines: {})",
                c.tail(5)
            ),
        );
    }
    if !c.kstop {
        return stage(
            "power-off",
            "QEMU exited, but the kernel's kstop never ran".to_string(),
        );
    }
    None
}

/// Checks the report: mode, every NVMe controller `clean`, and (two-phase)
/// every Begin sent before the first FinishAck arrived.
pub fn check_report(opts: &Options, report: &shutdownd::Report) -> Result<(), RedoxError> {
    let expected = if opts.sequential {
        "sequential"
    } else {
        "two-phase"
    };
    check_mode(report, expected).map_err(RedoxError::Check)?;
    let nvme: Vec<&shutdownd::DeviceReport> = report
        .devices
        .iter()
        .filter(|d| d.driver == "nvmed")
        .collect();
    // The test build says Hello as nvmed too; the canary is the shipped one.
    if nvme.len() != opts.controllers + 1 {
        return Err(RedoxError::Check(format!(
            "the report lists {} nvmed devices, expected {} and the canary",
            nvme.len(),
            opts.controllers
        )));
    }
    if !nvme
        .iter()
        .any(|d| d.address.as_deref() == Some(canary::ADDRESS))
    {
        return Err(RedoxError::Check(format!(
            "the canary ({}, the shipped nvmed) is not in the report",
            canary::ADDRESS
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
    if !opts.sequential {
        let last_begin = nvme
            .iter()
            .filter_map(|d| d.begin_sent_ms)
            .fold(f64::MIN, f64::max);
        let first_ack = nvme
            .iter()
            .filter_map(|d| d.finish_ack_ms)
            .fold(f64::MAX, f64::min);
        if nvme.iter().any(|d| d.begin_sent_ms.is_none()) {
            return Err(RedoxError::Check(
                "a controller has no begin_sent_ms in the report".to_string(),
            ));
        }
        if last_begin > first_ack {
            return Err(RedoxError::Check(format!(
                "a FinishAck arrived ({first_ack} ms) before Begin was sent to every controller (last at {last_begin} ms)"
            )));
        }
    }
    Ok(())
}

/// QEMU's first NIC's MAC address (its default), as the six bytes e1000d's
/// `mac` file holds.
const QEMU_DEFAULT_MAC: &str = "525400123456";

/// What the probe saw: pcid's `access` node answering acpid's requests,
/// Redox's ahcid serving the boot disk and e1000d talking to the NIC.
pub fn check_probes(console: &Console) -> Result<(), RedoxError> {
    let find = |what: &str| {
        console
            .probes
            .iter()
            .find(|p| field(p, "what") == Some(what))
            .ok_or_else(|| RedoxError::Check(format!("the probe printed no {what} line")))
    };
    for p in &console.probes {
        if field(p, "ok") != Some("true") {
            return Err(RedoxError::Check(format!(
                "probe {}: {}",
                field(p, "what").unwrap_or("?"),
                field(p, "error").unwrap_or("failed").replace('_', " ")
            )));
        }
    }
    let access = find("pci-access")?;
    let expect = [
        ("vendor", "0x8086"),
        ("device", "0x29c0"),
        ("device_high_byte", "0x29"),
        ("vendor_after_write", "0x8086"),
        ("bad_kind_refused", "true"),
    ];
    for (k, v) in expect {
        if field(access, k) != Some(v) {
            return Err(RedoxError::Check(format!(
                "/scheme/pci/access on q35's host bridge: {k} = {:?}, expected {v}",
                field(access, k)
            )));
        }
    }
    let disk = find("disk")?;
    if field(disk, "mbr_signature") != Some("55aa") {
        return Err(RedoxError::Check(format!(
            "ahcid's disk {}: first sector has signature {:?}, expected the boot disk's MBR (55aa)",
            field(disk, "path").unwrap_or("?"),
            field(disk, "mbr_signature")
        )));
    }
    let mac = find("read")?;
    if field(mac, "hex") != Some(QEMU_DEFAULT_MAC) {
        return Err(RedoxError::Check(format!(
            "e1000d's MAC reads {:?}, expected QEMU's {QEMU_DEFAULT_MAC}",
            field(mac, "hex")
        )));
    }
    Ok(())
}

/// Redox's own drivers are in the report as drivers without shutdown
/// support, and acpid (started by hwd) handled the power-off.
pub fn check_redox_drivers(
    console: &Console,
    report: &shutdownd::Report,
) -> Result<(), RedoxError> {
    let nic = format!("0000:00:{NIC_SLOT:02x}.0");
    for (address, what) in [
        ("0000:00:1f.2", "ahcid (q35's AHCI)"),
        (nic.as_str(), "e1000d (the e1000 NIC)"),
    ] {
        let Some(d) = report
            .devices
            .iter()
            .find(|d| d.address.as_deref() == Some(address))
        else {
            return Err(RedoxError::Check(format!(
                "{what} at {address} is not in the report"
            )));
        };
        if d.outcome != "not-supported" {
            return Err(RedoxError::Check(format!(
                "{what} at {address}: outcome {}, expected not-supported",
                d.outcome
            )));
        }
    }
    // acpid's AML interpreter opens pcid's access node when it starts (hwd's
    // probe starts it); the probe opens it too.
    let opened = console
        .lines
        .iter()
        .filter(|l| l.contains("/scheme/pci/access opened by pid"))
        .count();
    if opened < 2
        || console
            .lines
            .iter()
            .any(|l| l.contains("failed to open /scheme/pci/access"))
    {
        return Err(RedoxError::Check(format!(
            "acpid did not reach /scheme/pci/access (pcid saw {opened} opens; acpid and the probe make one each)"
        )));
    }
    if console
        .lines
        .iter()
        .any(|l| l.contains("No userspace ACPI handler was notified"))
    {
        return Err(RedoxError::Check(
            "acpid did not take the power-off request (the kernel found no ACPI handler)"
                .to_string(),
        ));
    }
    Ok(())
}

/// Each image must start with its own controller's pattern (the test
/// build's self-test), and the canary's must be untouched (the shipped
/// nvmed writes nothing, whatever its environment says).
pub fn check_images(opts: &Options, work: &Path) -> Result<(), RedoxError> {
    let path = canary_image(work);
    let image = fs::read(&path).map_err(RedoxError::io(format!("read {}", path.display())))?;
    if let Some(at) = image.iter().position(|&b| b != 0) {
        return Err(RedoxError::Check(format!(
            "the shipped nvmed wrote to the canary: {} is not all zeros (byte {at}, block {})",
            path.display(),
            at / 512
        )));
    }
    for i in 0..opts.controllers {
        let path = nvme_image(work, i);
        let mut head = vec![0u8; SELFTEST_PATTERN_LEN];
        fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(RedoxError::io(format!("read {}", path.display())))?;
        if head != selftest_pattern(&serial(i), SELFTEST_PATTERN_LEN) {
            return Err(RedoxError::Check(format!(
                "image {} does not hold its controller's pattern (serial {}); it starts with {:?}",
                path.display(),
                serial(i),
                String::from_utf8_lossy(&head[..48])
            )));
        }
    }
    Ok(())
}

/// QEMU's trace must show a normal shutdown notification to every controller.
pub fn check_trace(opts: &Options, trace: &NvmeTrace) -> Result<(), RedoxError> {
    let notified = trace.notified();
    // The canary is shut down too (by the shipped nvmed).
    let expected = opts.controllers + 1;
    if notified != expected {
        let missing: Vec<String> = trace
            .controllers
            .values()
            .filter(|c| !c.notified())
            .map(|c| format!("BAR0 {:#x}", c.bar0))
            .collect();
        return Err(RedoxError::Check(format!(
            "QEMU's trace shows a shutdown notification (CC.SHN=01b answered by pci_nvme_mmio_shutdown_set) for {notified} of {expected} controllers (the canary included){}",
            if missing.is_empty() {
                String::new()
            } else {
                format!("; not for {}", missing.join(", "))
            }
        )));
    }
    Ok(())
}

/// Runs every check, in the order a reader would want the first failure.
pub fn all(opts: &Options, booted: &Booted, work: &Path) -> Result<Outcome, RedoxError> {
    if let Some(e) = stage_failure(booted) {
        return Err(e);
    }
    let report = booted
        .console
        .report()
        .ok_or_else(|| RedoxError::Check("no report".to_string()))?
        .map_err(|e| RedoxError::Check(e.to_string()))?;
    check_report(opts, &report)?;
    check_probes(&booted.console)?;
    check_redox_drivers(&booted.console, &report)?;
    check_images(opts, work)?;
    let text = fs::read_to_string(&booted.trace)
        .map_err(RedoxError::io(format!("read {}", booted.trace.display())))?;
    let trace = NvmeTrace::parse(&text);
    check_trace(opts, &trace)?;
    Ok(Outcome { report, trace })
}

/// Writes the report with the run's figures added under `"redox"`.
pub fn write_json(
    path: &Path,
    opts: &Options,
    booted: &Booted,
    outcome: &Outcome,
) -> Result<(), RedoxError> {
    let figures = serde_json::json!({
        "controllers": opts.controllers,
        "boot_to_poweroff_ms": booted.elapsed.as_secs_f64() * 1000.0,
        "trace_notified": outcome.trace.notified(),
        "trace_flush_commands": outcome.trace.flush_cmds,
        "trace_namespace_flushes": outcome.trace.flush_ns,
    });
    let text = with_figures(&outcome.report, "redox", figures)
        .map_err(|e| RedoxError::setup(format!("encode report: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(RedoxError::io(format!("create {}", dir.display())))?;
    }
    fs::write(path, text + "\n").map_err(RedoxError::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::markers;
    use crate::qemu::report::fixture;
    use crate::redox::console::{DRIVERS_UP, KSTOP};
    use std::os::unix::process::ExitStatusExt as _;
    use std::path::PathBuf;
    use std::time::Duration;

    fn booted(lines: &[&str], status: Option<i32>) -> Booted {
        Booted {
            status: status.map(std::process::ExitStatus::from_raw),
            console: Console::scan(lines.iter().copied()),
            stderr: String::new(),
            elapsed: Duration::from_secs(1),
            trace: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn each_stage_is_named() {
        let stage = |lines: &[&str], status| match stage_failure(&booted(lines, status)) {
            Some(RedoxError::Stage { stage, .. }) => stage,
            other => panic!("{other:?}"),
        };
        let kernel = "Redox OS starting...";
        let report = fixture::json("two-phase", Vec::new());
        let report = report.as_str();
        assert_eq!(stage(&["BOOTLOADER"], None), "boot");
        assert_eq!(stage(&[kernel], Some(0)), "init");
        assert_eq!(stage(&[kernel, markers::INIT_START], None), "pcid ready");
        assert_eq!(
            stage(&[kernel, markers::INIT_START, DRIVERS_UP], None),
            "shutdown"
        );
        let up = [
            kernel,
            markers::INIT_START,
            DRIVERS_UP,
            markers::REPORT_BEGIN,
            report,
        ];
        assert_eq!(stage(&up, None), "power-off");
        assert_eq!(stage(&up, Some(0)), "power-off", "no kstop line");
        let mut done = up.to_vec();
        done.push(KSTOP);
        assert!(stage_failure(&booted(&done, Some(0))).is_none());
        assert_eq!(stage(&done, Some(1 << 8)), "boot", "QEMU failed");
    }

    fn report(devices: &[(&str, f64, f64, &str)]) -> shutdownd::Report {
        let devs = devices
            .iter()
            .map(|&(a, b, f, o)| {
                let mut d = fixture::row(Some(a), "nvmed", o);
                d.begin_sent_ms = Some(b);
                d.finish_ack_ms = Some(f);
                d
            })
            .collect();
        fixture::report("two-phase", devs)
    }

    #[test]
    fn report_checks_catch_unclean_and_overlapping_shutdowns() {
        let mut opts = Options::new(PathBuf::from("/r"));
        opts.controllers = 1;
        let c = canary::ADDRESS;
        let r = report(&[("a", 0.0, 3.0, "clean"), (c, 0.5, 2.0, "clean")]);
        check_report(&opts, &r).unwrap();
        let r = report(&[("a", 0.0, 3.0, "clean"), ("b", 0.5, 2.0, "clean")]);
        assert!(check_report(&opts, &r)
            .unwrap_err()
            .to_string()
            .contains("the canary"));
        let r = report(&[("a", 0.0, 1.0, "clean"), (c, 2.0, 3.0, "clean")]);
        let e = check_report(&opts, &r).unwrap_err().to_string();
        assert!(
            e.contains("before Begin was sent to every controller"),
            "{e}"
        );
        let r = report(&[("a", 0.0, 3.0, "clean"), (c, 0.5, 2.0, "timed-out")]);
        assert!(check_report(&opts, &r)
            .unwrap_err()
            .to_string()
            .contains(&format!("controller {c}: outcome timed-out")));
        let r = report(&[("a", 0.0, 3.0, "clean")]);
        assert!(check_report(&opts, &r)
            .unwrap_err()
            .to_string()
            .contains("1 nvmed devices, expected 1 and the canary"));
    }

    #[test]
    fn images_must_hold_their_own_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::new(PathBuf::from("/r"));
        opts.controllers = 2;
        for i in 0..2 {
            fs::write(
                nvme_image(dir.path(), i),
                selftest_pattern(&serial(i), SELFTEST_PATTERN_LEN),
            )
            .unwrap();
        }
        fs::write(canary_image(dir.path()), vec![0u8; 8192]).unwrap();
        check_images(&opts, dir.path()).unwrap();
        // A canary the shipped nvmed wrote to fails.
        let mut written = vec![0u8; 8192];
        written[4096] = 1;
        fs::write(canary_image(dir.path()), written).unwrap();
        let e = check_images(&opts, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("wrote to the canary") && e.contains("block 8"),
            "{e}"
        );
        fs::write(canary_image(dir.path()), vec![0u8; 8192]).unwrap();
        fs::copy(nvme_image(dir.path(), 0), nvme_image(dir.path(), 1)).unwrap();
        assert!(check_images(&opts, dir.path()).is_err());
    }
}
