//! The pcid runtime on Unix systems (Linux): spawns drivers, runs the control
//! endpoint and drives the [`Relay`] state machine.
//!
//! Drivers start with a minimal environment (see [`driver_environment`]):
//! `PCID_CLIENT_CHANNEL`, `PCID_DEVICE`, `RUST_LOG` when pcid has it, and what
//! `--driver-env` adds — nothing else of pcid's environment. Their standard
//! output and standard error go to one pipe per driver, read by pcid and
//! written to pcid's standard error (its log) one line at a time, each line
//! prefixed with the driver's PCI address and program name; pcid's standard
//! output carries the readiness line only, and the `--ready-fd` descriptor is
//! close-on-exec, so no driver can write to either.
//!
//! Threads:
//! * one reader per driver channel and one per control connection, each
//!   blocked in `recv` and forwarding what it reads to the event loop over an
//!   mpsc channel — a slow or silent driver never delays another;
//! * one writer per control connection (the event loop never blocks on a
//!   client that does not read);
//! * the accept loop, which refuses peers whose uid is not pcid's own;
//! * a signal thread (`SIGCHLD` → reap children, `SIGTERM`/`SIGINT` → exit);
//! * optionally a stdin watcher (`--exit-on-stdin-eof`);
//! * one thread forwarding every driver's output lines to pcid's log.
//!
//! The event loop owns the child processes and the relay; it waits on the mpsc
//! channel at most until the relay's next start deadline.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pcid_interface::function::PciFunction;
use pcid_interface::protocol::{ControlMessage, DriverMessage};
use pcid_interface::transport::{
    spawn_with_channel, Channel, ControlChannel, ControlError, ControlListener, DriverChannel,
    Sender, TransportError,
};

use crate::bus::{describe, Bus, BusError};
use crate::matching::{MatchError, MatchTable};
use crate::relay::{ClientId, DriverId, Input, Output, Relay, RelayConfig, StartDeadlines};

/// Environment variable telling a driver which function it serves (for logs).
pub const PCID_DEVICE: &str = "PCID_DEVICE";
/// pcid's log filter, passed on to drivers when pcid has it.
pub const RUST_LOG: &str = "RUST_LOG";
/// Variables a driver always gets from pcid and `--driver-env` may not set.
pub const RESERVED_DRIVER_ENV: [&str; 2] = [pcid_interface::PCID_CLIENT_CHANNEL, PCID_DEVICE];
/// Longest line forwarded from a driver's output; longer lines are split.
pub const MAX_OUTPUT_LINE: usize = 4096;

/// Time a driver channel send may wait for the driver to read.
const DRIVER_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a control client send may wait for the client to read.
const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// A thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(std::io::Error),
}

/// The whole environment of a driver pcid spawns for `address` (besides
/// `PCID_CLIENT_CHANNEL`, which the spawn adds with the channel's fd number):
/// `PCID_DEVICE=<address>`, pcid's own `RUST_LOG` if it has one (`rust_log`),
/// then the `--driver-env` pairs in order. Nothing else of pcid's environment
/// reaches a driver: a variable meant for one program (say, a test switch)
/// cannot leak into every driver on the machine.
pub fn driver_environment(
    address: &str,
    rust_log: Option<std::ffi::OsString>,
    extra: &[(String, String)],
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = vec![(PCID_DEVICE.into(), address.into())];
    if let Some(v) = rust_log {
        env.push((RUST_LOG.into(), v));
    }
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

enum Event {
    Relay(Input),
    ClientAccepted {
        client: ClientId,
        writer: mpsc::Sender<ControlMessage>,
    },
    ParticipantAccepted {
        channel: DriverChannel,
        pid: u32,
    },
    Signal(i32),
    StdinEof,
}

struct DriverProc {
    child: Option<Child>,
    /// Writing end of the driver's channel; dropped (closing its fd) once the
    /// driver process has been reaped, so exited drivers hold no descriptors.
    sender: Option<Sender<DriverMessage>>,
}

impl DriverProc {
    fn shutdown_channel(&self) {
        if let Some(sender) = &self.sender {
            let _ = sender.shutdown();
        }
    }
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

    let listener = match &options.control {
        Some(path) => Some(ControlListener::bind(path)?),
        None => None,
    };
    let participant_listener = match &options.participants {
        Some(path) => Some(ControlListener::bind(path)?),
        None => None,
    };

    let (tx, rx) = mpsc::channel::<Event>();
    start_signal_thread(tx.clone())?;
    if options.exit_on_stdin_eof {
        start_stdin_thread(tx.clone())?;
    }

    let mut relay = Relay::new(RelayConfig {
        deadlines: options.deadlines,
        exit_after_shutdown: options.exit_after_shutdown,
    });
    let mut drivers: Vec<DriverProc> = Vec::new();
    let mut outputs: Vec<DriverOutput> = Vec::new();
    for f in &functions {
        let Some(entry) = table.find(f) else {
            log::debug!("{}: no driver", describe(f));
            continue;
        };
        match spawn_driver(f, entry, options, &tx, relay.driver_count()) {
            Ok((child, sender, output)) => {
                let pid = child.id();
                let program = entry.program();
                let name = std::path::Path::new(program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| program.to_string());
                log::info!("{}: spawned {name} (pid {pid})", describe(f));
                outputs.push(DriverOutput::new(format!("{} {name}", f.address), output));
                relay.add_driver(f.clone(), name, pid, Instant::now());
                drivers.push(DriverProc {
                    child: Some(child),
                    sender: Some(sender),
                });
            }
            Err(e) => log::error!("{}: {e}", f.address),
        }
    }
    log::info!("{} drivers spawned", drivers.len());
    if !outputs.is_empty() {
        std::thread::Builder::new()
            .name("driver-output".into())
            .spawn(move || forward_output(outputs))
            .map_err(DaemonError::Thread)?;
    }

    if let Some(listener) = listener {
        start_accept_thread(listener, tx.clone())?;
    }
    if let Some(listener) = participant_listener {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("participant-accept".into())
            .spawn(move || participant_accept_loop(listener, tx))
            .map_err(DaemonError::Thread)?;
    }

    let result = event_loop(&mut relay, &mut drivers, &rx, &tx, ready_file.as_ref());
    match &result {
        Ok(reason) => log::info!("exiting ({reason:?}); stopping {} drivers", drivers.len()),
        Err(e) => log::error!("{e}; stopping {} drivers", drivers.len()),
    }
    for d in &mut drivers {
        d.shutdown_channel();
        if let Some(mut child) = d.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    // The listeners live in the accept threads until the process ends:
    // remove their socket files here so no client finds a dead endpoint.
    for path in options.control.iter().chain(&options.participants) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing socket {}: {e}", path.display());
            }
        }
    }
    result
}

fn event_loop(
    relay: &mut Relay,
    drivers: &mut Vec<DriverProc>,
    rx: &mpsc::Receiver<Event>,
    tx_for_readers: &mpsc::Sender<Event>,
    ready_file: Option<&std::fs::File>,
) -> Result<ExitReason, DaemonError> {
    let mut clients: BTreeMap<ClientId, mpsc::Sender<ControlMessage>> = BTreeMap::new();
    // Settle immediately when there are no drivers at all.
    let mut pending = relay.handle(Input::Tick, Instant::now());
    loop {
        for output in pending.drain(..) {
            match output {
                Output::ToDriver { driver, message } => {
                    if let Some(sender) = drivers.get(driver).and_then(|d| d.sender.as_ref()) {
                        if let Err(e) = sender.send(&message) {
                            log::warn!(
                                "{}: sending to driver failed: {e}",
                                address_of(relay, driver)
                            );
                            let _ = sender.shutdown();
                        }
                    }
                }
                Output::CloseDriver { driver } => {
                    if let Some(d) = drivers.get(driver) {
                        d.shutdown_channel();
                    }
                }
                Output::ToClient { client, message } => {
                    if let Some(w) = clients.get(&client) {
                        let _ = w.send(message);
                    }
                }
                Output::CloseClient { client } => {
                    clients.remove(&client);
                }
                Output::Ready { ready, total } => {
                    announce_ready(ready, total, ready_file)?;
                }
                Output::Exit => return Ok(ExitReason::ShutdownDone),
            }
        }
        let timeout = relay
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let event = match timeout {
            Some(t) => match rx.recv_timeout(t) {
                Ok(e) => Some(e),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(ExitReason::StdinClosed),
            },
            None => match rx.recv() {
                Ok(e) => Some(e),
                Err(mpsc::RecvError) => return Ok(ExitReason::StdinClosed),
            },
        };
        let input = match event {
            None => Input::Tick,
            Some(Event::Relay(input)) => {
                if let Input::DriverChannelClosed { driver } = input {
                    // The process probably exited; reap it now if so.
                    pending.extend(reap(relay, drivers, Some(driver)));
                }
                input
            }
            Some(Event::ClientAccepted { client, writer }) => {
                clients.insert(client, writer);
                Input::ClientConnected { client }
            }
            Some(Event::ParticipantAccepted { mut channel, pid }) => {
                let id = relay.add_participant(pid, Instant::now());
                channel.set_send_timeout(DRIVER_SEND_TIMEOUT);
                // DriverIds index both the relay's channels and `drivers`.
                while drivers.len() < id {
                    drivers.push(DriverProc {
                        child: None,
                        sender: None,
                    });
                }
                drivers.push(DriverProc {
                    child: None,
                    sender: Some(channel.sender()),
                });
                let reader_tx = tx_for_readers.clone();
                let started = std::thread::Builder::new()
                    .name(format!("participant-{id}"))
                    .spawn(move || driver_reader(channel, id, reader_tx));
                if let Err(e) = started {
                    log::error!("participant channel: cannot start its reader: {e}");
                    Input::DriverChannelClosed { driver: id }
                } else {
                    log::info!("participant channel #{id} opened (pid {pid})");
                    Input::Tick
                }
            }
            Some(Event::Signal(sig)) if sig == signal_hook::consts::SIGCHLD => {
                pending.extend(reap(relay, drivers, None));
                continue;
            }
            Some(Event::Signal(sig)) => return Ok(ExitReason::Signal(sig)),
            Some(Event::StdinEof) => return Ok(ExitReason::StdinClosed),
        };
        if let Input::ClientClosed { client } = input {
            clients.remove(&client);
        }
        pending.extend(relay.handle(input, Instant::now()));
    }
}

fn address_of(relay: &Relay, driver: DriverId) -> String {
    relay
        .address(driver)
        .map(|a| a.to_string())
        .unwrap_or_else(|| format!("driver #{driver}"))
}

/// Reap exited children (all, or just `only`), feeding their exits to the relay.
fn reap(relay: &mut Relay, drivers: &mut [DriverProc], only: Option<DriverId>) -> Vec<Output> {
    let mut out = Vec::new();
    for (id, d) in drivers.iter_mut().enumerate() {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let Some(child) = d.child.as_mut() else {
            continue;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                d.child = None;
                d.shutdown_channel();
                d.sender = None;
                out.extend(relay.handle(
                    Input::DriverExited {
                        driver: id,
                        status: status.to_string(),
                    },
                    Instant::now(),
                ));
            }
            Ok(None) => {}
            Err(e) => log::warn!("{}: waiting for driver: {e}", address_of(relay, id)),
        }
    }
    out
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
    #[error("starting the channel reader: {0}")]
    Thread(std::io::Error),
}

fn spawn_driver(
    f: &PciFunction,
    entry: &crate::matching::DriverEntry,
    options: &Options,
    tx: &mpsc::Sender<Event>,
    id: DriverId,
) -> Result<(Child, Sender<DriverMessage>, OwnedFd), SpawnError> {
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
    let (mut ours, theirs) = DriverChannel::pair().map_err(SpawnError::Channel)?;
    ours.set_send_timeout(DRIVER_SEND_TIMEOUT);
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
    let sender = ours.sender();
    let tx = tx.clone();
    let started = std::thread::Builder::new()
        .name(format!("drv-{}", f.address))
        .spawn(move || driver_reader(ours, id, tx));
    if let Err(e) = started {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(SpawnError::Thread(e));
    }
    Ok((child, sender, output))
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
    prefix: String,
    fd: OwnedFd,
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

/// Forwards every driver's output to pcid's standard error until each pipe
/// reaches end of file.
fn forward_output(mut outputs: Vec<DriverOutput>) {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut chunk = vec![0u8; 16 * 1024];
    while !outputs.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = outputs
                .iter()
                .map(|o| PollFd::new(&o.fd, PollFlags::IN))
                .collect();
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::error!("reading driver output: {e}; no more driver output is logged");
                    return;
                }
            }
            fds.iter().map(|f| !f.revents().is_empty()).collect()
        };
        let mut closed = vec![false; outputs.len()];
        for (i, o) in outputs.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            match rustix::io::read(o.fd.as_fd(), &mut chunk) {
                Ok(0) => closed[i] = true,
                Ok(n) => {
                    o.pending.extend_from_slice(&chunk[..n]);
                    o.emit(false);
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(e) => {
                    log::warn!("{}: reading its output: {e}", o.prefix);
                    closed[i] = true;
                }
            }
            if closed[i] {
                o.emit(true);
            }
        }
        let mut i = 0;
        outputs.retain(|_| {
            i += 1;
            !closed[i - 1]
        });
    }
}

fn driver_reader(mut channel: DriverChannel, driver: DriverId, tx: mpsc::Sender<Event>) {
    loop {
        let input = match channel.recv(None) {
            Ok(message) => Input::DriverMessage { driver, message },
            Err(TransportError::Malformed { seq, error }) => Input::DriverBadFrame {
                driver,
                error: format!("{error} (seq {seq})"),
            },
            Err(e @ TransportError::ClosedMidFrame { .. }) => Input::DriverBadFrame {
                driver,
                error: format!("truncated frame: {e}"),
            },
            Err(TransportError::Timeout(_)) => continue,
            Err(_) => Input::DriverChannelClosed { driver },
        };
        let last = !matches!(input, Input::DriverMessage { .. });
        if tx.send(Event::Relay(input)).is_err() {
            return;
        }
        if last {
            // After a bad frame the relay closes the channel; report the close too.
            if tx
                .send(Event::Relay(Input::DriverChannelClosed { driver }))
                .is_err()
            {
                return;
            }
            return;
        }
    }
}

fn start_accept_thread(
    listener: ControlListener,
    tx: mpsc::Sender<Event>,
) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name("control-accept".into())
        .spawn(move || accept_loop(listener, tx))
        .map(drop)
        .map_err(DaemonError::Thread)
}

fn accept_loop(listener: ControlListener, tx: mpsc::Sender<Event>) {
    let own_uid = rustix::process::geteuid().as_raw();
    let mut next_client: ClientId = 1;
    loop {
        let (channel, cred) = match listener.accept(None) {
            Ok(c) => c,
            Err(e) => {
                log::error!("control endpoint {}: {e}", listener.path().display());
                // Avoid a hot loop on a persistent error.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !cred.is_same_user() {
            log::error!(
                "control endpoint: refused connection from pid {} uid {}: only uid {own_uid} may control pcid",
                cred.pid,
                cred.uid
            );
            let _ = channel.shutdown();
            continue;
        }
        let client = next_client;
        next_client += 1;
        log::info!("control client {client} connected (pid {})", cred.pid);
        let (wtx, wrx) = mpsc::channel::<ControlMessage>();
        if tx
            .send(Event::ClientAccepted {
                client,
                writer: wtx,
            })
            .is_err()
        {
            return;
        }
        if let Err(e) = start_client_threads(channel, client, wrx, tx.clone()) {
            log::error!("control client {client}: {e}");
            let _ = tx.send(Event::Relay(Input::ClientClosed { client }));
        }
    }
}

/// Accepts participant connections (same uid only) and hands each channel
/// to the event loop.
fn participant_accept_loop(listener: ControlListener, tx: mpsc::Sender<Event>) {
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        let (channel, cred) = match listener.accept_channel::<DriverMessage>(None) {
            Ok(c) => c,
            Err(e) => {
                log::error!("participant endpoint {}: {e}", listener.path().display());
                // Avoid a hot loop on a persistent error.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !cred.is_same_user() {
            log::error!(
                "participant endpoint: refused connection from pid {} uid {}: only uid {own_uid} may take part",
                cred.pid,
                cred.uid
            );
            let _ = channel.shutdown();
            continue;
        }
        let pid = cred.pid;
        if tx
            .send(Event::ParticipantAccepted { channel, pid })
            .is_err()
        {
            return;
        }
    }
}

fn start_client_threads(
    mut channel: ControlChannel,
    client: ClientId,
    wrx: mpsc::Receiver<ControlMessage>,
    tx: mpsc::Sender<Event>,
) -> std::io::Result<()> {
    channel.set_send_timeout(CLIENT_SEND_TIMEOUT);
    let sender = channel.sender();
    std::thread::Builder::new()
        .name(format!("ctl-{client}-w"))
        .spawn(move || client_writer(sender, client, wrx))?;
    std::thread::Builder::new()
        .name(format!("ctl-{client}-r"))
        .spawn(move || client_reader(channel, client, tx))?;
    Ok(())
}

fn client_writer(
    sender: Sender<ControlMessage>,
    client: ClientId,
    wrx: mpsc::Receiver<ControlMessage>,
) {
    for message in wrx {
        if let Err(e) = sender.send(&message) {
            log::warn!("control client {client}: send failed: {e}");
            break;
        }
    }
    // The event loop dropped this client (or sending failed): close it.
    let _ = sender.shutdown();
}

fn client_reader(mut channel: Channel<ControlMessage>, client: ClientId, tx: mpsc::Sender<Event>) {
    loop {
        let input = match channel.recv(None) {
            Ok(message) => Input::ClientMessage { client, message },
            Err(TransportError::Malformed { seq, error }) => Input::ClientBadFrame {
                client,
                fatal: error.is_stream_fatal(),
                error: format!("{error} (seq {seq})"),
            },
            Err(TransportError::Timeout(_)) => continue,
            Err(_) => Input::ClientClosed { client },
        };
        let stop = matches!(
            input,
            Input::ClientClosed { .. } | Input::ClientBadFrame { fatal: true, .. }
        );
        if tx.send(Event::Relay(input)).is_err() || stop {
            if stop {
                let _ = tx.send(Event::Relay(Input::ClientClosed { client }));
            }
            return;
        }
    }
}

fn start_signal_thread(tx: mpsc::Sender<Event>) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT])
        .map_err(DaemonError::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(DaemonError::Thread)
}

fn start_stdin_thread(tx: mpsc::Sender<Event>) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = tx.send(Event::StdinEof);
        })
        .map(drop)
        .map_err(DaemonError::Thread)
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
                ("A".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(driver_environment("x", None, &[]).len(), 1);
    }
}
