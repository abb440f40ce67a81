//! The daemon around a controller, shared by the shipped `nvmed` and its
//! test builds: starting as a driver process ([`run`]), connecting to pcid
//! ([`connect`]) and serving once the controller is up ([`serve`]).
//!
//! A binary supplies only what differs: which backends it opens and what
//! its shutdown handler adds to [`crate::service::ShutdownService`].

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;

use pcid_hw::{Clock, DmaAllocator, RegisterIo};
use pcid_interface::driver::{self, DriverConnection, DriverError, ShutdownHandler};
use pcid_interface::function::PciFunction;
use pcid_interface::protocol::ShutdownSupport;

use crate::service::{self, DRIVER_NAME};
use crate::Controller;

/// Runs `body` as the driver daemon and turns its result into the exit
/// status: on an error, one line on the log and on stderr
/// (`nvmed: error: …`) and status 1. On Redox the process first forks into
/// the background as Redox's drivers do (`crate::redox::daemonize`).
///
/// Call it from `main` once the command line is read, before any thread
/// is started.
pub fn run<E: Display>(body: fn() -> Result<(), E>) -> ExitCode {
    let to_exit_code = move || match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("{DRIVER_NAME}: error: {e}");
            ExitCode::FAILURE
        }
    };
    #[cfg(target_os = "redox")]
    return match crate::redox::daemonize(to_exit_code) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{DRIVER_NAME}: error: {e}");
            ExitCode::FAILURE
        }
    };
    #[cfg(not(target_os = "redox"))]
    to_exit_code()
}

/// Connects to pcid as `nvmed` (two-phase shutdown) and logs what pcid
/// says the function is; `build` names the binary in that line
/// (`"nvmed"`, `"nvmed (test build)"`).
pub fn connect(build: &str) -> Result<(DriverConnection, PciFunction), DriverError> {
    let (conn, function) = driver::connect(DRIVER_NAME, ShutdownSupport::TwoPhase)?;
    log::info!(
        "{}: {build} serving {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
        function.address,
        function.vendor,
        function.device,
        function.class,
        function.subclass,
        function.interface
    );
    Ok((conn, function))
}

/// Why [`serve`] stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The channel to pcid failed.
    #[error("serving the shutdown protocol: {0}")]
    Channel(#[from] DriverError),
    /// Serving the disk scheme or the protocol beside it failed (Redox).
    #[cfg(target_os = "redox")]
    #[error(transparent)]
    Disk(#[from] crate::redox::ServeError),
}

/// Once the controller is up: sends `Ready`, drops privileges
/// ([`service::ready_to_serve`]) and serves the shutdown protocol with
/// `handler` until it ends, logging how. On Redox the controller's
/// namespaces are served as its `disk.*` scheme beside it
/// (`crate::redox::serve_with_disk`); elsewhere the operating system's own
/// block layer serves the disk and `ctrl` is not used further.
pub fn serve<R, D, C, H>(
    #[allow(unused_mut)] mut conn: DriverConnection,
    function: &PciFunction,
    ctrl: Arc<Controller<R, D, C>>,
    handler: H,
) -> Result<(), ServeError>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
    H: ShutdownHandler + Send + 'static,
{
    #[cfg(target_os = "redox")]
    let outcome = crate::redox::serve_with_disk(conn, function, ctrl, handler)?;
    #[cfg(not(target_os = "redox"))]
    let outcome = {
        drop(ctrl);
        conn.ready()?;
        service::ready_to_serve(function);
        conn.serve(handler)?
    };
    service::log_serve_outcome(&function.address.to_string(), &outcome);
    Ok(())
}
