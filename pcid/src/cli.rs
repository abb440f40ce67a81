//! Command line of the `pcid` binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::relay::StartDeadlines;

/// Usage text.
pub const USAGE: &str = "\
usage: pcid --bus sim --machine FILE | --bus linux [--sysfs DIR]
            --match-dir PATH [--driver-path DIR]... [--driver-env NAME=VALUE]...
            [--control PATH] [--participants PATH] [--ready-fd N]
            [--hello-timeout-ms MS] [--ready-timeout-ms MS]
            [--exit-after-shutdown] [--exit-on-stdin-eof] [-v]...
       pcid [--exit-after-shutdown] [-v]...          (on Redox)

  --bus sim|linux        where functions come from: a machine description, or
                         /sys/bus/pci/devices; pcid spawns their drivers
  --bus redox            on Redox only, and the default there: the real bus
                         (ECAM or ports) served as the pci scheme, as Redox's
                         own pcid serves it; Redox's pcid-spawner starts the
                         drivers, so the options about drivers are ignored
  --machine FILE         machine description (TOML) for --bus sim
  --sysfs DIR            directory listing PCI functions for --bus linux
                         (default /sys/bus/pci/devices)
  --match-dir PATH       driver match table: a file, or a directory whose files
                         are read as one table (Redox's pcid.d format)
  --driver-path DIR      search DIR for driver programs before PATH (repeatable)
  --driver-env NAME=VALUE
                         add NAME=VALUE to every driver's environment
                         (repeatable). Drivers get nothing else of pcid's
                         environment: PCID_CLIENT_CHANNEL (their channel's fd),
                         PCID_DEVICE (their function's address), RUST_LOG when
                         pcid has it, PCID_SIM_MODEL (--bus sim: their
                         function's device model file, if it has one), and
                         these
  --control PATH         control socket for shutdownd (mode 0600, same uid only)
  --participants PATH    socket where daemons that are not PCI drivers (a file
                         system, ...) register to take part in shutdown ahead
                         of the devices they use (mode 0600, same uid only;
                         on Redox: /scheme/pci/participant)
  --ready-fd N           also write the readiness line to fd N
  --hello-timeout-ms MS  a driver silent this long after spawn is treated as not
                         speaking the protocol (default 5000)
  --ready-timeout-ms MS  readiness is announced at the latest this long after
                         spawn (default 60000)
  --exit-after-shutdown  exit (stopping all drivers) when the control client
                         that ran a shutdown disconnects
  --exit-on-stdin-eof    exit when standard input reaches end of file
  -v                     more logging (-v info, -vv debug, -vvv trace); RUST_LOG
                         overrides
  -h, --help             this help
  -V, --version          pcid's version

Once every driver has sent Ready, exited, or passed its start deadline, pcid
prints `pcid: ready: N drivers` on stdout (N = drivers that sent Ready). That
line is all pcid writes on stdout; drivers' stdout and stderr go to pcid's
stderr (its log), each line prefixed with the driver's PCI address.";

/// Which bus backend to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// The simulated bus from a machine description.
    Sim {
        /// The machine file.
        machine: PathBuf,
    },
    /// Linux sysfs.
    Linux {
        /// The directory listing functions.
        sysfs: PathBuf,
    },
    /// Redox: configuration space through ECAM or ports, the `pci` scheme
    /// (runs on Redox only).
    Redox,
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Bus backend.
    pub bus: BusChoice,
    /// Match table (file or directory); always present for `sim` and `linux`.
    pub match_dir: Option<PathBuf>,
    /// Driver search directories.
    pub driver_path: Vec<PathBuf>,
    /// Control socket.
    pub control: Option<PathBuf>,
    /// Participant socket.
    pub participants: Option<PathBuf>,
    /// Readiness fd.
    pub ready_fd: Option<u32>,
    /// Start deadlines.
    pub deadlines: StartDeadlines,
    /// `--exit-after-shutdown`.
    pub exit_after_shutdown: bool,
    /// `--exit-on-stdin-eof`.
    pub exit_on_stdin_eof: bool,
    /// Number of `-v`.
    pub verbosity: u8,
    /// `--driver-env NAME=VALUE` pairs, in order.
    pub driver_env: Vec<(String, String)>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon.
    Run(Box<Args>),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// A command-line error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An option needs a value.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A value is invalid.
    #[error("{option}: invalid value {value:?}: {why}")]
    BadValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
        /// Why.
        why: &'static str,
    },
    /// Unknown option or argument.
    #[error("unknown argument {0:?}")]
    Unknown(String),
    /// A required option is missing or options conflict.
    #[error("{0}")]
    Usage(&'static str),
}

/// Parse arguments (without the program name) for the platform pcid runs on.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, CliError> {
    parse_on(args, cfg!(target_os = "redox"))
}

/// Parse arguments as on Redox (`redox`: no `--bus` means the real bus, no
/// match table needed) or elsewhere (`--bus` and `--match-dir` required).
pub fn parse_on<I: IntoIterator<Item = String>>(args: I, redox: bool) -> Result<Command, CliError> {
    let mut bus: Option<String> = None;
    let mut machine = None;
    let mut sysfs = None;
    let mut match_dir = None;
    let mut driver_path = Vec::new();
    let mut driver_env = Vec::new();
    let mut control = None;
    let mut participants = None;
    let mut ready_fd = None;
    let mut deadlines = StartDeadlines::default();
    let mut exit_after_shutdown = false;
    let mut exit_on_stdin_eof = false;
    let mut verbosity = 0u8;

    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(cli_error)? {
        let name = match &arg {
            Long(l) => format!("--{l}"),
            Short(c) => format!("-{c}"),
            Value(_) => String::new(),
        };
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("bus") => bus = Some(value(&mut parser, &name)?),
            Long("machine") => machine = Some(PathBuf::from(value(&mut parser, &name)?)),
            Long("sysfs") => sysfs = Some(PathBuf::from(value(&mut parser, &name)?)),
            Long("match-dir") => match_dir = Some(PathBuf::from(value(&mut parser, &name)?)),
            Long("driver-path") => driver_path.push(PathBuf::from(value(&mut parser, &name)?)),
            Long("driver-env") => driver_env.push(env_pair(&name, value(&mut parser, &name)?)?),
            Long("control") => control = Some(PathBuf::from(value(&mut parser, &name)?)),
            Long("participants") => participants = Some(PathBuf::from(value(&mut parser, &name)?)),
            Long("ready-fd") => {
                let v = value(&mut parser, &name)?;
                ready_fd = Some(v.parse::<u32>().map_err(|_| CliError::BadValue {
                    option: name.clone(),
                    value: v,
                    why: "expected a file descriptor number",
                })?);
            }
            Long("hello-timeout-ms") => {
                deadlines.hello = millis(&name, value(&mut parser, &name)?)?
            }
            Long("ready-timeout-ms") => {
                deadlines.ready = millis(&name, value(&mut parser, &name)?)?
            }
            Long("exit-after-shutdown") => exit_after_shutdown = true,
            Long("exit-on-stdin-eof") => exit_on_stdin_eof = true,
            Short('v') => verbosity = verbosity.saturating_add(1),
            other => return Err(cli_error(other.unexpected())),
        }
    }

    let bus = match bus.as_deref() {
        Some("sim") => {
            if sysfs.is_some() {
                return Err(CliError::Usage("--sysfs applies to --bus linux only"));
            }
            BusChoice::Sim {
                machine: machine.ok_or(CliError::Usage("--bus sim needs --machine FILE"))?,
            }
        }
        Some("linux") => {
            if machine.is_some() {
                return Err(CliError::Usage("--machine applies to --bus sim only"));
            }
            BusChoice::Linux {
                sysfs: sysfs.unwrap_or_else(|| PathBuf::from(crate::bus::LINUX_SYSFS_PCI_DEVICES)),
            }
        }
        Some("redox") if redox => BusChoice::Redox,
        None if redox => BusChoice::Redox,
        Some(other) => {
            return Err(CliError::BadValue {
                option: "--bus".into(),
                value: other.into(),
                why: if redox {
                    "expected redox, sim or linux"
                } else {
                    "expected sim or linux (redox only on Redox)"
                },
            })
        }
        None => return Err(CliError::Usage("--bus sim|linux is required")),
    };
    if bus != BusChoice::Redox && match_dir.is_none() {
        return Err(CliError::Usage(
            "--match-dir PATH is required (e.g. tests/pcid.d in the source tree)",
        ));
    }
    if deadlines.ready < deadlines.hello {
        return Err(CliError::Usage(
            "--ready-timeout-ms must not be shorter than --hello-timeout-ms",
        ));
    }
    Ok(Command::Run(Box::new(Args {
        bus,
        match_dir,
        driver_path,
        control,
        participants,
        ready_fd,
        deadlines,
        exit_after_shutdown,
        exit_on_stdin_eof,
        verbosity,
        driver_env,
    })))
}

/// The value of option `name`, as UTF-8.
fn value(parser: &mut lexopt::Parser, name: &str) -> Result<String, CliError> {
    let v = parser.value().map_err(cli_error)?;
    v.into_string().map_err(|v| CliError::BadValue {
        option: name.to_string(),
        value: v.to_string_lossy().into_owned(),
        why: "not valid UTF-8",
    })
}

/// A lexopt error as ours.
fn cli_error(e: lexopt::Error) -> CliError {
    match e {
        lexopt::Error::MissingValue { option } => {
            CliError::MissingValue(option.unwrap_or_else(|| "an option".into()))
        }
        lexopt::Error::UnexpectedOption(o) => CliError::Unknown(o),
        lexopt::Error::UnexpectedArgument(a) => CliError::Unknown(a.to_string_lossy().into_owned()),
        other => CliError::Unknown(other.to_string()),
    }
}

/// Parses `NAME=VALUE` for `--driver-env`.
fn env_pair(option: &str, v: String) -> Result<(String, String), CliError> {
    let bad = |why| CliError::BadValue {
        option: option.to_string(),
        value: v.clone(),
        why,
    };
    let Some((name, value)) = v.split_once('=') else {
        return Err(bad("expected NAME=VALUE"));
    };
    if name.is_empty() || name.contains('\0') || value.contains('\0') {
        return Err(bad("expected NAME=VALUE with a non-empty NAME and no NUL"));
    }
    if [
        pcid_interface::PCID_CLIENT_CHANNEL,
        "PCID_DEVICE",
        pcid_interface::PCID_SIM_MODEL,
    ]
    .contains(&name)
    {
        return Err(bad(
            "PCID_CLIENT_CHANNEL, PCID_DEVICE and PCID_SIM_MODEL are set by pcid",
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

fn millis(option: &str, v: String) -> Result<Duration, CliError> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| CliError::BadValue {
            option: option.to_string(),
            value: v,
            why: "expected milliseconds",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn full_sim_command_line() {
        let Command::Run(a) = p(&[
            "--bus",
            "sim",
            "--machine=m.toml",
            "--match-dir",
            "tests/pcid.d",
            "--driver-path",
            "a",
            "--driver-path",
            "b",
            "--driver-env",
            "A=1",
            "--driver-env=B=x=y",
            "--control",
            "/tmp/c",
            "--ready-fd",
            "3",
            "--hello-timeout-ms",
            "100",
            "--exit-after-shutdown",
            "-vv",
            "-v",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            a.bus,
            BusChoice::Sim {
                machine: "m.toml".into()
            }
        );
        assert_eq!(a.driver_path, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(
            a.driver_env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(a.control, Some(PathBuf::from("/tmp/c")));
        assert_eq!(a.ready_fd, Some(3));
        assert_eq!(a.deadlines.hello, Duration::from_millis(100));
        assert!(a.exit_after_shutdown && !a.exit_on_stdin_eof);
        assert_eq!(a.verbosity, 3);
    }

    #[test]
    fn linux_defaults_to_sysfs() {
        let Command::Run(a) = p(&["--bus", "linux", "--match-dir", "d"]).unwrap() else {
            panic!()
        };
        assert_eq!(
            a.bus,
            BusChoice::Linux {
                sysfs: "/sys/bus/pci/devices".into()
            }
        );
    }

    #[test]
    fn errors() {
        assert_eq!(p(&["-h"]).unwrap(), Command::Help);
        assert!(matches!(p(&[]), Err(CliError::Usage(_))));
        assert!(matches!(
            p(&["--bus", "sim", "--match-dir", "d"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            p(&["--bus", "pci", "--match-dir", "d"]),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(p(&["--bus"]), Err(CliError::MissingValue(_))));
        assert!(matches!(p(&["--frob"]), Err(CliError::Unknown(_))));
        assert!(matches!(
            p(&["--bus", "linux", "--match-dir", "d", "--ready-fd", "x"]),
            Err(CliError::BadValue { .. })
        ));
        for bad in ["NOEQUALS", "=1", "PCID_DEVICE=x", "PCID_CLIENT_CHANNEL=3"] {
            let e = p(&["--bus", "linux", "--match-dir", "d", "--driver-env", bad]).unwrap_err();
            assert!(matches!(e, CliError::BadValue { .. }), "{bad}: {e}");
        }
        let e = parse_on(["--bus".to_string(), "linux".to_string()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--match-dir"), "{e}");
        assert!(matches!(
            parse_on(["--bus".to_string(), "redox".to_string()], false),
            Err(CliError::BadValue { .. })
        ));
    }

    #[test]
    fn on_redox_no_argument_is_the_real_bus_without_a_table() {
        let Command::Run(a) = parse_on(Vec::<String>::new(), true).unwrap() else {
            panic!()
        };
        assert_eq!(a.bus, BusChoice::Redox);
        assert_eq!(a.match_dir, None);
        let Command::Run(a) = parse_on(
            ["--bus", "redox", "--exit-after-shutdown", "-v"].map(String::from),
            true,
        )
        .unwrap() else {
            panic!()
        };
        assert!(a.exit_after_shutdown);
        assert_eq!(a.verbosity, 1);
        // The simulated and Linux buses still need their table there.
        assert!(matches!(
            parse_on(["--bus", "linux"].map(String::from), true),
            Err(CliError::Usage(_))
        ));
    }
}
