//! Command lines: shutdownd's own, and the one of Redox's `shutdown`.
//!
//! The binary answers to two names. Run as `shutdownd` it takes its own
//! options strictly (an unknown argument is a usage error). Run as
//! `shutdown` — installed in place of Redox's coreutils `shutdown`, or linked
//! to under that name — it is a drop-in for that command: it takes the same
//! flags, `-h`/`--help` and `-r`/`--reboot` (coreutils 5559e20,
//! `src/bin/shutdown.rs`; short flags may be combined, e.g. `-rh`), and,
//! like it, never refuses to stop the machine over an argument it does not
//! know: such arguments are ignored with a warning. shutdownd's own long
//! options are accepted there too, so a script can still pass `--control` or
//! `--deadline-ms`. Under that name the global deadline defaults to
//! [`SHUTDOWN_DEFAULT_DEADLINE`] instead of the scheduler's default.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcid_interface::protocol::ShutdownKind;

use crate::scheduler::{Config, Mode};

/// The name under which the binary behaves as Redox's `shutdown`.
pub const SHUTDOWN_NAME: &str = "shutdown";

/// Global deadline when run as `shutdown` without `--deadline-ms`.
pub const SHUTDOWN_DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// shutdownd's usage line.
pub const USAGE: &str = "usage: shutdownd --control PATH [--kind poweroff|reboot] [--sequential] \
[--json FILE|-] [--svg FILE] [--deadline-ms MS] [--begin-timeout-ms MS] [--one-phase-timeout-ms MS] \
[--quiet] [-r|--reboot] [--no-power-off] [-h|--help] [-V|--version]
       shutdownd report [--svg FILE] REPORT.json   (draw or print a saved JSON report)";

/// Help text of the `shutdown` flavour.
pub const SHUTDOWN_HELP: &str = "\
NAME
    shutdown - shut the devices down, then stop the system

SYNOPSIS
    shutdown [ -h | --help ] [ -r | --reboot ]

DESCRIPTION
    Asks pcid to shut every PCI device down (two-phase: Begin to all, then
    Finish), prints the report, then powers off (or reboots) through
    /scheme/sys/kstop, as Redox's shutdown does. The machine goes down even
    when pcid cannot be reached or a device fails. Arguments it does not
    know are ignored.

OPTIONS
    -h, --help      display this help and exit
    -r, --reboot    reboot instead of powering off
    shutdownd's long options (--control, --deadline-ms, --sequential,
    --json, --quiet, --no-power-off, ...) are accepted too; the global
    deadline defaults to 30000 ms.
";

/// Which command line the binary was started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `shutdownd`: its own options, strictly.
    Shutdownd,
    /// `shutdown`: Redox's flags, leniently.
    Shutdown,
}

impl Flavor {
    /// The flavour for the program name `argv0` (its file name decides).
    pub fn from_argv0(argv0: Option<&OsStr>) -> Self {
        match argv0.and_then(|a| Path::new(a).file_name()) {
            Some(name) if name == SHUTDOWN_NAME => Flavor::Shutdown,
            _ => Flavor::Shutdownd,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// pcid's control endpoint, if given (Redox has a default).
    pub control: Option<PathBuf>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Where to write the report's timeline picture (SVG).
    pub svg: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    /// The scheduler's configuration.
    pub config: Config,
    /// Redox: skip the final kstop request.
    pub no_power_off: bool,
}

impl Invocation {
    fn new(flavor: Flavor) -> Self {
        let mut config = Config::default();
        if flavor == Flavor::Shutdown {
            config.global_deadline = SHUTDOWN_DEFAULT_DEADLINE;
        }
        Self {
            control: None,
            json: None,
            svg: None,
            quiet: false,
            config,
            no_power_off: false,
        }
    }
}

/// The outcome of parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Print the help (or usage) and exit 0; nothing is shut down.
    Help,
    /// Print the version and exit 0.
    Version,
    /// Run the shutdown.
    Run(Invocation),
    /// `shutdownd report`: read a saved JSON report, print its table and,
    /// with `svg`, draw it.
    Report {
        /// The JSON report (`-`: standard input).
        json: PathBuf,
        /// Where to write the picture.
        svg: Option<PathBuf>,
    },
}

/// The next value of option `flag`, as text.
fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let v = p.value().map_err(|_| format!("{flag} needs a value"))?;
    v.into_string()
        .map_err(|v| format!("{flag}: `{}` is not valid UTF-8", v.to_string_lossy()))
}

fn parse_ms(p: &mut lexopt::Parser, flag: &str) -> Result<Duration, String> {
    let v = text(p, flag).map_err(|_| format!("{flag} needs a value in milliseconds"))?;
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{flag}: `{v}` is not a whole number of milliseconds"))
}

/// Applies one of shutdownd's long options, `name` without its dashes.
/// `Ok(false)`: not one of them.
fn long_option(inv: &mut Invocation, name: &str, p: &mut lexopt::Parser) -> Result<bool, String> {
    let flag = format!("--{name}");
    match name {
        "control" => inv.control = Some(PathBuf::from(text(p, &flag)?)),
        "json" => inv.json = Some(PathBuf::from(text(p, &flag)?)),
        "svg" => inv.svg = Some(PathBuf::from(text(p, &flag)?)),
        "sequential" => inv.config.mode = Mode::Sequential,
        "quiet" => inv.quiet = true,
        "reboot" => inv.config.kind = ShutdownKind::Reboot,
        "no-power-off" => inv.no_power_off = true,
        "kind" => {
            inv.config.kind = match text(p, &flag).ok().as_deref() {
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
        "deadline-ms" => inv.config.global_deadline = parse_ms(p, &flag)?,
        "begin-timeout-ms" => inv.config.begin_timeout = parse_ms(p, &flag)?,
        "one-phase-timeout-ms" => inv.config.one_phase_timeout = parse_ms(p, &flag)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// A lexopt error as one line.
fn lexopt_error(e: lexopt::Error) -> String {
    match e {
        lexopt::Error::UnexpectedOption(o) => format!("unknown argument `{o}`"),
        lexopt::Error::UnexpectedArgument(a) => {
            format!("unknown argument `{}`", a.to_string_lossy())
        }
        other => other.to_string(),
    }
}

/// Parses shutdownd's own command line (without the program name). Any
/// argument it does not know is an error.
pub fn parse_shutdownd(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut inv = Invocation::new(Flavor::Shutdownd);
    let mut p = lexopt::Parser::from_args(args);
    let mut first = true;
    while let Some(arg) = p.next().map_err(lexopt_error)? {
        match arg {
            Value(v) if first && v == "report" => return parse_report(&mut p),
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Short('V') | Long("version") => return Ok(Parsed::Version),
            Short('r') => inv.config.kind = ShutdownKind::Reboot,
            Long(name) => {
                let name = name.to_string();
                if !long_option(&mut inv, &name, &mut p)? {
                    return Err(format!("unknown argument `--{name}`"));
                }
            }
            other => return Err(lexopt_error(other.unexpected())),
        }
        first = false;
    }
    Ok(Parsed::Run(inv))
}

/// `shutdownd report [--svg FILE] REPORT.json`.
fn parse_report(p: &mut lexopt::Parser) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut svg = None;
    let mut json = None;
    while let Some(arg) = p
        .next()
        .map_err(|e| format!("report: {}", lexopt_error(e)))?
    {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("svg") => svg = Some(PathBuf::from(text(p, "--svg")?)),
            Value(v) if json.is_none() => json = Some(PathBuf::from(v)),
            Value(v) => {
                return Err(format!(
                    "report: one report at a time, not `{}`",
                    v.to_string_lossy()
                ))
            }
            other => return Err(format!("report: {}", lexopt_error(other.unexpected()))),
        }
    }
    let json = json.ok_or("report needs the JSON report to read (a file, or - for stdin)")?;
    Ok(Parsed::Report { json, svg })
}

/// Parses the command line of the `shutdown` flavour (without the program
/// name). Never fails: what it cannot use is returned as warnings.
pub fn parse_shutdown(args: impl IntoIterator<Item = String>) -> (Parsed, Vec<String>) {
    use lexopt::prelude::*;
    let mut inv = Invocation::new(Flavor::Shutdown);
    let mut warnings = Vec::new();
    let mut help = false;
    let mut p = lexopt::Parser::from_args(args);
    loop {
        let arg = match p.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => {
                warnings.push(format!("ignoring {}", lexopt_error(e)));
                continue;
            }
        };
        match arg {
            Long("help") | Short('h') => help = true,
            Short('r') => inv.config.kind = ShutdownKind::Reboot,
            Long(name) => {
                let name = name.to_string();
                match long_option(&mut inv, &name, &mut p) {
                    Ok(true) => {}
                    Ok(false) => warnings.push(format!("ignoring unknown option `--{name}`")),
                    Err(e) => warnings.push(format!("ignoring {e}")),
                }
            }
            Short(other) => warnings.push(format!("ignoring unknown flag `-{other}`")),
            Value(v) => warnings.push(format!("ignoring argument `{}`", v.to_string_lossy())),
        }
    }
    if help {
        (Parsed::Help, warnings)
    } else {
        (Parsed::Run(inv), warnings)
    }
}

/// What to write to `/scheme/sys/kstop` for `kind` (the kernel accepts
/// `shutdown`, `reset` and `emergency_reset`; coreutils' `shutdown` writes
/// the first two).
pub fn kstop_request(kind: ShutdownKind) -> &'static str {
    match kind {
        ShutdownKind::Poweroff => "shutdown",
        ShutdownKind::Reboot => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run(p: Parsed) -> Invocation {
        match p {
            Parsed::Run(i) => i,
            other => panic!("expected a run, not {other:?}"),
        }
    }

    #[test]
    fn the_program_name_picks_the_flavor() {
        for (argv0, flavor) in [
            ("shutdown", Flavor::Shutdown),
            ("/usr/bin/shutdown", Flavor::Shutdown),
            ("/scheme/initfs/bin/shutdown", Flavor::Shutdown),
            ("shutdownd", Flavor::Shutdownd),
            ("/usr/bin/shutdownd", Flavor::Shutdownd),
            ("shutdown-not", Flavor::Shutdownd),
        ] {
            assert_eq!(
                Flavor::from_argv0(Some(OsStr::new(argv0))),
                flavor,
                "{argv0}"
            );
        }
        assert_eq!(Flavor::from_argv0(None), Flavor::Shutdownd);
    }

    #[test]
    fn shutdown_takes_redox_flags() {
        let (p, w) = parse_shutdown(args(&[]));
        let inv = run(p);
        assert!(w.is_empty());
        assert_eq!(inv.config.kind, ShutdownKind::Poweroff);
        assert_eq!(inv.config.global_deadline, SHUTDOWN_DEFAULT_DEADLINE);
        assert_eq!(inv.control, None);
        for reboot in [&["-r"][..], &["--reboot"]] {
            let (p, w) = parse_shutdown(args(reboot));
            assert_eq!(run(p).config.kind, ShutdownKind::Reboot, "{reboot:?}");
            assert!(w.is_empty());
        }
        for help in [&["-h"][..], &["--help"], &["-rh"], &["-r", "--help"]] {
            assert_eq!(parse_shutdown(args(help)).0, Parsed::Help, "{help:?}");
        }
    }

    #[test]
    fn shutdown_ignores_what_it_does_not_know_and_still_runs() {
        let (p, w) = parse_shutdown(args(&[
            "now",
            "-P",
            "--force",
            "-r",
            "--deadline-ms",
            "soon",
            "-",
        ]));
        let inv = run(p);
        assert_eq!(inv.config.kind, ShutdownKind::Reboot);
        assert_eq!(inv.config.global_deadline, SHUTDOWN_DEFAULT_DEADLINE);
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(w[0].contains("`now`"));
        assert!(w[1].contains("`-P`"));
        assert!(w[2].contains("`--force`"));
        assert!(w[3].contains("soon"));
        assert!(w[4].contains("`-`"));
    }

    #[test]
    fn shutdown_accepts_shutdownds_long_options() {
        let (p, w) = parse_shutdown(args(&[
            "--control",
            "/tmp/c.sock",
            "--deadline-ms",
            "1500",
            "--sequential",
            "--no-power-off",
            "--quiet",
            "--json",
            "r.json",
        ]));
        assert!(w.is_empty(), "{w:?}");
        let inv = run(p);
        assert_eq!(inv.control, Some(PathBuf::from("/tmp/c.sock")));
        assert_eq!(inv.config.global_deadline, Duration::from_millis(1500));
        assert_eq!(inv.config.mode, Mode::Sequential);
        assert!(inv.no_power_off && inv.quiet);
        assert_eq!(inv.json, Some(PathBuf::from("r.json")));
    }

    #[test]
    fn shutdownd_is_strict() {
        assert!(parse_shutdownd(args(&["now"])).is_err());
        // Short flags combine, as with getopt.
        assert_eq!(parse_shutdownd(args(&["-rh"])).unwrap(), Parsed::Help);
        assert!(parse_shutdownd(args(&["-x"])).is_err());
        assert!(parse_shutdownd(args(&["--reboot=yes"])).is_err());
        assert_eq!(parse_shutdownd(args(&["-V"])).unwrap(), Parsed::Version);
        let inv = run(parse_shutdownd(args(&["--deadline-ms=1500"])).unwrap());
        assert_eq!(inv.config.global_deadline, Duration::from_millis(1500));
        assert!(parse_shutdownd(args(&["--deadline-ms", "x"])).is_err());
        assert!(parse_shutdownd(args(&["--control"])).is_err());
        assert_eq!(parse_shutdownd(args(&["--help"])).unwrap(), Parsed::Help);
        let inv = run(parse_shutdownd(args(&["-r", "--kind", "poweroff"])).unwrap());
        assert_eq!(inv.config.kind, ShutdownKind::Poweroff);
        assert_eq!(
            inv.config.global_deadline,
            Config::default().global_deadline
        );
    }

    #[test]
    fn report_reads_one_saved_report() {
        assert_eq!(
            parse_shutdownd(args(&["report", "--svg", "t.svg", "r.json"])).unwrap(),
            Parsed::Report {
                json: PathBuf::from("r.json"),
                svg: Some(PathBuf::from("t.svg"))
            }
        );
        assert_eq!(
            parse_shutdownd(args(&["report", "-"])).unwrap(),
            Parsed::Report {
                json: PathBuf::from("-"),
                svg: None
            }
        );
        assert!(parse_shutdownd(args(&["report"])).is_err());
        assert!(parse_shutdownd(args(&["report", "a.json", "b.json"])).is_err());
        assert!(parse_shutdownd(args(&["report", "--control", "x", "a.json"])).is_err());
        let inv = run(parse_shutdownd(args(&["--svg", "t.svg"])).unwrap());
        assert_eq!(inv.svg, Some(PathBuf::from("t.svg")));
    }

    #[test]
    fn kstop_requests_are_the_ones_redox_shutdown_writes() {
        assert_eq!(kstop_request(ShutdownKind::Poweroff), "shutdown");
        assert_eq!(kstop_request(ShutdownKind::Reboot), "reset");
    }
}
