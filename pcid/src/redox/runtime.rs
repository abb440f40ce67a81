//! pcid's runtime on Redox: what Redox's hwd gets when it runs `pcid`.
//!
//! 1. Fork into the background (`pcid_interface::redox::daemon`): the
//!    process hwd started exits once pcid signals readiness, which is what
//!    hwd waits for before it lets init go on to pcid-spawner.
//! 2. Open configuration space (ECAM from acpid's MCFG table, the ports for
//!    what ECAM does not cover) and enumerate it ([`super::enumerate`]).
//! 3. Register the `pci` scheme, open the event queue and the timer, then
//!    signal readiness: from here on every request to the scheme is queued
//!    by the kernel until this loop serves it, so pcid-spawner and acpid
//!    find the scheme as soon as hwd returns.
//! 4. Loop: scheme requests → [`SchemeState`](super::state::SchemeState)
//!    (answering Redox's driver interface and `access` at once) → events →
//!    [`Engine`] (the shutdown relay) → queued frames plus `EVENT_READ`
//!    posted on the handle they are for. The relay's deadlines (the grace
//!    after a protocol driver's channel closes) wake the loop through a
//!    `/scheme/time` timer, armed only when the earliest deadline changes.
//!
//! pcid starts no driver on Redox (Redox's pcid-spawner does) and, like
//! Redox's pcid, keeps its namespace: it may need I/O port rights at its
//! first access through the configuration ports.

use std::time::Instant;

use event::{EventFlags, EventQueue};
use pcid_interface::redox::daemon::{self as daemon, DaemonError, Readiness};
use pcid_interface::redox::event::Timer;
use redox_scheme::{RequestKind, Response, SignalBehavior, Socket};

use super::config;
use super::engine::{Engine, Host};
use super::enumerate::enumerate;
use super::scheme::PciScheme;
use crate::cli::Args;
use crate::relay::RelayConfig;

/// Errors that stop pcid on Redox.
#[derive(Debug, thiserror::Error)]
pub enum RedoxError {
    /// Daemon start-up failed.
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
    if args.match_dir.is_some() || !args.driver_path.is_empty() {
        log::warn!(
            "pcid: --match-dir and --driver-path are ignored on Redox: Redox's pcid-spawner \
             starts the drivers"
        );
    }
    if args.control.is_some() || args.ready_fd.is_some() || args.exit_on_stdin_eof {
        log::warn!(
            "pcid: --control, --ready-fd and --exit-on-stdin-eof are ignored on Redox: the \
             control endpoint is /scheme/pci/control and readiness goes to the process that \
             started pcid"
        );
    }
    let args = args.clone();
    daemon::run("pcid", move |readiness| match serve(&args, readiness) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pcid: {e}");
            1
        }
    })?;
    Ok(())
}

/// Event queue user data of the scheme socket.
const SOCKET: usize = 0;
/// Event queue user data of the timer.
const TIMER: usize = 1;

/// The OS side of the engine: posting events on scheme handles.
struct RedoxHost<'a> {
    socket: &'a Socket,
}

impl Host for RedoxHost<'_> {
    fn notify(&mut self, handle: usize) {
        let resp = Response::post_fevent(handle, EventFlags::READ.bits() as usize);
        if let Err(e) = self.socket.write_response(resp, SignalBehavior::Restart) {
            log::error!("pcid: posting an event on handle {handle}: {e}");
        }
    }
}

/// Serves every request queued on the scheme socket. Returns `false` when
/// the socket was closed (the kernel dropped the scheme).
fn serve_requests(
    socket: &Socket,
    engine: &mut Engine,
    cfg: &config::ConfigSpace,
) -> Result<bool, RedoxError> {
    loop {
        let request = match socket.next_request(SignalBehavior::Restart) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(false),
            Err(e) if e.errno == syscall::EAGAIN || e.errno == syscall::EWOULDBLOCK => {
                return Ok(true)
            }
            Err(e) => return Err(sys("reading scheme requests")(e)),
        };
        let mut scheme = PciScheme {
            state: &mut engine.state,
            cfg,
            events: Vec::new(),
        };
        let events = match request.kind() {
            RequestKind::Call(call) => {
                let response = call.handle_sync(&mut scheme);
                let events = scheme.events;
                socket
                    .write_response(response, SignalBehavior::Restart)
                    .map_err(sys("writing a scheme response"))?;
                events
            }
            RequestKind::OnClose { id } => {
                redox_scheme::scheme::SchemeSync::on_close(&mut scheme, id);
                scheme.events
            }
            RequestKind::SendFd(request) => {
                // Nothing in this scheme takes file descriptors …
                socket
                    .write_response(
                        Response::err(syscall::EOPNOTSUPP, request),
                        SignalBehavior::Restart,
                    )
                    .map_err(sys("writing a scheme response"))?;
                Vec::new()
            }
            RequestKind::RecvFd(request) => {
                // … nor hands them out.
                socket
                    .write_response(
                        Response::err(syscall::EOPNOTSUPP, request),
                        SignalBehavior::Restart,
                    )
                    .map_err(sys("writing a scheme response"))?;
                Vec::new()
            }
            // Requests are answered at once, so there is nothing to cancel;
            // mmap does not apply to this scheme.
            RequestKind::Cancellation(_)
            | RequestKind::MsyncMsg
            | RequestKind::MunmapMsg
            | RequestKind::MmapMsg => Vec::new(),
        };
        engine.dispatch(&mut RedoxHost { socket }, events, Instant::now());
    }
}

fn serve(args: &Args, readiness: Readiness) -> Result<(), RedoxError> {
    let cfg = config::open();
    let found = enumerate(&cfg);
    log::info!("pcid: {} PCI functions", found.len());
    let mut engine = Engine::new(
        found,
        RelayConfig {
            deadlines: args.deadlines,
            exit_after_shutdown: args.exit_after_shutdown,
        },
    );

    let socket = Socket::nonblock("pci").map_err(sys("registering the pci scheme"))?;
    let queue = EventQueue::<usize>::new().map_err(os("creating an event queue"))?;
    let mut timer = Timer::new().map_err(io("opening a timer"))?;
    queue
        .subscribe(socket.inner().raw(), SOCKET, EventFlags::READ)
        .map_err(os("subscribing to the scheme socket"))?;
    queue
        .subscribe(timer.raw_fd(), TIMER, EventFlags::READ)
        .map_err(os("subscribing to the timer"))?;
    readiness.ready()?;
    log::info!("pcid: serving the pci scheme");

    // The deadline the timer was last asked to wake the loop for.
    let mut armed: Option<Instant> = None;
    loop {
        if !serve_requests(&socket, &mut engine, &cfg)? {
            return Err(RedoxError::Os {
                what: "serving the pci scheme",
                source: std::io::Error::other("the scheme socket was closed"),
            });
        }
        let now = Instant::now();
        if engine.next_deadline().is_some_and(|d| d <= now) {
            engine.tick(&mut RedoxHost { socket: &socket }, now);
        }
        if engine.exit_requested() {
            log::info!("pcid: exiting after shutdown");
            return Ok(());
        }
        let next = engine.next_deadline();
        if next != armed {
            if let Some(deadline) = next {
                // The timer adds a kernel timeout only when none pending is
                // early enough (see `pcid_interface::redox::timer`).
                timer
                    .arm_after(deadline.saturating_duration_since(Instant::now()))
                    .map_err(io("arming the timer"))?;
            }
            armed = next;
        }
        let event = queue.next_event().map_err(os("waiting for events"))?;
        if event.user_data == TIMER {
            // Any wake-up may be stale; the deadline is checked against the
            // clock above. Ask again for the same deadline if it is still ahead.
            armed = None;
        }
    }
}
