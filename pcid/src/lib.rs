//! `pcid`: the PCI daemon.
//!
//! * [`bus`] — where functions come from: a simulated machine ([`machine`]) or Linux sysfs;
//! * [`matching`] — Redox-format driver match tables (`pcid.d`), with Redox's
//!   matching rules;
//! * [`relay`] — the state machine relaying shutdown requests between the
//!   control endpoint and driver channels;
//! * [`daemon`] — the Linux runtime: spawning drivers, then one `epoll`
//!   event loop (one thread) around the relay, signals, readiness;
//! * [`redox`] — Redox: a drop-in for Redox's own pcid (configuration space,
//!   Redox's driver interface, the `pci` scheme, the runtime); there pcid
//!   starts no driver, Redox's pcid-spawner does;
//! * [`cli`] — the command line;
//! * [`location`] — `file:line` positions for configuration errors.
//!
//! # What pcid does (Linux and the simulated machine)
//!
//! 1. Load the match table (`--match-dir`, a file or a directory) and enumerate the bus
//!    (`--bus sim --machine FILE` or `--bus linux`); configuration errors stop
//!    pcid with one line naming the file and line.
//! 2. Spawn one driver per matched function with a minimal environment: the
//!    channel's fd number in `PCID_CLIENT_CHANNEL`, the function's address in
//!    `PCID_DEVICE`, pcid's `RUST_LOG` if set, on the simulated bus the
//!    function's device model file in `PCID_SIM_MODEL` (when the machine
//!    names one), and the `--driver-env` pairs (nothing else of pcid's
//!    environment); stdin from `/dev/null`; stdout and
//!    stderr into a pipe whose lines pcid writes to its own stderr, prefixed
//!    with the driver's address. The driver says `Hello`, pcid answers
//!    `Welcome` with the function, the driver says `Ready`.
//! 3. Announce readiness once every driver has sent `Ready`, exited, passed
//!    its hello deadline without `Hello` (`--hello-timeout-ms`, such a driver
//!    is listed with no shutdown support) or passed its ready deadline
//!    (`--ready-timeout-ms`): the line `pcid: ready: N drivers` (N = drivers
//!    that sent `Ready`) on stdout, and on `--ready-fd N` if given (made
//!    close-on-exec at start, so drivers cannot write to it). Nothing else
//!    is written on stdout. A launcher waits for that line with its own
//!    deadline.
//! 4. Serve the control socket (`--control PATH`, mode 0600, peers of
//!    another uid are logged and disconnected) and relay shutdown requests as
//!    [`relay`] describes, until SIGTERM/SIGINT, the end of the shutdown
//!    session with `--exit-after-shutdown`, or end of file on stdin with
//!    `--exit-on-stdin-eof`. Then kill and reap every driver and remove the
//!    socket.

pub mod bus;
pub mod cli;
#[cfg(not(target_os = "redox"))]
pub mod daemon;
pub mod location;
pub mod machine;
pub mod matching;
pub mod redox;
pub mod relay;

/// Error of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The daemon failed.
    #[cfg(not(target_os = "redox"))]
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The bus could not be opened.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// This platform has no runtime yet.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The Redox runtime failed.
    #[cfg(target_os = "redox")]
    #[error(transparent)]
    Redox(#[from] redox::RedoxError),
}

/// Why pcid stopped.
#[cfg(not(target_os = "redox"))]
pub type ExitReason = daemon::ExitReason;
/// Why pcid stopped.
#[cfg(target_os = "redox")]
pub type ExitReason = ();

/// Run pcid as the command line says.
pub fn run(args: &cli::Args) -> Result<ExitReason, RunError> {
    #[cfg(not(target_os = "redox"))]
    {
        let bus: Box<dyn bus::Bus> = match &args.bus {
            cli::BusChoice::Sim { machine } => Box::new(bus::SimulatedBus::from_file(machine)?),
            cli::BusChoice::Linux { sysfs } => {
                Box::new(bus::LinuxSysfsBus::with_root(sysfs.clone()))
            }
            cli::BusChoice::Redox => {
                return Err(RunError::Unsupported("--bus redox runs only on Redox"))
            }
        };
        let match_dir = match (&args.bus, &args.match_dir) {
            (cli::BusChoice::Redox, _) => {
                return Err(RunError::Unsupported("--bus redox runs only on Redox"))
            }
            (_, Some(dir)) => dir.clone(),
            (_, None) => return Err(RunError::Unsupported("--match-dir PATH is required")),
        };
        let options = daemon::Options {
            match_dir,
            driver_path: args.driver_path.clone(),
            control: args.control.clone(),
            participants: args.participants.clone(),
            ready_fd: args.ready_fd,
            deadlines: args.deadlines,
            exit_after_shutdown: args.exit_after_shutdown,
            exit_on_stdin_eof: args.exit_on_stdin_eof,
            driver_env: args.driver_env.clone(),
        };
        Ok(daemon::run(&options, bus.as_ref())?)
    }
    #[cfg(target_os = "redox")]
    {
        if args.bus != cli::BusChoice::Redox {
            return Err(RunError::Unsupported(
                "on Redox pcid drives the real bus: --bus redox (the default)",
            ));
        }
        Ok(redox::run(args)?)
    }
}
