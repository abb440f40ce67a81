//! pcid's runtime on Redox.
//!
//! 1. Fork into the background (`pcid_interface::redox::daemon`; init waits until pcid
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
//! 5. Loop: scheme requests → scheme state → events → [`Engine`] (the
//!    relay) → queued frames plus an `EVENT_READ` posted on the handle the
//!    frame is for. Deadlines of the relay arm a `/scheme/time` timer.
//!
//! A driver is gone when the last descriptor of its channel closes (the
//! kernel sends pcid a close notification when the process exits). The
//! process pcid spawned is only the daemon fork's parent, which exits as
//! soon as the driver is ready, so its exit is logged and otherwise ignored.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use event::{EventFlags, EventQueue};
use pcid_hw::HwError;
use pcid_interface::function::{PciAddress, PciFunction};
use pcid_interface::redox::daemon::{self as redox_daemon_support, DaemonError, Readiness};
use pcid_interface::redox::event::Timer;
use pcid_interface::redox::{function_dir, Bar};
use pcid_interface::transport::spawn_with_fd;
use redox_scheme::{RequestKind, Response, SignalBehavior, Socket};

use super::config::ConfigSpace;
use super::engine::{Engine, Host, Started};
use super::enumerate::{enable, enumerate, ConfigAccess};
use super::scheme::PciScheme;
use crate::cli::Args;
use crate::matching::{MatchError, MatchTable};
use crate::relay::RelayConfig;

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
             init (daemon fork, INIT_NOTIFY)"
        );
    }
    let args = args.clone();
    redox_daemon_support::run("pcid", move |readiness| match serve(&args, readiness) {
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
        // Devices are listed under the driver's program name (`nvmed`), as
        // on Linux.
        let name = std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.clone());
        log::info!(
            "{}: {} ({}) → {}",
            function.address,
            entry.name,
            entry.location,
            path.display()
        );
        out.push(Plan {
            function: function.clone(),
            name,
            program: path,
            args: rest.to_vec(),
        });
    }
    Ok(out)
}

fn spawn_all(plans: Vec<Plan>) -> Vec<Started> {
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
        results.push(Started {
            function: plan.function,
            name: plan.name,
            result,
        });
    }
    // Reap the spawned processes in the background. Each is the parent half
    // of a daemon fork and exits once its driver is ready; an exit
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
    results
}

/// The OS side of the engine: scheme socket, configuration space, readiness.
struct RedoxHost {
    socket: Socket,
    cfg: ConfigSpace,
    readiness: Option<Readiness>,
}

impl Host for RedoxHost {
    fn notify(&mut self, handle: usize) {
        let resp = Response::post_fevent(handle, EventFlags::READ.bits() as usize);
        if let Err(e) = self.socket.write_response(resp, SignalBehavior::Restart) {
            log::error!("pcid: posting an event on handle {handle}: {e}");
        }
    }

    fn enable(&mut self, address: PciAddress, bars: &[Bar]) {
        let command = enable(&self.cfg, address, bars);
        log::debug!("{address}: enabled (command {command:#06x})");
    }

    fn ready(&mut self, ready: usize, total: usize) {
        println!("pcid: ready: {ready} drivers");
        log::info!("pcid: {ready} of {total} drivers ready");
        if let Some(readiness) = self.readiness.take() {
            if let Err(e) = readiness.ready() {
                log::error!("pcid: {e}");
            }
        }
    }

    fn drop_privileges(&mut self) {
        if let Err(e) = redox_daemon_support::drop_privileges() {
            log::error!("pcid: {e}");
        }
    }
}

/// Everything the event loop owns.
struct Runtime {
    host: RedoxHost,
    engine: Engine,
    socket_closed: bool,
}

impl Runtime {
    /// Serves every request queued on the scheme socket.
    fn serve_requests(&mut self) -> Result<(), RedoxError> {
        loop {
            let request = match self.host.socket.next_request(SignalBehavior::Restart) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    log::warn!("pcid: scheme socket closed");
                    self.socket_closed = true;
                    return Ok(());
                }
                Err(e) if e.errno == syscall::EAGAIN || e.errno == syscall::EWOULDBLOCK => {
                    return Ok(())
                }
                Err(e) => return Err(sys("reading scheme requests")(e)),
            };
            let mut scheme = PciScheme {
                state: &mut self.engine.state,
                events: Vec::new(),
            };
            match request.kind() {
                RequestKind::Call(call) => {
                    let response = call.handle_sync(&mut scheme);
                    let events = scheme.events;
                    self.host
                        .socket
                        .write_response(response, SignalBehavior::Restart)
                        .map_err(sys("writing a scheme response"))?;
                    self.engine.dispatch(&mut self.host, events, Instant::now());
                }
                RequestKind::OnClose { id } => {
                    redox_scheme::scheme::SchemeSync::on_close(&mut scheme, id);
                    let events = scheme.events;
                    self.engine.dispatch(&mut self.host, events, Instant::now());
                }
                RequestKind::SendFd(request) => {
                    // Nothing in this scheme takes file descriptors.
                    self.host
                        .socket
                        .write_response(
                            Response::err(syscall::EOPNOTSUPP, request),
                            SignalBehavior::Restart,
                        )
                        .map_err(sys("writing a scheme response"))?;
                }
                RequestKind::RecvFd(request) => {
                    // Nor hands them out.
                    self.host
                        .socket
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
    let shown: Vec<(PciFunction, Vec<Bar>)> = found
        .iter()
        .map(|(f, bars, _)| (f.clone(), bars.clone()))
        .collect();
    let engine = Engine::new(
        &shown,
        RelayConfig {
            deadlines: args.deadlines,
            exit_after_shutdown: args.exit_after_shutdown,
        },
    );

    let queue = EventQueue::<usize>::new().map_err(os("creating an event queue"))?;
    let mut timer = Timer::new().map_err(io("opening a timer"))?;
    queue
        .subscribe(socket.inner().raw(), SOCKET, EventFlags::READ)
        .map_err(os("subscribing to the scheme socket"))?;
    queue
        .subscribe(timer.raw_fd(), TIMER, EventFlags::READ)
        .map_err(os("subscribing to the timer"))?;

    let (spawned_tx, spawned_rx) = mpsc::channel::<Vec<Started>>();
    let planned = plans.len();
    std::thread::spawn(move || {
        let started = spawn_all(plans);
        let _ = spawned_tx.send(started);
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
        host: RedoxHost {
            socket,
            cfg,
            readiness: Some(readiness),
        },
        engine,
        socket_closed: false,
    };
    loop {
        rt.serve_requests()?;
        if let Ok(started) = spawned_rx.try_recv() {
            rt.engine.register(&mut rt.host, started, Instant::now());
        }
        if rt
            .engine
            .next_deadline()
            .is_some_and(|d| d <= Instant::now())
        {
            rt.engine.tick(&mut rt.host, Instant::now());
        }
        if rt.engine.exit_requested() {
            log::info!("pcid: exiting after shutdown");
            return Ok(());
        }
        if rt.socket_closed {
            return Err(RedoxError::Os {
                what: "serving the pci scheme",
                source: std::io::Error::other("the scheme socket was closed"),
            });
        }
        if let Some(deadline) = rt.engine.next_deadline() {
            timer
                .arm_after(deadline.saturating_duration_since(Instant::now()))
                .map_err(io("arming the timer"))?;
        }
        queue.next_event().map_err(os("waiting for events"))?;
    }
}
