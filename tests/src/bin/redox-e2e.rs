//! Builds Redox from pinned sources, boots it under QEMU with this project's
//! pcid, nvmed and shutdownd, and checks the shutdown; see
//! `shutdown_tests::redox`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shutdown_tests::redox::{self, Options, RedoxError};

const USAGE: &str =
    "usage: redox-e2e [--controllers N] [--sequential] [--json FILE] [--svg FILE] [--keep] \
[--timeout SECS] [--jobs N] [--log FILTER] [--verbose] [--redoxfs] [-h|--help] [-V|--version]

Builds a minimal Redox from the sources pinned in tests/redox/pins.toml (cached in
REDOX_E2E_CACHE, default ~/.cache/pcid-shutdown/redox-e2e), boots it under QEMU with
N NVMe controllers driven by this project's nvmed under its pcid, runs shutdownd and
checks the result. With --redoxfs it runs the RedoxFS scenario instead: RedoxFS on the
first controller, a file written just before shutdown, powered off this project's way
and then Redox's way (Redox's nvmed, kstop only), both checked from the host. Sources
come from REDOX_SRC (default ../shared/redox-src beside the
checkout) or are downloaded. If sources or toolchains cannot be obtained it prints
`REDOX E2E DID NOT RUN: <reason>` and exits 0 (2 with REDOX_E2E_REQUIRED=1).";

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
            Long("keep") => opts.keep = true,
            Long("timeout") => opts.timeout = Duration::from_secs(number(&mut p, "--timeout")?),
            Long("jobs") => {
                opts.jobs = Some(number::<usize>(&mut p, "--jobs")?)
                    .filter(|&n| n > 0)
                    .ok_or("--jobs must be a positive count")?
            }
            Long("log") => opts.log = string(&mut p, "--log")?,
            Long("verbose") => opts.verbose = true,
            Long("redoxfs") => opts.redoxfs = true,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(false);
            }
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("redox-e2e"));
                return Ok(false);
            }
            other => return Err(unexpected(other)),
        }
    }
    Ok(true)
}

fn main() -> ExitCode {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut opts = Options::new(repo);
    match parse_args(&mut opts) {
        Ok(true) => {}
        Ok(false) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redox-e2e: {e} (redox-e2e --help shows the usage)");
            return ExitCode::from(2);
        }
    }
    match redox::run(&opts) {
        Ok(result) if result.outcome.is_none() => {
            println!(
                "redox-e2e: PASS: RedoxFS on NVMe, a file written just before shutdown, {} controller(s)",
                opts.controllers
            );
            for w in &result.fs {
                println!(
                    "  {}: file in the image: {}; trace: {} write(s) to the file system, Flush per controller {:?}, {} of {} controller(s) got CC.SHN=01b; boot to power-off {:.0} ms",
                    w.way.label(),
                    if w.file_found { "yes" } else { "no" },
                    w.fs_writes,
                    w.flushes,
                    w.notified,
                    opts.controllers,
                    w.qemu_ms
                );
                if let Some(p) = &w.participant {
                    println!(
                        "    participant {} ({}): {} at {} ms — {}",
                        p.driver,
                        p.protocol,
                        p.outcome,
                        p.done_ms.map_or_else(|| "-".to_string(), |t| t.to_string()),
                        p.detail
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Ok(result) => {
            let Some(outcome) = &result.outcome else {
                return ExitCode::FAILURE;
            };
            let r = &outcome.report;
            println!(
                "redox-e2e: PASS: {} NVMe controller(s) shut down clean on Redox ({}), shutdown total {:.1} ms, boot to power-off {:.0} ms",
                opts.controllers, r.mode, r.total_ms, result.qemu_ms
            );
            for d in &r.devices {
                println!(
                    "  {}  {}  {}  {}",
                    d.label(),
                    d.driver,
                    d.protocol,
                    d.outcome
                );
            }
            println!(
                "redox-e2e: QEMU's trace: {} of {} controllers (the canary included) got CC.SHN=01b and started their shutdown",
                outcome.trace.notified(),
                opts.controllers + 1
            );
            ExitCode::SUCCESS
        }
        Err(RedoxError::Unavailable(reason)) => {
            println!("REDOX E2E DID NOT RUN: {reason}");
            if std::env::var("REDOX_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ RedoxError::Usage(_)) => {
            eprintln!("redox-e2e: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("redox-e2e: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
