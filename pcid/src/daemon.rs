//! The pcid runtime on Unix systems (Linux): spawns drivers, runs the control
//! endpoint and drives the [`Relay`] state machine.
//!
//! Drivers start with a minimal environment (see [`driver_environment`]):
//! `PCID_CLIENT_CHANNEL`, `PCID_DEVICE`, `RUST_LOG` when pcid has it, what
//! the bus adds (the simulated bus: `PCID_SIM_MODEL` for a function with a
//! device model) and what `--driver-env` adds — nothing else of pcid's
//! environment. Their standard
//! output and standard error go to one pipe per driver, read by pcid and
//! written to pcid's standard error (its log) one line at a time, each line
//! prefixed with the driver's PCI address and program name; pcid's standard
//! output carries the readiness line only, and the `--ready-fd` descriptor is
//! close-on-exec, so no driver can write to either.
//!
//! One thread runs everything after the drivers are spawned: an `epoll`
//! loop ([`event_loop`], where the choice of `epoll` is explained) over every
//! driver's channel and output pipe, the control socket and its connections,
//! a self-pipe for signals (`SIGCHLD` → reap children, `SIGTERM`/`SIGINT` →
//! exit) and, with `--exit-on-stdin-eof`, standard input. It owns the child
//! processes and the [`Relay`], feeds the relay what arrives and carries out
//! what the relay decides; it waits at most until the relay's next deadline.
//! Writes to drivers and control clients are queued, never waited for, so a
//! slow or silent driver never delays another. pcid's thread count does not
//! depend on the number of drivers.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use pcid_interface::function::PciFunction;
use pcid_interface::transport::{spawn_with_channel, ControlError, ControlListener, DriverChannel};

use crate::bus::{describe, Bus, BusError};
use crate::matching::{MatchError, MatchTable};
use crate::relay::{Relay, RelayConfig, StartDeadlines};

mod event_loop;

use event_loop::{DriverSlot, EventLoop, Sources};
pub use event_loop::{
    CLIENT_SEND_TIMEOUT, DRIVER_SEND_TIMEOUT, FRAMES_PER_TURN, OUTPUT_CHUNK, PRIORITY,
};

/// Environment variable telling a driver which function it serves (for logs).
pub const PCID_DEVICE: &str = "PCID_DEVICE";
/// pcid's log filter, passed on to drivers when pcid has it.
pub const RUST_LOG: &str = "RUST_LOG";
/// Variables a driver always gets from pcid and `--driver-env` may not set.
pub const RESERVED_DRIVER_ENV: [&str; 3] = [
    pcid_interface::PCID_CLIENT_CHANNEL,
    PCID_DEVICE,
    pcid_interface::PCID_SIM_MODEL,
];
/// Longest line forwarded from a driver's output; longer lines are split.
pub const MAX_OUTPUT_LINE: usize = 4096;

/// How pcid runs; built from the command line by [`crate::cli`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Match table directory.
    pub match_dir: PathBuf,
    /// Directories searched for driver programs before `PATH`.
    pub driver_path: Vec<PathBuf>,
    /// Control socket path, if any.
    pub control: Option<PathBuf>,
    /// Participant socket path, if any (PROTOCOL.md §14).
    pub participants: Option<PathBuf>,
    /// Also write the readiness line to this fd.
    pub ready_fd: Option<u32>,
    /// Driver start deadlines.
    pub deadlines: StartDeadlines,
    /// Exit once a shutdown session's client disconnects.
    pub exit_after_shutdown: bool,
    /// Exit when standard input reaches end of file.
    pub exit_on_stdin_eof: bool,
    /// Extra `NAME=VALUE` pairs for every driver's environment (`--driver-env`).
    pub driver_env: Vec<(String, String)>,
}

/// Errors that stop pcid.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The match tables could not be loaded.
    #[error(transparent)]
    Match(#[from] MatchError),
    /// The bus could not be enumerated.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The control endpoint could not be created.
    #[error("control endpoint: {0}")]
    Control(#[from] ControlError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The readiness fd could not be written.
    #[error("--ready-fd {fd}: {source}")]
    ReadyFd {
        /// The fd.
        fd: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The event loop's `epoll` instance failed.
    #[error("event loop: {what}: {source}")]
    EventLoop {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The whole environment of a driver pcid spawns for `address` (besides
/// `PCID_CLIENT_CHANNEL`, which the spawn adds with the channel's fd number):
/// `PCID_DEVICE=<address>`, pcid's own `RUST_LOG` if it has one (`rust_log`),
/// what the bus gives this function's driver (`bus_env`, see
/// [`Bus::driver_env`]), then the `--driver-env` pairs in order. Nothing else
/// of pcid's environment reaches a driver: a variable meant for one program
/// (say, a test switch) cannot leak into every driver on the machine.
pub fn driver_environment(
    address: &str,
    rust_log: Option<std::ffi::OsString>,
    bus_env: Vec<(String, std::ffi::OsString)>,
    extra: &[(String, String)],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = vec![(PCID_DEVICE.into(), address.into())];
    if let Some(v) = rust_log {
        env.push((RUST_LOG.into(), v));
    }
    env.extend(bus_env.into_iter().map(|(k, v)| (k.into(), v)));
    env.extend(extra.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// Why the event loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// The shutdown session ended and `--exit-after-shutdown` was given.
    ShutdownDone,
    /// Standard input closed and `--exit-on-stdin-eof` was given.
    StdinClosed,
}

/// Enumerate, match, spawn, then serve until told to exit. Kills remaining
/// drivers before returning.
pub fn run(options: &Options, bus: &dyn Bus) -> Result<ExitReason, DaemonError> {
    let ready_file = options.ready_fd.map(adopt_ready_fd).transpose()?;
    let table = MatchTable::load(&options.match_dir)?;
    log::info!(
        "{} match entries from {}",
        table.entries.len(),
        options.match_dir.display()
    );
    let functions = bus.enumerate()?;
    log::info!("{} functions on the {} bus", functions.len(), bus.name());
    raise_fd_limit();

    let listener = match &options.control {
        Some(path) => Some(ControlListener::bind(path)?),
        None => None,
    };
    let participant_listener = match &options.participants {
        Some(path) => Some(ControlListener::bind(path)?),
        None => None,
    };

    let mut relay = Relay::new(RelayConfig {
        deadlines: options.deadlines,
        exit_after_shutdown: options.exit_after_shutdown,
    });
    let mut drivers: Vec<DriverSlot> = Vec::new();
    let mut outputs: Vec<DriverOutput> = Vec::new();
    for f in &functions {
        let Some(entry) = table.find(f) else {
            log::debug!("{}: no driver", describe(f));
            continue;
        };
        match spawn_driver(f, entry, bus.driver_env(f.address), options) {
            Ok((pid, channel, output)) => {
                let program = entry.program();
                let name = std::path::Path::new(program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| program.to_string());
                log::info!(
                    "{}: spawned {name} (pid {})",
                    describe(f),
                    pid.as_raw_nonzero()
                );
                outputs.push(DriverOutput::new(format!("{} {name}", f.address), output));
                relay.add_driver(
                    f.clone(),
                    name,
                    pid.as_raw_nonzero().get() as u32,
                    Instant::now(),
                );
                drivers.push(DriverSlot::new(pid, channel));
            }
            Err(e) => log::error!("{}: {e}", f.address),
        }
    }
    log::info!("{} drivers spawned", drivers.len());

    let sources = Sources {
        drivers,
        outputs,
        listener,
        participants: participant_listener,
        exit_on_stdin_eof: options.exit_on_stdin_eof,
    };
    let mut event_loop = match EventLoop::new(&mut relay, sources, ready_file.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            // The drivers were spawned already; dropping their slots (with
            // the sources) has stopped them.
            log::error!("{e}; the drivers were stopped");
            return Err(e);
        }
    };
    let result = event_loop.run();
    match &result {
        Ok(reason) => log::info!(
            "exiting ({reason:?}); stopping {} of {} drivers",
            event_loop.running_drivers(),
            event_loop.driver_count()
        ),
        Err(e) => log::error!(
            "{e}; stopping {} of {} drivers",
            event_loop.running_drivers(),
            event_loop.driver_count()
        ),
    }
    event_loop.stop_drivers();
    // Removes the socket files, so no client finds a dead endpoint.
    drop(event_loop);
    result
}

/// Raises the soft limit on open files to the hard limit: pcid holds two
/// descriptors per driver (its channel and its output pipe), which for a
/// thousand drivers is more than the usual soft limit of 1024.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            log::warn!("raising the open-file limit to {:?}: {e}", limit.maximum);
        }
    }
}

/// Prints the readiness line on standard output (which only pcid writes:
/// drivers' output goes to pcid's log) and on the `--ready-fd` descriptor.
fn announce_ready(
    ready: usize,
    total: usize,
    ready_file: Option<&std::fs::File>,
) -> Result<(), DaemonError> {
    let line = format!("pcid: ready: {ready} drivers\n");
    log::info!("{ready} of {total} drivers ready");
    let mut stdout = std::io::stdout().lock();
    // stdout may be closed by the launcher; readiness is still announced on the fd.
    let _ = stdout.write_all(line.as_bytes());
    let _ = stdout.flush();
    if let Some(mut f) = ready_file {
        f.write_all(line.as_bytes())
            .map_err(|source| DaemonError::ReadyFd {
                fd: std::os::fd::AsRawFd::as_raw_fd(f) as u32,
                source,
            })?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum SpawnError {
    #[error("driver program {program:?} (from {location}) not found in {searched}")]
    NotFound {
        program: String,
        location: String,
        searched: String,
    },
    #[error("creating the driver channel: {0}")]
    Channel(std::io::Error),
    #[error("creating the pipe for the driver's output: {0}")]
    Output(std::io::Error),
    #[error("spawning {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

/// Spawns the driver of `f`; returns its process id, pcid's end of its
/// channel and the reading end of its output pipe.
fn spawn_driver(
    f: &PciFunction,
    entry: &crate::matching::DriverEntry,
    bus_env: Vec<(String, std::ffi::OsString)>,
    options: &Options,
) -> Result<(rustix::process::Pid, DriverChannel, OwnedFd), SpawnError> {
    let command = &entry.command;
    let program = entry.program();
    let path_var = std::env::var_os("PATH");
    let resolved = MatchTable::resolve_program(program, &options.driver_path, path_var.clone())
        .ok_or_else(|| SpawnError::NotFound {
            program: program.to_string(),
            location: entry.location.to_string(),
            searched: options
                .driver_path
                .iter()
                .map(|p| p.display().to_string())
                .chain(
                    path_var
                        .iter()
                        .flat_map(std::env::split_paths)
                        .map(|p| p.display().to_string()),
                )
                .collect::<Vec<_>>()
                .join(":"),
        })?;
    let (ours, theirs) = DriverChannel::pair().map_err(SpawnError::Channel)?;
    // Both output streams into one close-on-exec pipe: the child gets the
    // write end as fds 1 and 2; pcid keeps only the read end, so it sees end
    // of file once the driver (and anything it started) is gone.
    let (output, output_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpawnError::Output(e.into()))?;
    let output_w2 = output_w.try_clone().map_err(SpawnError::Output)?;
    let mut cmd = Command::new(&resolved);
    cmd.args(command.iter().skip(1))
        .env_clear()
        .envs(driver_environment(
            &f.address.to_string(),
            std::env::var_os(RUST_LOG),
            bus_env,
            &options.driver_env,
        ))
        .stdin(std::process::Stdio::null())
        .stdout(output_w)
        .stderr(output_w2);
    let spawned = spawn_with_channel(&mut cmd, theirs);
    // Drop pcid's copies of the pipe's write end now.
    drop(cmd);
    let child = spawned.map_err(|source| SpawnError::Spawn {
        program: resolved.display().to_string(),
        source,
    })?;
    // pcid reaps its children itself (waitpid), so the handle is only
    // needed for the process id; dropping it neither kills nor waits.
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| SpawnError::Spawn {
            program: resolved.display().to_string(),
            source: std::io::Error::other(format!("unusable process id {}", child.id())),
        })?;
    drop(child);
    Ok((pid, ours, output))
}

/// Takes the readiness descriptor `--ready-fd N` over: close-on-exec from
/// now on, so that no driver inherits it.
fn adopt_ready_fd(fd: u32) -> Result<std::fs::File, DaemonError> {
    let raw = i32::try_from(fd).map_err(|_| DaemonError::ReadyFd {
        fd,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    pcid_interface::transport::adopt_inherited_fd(raw)
        .map(std::fs::File::from)
        .map_err(|source| DaemonError::ReadyFd { fd, source })
}

/// One driver's output pipe and the partial line read from it.
struct DriverOutput {
    /// The driver's address and program name, put before each line.
    prefix: String,
    /// The pipe's reading end.
    fd: OwnedFd,
    /// Bytes read that do not end a line yet.
    pending: Vec<u8>,
}

impl DriverOutput {
    fn new(prefix: String, fd: OwnedFd) -> Self {
        Self {
            prefix,
            fd,
            pending: Vec::new(),
        }
    }

    /// Writes every complete line of `pending` (and, at end of file, the rest)
    /// to pcid's standard error, each prefixed.
    fn emit(&mut self, eof: bool) {
        let out = self.take_lines(eof);
        if !out.is_empty() {
            let _ = std::io::stderr().lock().write_all(&out);
        }
    }

    /// Takes the complete lines of `pending` (all of it at end of file) as
    /// prefixed text; lines longer than [`MAX_OUTPUT_LINE`] are split.
    fn take_lines(&mut self, eof: bool) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let cut = match self.pending.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_OUTPUT_LINE => Some((i, i + 1)),
                _ if self.pending.len() > MAX_OUTPUT_LINE => {
                    Some((MAX_OUTPUT_LINE, MAX_OUTPUT_LINE))
                }
                _ if eof && !self.pending.is_empty() => {
                    Some((self.pending.len(), self.pending.len()))
                }
                _ => None,
            };
            let Some((end, consumed)) = cut else { break };
            let line = String::from_utf8_lossy(&self.pending[..end]);
            out.extend_from_slice(
                format!("{}: {}\n", self.prefix, line.trim_end_matches('\r')).as_bytes(),
            );
            self.pending.drain(..consumed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> DriverOutput {
        let (r, _w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        DriverOutput::new("0000:00:04.0 d".into(), r)
    }

    #[test]
    fn driver_output_is_forwarded_line_by_line_with_a_prefix() {
        let mut o = output();
        o.pending.extend_from_slice(b"one\ntwo\r\nthr");
        assert_eq!(
            String::from_utf8(o.take_lines(false)).unwrap(),
            "0000:00:04.0 d: one\n0000:00:04.0 d: two\n"
        );
        assert_eq!(o.pending, b"thr");
        o.pending.extend_from_slice(b"ee");
        assert!(o.take_lines(false).is_empty());
        assert_eq!(
            String::from_utf8(o.take_lines(true)).unwrap(),
            "0000:00:04.0 d: three\n"
        );
        assert!(o.pending.is_empty());
        assert!(o.take_lines(true).is_empty());
    }

    #[test]
    fn long_lines_are_split_and_bad_utf8_is_replaced() {
        let mut o = output();
        o.pending
            .extend(std::iter::repeat_n(b'x', MAX_OUTPUT_LINE + 10));
        o.pending.extend_from_slice(b"\n\xff\n");
        let text = String::from_utf8(o.take_lines(false)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0].len(), "0000:00:04.0 d: ".len() + MAX_OUTPUT_LINE);
        assert_eq!(lines[1], format!("0000:00:04.0 d: {}", "x".repeat(10)));
        assert_eq!(lines[2], "0000:00:04.0 d: \u{fffd}");
    }

    #[test]
    fn the_driver_environment_is_minimal_and_ordered() {
        let env = driver_environment(
            "0000:00:04.0",
            Some("debug".into()),
            vec![("PCID_SIM_MODEL".into(), "/m/a.toml".into())],
            &[("A".into(), "1".into())],
        );
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("PCID_DEVICE".to_string(), "0000:00:04.0".to_string()),
                ("RUST_LOG".to_string(), "debug".to_string()),
                ("PCID_SIM_MODEL".to_string(), "/m/a.toml".to_string()),
                ("A".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(driver_environment("x", None, Vec::new(), &[]).len(), 1);
    }
}
