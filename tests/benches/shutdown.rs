//! Benchmark: the whole stack (real pcid, nvmed test build, shutdownd
//! processes) on simulated machines, two-phase and sequential side by side
//! in one run, at several sizes and latencies.
//!
//! ```text
//! cargo bench -p shutdown_tests --bench shutdown -- [--sizes 16,64,256] [--latencies 300,0]
//!     [--repeat N] [--sequential-repeat N] [--long-ms MS] [--json FILE]
//!     [--skip-scale] [--skip-long] [--skip-scripted]
//! ```
//!
//! 1. **Scale** (`--sizes` × `--latencies`, defaults 16, 64, 256 × 300 ms and
//!    0 ms): N NVMe controllers whose shutdown takes the latency, shut down
//!    two-phase `--repeat` times (default 3) and `--sequential`
//!    `--sequential-repeat` times (default 1: 256 × 300 ms one at a time is
//!    77 s), each run on a freshly started pcid. Medians over the runs.
//! 2. **Long wait** (`--long-ms`, default 4500): 16 controllers taking that
//!    long, two-phase and sequential once each: the speed-up, and the CPU the
//!    stack burns while the controllers take their time.
//! 3. **shutdownd alone**: shutdownd against a scripted pcid in this process
//!    that answers every request at once on a real control socket (median of
//!    `--repeat`), i.e. shutdownd's own cost plus the socket round trips.
//!
//! Figures per run:
//! * **total**: shutdownd's `total_ms` (first `Begin` to last outcome), and
//!   **total / slowest**: total over the controllers' own latency (the time
//!   of the slowest device, the ideal two-phase total);
//! * **detection lag**, per device: its `FinishAck` time minus its `Begin`
//!   time minus its latency — from the earliest moment the controller
//!   could have finished to shutdownd knowing it (an upper bound: the
//!   controller started no earlier than `Begin` was sent); p50 and p99 over
//!   the devices;
//! * **CPU**: CPU time of pcid, the drivers and shutdownd from shutdownd's
//!   start until the last driver exited, teardown included
//!   ([`shutdown_tests::sim::measure`]); as a share of one core per
//!   controller: CPU / (total × devices);
//! * **pcid threads** (most seen: when ready and after the shutdown) and
//!   **peak RSS** of pcid (`VmHWM` after the shutdown), of the largest
//!   nvmed (when ready) and of shutdownd (`getrusage` of a wrapper).
//!
//! With `--json FILE` every run's figures are written there as well.
//! Benchmarks measure; nothing here passes or fails on a time. The binaries
//! are built first when run by cargo (`cargo bench` builds the benchmark
//! only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{
    ControlMessage, DeviceInfo, DriverState, FinishOutcome, ShutdownSupport,
};
use pcid_interface::transport::ControlListener;
use serde::Serialize;
use shutdown_tests::cli::lexopt;

use shutdown_tests::sim::machine::MachineSpec;
use shutdown_tests::sim::measure::{self, MEASURE_CHILD};
use shutdown_tests::sim::stack::{Binaries, Report, Stack, StackOptions};
use shutdownd::ms;

struct Args {
    sizes: Vec<usize>,
    latencies: Vec<u64>,
    repeat: usize,
    sequential_repeat: usize,
    long_ms: u64,
    json: Option<PathBuf>,
    scale: bool,
    long: bool,
    scripted: bool,
}

const USAGE: &str = "usage: cargo bench -p shutdown_tests --bench shutdown -- \
[--sizes N,N,...] [--latencies MS,MS,...] [--repeat N] [--sequential-repeat N] [--long-ms MS] \
[--json FILE] [--skip-scale] [--skip-long] [--skip-scripted] [-h|--help] [-V|--version]";

fn numbers<T: std::str::FromStr>(flag: &str, v: String) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|s| s.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{flag} needs numbers like 16,64,256"))
}

/// `Ok(None)`: `--help` or `--version` was answered.
fn parse_args(mut p: lexopt::Parser) -> Result<Option<Args>, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    use shutdown_tests::cli::{number, path, string, unexpected};
    let mut a = Args {
        sizes: vec![16, 64, 256],
        latencies: vec![300, 0],
        repeat: 3,
        sequential_repeat: 1,
        long_ms: 4500,
        json: None,
        scale: true,
        long: true,
        scripted: true,
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            // cargo bench passes --bench to every benchmark binary.
            Long("bench") => {}
            Long("sizes") => a.sizes = numbers("--sizes", string(&mut p, "--sizes")?)?,
            Long("latencies") => {
                a.latencies = numbers("--latencies", string(&mut p, "--latencies")?)?
            }
            Long("repeat") => a.repeat = number(&mut p, "--repeat")?,
            Long("sequential-repeat") => {
                a.sequential_repeat = number(&mut p, "--sequential-repeat")?
            }
            Long("long-ms") => a.long_ms = number(&mut p, "--long-ms")?,
            Long("json") => a.json = Some(path(&mut p)?),
            Long("skip-scale") => a.scale = false,
            Long("skip-long") => a.long = false,
            Long("skip-scripted") => a.scripted = false,
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
        || a.sizes.is_empty()
        || a.sizes
            .iter()
            .any(|&n| n == 0 || n > MachineSpec::MAX_DEVICES)
    {
        return Err(format!(
            "--repeat and --sizes must be positive (sizes ≤ {})",
            MachineSpec::MAX_DEVICES
        ));
    }
    Ok(Some(a))
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
struct Run {
    devices: usize,
    latency_ms: u64,
    mode: &'static str,
    total_ms: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    cpu_ms: f64,
    cpu_pcid_ms: f64,
    cpu_drivers_ms: f64,
    cpu_shutdownd_ms: f64,
    pcid_threads: u64,
    pcid_rss_kb: u64,
    nvmed_rss_kb: u64,
    shutdownd_rss_kb: u64,
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Starts pcid on `machine`, runs shutdownd with `args`, waits for every
/// driver to exit, stops pcid; returns the run's figures.
fn run_once(
    bins: &Binaries,
    machine: &MachineSpec,
    latency_ms: u64,
    sequential: bool,
) -> Result<Run, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("machine.toml");
    machine.write(&path).map_err(|e| e.to_string())?;
    let opts = StackOptions {
        machine: path,
        work_dir: dir.path().to_path_buf(),
        ready_timeout: Duration::from_secs(300),
        env: vec![("RUST_LOG".into(), "warn".into())],
        driver_env: Vec::new(),
        pcid_args: Vec::new(),
        inherit_stderr: false,
    };
    let children_before = measure::children_cpu();
    let stack = Stack::start(bins, &opts).map_err(|e| e.to_string())?;
    let pcid = stack.pcid_pid().ok_or("pcid has no pid")?;
    let drivers = measure::children_of(pcid);
    let pcid_at_ready = measure::task_cpu(pcid).ok_or("pcid is gone")?;
    let drivers_at_ready: Duration = drivers.iter().filter_map(|&p| measure::task_cpu(p)).sum();
    let nvmed_rss_kb = drivers
        .iter()
        .filter_map(|&p| measure::status_kb(p, "VmHWM"))
        .max()
        .unwrap_or(0);
    let mut pcid_threads = measure::threads(pcid).unwrap_or(0);

    let json = dir.path().join("report.json");
    let usage_file = dir.path().join("shutdownd.usage");
    let mut cmd = measure::measured_command(&bins.path("shutdownd"), &usage_file)
        .map_err(|e| e.to_string())?;
    cmd.arg("--control").arg(stack.control()).arg("--quiet");
    if sequential {
        cmd.arg("--sequential");
    }
    cmd.arg("--json").arg(&json);
    let around_before = measure::children_cpu();
    let run = shutdown_tests::sim::stack::run_captured(
        cmd,
        "shutdownd",
        Duration::from_secs(600),
        Some(&json),
    )
    .map_err(|e| e.to_string())?;
    let around = measure::children_cpu().saturating_sub(around_before);
    let usage = measure::read_usage(&usage_file)
        .ok_or_else(|| format!("no usage from the wrapper: {}", run.stderr.trim()))?;
    // Every driver exits after its FinishAck; its teardown counts too.
    let end = Instant::now() + Duration::from_secs(30);
    while !measure::children_of(pcid).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pcid_cpu = measure::task_cpu(pcid)
        .ok_or("pcid is gone")?
        .saturating_sub(pcid_at_ready);
    pcid_threads = pcid_threads.max(measure::threads(pcid).unwrap_or(0));
    let pcid_rss_kb = measure::status_kb(pcid, "VmHWM").unwrap_or(0);
    let _ = stack.stop(Duration::from_secs(10));
    // pcid and (through it) every driver have been waited for by now.
    let lifetime = measure::children_cpu().saturating_sub(children_before);
    let stack_after_ready = lifetime
        .saturating_sub(around)
        .saturating_sub(pcid_at_ready + drivers_at_ready);
    let drivers_cpu = stack_after_ready.saturating_sub(pcid_cpu);

    let report = run
        .report
        .ok_or_else(|| format!("shutdownd wrote no report: {}", run.stderr.trim()))?;
    check_clean(&report)?;
    let lags: Vec<f64> = report
        .devices
        .iter()
        .map(|d| {
            d.finish_ack_ms.unwrap_or(f64::NAN)
                - d.begin_sent_ms.unwrap_or(f64::NAN)
                - latency_ms as f64
        })
        .collect();
    Ok(Run {
        devices: report.devices.len(),
        latency_ms,
        mode: if sequential {
            "sequential"
        } else {
            "two-phase"
        },
        total_ms: report.total_ms,
        lag_p50_ms: quantile(&lags, 0.5),
        lag_p99_ms: quantile(&lags, 0.99),
        cpu_ms: ms(stack_after_ready + usage.cpu),
        cpu_pcid_ms: ms(pcid_cpu),
        cpu_drivers_ms: ms(drivers_cpu),
        cpu_shutdownd_ms: ms(usage.cpu),
        pcid_threads,
        pcid_rss_kb,
        nvmed_rss_kb,
        shutdownd_rss_kb: usage.max_rss_kb,
    })
}

fn check_clean(report: &Report) -> Result<(), String> {
    if report.count("clean") == report.devices.len() {
        return Ok(());
    }
    Err(format!(
        "not every device ended clean: {:?}",
        report
            .devices
            .iter()
            .filter(|d| d.outcome != "clean")
            .map(|d| format!("{} {} {}", d.label(), d.outcome, d.detail))
            .collect::<Vec<_>>()
    ))
}

/// Medians of several runs of one configuration.
struct Row<'a> {
    runs: &'a [Run],
}

impl Row<'_> {
    fn med(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    fn max_u(&self, f: impl Fn(&Run) -> u64) -> u64 {
        self.runs.iter().map(f).max().unwrap_or(0)
    }
}

const HEADER: &str = "devices  lat ms  mode        runs   total ms  ×slowest  lag p50  lag p99    CPU ms  (pcid/drivers/shutdownd ms)  %core/ctrl  pcid thr  pcid RSS  nvmed RSS  shutdownd RSS";

fn print_row(runs: &[Run]) {
    let Some(first) = runs.first() else { return };
    let r = Row { runs };
    let total = r.med(|x| x.total_ms);
    let ratio = if first.latency_ms > 0 {
        format!("{:.3}", total / first.latency_ms as f64)
    } else {
        "-".into()
    };
    let cpu = r.med(|x| x.cpu_ms);
    let share = cpu / (total * first.devices as f64) * 100.0;
    println!(
        "{:>7}  {:>6}  {:<10}  {:>4}  {:>9.1}  {:>8}  {:>7.1}  {:>7.1}  {:>8.1}  ({:>6.1} / {:>7.1} / {:>5.1})  {:>10.3}  {:>8}  {:>6.1} MiB  {:>5.1} MiB  {:>9.1} MiB",
        first.devices,
        first.latency_ms,
        first.mode,
        runs.len(),
        total,
        ratio,
        r.med(|x| x.lag_p50_ms),
        r.med(|x| x.lag_p99_ms),
        cpu,
        r.med(|x| x.cpu_pcid_ms),
        r.med(|x| x.cpu_drivers_ms),
        r.med(|x| x.cpu_shutdownd_ms),
        share,
        r.max_u(|x| x.pcid_threads),
        r.max_u(|x| x.pcid_rss_kb) as f64 / 1024.0,
        r.max_u(|x| x.nvmed_rss_kb) as f64 / 1024.0,
        r.max_u(|x| x.shutdownd_rss_kb) as f64 / 1024.0,
    );
}

fn repeat_runs(
    bins: &Binaries,
    n: usize,
    latency_ms: u64,
    sequential: bool,
    times: usize,
    all: &mut Vec<Run>,
) -> Result<Vec<Run>, String> {
    let machine = MachineSpec::nvme(n, latency_ms, None);
    let mut runs = Vec::new();
    for _ in 0..times {
        let run = run_once(bins, &machine, latency_ms, sequential)?;
        all.push(run.clone());
        runs.push(run);
    }
    print_row(&runs);
    Ok(runs)
}

fn speedup(two: &[Run], seq: &[Run]) {
    let t = median(&two.iter().map(|r| r.total_ms).collect::<Vec<_>>());
    let s = median(&seq.iter().map(|r| r.total_ms).collect::<Vec<_>>());
    if let Some(first) = two.first() {
        println!(
            "{:>7}  {:>6}  sequential / two-phase: {:.2}x",
            first.devices,
            first.latency_ms,
            s / t
        );
    }
}

/// Runs shutdownd against a scripted pcid (a thread here) that lists `n`
/// two-phase devices and answers every request immediately.
fn run_scripted(bins: &Binaries, n: usize, args: &[&str]) -> Result<Report, String> {
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

fn write_json(path: &Path, runs: &[Run]) -> Result<(), String> {
    let text = serde_json::to_string_pretty(runs).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn run(args: Args) -> Result<(), String> {
    let bins = Binaries::beside_current_exe().map_err(|e| e.to_string())?;
    if std::env::var_os("CARGO").is_some() {
        bins.build().map_err(|e| e.to_string())?;
    } else {
        bins.check().map_err(|e| e.to_string())?;
    }
    println!(
        "shutdown benchmark ({} cores available; medians; RSS and threads: the most seen)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut all = Vec::new();
    if args.scale {
        println!(
            "\n== scale: two-phase ×{} runs, sequential ×{} (lag: FinishAck − Begin − latency, per device)",
            args.repeat, args.sequential_repeat
        );
        println!("{HEADER}");
        for &latency in &args.latencies {
            for &n in &args.sizes {
                let two = repeat_runs(&bins, n, latency, false, args.repeat, &mut all)?;
                if args.sequential_repeat > 0 {
                    let seq =
                        repeat_runs(&bins, n, latency, true, args.sequential_repeat, &mut all)?;
                    speedup(&two, &seq);
                }
            }
        }
    }
    if args.long {
        let n = 16;
        println!(
            "\n== long wait: {n} controllers × {} ms, one run each",
            args.long_ms
        );
        println!("{HEADER}");
        let two = repeat_runs(&bins, n, args.long_ms, false, 1, &mut all)?;
        let seq = repeat_runs(&bins, n, args.long_ms, true, 1, &mut all)?;
        speedup(&two, &seq);
    }
    if let Some(path) = &args.json {
        write_json(path, &all)?;
    }
    if args.scripted {
        println!(
            "\n== shutdownd alone: scripted pcid answering at once, median of {} runs",
            args.repeat
        );
        println!(
            "{:>7}  {:>12}  {:>14}  {:>13}  {:>14}",
            "devices", "two-phase ms", "per device ms", "sequential ms", "per device ms"
        );
        for &n in &args.sizes {
            let mut two = Vec::new();
            let mut seq = Vec::new();
            for _ in 0..args.repeat {
                two.push(run_scripted(&bins, n, &[])?.total_ms);
                seq.push(run_scripted(&bins, n, &["--sequential"])?.total_ms);
            }
            let (t, s) = (median(&two), median(&seq));
            println!(
                "{n:>7}  {t:>12.2}  {:>14.3}  {s:>13.2}  {:>14.3}",
                t / n as f64,
                s / n as f64
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // The wrapper that measures shutdownd is this binary too.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(MEASURE_CHILD) {
        return measure::measure_child_main(&argv[1..]);
    }
    let args = match parse_args(lexopt::Parser::from_env()) {
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
