//! The pcid runtime on Unix systems (Linux): spawns drivers, runs the control
//! endpoint and drives the [`Relay`] state machine.
//!
//! Threads:
//! * one reader per driver channel and one per control connection, each
//!   blocked in `recv` and forwarding what it reads to the event loop over an
//!   mpsc channel — a slow or silent driver never delays another;
//! * one writer per control connection (the event loop never blocks on a
//!   client that does not read);
//! * the accept loop, which refuses peers whose uid is not pcid's own;
//! * a signal thread (`SIGCHLD` → reap children, `SIGTERM`/`SIGINT` → exit);
//! * optionally a stdin watcher (`--exit-on-stdin-eof`).
//!
//! The event loop owns the child processes and the relay; it waits on the mpsc
//! channel at most until the relay's next start deadline.

use std::collections::BTreeMap;
use std::io::Write;
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
    /// Also write the readiness line to this fd.
    pub ready_fd: Option<u32>,
    /// Driver start deadlines.
    pub deadlines: StartDeadlines,
    /// Exit once a shutdown session's client disconnects.
    pub exit_after_shutdown: bool,
    /// Exit when standard input reaches end of file.
    pub exit_on_stdin_eof: bool,
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
    for f in &functions {
        let Some(entry) = table.find(f) else {
            log::debug!("{}: no driver", describe(f));
            continue;
        };
        match spawn_driver(f, entry, options, &tx, relay.driver_count()) {
            Ok((child, sender)) => {
                let pid = child.id();
                let program = entry.program();
                let name = std::path::Path::new(program)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| program.to_string());
                log::info!("{}: spawned {name} (pid {pid})", describe(f));
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

    if let Some(listener) = listener {
        start_accept_thread(listener, tx.clone())?;
    }

    let result = event_loop(&mut relay, &mut drivers, &rx, options);
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
    // The listener lives in the accept thread until the process ends: remove
    // its socket file here so no client finds a dead endpoint.
    if let Some(path) = &options.control {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("removing control socket {}: {e}", path.display());
            }
        }
    }
    result
}

fn event_loop(
    relay: &mut Relay,
    drivers: &mut [DriverProc],
    rx: &mpsc::Receiver<Event>,
    options: &Options,
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
                    announce_ready(ready, total, options.ready_fd)?;
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

fn announce_ready(ready: usize, total: usize, fd: Option<u32>) -> Result<(), DaemonError> {
    let line = format!("pcid: ready: {ready} drivers\n");
    log::info!("{ready} of {total} drivers ready");
    let mut stdout = std::io::stdout().lock();
    // stdout may be closed by the launcher; readiness is still announced on the fd.
    let _ = stdout.write_all(line.as_bytes());
    let _ = stdout.flush();
    if let Some(fd) = fd {
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))?;
            f.write_all(line.as_bytes())
        };
        write().map_err(|source| DaemonError::ReadyFd { fd, source })?;
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
) -> Result<(Child, Sender<DriverMessage>), SpawnError> {
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
    let mut cmd = Command::new(&resolved);
    cmd.args(command.iter().skip(1))
        .env(PCID_DEVICE, f.address.to_string())
        .stdin(std::process::Stdio::null());
    let child = spawn_with_channel(&mut cmd, theirs).map_err(|source| SpawnError::Spawn {
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
    Ok((child, sender))
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
