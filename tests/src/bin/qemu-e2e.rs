//! Boots the project's binaries in a Linux guest under QEMU against QEMU's
//! NVMe controllers and checks the shutdown report; see
//! `shutdown_tests::qemu::host`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shutdown_tests::qemu::cmdline::Mode;
use shutdown_tests::qemu::host::{self, Options};

const USAGE: &str = "usage: qemu-e2e [--controllers N] [--sequential] [--json FILE] [--svg FILE] \
[--root-port | --no-root-port] [--probe] [--timeout SECS] [--memory MIB] [--cpus N] \
[--log FILTER] [--quiet] [-h|--help] [-V|--version]";

/// `Ok(false)`: `--help` or `--version` was answered.
fn parse_args(opts: &mut Options) -> Result<bool, String> {
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
            Long("timeout") => opts.timeout = Duration::from_secs(number(&mut p, "--timeout")?),
            Long("memory") => opts.memory_mib = number(&mut p, "--memory")?,
            Long("cpus") => opts.cpus = number(&mut p, "--cpus")?,
            Long("log") => opts.log = string(&mut p, "--log")?,
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
    match parse_args(&mut opts) {
        Ok(true) => {}
        Ok(false) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qemu-e2e: {e} (qemu-e2e --help shows the usage)");
            return ExitCode::from(2);
        }
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
