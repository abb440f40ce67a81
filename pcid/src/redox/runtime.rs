//! pcid's runtime on Redox.
//!
//! 1. Fork into the background with `redox_daemon` (init waits until pcid
//!    reports ready: every driver sent `Ready`, went away, or passed its
//!    start deadline — the same moment the relay announces readiness on Linux).
//! 2. Open configuration space (ECAM from MCFG, else ports), enumerate,
//!    size BARs, load the match tables.
//! 3. Serve the `pci` scheme from this thread. A spawner thread opens
//!    `/scheme/pci/<function>/channel` for every matched function (this
//!    thread answers those opens and enables the function: memory space and
//!    bus mastering) and spawns the driver with the handle inherited under
//!    `PCID_CLIENT_CHANNEL`, without waiting for one driver before starting
//!    the next. Drivers come up in parallel.
//! 4. Once every driver is spawned, drop privileges with `setrens(0, 0)`:
//!    pcid keeps serving its scheme but can open nothing new.
//! 5. Loop: scheme requests → [`SchemeState`] → events → [`Relay`] →
//!    outputs → queued frames plus an `EVENT_READ` posted on the handle the
//!    frame is for. Deadlines of the relay arm a `/scheme/time` timer.
//!
//! A driver is gone when the last descriptor of its channel closes (the
//! kernel sends pcid a close notification when the process exits). The
//! process pcid spawned is only the `redox_daemon` parent, which exits as
//! soon as the driver is ready, so its exit is logged and otherwise ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use event::{EventFlags, EventQueue};
use pcid_hw::HwError;
use pcid_interface::function::{PciAddress, PciFunction};
use pcid_interface::redox::daemon::{self as redox_daemon_support, DaemonError, Readiness};
use pcid_interface::redox::event::Timer;
use pcid_interface::redox::{format_bars, function_dir, Bar};
use pcid_interface::transport::spawn_with_fd;
use redox_scheme::{RequestKind, Response, SignalBehavior, Socket};

use super::config::ConfigSpace;
use super::enumerate::{enable, enumerate, ConfigAccess};
use super::scheme::PciScheme;
use super::state::{Event, SchemeState};
use crate::cli::Args;
use crate::matching::{MatchError, MatchTable};
use crate::relay::{DriverId, Input, Output, Relay, RelayConfig};

/// Errors that stop pcid on Redox.
#[derive(Debug, thiserror::Error)]
pub enum RedoxError {
    /// Configuration space could not be opened.
    #[error("configuration space: {0}")]
    Hw(#[from] HwError),
    /// A match table is invalid.
    #[error(transparent)]
    Match(#[from] MatchError),
    /// Daemon start-up or privilege drop failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The scheme, event queue or timer failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(libredox::error::Error) -> RedoxError {
    move |e| RedoxError::Os {
        what,
        source: e.into(),
    }
}

fn sys(what: &'static str) -> impl FnOnce(syscall::Error) -> RedoxError {
    move |e| RedoxError::Os {
        what,
        source: std::io::Error::from_raw_os_error(e.errno),
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> RedoxError {
    move |source| RedoxError::Os { what, source }
}

/// Runs pcid on Redox: forks into the background and never returns in the
/// parent (it exits once pcid is ready); returns an error only if the fork
/// itself failed.
pub fn run(args: &Args) -> Result<(), RedoxError> {
    if args.control.is_some() {
        log::warn!(
            "pcid: --control is ignored on Redox: the control endpoint is /scheme/pci/control"
        );
    }
    if args.ready_fd.is_some() || args.exit_on_stdin_eof {
        log::warn!(
            "pcid: --ready-fd and --exit-on-stdin-eof are ignored on Redox: readiness goes to \
             init (redox_daemon, INIT_NOTIFY)"
        );
    }
    let args = args.clone();
    redox_daemon_support::run(move |readiness| match serve(&args, readiness) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pcid: {e}");
            1
        }
    })?;
    Ok(())
}

/// One driver to start.
#[derive(Debug, Clone)]
struct Plan {
    function: PciFunction,
    name: String,
    program: PathBuf,
    args: Vec<String>,
}

/// What the spawner thread reports once every driver was started.
struct Spawned {
    results: Vec<(Plan, Result<u32, String>)>,
}

const SOCKET: usize = 0;
const TIMER: usize = 1;

/// Default driver directories on Redox: the initfs, then the root filesystem
/// (where Redox keeps its drivers).
fn default_driver_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("/scheme/initfs/lib/drivers"),
        PathBuf::from("/usr/lib/drivers"),
    ]
}

fn plan(args: &Args, functions: &[(PciFunction, Vec<Bar>, bool)]) -> Result<Vec<Plan>, RedoxError> {
    let table = MatchTable::load_dir(&args.match_dir)?;
    let mut dirs = args.driver_path.clone();
    dirs.extend(default_driver_dirs());
    let mut out = Vec::new();
    for (function, _, is_bridge) in functions {
        if *is_bridge {
            continue;
        }
        let Some(entry) = table.find(function) else {
            continue;
        };
        let Some(command) = entry.command.as_ref() else {
            continue;
        };
        let Some((program, rest)) = command.split_first() else {
            continue;
        };
        let Some(path) = MatchTable::resolve_program(program, &dirs, std::env::var_os("PATH"))
        else {
            log::error!(
                "{}: driver {program:?} ({}) not found in {dirs:?} or PATH",
                function.address,
                entry.location
            );
            continue;
        };
        out.push(Plan {
            function: function.clone(),
            name: entry.name.clone(),
            program: path,
            args: rest.to_vec(),
        });
    }
    Ok(out)
}

fn spawn_all(plans: Vec<Plan>) -> Spawned {
    let mut results = Vec::new();
    let mut children = Vec::new();
    for plan in plans {
        let path = format!("{}/channel", function_dir(plan.function.address));
        let result =
            libredox::call::open(&path, libredox::flag::O_RDWR | libredox::flag::O_CLOEXEC, 0)
                .map_err(|e| format!("open {path}: {e}"))
                .and_then(|fd| {
                    let mut cmd = Command::new(&plan.program);
                    cmd.args(&plan.args)
                        .env_remove(redox_daemon_support::INIT_NOTIFY);
                    let spawned = spawn_with_fd(&mut cmd, fd)
                        .map_err(|e| format!("spawn {}: {e}", plan.program.display()));
                    // The child holds its own copy; pcid's side of the channel is the scheme.
                    let _ = libredox::call::close(fd);
                    spawned
                });
        let result = match result {
            Ok(child) => {
                let pid = child.id();
                children.push((plan.function.address, plan.name.clone(), child));
                Ok(pid)
            }
            Err(e) => Err(e),
        };
        results.push((plan, result));
    }
    // Reap the spawned processes in the background. Each is the parent half
    // of a `redox_daemon` fork and exits once its driver is ready; an exit
    // with failure means the driver gave up before that.
    std::thread::spawn(move || {
        for (address, name, mut child) in children {
            match child.wait() {
                Ok(status) if status.success() => {
                    log::debug!("{address}: {name} signalled readiness")
                }
                Ok(status) => log::warn!("{address}: {name} exited during start-up: {status}"),
                Err(e) => log::warn!("{address}: waiting for {name}: {e}"),
            }
        }
    });
    Spawned { results }
}

/// Everything the event loop owns.
struct Runtime {
    socket: Socket,
    state: SchemeState,
    relay: Relay,
    cfg: ConfigSpace,
    bars: BTreeMap<PciAddress, Vec<Bar>>,
    ids: BTreeMap<PciAddress, DriverId>,
    /// Events that arrived before the drivers were registered with the relay.
    pending: Option<Vec<Event>>,
    readiness: Option<Readiness>,
    exit: bool,
}

impl Runtime {
    fn notify(&self, handle: usize) {
        let resp = Response::post_fevent(handle, EventFlags::READ.bits() as usize);
        if let Err(e) = self.socket.write_response(resp, SignalBehavior::Restart) {
            log::error!("pcid: posting an event on handle {handle}: {e}");
        }
    }

    /// Serves every request queued on the scheme socket.
    fn serve_requests(&mut self) -> Result<(), RedoxError> {
        loop {
            let request = match self.socket.next_request(SignalBehavior::Restart) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    log::warn!("pcid: scheme socket closed");
                    self.exit = true;
                    return Ok(());
                }
                Err(e) if e.errno == syscall::EAGAIN || e.errno == syscall::EWOULDBLOCK => {
                    return Ok(())
                }
                Err(e) => return Err(sys("reading scheme requests")(e)),
            };
            let mut scheme = PciScheme {
                state: &mut self.state,
                events: Vec::new(),
            };
            match request.kind() {
                RequestKind::Call(call) => {
                    let response = call.handle_sync(&mut scheme);
                    let events = scheme.events;
                    self.socket
                        .write_response(response, SignalBehavior::Restart)
                        .map_err(sys("writing a scheme response"))?;
                    self.dispatch(events);
                }
                RequestKind::OnClose { id } => {
                    redox_scheme::scheme::SchemeSync::on_close(&mut scheme, id);
                    let events = scheme.events;
                    self.dispatch(events);
                }
                RequestKind::SendFd(request) => {
                    // Nothing in this scheme takes file descriptors.
                    self.socket
                        .write_response(
                            Response::err(syscall::EOPNOTSUPP, request),
                            SignalBehavior::Restart,
                        )
                        .map_err(sys("writing a scheme response"))?;
                }
                // Requests are answered at once, so there is nothing to
                // cancel; mmap does not apply to this scheme.
                RequestKind::Cancellation(_)
                | RequestKind::MsyncMsg
                | RequestKind::MunmapMsg
                | RequestKind::MmapMsg => {}
            }
        }
    }

    fn dispatch(&mut self, events: Vec<Event>) {
        for event in events {
            if let Event::ChannelOpened { address, .. } = &event {
                // As Redox's pcid: the function decodes memory and may master
                // the bus from the moment its channel is handed out.
                let bars = self.bars.get(address).map(Vec::as_slice).unwrap_or(&[]);
                let command = enable(&self.cfg, *address, bars);
                log::debug!("{address}: enabled (command {command:#06x})");
            }
            if let Some(pending) = self.pending.as_mut() {
                pending.push(event);
                continue;
            }
            self.feed(event);
        }
    }

    fn feed(&mut self, event: Event) {
        let driver = |ids: &BTreeMap<PciAddress, DriverId>, a: &PciAddress| {
            let id = ids.get(a).copied();
            if id.is_none() {
                log::info!("{a}: channel activity from a process pcid did not start; ignored");
            }
            id
        };
        let input = match event {
            Event::ChannelOpened { .. } => return,
            Event::DriverMessage { address, message } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverMessage { driver, message },
                None => return,
            },
            Event::DriverBadFrame { address, error } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverBadFrame { driver, error },
                None => return,
            },
            Event::ChannelClosed { address } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverChannelClosed { driver },
                None => return,
            },
            Event::ClientOpened { client } => Input::ClientConnected { client },
            Event::ClientMessage { client, message } => Input::ClientMessage { client, message },
            Event::ClientBadFrame {
                client,
                error,
                fatal,
            } => Input::ClientBadFrame {
                client,
                error,
                fatal,
            },
            Event::ClientClosed { client } => Input::ClientClosed { client },
        };
        self.step(input);
    }

    fn step(&mut self, input: Input) {
        let outputs = self.relay.handle(input, Instant::now());
        self.execute(outputs);
    }

    fn execute(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::ToDriver { driver, message } => {
                    let Some(address) = self.relay.address(driver) else {
                        continue;
                    };
                    match self.state.send_to_driver(address, &message) {
                        Ok(handle) => self.notify(handle),
                        Err(e) => {
                            log::error!("{address}: cannot queue a message for the driver: {e}");
                            if let Some(handle) = self.state.close_driver(address) {
                                self.notify(handle);
                            }
                            self.step(Input::DriverChannelClosed { driver });
                        }
                    }
                }
                Output::CloseDriver { driver } => {
                    if let Some(handle) = self
                        .relay
                        .address(driver)
                        .and_then(|a| self.state.close_driver(a))
                    {
                        self.notify(handle);
                    }
                }
                Output::ToClient { client, message } => {
                    match self.state.send_to_client(client, &message) {
                        Ok(handle) => self.notify(handle),
                        Err(e) => {
                            log::warn!("control client {client}: {e}; closing it");
                            if let Some(handle) = self.state.close_client(client) {
                                self.notify(handle);
                                self.step(Input::ClientClosed { client });
                            }
                        }
                    }
                }
                Output::CloseClient { client } => {
                    if let Some(handle) = self.state.close_client(client) {
                        self.notify(handle);
                    }
                }
                Output::Ready { ready, total } => {
                    println!("pcid: ready: {ready} drivers");
                    log::info!("pcid: {ready} of {total} drivers ready");
                    if let Some(readiness) = self.readiness.take() {
                        if let Err(e) = readiness.ready() {
                            log::error!("pcid: {e}");
                        }
                    }
                }
                Output::Exit => self.exit = true,
            }
        }
    }

    fn register(&mut self, spawned: Spawned) -> Result<(), RedoxError> {
        let now = Instant::now();
        for (plan, result) in spawned.results {
            match result {
                Ok(pid) => {
                    log::info!(
                        "{}: started {} ({}) as pid {pid}",
                        plan.function.address,
                        plan.name,
                        plan.program.display()
                    );
                    let address = plan.function.address;
                    let id = self.relay.add_driver(plan.function, plan.name, pid, now);
                    self.ids.insert(address, id);
                }
                Err(e) => log::error!("{}: cannot start {}: {e}", plan.function.address, plan.name),
            }
        }
        // Spawning is over: nothing new will be opened from here on.
        redox_daemon_support::drop_privileges()?;
        for event in self.pending.take().unwrap_or_default() {
            self.feed(event);
        }
        self.step(Input::Tick);
        Ok(())
    }
}

fn serve(args: &Args, readiness: Readiness) -> Result<(), RedoxError> {
    let cfg = ConfigSpace::open()?;
    log::info!("pcid: configuration space through {}", cfg.mechanism());
    let found: Vec<(PciFunction, Vec<Bar>, bool)> = enumerate(&cfg as &dyn ConfigAccess)
        .into_iter()
        .map(|f| (f.function, f.bars, f.is_bridge))
        .collect();
    for (f, bars, _) in &found {
        log::info!("pcid: {}", crate::bus::describe(f));
        for bar in bars {
            log::debug!(
                "{}: BAR{} {:#x}+{:#x}",
                f.address,
                bar.index,
                bar.address,
                bar.size
            );
        }
    }
    let plans = plan(args, &found)?;

    let socket = Socket::nonblock("pci").map_err(sys("creating the pci scheme"))?;
    let state = SchemeState::new(
        found
            .iter()
            .map(|(f, bars, _)| (f.address, format_bars(bars))),
    );
    let bars = found
        .iter()
        .map(|(f, bars, _)| (f.address, bars.clone()))
        .collect();
    let relay = Relay::new(RelayConfig {
        deadlines: args.deadlines,
        exit_after_shutdown: args.exit_after_shutdown,
    });

    let queue = EventQueue::<usize>::new().map_err(os("creating an event queue"))?;
    let timer = Timer::new().map_err(io("opening a timer"))?;
    queue
        .subscribe(socket.inner().raw(), SOCKET, EventFlags::READ)
        .map_err(os("subscribing to the scheme socket"))?;
    queue
        .subscribe(timer.raw_fd(), TIMER, EventFlags::READ)
        .map_err(os("subscribing to the timer"))?;

    let (spawned_tx, spawned_rx) = mpsc::channel::<Spawned>();
    let planned = plans.len();
    std::thread::spawn(move || {
        let spawned = spawn_all(plans);
        let _ = spawned_tx.send(spawned);
        // Wake the event loop: any request on the scheme raises an event on
        // its socket, so open and close the scheme root once.
        if let Ok(fd) = libredox::call::open(
            "/scheme/pci/",
            libredox::flag::O_RDONLY | libredox::flag::O_DIRECTORY | libredox::flag::O_CLOEXEC,
            0,
        ) {
            let _ = libredox::call::close(fd);
        }
    });
    log::info!("pcid: starting {planned} drivers");

    let mut rt = Runtime {
        socket,
        state,
        relay,
        cfg,
        bars,
        ids: BTreeMap::new(),
        pending: Some(Vec::new()),
        readiness: Some(readiness),
        exit: false,
    };
    loop {
        rt.serve_requests()?;
        if let Ok(spawned) = spawned_rx.try_recv() {
            rt.register(spawned)?;
        }
        if rt.pending.is_none()
            && rt
                .relay
                .next_deadline()
                .is_some_and(|d| d <= Instant::now())
        {
            rt.step(Input::Tick);
        }
        if rt.exit {
            log::info!("pcid: exiting after shutdown");
            return Ok(());
        }
        if let Some(deadline) = rt.relay.next_deadline() {
            timer
                .arm_after(deadline.saturating_duration_since(Instant::now()))
                .map_err(io("arming the timer"))?;
        }
        queue.next_event().map_err(os("waiting for events"))?;
    }
}
