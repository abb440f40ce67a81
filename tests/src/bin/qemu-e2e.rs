//! Boots the project's binaries in a Linux guest under QEMU against QEMU's
//! NVMe controllers and checks the shutdown report; see
//! `shutdown_tests::qemu::host`.
//!
//! `--kernel-driver` boots the same guest with the kernel's own nvme driver
//! bound to the same controllers instead, and times the kernel's power-off
//! (init's request to `reboot: Power down`, from the kernel log).
//! `--compare RUNS` alternates the two RUNS times each and prints the
//! medians side by side: the kernel's power-off against this stack's
//! shutdown phase (shutdownd's first `Begin` to last answer), both in the
//! same guest shape. Unless `--log` is given, the stack's daemons then log
//! at `warn` (the kernel logs nothing either while it shuts down).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shutdown_tests::qemu::cmdline::Mode;
use shutdown_tests::qemu::host::{self, E2eError, Options};

const USAGE: &str = "usage: qemu-e2e [--controllers N] [--sequential] [--json FILE] [--svg FILE] \
[--root-port | --no-root-port] [--probe | --kernel-driver | --compare RUNS] [--timeout SECS] \
[--memory MIB] [--cpus N] [--log FILTER] [--quiet] [-h|--help] [-V|--version]";

/// What the command line asks for besides the run's options.
#[derive(Debug, Default)]
struct Extra {
    /// `--compare RUNS`.
    compare: Option<usize>,
    /// `--log` was given.
    log_given: bool,
}

/// `Ok(false)`: `--help` or `--version` was answered.
fn parse_args(opts: &mut Options, extra: &mut Extra) -> Result<bool, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    use shutdown_tests::cli::{number, path, string, unexpected};
    let mut p = shutdown_tests::cli::lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("controllers") => opts.controllers = number(&mut p, "--controllers")?,
            Long("sequential") => opts.sequential = true,
            Long("json") => opts.json = Some(path(&mut p)?),
            Long("svg") => opts.svg = Some(path(&mut p)?),
            Long("root-port") => opts.root_port = true,
            Long("no-root-port") => opts.root_port = false,
            Long("probe") => opts.mode = Mode::Probe,
            Long("kernel-driver") => opts.mode = Mode::Kernel,
            Long("compare") => {
                let runs: usize = number(&mut p, "--compare")?;
                if runs == 0 {
                    return Err("--compare needs at least one run".to_string());
                }
                extra.compare = Some(runs);
            }
            Long("timeout") => opts.timeout = Duration::from_secs(number(&mut p, "--timeout")?),
            Long("memory") => opts.memory_mib = number(&mut p, "--memory")?,
            Long("cpus") => opts.cpus = number(&mut p, "--cpus")?,
            Long("log") => {
                opts.log = string(&mut p, "--log")?;
                extra.log_given = true;
            }
            Long("quiet") => opts.verbose = false,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(false);
            }
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("qemu-e2e"));
                return Ok(false);
            }
            other => return Err(unexpected(other)),
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut opts = Options::new(repo);
    let mut extra = Extra::default();
    match parse_args(&mut opts, &mut extra) {
        Ok(true) => {}
        Ok(false) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qemu-e2e: {e} (qemu-e2e --help shows the usage)");
            return ExitCode::from(2);
        }
    }
    if let Some(runs) = extra.compare {
        if !extra.log_given {
            opts.log = "warn".to_string();
        }
        return match compare(&opts, runs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qemu-e2e: FAIL: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match host::run(&opts) {
        Ok(result) => {
            let guest = |k: &str| {
                result
                    .console
                    .timing(k)
                    .map_or("-".to_string(), |v| format!("{v:.0} ms"))
            };
            if let Some(report) = &result.report {
                let participants = report
                    .devices
                    .iter()
                    .filter(|d| d.kind == "participant")
                    .count();
                println!(
                    "qemu-e2e: PASS: {} controller(s) and {participants} participant(s) shut down clean ({}), shutdown total {:.1} ms",
                    report.devices.len() - participants,
                    report.mode,
                    report.total_ms
                );
                for d in &report.devices {
                    println!(
                        "  {}  {}  {}  {}",
                        d.label(),
                        d.driver,
                        d.protocol,
                        d.outcome
                    );
                }
            } else if opts.mode == Mode::Kernel {
                println!(
                    "qemu-e2e: PASS: the kernel's nvme driver drove {} controller(s); its power-off \
                     (request to `reboot: Power down`) took {}",
                    result.console.kernel_nvme.len(),
                    result
                        .console
                        .kernel_poweroff_ms()
                        .map_or("-".to_string(), |v| format!("{v:.1} ms"))
                );
            } else {
                println!(
                    "qemu-e2e: PASS: probed {} controller(s)",
                    result.console.probes.len()
                );
            }
            println!(
                "qemu-e2e: boot to power-off {:.0} ms (QEMU wall time); shutdownd in guest {}; guest init to pcid ready {}",
                result.qemu_ms,
                guest("shutdownd_ms"),
                guest("pcid_ready_ms"),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qemu-e2e: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One run of each kind.
#[derive(Debug, Clone, serde::Serialize)]
struct Pair {
    /// The kernel's power-off with its nvme driver bound (ms).
    kernel_poweroff_ms: f64,
    /// This stack's shutdown phase: the report's total (ms).
    stack_total_ms: f64,
    /// The guest's shutdownd run, process start to exit (ms).
    stack_shutdownd_ms: Option<f64>,
    /// The kernel's power-off after the stack (ms).
    stack_kernel_poweroff_ms: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.1}–{hi:.1}")
}

/// `--compare RUNS`: the kernel's driver and this stack, alternately, in
/// the same guest shape; prints each run and the medians.
fn compare(opts: &Options, runs: usize) -> Result<(), E2eError> {
    let mut pairs = Vec::new();
    for run in 1..=runs {
        let mut kernel = opts.clone();
        kernel.mode = Mode::Kernel;
        kernel.json = None;
        kernel.svg = None;
        let k = host::run(&kernel)?;
        let kernel_ms = k.console.kernel_poweroff_ms().ok_or_else(|| {
            E2eError::Check("kernel mode: no power-off time in the kernel log".to_string())
        })?;
        let mut stack = opts.clone();
        stack.mode = Mode::Full;
        stack.json = None;
        stack.svg = None;
        let s = host::run(&stack)?;
        let report = s
            .report
            .as_ref()
            .ok_or_else(|| E2eError::Check("the stack's run gave no report".to_string()))?;
        let pair = Pair {
            kernel_poweroff_ms: kernel_ms,
            stack_total_ms: report.total_ms,
            stack_shutdownd_ms: s.console.timing("shutdownd_ms"),
            stack_kernel_poweroff_ms: s.console.kernel_poweroff_ms(),
        };
        println!(
            "qemu-e2e: run {run}/{runs}: kernel nvme driver {:.1} ms; this stack {:.1} ms \
             (shutdownd {}, the kernel's power-off after it {})",
            pair.kernel_poweroff_ms,
            pair.stack_total_ms,
            pair.stack_shutdownd_ms
                .map_or("-".to_string(), |v| format!("{v:.0} ms")),
            pair.stack_kernel_poweroff_ms
                .map_or("-".to_string(), |v| format!("{v:.1} ms")),
        );
        pairs.push(pair);
    }
    let kernel: Vec<f64> = pairs.iter().map(|p| p.kernel_poweroff_ms).collect();
    let stack: Vec<f64> = pairs.iter().map(|p| p.stack_total_ms).collect();
    let shutdownd: Vec<f64> = pairs.iter().filter_map(|p| p.stack_shutdownd_ms).collect();
    let after: Vec<f64> = pairs
        .iter()
        .filter_map(|p| p.stack_kernel_poweroff_ms)
        .collect();
    let (km, sm) = (median(kernel.clone()), median(stack.clone()));
    println!(
        "qemu-e2e: {} controller(s), {runs} run(s) each, median [range]: kernel nvme driver \
         power-off {km:.1} ms [{}]; this stack's shutdown phase ({}) {sm:.1} ms [{}] = {:.2}x \
         the kernel's; shutdownd process {:.0} ms; the kernel's power-off after the stack \
         {:.1} ms",
        opts.controllers,
        range(&kernel),
        if opts.sequential {
            "sequential"
        } else {
            "two-phase"
        },
        range(&stack),
        sm / km,
        median(shutdownd),
        median(after),
    );
    if let Some(path) = &opts.json {
        let value = serde_json::json!({
            "controllers": opts.controllers,
            "mode": if opts.sequential { "sequential" } else { "two-phase" },
            "runs": pairs,
            "median_kernel_poweroff_ms": km,
            "median_stack_total_ms": sm,
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| E2eError::Setup(format!("encode: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|source| E2eError::Io {
            what: format!("write {}", path.display()),
            source,
        })?;
    }
    Ok(())
}
