//! `shutdownd`: shut down every device pcid knows, two-phase, within a deadline.
//!
//! ```text
//! shutdownd --control PATH [--kind poweroff|reboot] [--sequential] [--json FILE]
//!           [--deadline-ms MS] [--begin-timeout-ms MS] [--one-phase-timeout-ms MS]
//!           [--quiet] [-r|--reboot] [--no-power-off]
//! ```
//!
//! On Redox `--control` defaults to `/scheme/pci/control`, and after the
//! report shutdownd powers off (or, with `--kind reboot` / `-r`, reboots)
//! through `/scheme/sys/kstop` as Redox's `shutdown` does, unless
//! `--no-power-off` is given. Elsewhere it never powers anything off.
//!
//! The global deadline (`--deadline-ms`, default 120 s) counts from shutdownd's
//! start: connecting to pcid and listing the devices are part of it. shutdownd
//! waits for nothing past it: the moment it sees the deadline passed, every
//! device without an outcome gets `no-response` (the report's
//! `deadline_reached_ms`).
//!
//! Progress lines and the report table go to standard output; logs go to
//! standard error (`RUST_LOG`, default `warn`).
//!
//! The exit status is [`shutdownd::EXIT_STATUS`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pcid_interface::protocol::ShutdownKind;
use shutdownd::{list_devices, run_shutdown_since, Config, Mode};

mod port;
#[cfg(target_os = "redox")]
mod redox;

/// How long pcid gets to answer `ListDevices`.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: shutdownd --control PATH [--kind poweroff|reboot] [--sequential] \
[--json FILE] [--deadline-ms MS] [--begin-timeout-ms MS] [--one-phase-timeout-ms MS] [--quiet] \
[-r|--reboot] [--no-power-off]";

struct Args {
    control: PathBuf,
    json: Option<PathBuf>,
    quiet: bool,
    config: Config,
    /// Redox: skip the final kstop request.
    #[cfg_attr(not(target_os = "redox"), allow(dead_code))]
    no_power_off: bool,
}

fn parse_ms(flag: &str, value: Option<String>) -> Result<Duration, String> {
    let v = value.ok_or_else(|| format!("{flag} needs a value in milliseconds"))?;
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{flag}: `{v}` is not a whole number of milliseconds"))
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut it = std::env::args().skip(1);
    let mut control = None;
    let mut json = None;
    let mut quiet = false;
    let mut no_power_off = false;
    let mut config = Config::default();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--control" => {
                control = Some(PathBuf::from(it.next().ok_or("--control needs a path")?))
            }
            "--json" => json = Some(PathBuf::from(it.next().ok_or("--json needs a file name")?)),
            "--sequential" => config.mode = Mode::Sequential,
            "--quiet" => quiet = true,
            "-r" | "--reboot" => config.kind = ShutdownKind::Reboot,
            "--no-power-off" => no_power_off = true,
            "--kind" => {
                config.kind = match it.next().as_deref() {
                    Some("poweroff") => ShutdownKind::Poweroff,
                    Some("reboot") => ShutdownKind::Reboot,
                    other => {
                        return Err(format!(
                            "--kind must be poweroff or reboot, not {}",
                            other.unwrap_or("nothing")
                        ))
                    }
                }
            }
            "--deadline-ms" => config.global_deadline = parse_ms(&a, it.next())?,
            "--begin-timeout-ms" => config.begin_timeout = parse_ms(&a, it.next())?,
            "--one-phase-timeout-ms" => config.one_phase_timeout = parse_ms(&a, it.next())?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    #[cfg(target_os = "redox")]
    let control = control.or_else(|| Some(redox::default_control()));
    let control = control.ok_or("--control PATH is required (pcid's control socket)")?;
    Ok(Some(Args {
        control,
        json,
        quiet,
        config,
        no_power_off,
    }))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}\n\n{}", shutdownd::EXIT_STATUS);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("shutdownd: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    #[cfg(target_os = "redox")]
    let (kind, no_power_off) = (args.config.kind, args.no_power_off);
    let code = shut_down_devices(args);
    #[cfg(target_os = "redox")]
    if !no_power_off {
        // Whatever happened to the devices, the machine goes down now.
        let e = redox::power_off(kind);
        eprintln!("shutdownd: {}: {e}", redox::KSTOP);
        return ExitCode::from(2);
    }
    code
}

/// Runs the protocol and prints the report; returns the exit status.
///
/// The global deadline counts from here: connecting to pcid and listing the
/// devices are part of it.
fn shut_down_devices(args: Args) -> ExitCode {
    let started = Instant::now();
    let mut port = match port::connect(&args.control) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shutdownd: cannot reach pcid: {e}");
            return ExitCode::from(2);
        }
    };
    let devices = match list_devices(&mut port, LIST_TIMEOUT.min(args.config.global_deadline)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return ExitCode::from(2);
        }
    };
    let mode = args.config.mode;
    if !args.quiet {
        println!(
            "shutdownd: {} device(s), {} {}, global deadline {} ms",
            devices.len(),
            mode.as_str(),
            shutdownd::scheduler::kind_str(args.config.kind),
            args.config.global_deadline.as_millis()
        );
    }
    let quiet = args.quiet;
    let mut progress = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let report = match run_shutdown_since(&mut port, devices, args.config, started, &mut progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        let written = report
            .to_json()
            .map_err(|e| e.to_string())
            .and_then(|j| std::fs::write(path, j + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("shutdownd: cannot write report to {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
