//! Benchmark: two-phase against sequential shutdown, and the protocol's own
//! overhead, with the real binaries on simulated machines.
//!
//! ```text
//! cargo bench -p shutdown_tests --bench shutdown -- [--latency-ms MS] [--repeat N]
//!     [--sizes 16,64,256] [--skip-comparison] [--skip-overhead]
//! ```
//!
//! 1. **Two-phase vs sequential**: 16 NVMe controllers whose shutdown takes
//!    `--latency-ms` (default 4500), shut down once two-phase and once
//!    `--sequential`, each on a freshly started pcid. Prints both totals and
//!    their ratio (ideal: 16×).
//! 2. **Overhead**: controllers whose shutdown completes at once (latency 0),
//!    at each of `--sizes` (default 16, 64, 256), two-phase and sequential,
//!    `--repeat` times each (default 3); prints the median total and the
//!    median per device. With nothing to wait for, the total is the protocol's
//!    cost: messages through pcid to each nvmed process and back, and the
//!    drivers' own register work.
//!
//! 3. **shutdownd alone**: the same sizes against a scripted pcid in this
//!    process that answers every request at once on a real control socket,
//!    so the total is shutdownd's own cost plus the socket round trips.
//!
//! Totals are shutdownd's `total_ms` (first Begin to last outcome). The
//! binaries must be built first (`cargo build --release --workspace`); the
//! benchmark runs `cargo build` itself when launched by cargo.

use std::process::ExitCode;
use std::time::Duration;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{
    ControlMessage, DeviceInfo, DriverState, FinishOutcome, ShutdownSupport,
};
use pcid_interface::transport::ControlListener;

use shutdown_tests::sim::machine::MachineSpec;
use shutdown_tests::sim::stack::{Binaries, ReportView, Stack, StackOptions};

struct Args {
    latency_ms: u64,
    repeat: usize,
    sizes: Vec<usize>,
    comparison: bool,
    overhead: bool,
}

const USAGE: &str = "usage: cargo bench -p shutdown_tests --bench shutdown -- [--latency-ms MS] \
[--repeat N] [--sizes N,N,...] [--skip-comparison] [--skip-overhead] [-h|--help] [-V|--version]";

/// `Ok(None)`: `--help` or `--version` was answered.
fn parse_args() -> Result<Option<Args>, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    use shutdown_tests::cli::{number, string, unexpected};
    let mut a = Args {
        latency_ms: 4500,
        repeat: 3,
        sizes: vec![16, 64, 256],
        comparison: true,
        overhead: true,
    };
    let mut p = shutdown_tests::cli::lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            // cargo bench passes --bench to every benchmark binary.
            Long("bench") => {}
            Long("latency-ms") => a.latency_ms = number(&mut p, "--latency-ms")?,
            Long("repeat") => a.repeat = number(&mut p, "--repeat")?,
            Long("sizes") => {
                a.sizes = string(&mut p, "--sizes")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| "--sizes needs numbers like 16,64,256".to_string())?
            }
            Long("skip-comparison") => a.comparison = false,
            Long("skip-overhead") => a.overhead = false,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("shutdown bench"));
                return Ok(None);
            }
            other => return Err(unexpected(other)),
        }
    }
    if a.repeat == 0
        || a.sizes
            .iter()
            .any(|&n| n == 0 || n > MachineSpec::MAX_DEVICES)
    {
        return Err("--repeat and --sizes must be positive (sizes ≤ 1024)".into());
    }
    Ok(Some(a))
}

/// Starts pcid on `machine`, runs shutdownd with `args`, stops pcid.
fn run_once(bins: &Binaries, machine: &MachineSpec, args: &[&str]) -> Result<ReportView, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("machine.toml");
    std::fs::write(&path, machine.to_toml()).map_err(|e| e.to_string())?;
    let opts = StackOptions {
        machine: path,
        work_dir: dir.path().to_path_buf(),
        ready_timeout: Duration::from_secs(120),
        env: vec![("RUST_LOG".into(), "warn".into())],
        driver_env: Vec::new(),
        pcid_args: Vec::new(),
        inherit_stderr: false,
    };
    let stack = Stack::start(bins, &opts).map_err(|e| e.to_string())?;
    let json = dir.path().join("report.json");
    let run = stack
        .run_shutdownd(args, &json, Duration::from_secs(300))
        .map_err(|e| e.to_string())?;
    let _ = stack.stop(Duration::from_secs(10));
    let report = run
        .report
        .ok_or_else(|| format!("shutdownd wrote no report: {}", run.stderr.trim()))?;
    if report.count("clean") != report.devices.len() {
        return Err(format!(
            "not every device ended clean: {:?}",
            report
                .devices
                .iter()
                .filter(|d| d.outcome != "clean")
                .map(|d| format!("{} {} {}", d.label(), d.outcome, d.detail))
                .collect::<Vec<_>>()
        ));
    }
    Ok(report)
}

/// Runs shutdownd against a scripted pcid (a thread here) that lists `n`
/// two-phase devices and answers every request immediately.
fn run_scripted(bins: &Binaries, n: usize, args: &[&str]) -> Result<ReportView, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sock = dir.path().join("pcid.sock");
    let listener = ControlListener::bind(&sock).map_err(|e| e.to_string())?;
    let pcid = std::thread::spawn(move || -> Result<(), String> {
        let (mut ch, _) = listener
            .accept(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let devices: Vec<DeviceInfo> = (0..n)
            .map(|i| DeviceInfo {
                address: PciAddress {
                    segment: 0,
                    bus: (i / 32 + 1) as u8,
                    device: (i % 32) as u8,
                    function: 0,
                },
                parent: None,
                driver: "scripted".into(),
                support: ShutdownSupport::TwoPhase,
                pid: 0,
                state: DriverState::Running,
            })
            .collect();
        loop {
            let reply = match ch.recv(Some(Duration::from_secs(30))) {
                Ok(ControlMessage::ListDevices { id }) => ControlMessage::Devices {
                    id,
                    devices: devices.clone(),
                },
                Ok(ControlMessage::Begin { id, address, .. }) => ControlMessage::BeginAck {
                    id,
                    address,
                    budget: Duration::ZERO,
                },
                Ok(ControlMessage::Finish { id, address, .. }) => ControlMessage::FinishAck {
                    id,
                    address,
                    outcome: FinishOutcome::Clean,
                    elapsed: Duration::ZERO,
                    detail: String::new(),
                },
                Ok(other) => return Err(format!("unexpected {other:?}")),
                // shutdownd closed the connection: done.
                Err(_) => return Ok(()),
            };
            ch.send(&reply).map_err(|e| e.to_string())?;
        }
    });
    let json = dir.path().join("report.json");
    let mut cmd = std::process::Command::new(bins.path("shutdownd"));
    cmd.arg("--control")
        .arg(&sock)
        .arg("--quiet")
        .args(args)
        .arg("--json")
        .arg(&json);
    let run = shutdown_tests::sim::stack::run_captured(
        cmd,
        "shutdownd",
        Duration::from_secs(60),
        Some(&json),
    )
    .map_err(|e| e.to_string())?;
    pcid.join()
        .map_err(|_| "scripted pcid panicked".to_string())??;
    let report = run
        .report
        .ok_or_else(|| format!("shutdownd wrote no report: {}", run.stderr.trim()))?;
    if report.count("clean") != n {
        return Err("not every scripted device ended clean".into());
    }
    Ok(report)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run(args: Args) -> Result<(), String> {
    let bins = Binaries::beside_current_exe().map_err(|e| e.to_string())?;
    if std::env::var_os("CARGO").is_some() {
        bins.build().map_err(|e| e.to_string())?;
    } else {
        bins.check().map_err(|e| e.to_string())?;
    }
    println!(
        "shutdown benchmark ({} cores available)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    if args.comparison {
        let n = 16;
        println!(
            "\n== two-phase vs sequential: {n} NVMe controllers, {} ms shutdown latency each",
            args.latency_ms
        );
        let machine = MachineSpec::nvme(n, args.latency_ms, None);
        let two = run_once(&bins, &machine, &[])?;
        println!("two-phase   total {:>10.1} ms", two.total_ms);
        let seq = run_once(&bins, &machine, &["--sequential"])?;
        println!("sequential  total {:>10.1} ms", seq.total_ms);
        println!(
            "ratio sequential / two-phase: {:.2}x (ideal {n}x); two-phase is {:.2}% above one device's latency",
            seq.total_ms / two.total_ms,
            (two.total_ms / args.latency_ms as f64 - 1.0) * 100.0
        );
    }

    if args.overhead {
        println!(
            "\n== protocol overhead: controllers with zero shutdown latency, median of {} runs",
            args.repeat
        );
        println!(
            "{:>8}  {:>12}  {:>14}  {:>12}  {:>14}",
            "devices", "two-phase ms", "per device ms", "sequential ms", "per device ms"
        );
        for &n in &args.sizes {
            let machine = MachineSpec::nvme(n, 0, None);
            let mut two = Vec::new();
            let mut seq = Vec::new();
            for _ in 0..args.repeat {
                two.push(run_once(&bins, &machine, &[])?.total_ms);
                seq.push(run_once(&bins, &machine, &["--sequential"])?.total_ms);
            }
            let (t, s) = (median(two), median(seq));
            println!(
                "{n:>8}  {t:>12.2}  {:>14.3}  {s:>12.2}  {:>14.3}",
                t / n as f64,
                s / n as f64
            );
        }
    }
    if args.overhead {
        println!(
            "\n== shutdownd alone: scripted pcid answering at once, median of {} runs",
            args.repeat
        );
        println!(
            "{:>8}  {:>12}  {:>14}  {:>12}  {:>14}",
            "devices", "two-phase ms", "per device ms", "sequential ms", "per device ms"
        );
        for &n in &args.sizes {
            let mut two = Vec::new();
            let mut seq = Vec::new();
            for _ in 0..args.repeat {
                two.push(run_scripted(&bins, n, &[])?.total_ms);
                seq.push(run_scripted(&bins, n, &["--sequential"])?.total_ms);
            }
            let (t, s) = (median(two), median(seq));
            println!(
                "{n:>8}  {t:>12.2}  {:>14.3}  {s:>12.2}  {:>14.3}",
                t / n as f64,
                s / n as f64
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shutdown bench: {e} (--help shows the usage)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shutdown bench: {e}");
            ExitCode::FAILURE
        }
    }
}
