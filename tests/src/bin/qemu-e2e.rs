//! Boots the project's binaries in a Linux guest under QEMU against QEMU's
//! NVMe controllers and checks the shutdown report; see
//! `shutdown_tests::qemu::host`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shutdown_tests::qemu::cmdline::Mode;
use shutdown_tests::qemu::host::{self, E2eError, Options};

const USAGE: &str = "usage: qemu-e2e [--controllers N] [--sequential] [--json FILE] [--svg FILE] \
[--root-port | --no-root-port] [--probe] [--timeout SECS] [--memory MIB] [--cpus N] \
[--log FILTER] [--quiet]";

fn parse_args(opts: &mut Options) -> Result<(), E2eError> {
    let mut args = std::env::args().skip(1);
    let usage = |msg: String| E2eError::Usage(format!("{msg}\n{USAGE}"));
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--controllers" => {
                let v = value("--controllers")?;
                opts.controllers = v
                    .parse()
                    .map_err(|_| usage(format!("--controllers: {v:?} is not a count")))?;
            }
            "--sequential" => opts.sequential = true,
            "--json" => opts.json = Some(PathBuf::from(value("--json")?)),
            "--svg" => opts.svg = Some(PathBuf::from(value("--svg")?)),
            "--root-port" => opts.root_port = true,
            "--no-root-port" => opts.root_port = false,
            "--probe" => opts.mode = Mode::Probe,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| usage(format!("--timeout: {v:?} is not seconds")))?;
                opts.timeout = Duration::from_secs(secs);
            }
            "--memory" => {
                let v = value("--memory")?;
                opts.memory_mib = v
                    .parse()
                    .map_err(|_| usage(format!("--memory: {v:?} is not MiB")))?;
            }
            "--cpus" => {
                let v = value("--cpus")?;
                opts.cpus = v
                    .parse()
                    .map_err(|_| usage(format!("--cpus: {v:?} is not a count")))?;
            }
            "--log" => opts.log = value("--log")?,
            "--quiet" => opts.verbose = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut opts = Options::new(repo);
    if let Err(e) = parse_args(&mut opts) {
        eprintln!("qemu-e2e: {e}");
        return ExitCode::from(2);
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
                println!(
                    "qemu-e2e: PASS: {} controller(s) shut down clean ({}), shutdown total {:.1} ms",
                    report.devices.len(),
                    report.mode,
                    report.total_ms
                );
                for d in &report.devices {
                    println!(
                        "  {}  {}  {}  {}",
                        d.address, d.driver, d.protocol, d.outcome
                    );
                }
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
