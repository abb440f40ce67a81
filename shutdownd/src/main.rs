//! `shutdownd`: shut down every device pcid knows, two-phase, within a deadline.
//!
//! ```text
//! shutdownd --control PATH [--kind poweroff|reboot] [--sequential] [--json FILE|-]
//!           [--deadline-ms MS] [--begin-timeout-ms MS] [--one-phase-timeout-ms MS]
//!           [--svg FILE] [--quiet] [-r|--reboot] [--no-power-off]
//! shutdownd report [--svg FILE] REPORT.json   (a saved report: table, picture)
//! shutdown [-h|--help] [-r|--reboot]          (the same binary under that name)
//! ```
//!
//! `--svg FILE` draws the report as a timeline ([`shutdownd::svg`]);
//! `shutdownd report` reads a JSON report saved with `--json` (on this or
//! another machine), prints its table and, with `--svg`, draws it.
//!
//! Run under the name `shutdown` the binary is a drop-in for Redox's
//! `shutdown`: same flags, unknown arguments ignored with a warning, global
//! deadline 30 s unless `--deadline-ms` says otherwise, and Redox's root file
//! system (scheme `file`) unmounted first when it is mounted (see
//! [`shutdownd::cli`]).
//!
//! Participants: those registered with pcid (PROTOCOL.md §14) are listed
//! with `ListParticipants` and ordered before the devices they depend on;
//! `--unmount SCHEME[=PROVIDERS]` adds a file system that shutdownd unmounts
//! itself through the kernel ([`shutdownd::local`]; Redox only).
//!
//! On Redox `--control` defaults to `/scheme/pci/control`, and after the
//! report shutdownd powers off (or, with `--kind reboot` / `-r`, reboots)
//! through `/scheme/sys/kstop` as Redox's `shutdown` does, unless
//! `--no-power-off` is given — also when pcid cannot be reached or does not
//! answer. Elsewhere it never powers anything off.
//!
//! The global deadline (`--deadline-ms`, default 120 s) counts from shutdownd's
//! start: connecting to pcid and listing the devices are part of it. shutdownd
//! waits for nothing past it: the moment it sees the deadline passed, every
//! device without an outcome gets `no-response` (the report's
//! `deadline_reached_ms`). The protocol runs on a worker thread; if it has no
//! result one second after the global deadline (pcid never answers, not even
//! an open of its scheme), shutdownd says so, gives up on it and goes on (on
//! Redox: to kstop).
//!
//! Progress lines and the report table go to standard output; logs go to
//! standard error (`RUST_LOG`, default `warn`).
//!
//! The exit status is [`shutdownd::EXIT_STATUS`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shutdownd::cli::{self, Flavor, Invocation, Parsed};
use shutdownd::local::{LocalParticipants, Router, SchemeRegistry, Unmount};
use shutdownd::{list_devices, list_participants, run_plan_with_clock, Plan};

mod port;
#[cfg(target_os = "redox")]
mod redox;

/// How long pcid gets to answer `ListDevices`.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after the global deadline the main thread waits for the
/// protocol before it gives up on it (and, on Redox, powers off anyway).
const WATCHDOG_GRACE: Duration = Duration::from_secs(1);

/// What runs: where pcid is and the rest of the invocation.
struct Args {
    control: PathBuf,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    quiet: bool,
    config: shutdownd::Config,
    unmounts: Vec<Unmount>,
}

/// The scheme registry file systems are unmounted through.
#[cfg(target_os = "redox")]
fn registry() -> redox::RedoxRegistry {
    redox::RedoxRegistry
}

/// Off Redox nothing is unmounted by shutdownd (`--unmount` is refused
/// before it comes to this).
#[cfg(not(target_os = "redox"))]
fn registry() -> NoSchemes {
    NoSchemes
}

#[cfg(not(target_os = "redox"))]
struct NoSchemes;

#[cfg(not(target_os = "redox"))]
impl SchemeRegistry for NoSchemes {
    fn unmount(&mut self, _name: &str) -> std::io::Result<bool> {
        Err(std::io::Error::other("scheme unmount exists on Redox only"))
    }
    fn is_registered(&mut self, _name: &str) -> std::io::Result<bool> {
        Ok(false)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut argv = std::env::args_os();
    let flavor = Flavor::from_argv0(argv.next().as_deref());
    let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
    let parsed = match flavor {
        Flavor::Shutdownd => match cli::parse_shutdownd(args) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("shutdownd: {e} (shutdownd --help shows the usage)");
                return ExitCode::from(2);
            }
        },
        Flavor::Shutdown => {
            let (parsed, warnings) = cli::parse_shutdown(args);
            for w in warnings {
                eprintln!("shutdown: {w}");
            }
            parsed
        }
    };
    let invocation = match parsed {
        Parsed::Help => {
            match flavor {
                Flavor::Shutdownd => println!("{}\n\n{}", cli::USAGE, shutdownd::EXIT_STATUS),
                Flavor::Shutdown => print!("{}", cli::SHUTDOWN_HELP),
            }
            return ExitCode::SUCCESS;
        }
        Parsed::Version => {
            println!("shutdownd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Parsed::Run(i) => i,
        Parsed::Report { json, svg } => return ExitCode::from(redraw(&json, svg.as_deref())),
    };
    #[cfg(target_os = "redox")]
    let (kind, no_power_off) = (invocation.config.kind, invocation.no_power_off);
    let code = shut_down_devices_bounded(invocation);
    #[cfg(target_os = "redox")]
    if !no_power_off {
        // Whatever happened to the devices, the machine goes down now.
        let e = redox::power_off(kind);
        eprintln!("shutdownd: {}: {e}", redox::KSTOP);
        return ExitCode::from(2);
    }
    ExitCode::from(code)
}

/// Runs the protocol on a worker thread and waits for it at most the global
/// deadline plus [`WATCHDOG_GRACE`], so that nothing — not even an open of
/// pcid's scheme that pcid never answers — can hold the shutdown up.
/// Returns the exit status.
fn shut_down_devices_bounded(invocation: Invocation) -> u8 {
    let started = Instant::now();
    let Some(control) = invocation.control.clone().or_else(default_control) else {
        eprintln!("shutdownd: --control PATH is required (pcid's control socket)");
        return 2;
    };
    let limit = invocation.config.global_deadline + WATCHDOG_GRACE;
    let unmounts =
        invocation.unmounts_with_default(|name| registry().is_registered(name).unwrap_or(false));
    if !unmounts.is_empty() && cfg!(not(target_os = "redox")) {
        eprintln!("shutdownd: --unmount works on Redox only (the kernel's scheme unmount)");
        return 2;
    }
    let args = Args {
        control,
        json: invocation.json,
        svg: invocation.svg,
        quiet: invocation.quiet,
        config: invocation.config,
        unmounts,
    };
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            let _ = tx.send(shut_down_devices(args, started));
        });
    if let Err(e) = worker {
        eprintln!("shutdownd: cannot start the shutdown thread: {e}");
        return 2;
    }
    match rx.recv_timeout(limit.saturating_sub(started.elapsed())) {
        Ok(code) => code,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!(
                "shutdownd: no result from pcid within {} ms; giving up on the devices",
                limit.as_millis()
            );
            2
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            eprintln!("shutdownd: the shutdown thread ended without a result");
            2
        }
    }
}

#[cfg(target_os = "redox")]
fn default_control() -> Option<PathBuf> {
    Some(redox::default_control())
}

#[cfg(not(target_os = "redox"))]
fn default_control() -> Option<PathBuf> {
    None
}

/// Runs the protocol and prints the report; returns the exit status.
///
/// The global deadline counts from `started` (shutdownd's start): connecting
/// to pcid and listing the devices are part of it.
fn shut_down_devices(args: Args, started: Instant) -> u8 {
    let mut port = match port::connect(&args.control) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shutdownd: cannot reach pcid: {e}");
            return 2;
        }
    };
    let list_timeout = LIST_TIMEOUT.min(args.config.global_deadline);
    let devices = match list_devices(&mut port, list_timeout) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    };
    let mut participants = match list_participants(&mut port, list_timeout) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    };
    let mut local = LocalParticipants::new(registry(), args.unmounts, std::process::id());
    participants.extend(local.infos());
    let mode = args.config.mode;
    if !args.quiet {
        println!(
            "shutdownd: {} device(s), {} participant(s), {} {}, global deadline {} ms",
            devices.len(),
            participants.len(),
            mode.as_str(),
            args.config.kind.name(),
            args.config.global_deadline.as_millis()
        );
    }
    let plan = match Plan::with_participants(devices, participants) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    };
    let quiet = args.quiet;
    let mut progress = |line: &str| {
        if !quiet {
            println!("{line}");
        }
    };
    let now = || started.elapsed();
    let result = if local.is_empty() {
        run_plan_with_clock(&mut port, plan, args.config, &now, &mut progress)
    } else {
        let mut router = Router::new(&mut port, &mut local, &now);
        run_plan_with_clock(&mut router, plan, args.config, &now, &mut progress)
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    };
    print!("{}", report.to_table());
    if let Some(path) = &args.json {
        // `-` is standard output: on Redox that is the console, which keeps
        // the report when the machine powers off right after.
        // `-` is standard output, as one line written at once: on Redox that
        // is the console, shared with every daemon's log, and it keeps the
        // report when the machine powers off right after.
        let written = if path.as_os_str() == "-" {
            report
                .to_json_line()
                .map_err(|e| e.to_string())
                .and_then(|j| {
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    out.write_all(format!("{j}\n").as_bytes())
                        .and_then(|()| out.flush())
                        .map_err(|e| e.to_string())
                })
        } else {
            report
                .to_json()
                .map_err(|e| e.to_string())
                .and_then(|j| std::fs::write(path, j + "\n").map_err(|e| e.to_string()))
        };
        if let Err(e) = written {
            eprintln!("shutdownd: cannot write report to {}: {e}", path.display());
            return 2;
        }
    }
    if let Some(path) = &args.svg {
        if let Err(e) = write_svg(&report, path) {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    }
    if report.all_ok() {
        0
    } else {
        1
    }
}

/// Draws `report` into `path`.
fn write_svg(report: &shutdownd::Report, path: &Path) -> Result<(), String> {
    let svg = shutdownd::svg::render(report, &shutdownd::svg::SvgOptions::default());
    std::fs::write(path, svg)
        .map_err(|e| format!("cannot write the picture to {}: {e}", path.display()))
}

/// `shutdownd report`: prints a saved report's table and draws it; exit
/// status 0, or 2 when the report cannot be read or the picture written.
fn redraw(json: &Path, svg: Option<&Path>) -> u8 {
    let text = if json.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map(|_| t)
    } else {
        std::fs::read_to_string(json)
    };
    let report = match text.map_err(|e| e.to_string()).and_then(|t| {
        shutdownd::Report::from_json(&t).map_err(|e| format!("not a shutdownd report: {e}"))
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shutdownd: {}: {e}", json.display());
            return 2;
        }
    };
    print!("{}", report.to_table());
    if let Some(path) = svg {
        if let Err(e) = write_svg(&report, path) {
            eprintln!("shutdownd: {e}");
            return 2;
        }
    }
    0
}
