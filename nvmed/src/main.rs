//! `nvmed`: the NVMe driver daemon, one process per controller, spawned by pcid.
//!
//! 1. Connects to pcid over the channel named by `PCID_CLIENT_CHANNEL`, says
//!    `Hello` (two-phase shutdown) and receives the function description.
//! 2. Opens the controller through the backend pcid names: a Linux PCI
//!    function through sysfs, or Redox's physmap. A simulated function is
//!    refused: the simulated controller is not part of this binary (test
//!    builds of the daemon, such as `nvmed-test` in the `shutdown_tests`
//!    crate, serve it).
//! 3. Brings the controller up and identifies it (`nvmed::service`).
//! 4. On Redox, reads the namespaces' partition tables and registers the
//!    `disk.*` scheme Redox's NVMe driver would (`nvmed::disk`).
//! 5. Sends `Ready`, drops privileges (`setrens(0, 0)` on Redox, recorded
//!    elsewhere; see `pcid_interface::privileges`), then serves the shutdown
//!    protocol: `Begin` → `Controller::begin`, `Finish` → `Controller::finish`
//!    — on Redox on a thread of its own, while the main thread serves the
//!    disk scheme.
//!
//! This binary issues no I/O of its own: it writes nothing to a namespace
//! the block user did not ask for, whatever its environment says.
//!
//! Errors end the process with one line on stderr and exit status 1.

use std::process::ExitCode;

use log::error;
use nvmed::service::{self, DRIVER_NAME};
use nvmed::NvmeError;
use pcid_hw::{Clock, DmaAllocator, RegisterIo, SystemClock};
use pcid_interface::driver;
use pcid_interface::function::{FunctionBackend, PciFunction};
use pcid_interface::protocol::ShutdownSupport;

#[cfg(target_os = "redox")]
mod redox;

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fatal {
    #[error("cannot connect to pcid: {0}")]
    Connect(#[from] driver::DriverError),
    #[error("{address}: {step}: {source}")]
    Hardware {
        address: String,
        step: &'static str,
        #[source]
        source: pcid_hw::HwError,
    },
    #[error("{address}: {0}", address = .1)]
    Nvme(NvmeError, String),
    #[error("{address}: backend not available: {what}")]
    BackendUnavailable { address: String, what: String },
    #[cfg_attr(not(target_os = "redox"), allow(dead_code))]
    #[error("{address}: {what}: {source}")]
    Disk {
        address: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}: serving the shutdown protocol: {source}")]
    Serve {
        address: String,
        #[source]
        source: driver::DriverError,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    #[cfg(target_os = "redox")]
    return redox::main(run_to_exit_code);
    #[cfg(not(target_os = "redox"))]
    run_to_exit_code()
}

fn run_to_exit_code() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("nvmed: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Fatal> {
    let (conn, function) = driver::connect(DRIVER_NAME, ShutdownSupport::TwoPhase)?;
    let address = function.address.to_string();
    log::info!(
        "{address}: nvmed serving {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
        function.vendor,
        function.device,
        function.class,
        function.subclass,
        function.interface
    );
    match &function.backend {
        FunctionBackend::Simulated { .. } => Err(Fatal::BackendUnavailable {
            address,
            what: "a simulated function is served by a test build of nvmed (nvmed-test); \
                   this driver drives hardware only"
                .to_string(),
        }),
        FunctionBackend::LinuxSysfs { sysfs_path } => linux(conn, &function, sysfs_path),
        #[cfg(target_os = "redox")]
        FunctionBackend::Redox { .. } => {
            let (regs, dma) =
                redox::open_hardware(&function).map_err(|source| Fatal::Hardware {
                    address,
                    step: "map BAR0 and set up DMA memory",
                    source,
                })?;
            drive(conn, &function, regs, dma, SystemClock::new())
        }
        #[cfg(not(target_os = "redox"))]
        FunctionBackend::Redox { .. } => Err(Fatal::BackendUnavailable {
            address,
            what: "the Redox backend exists only on Redox".to_string(),
        }),
    }
}

#[cfg(target_os = "linux")]
fn linux(
    conn: driver::DriverConnection,
    function: &PciFunction,
    sysfs_path: &str,
) -> Result<(), Fatal> {
    let (bar, dma) = service::open_linux(sysfs_path).map_err(|e| Fatal::Hardware {
        address: function.address.to_string(),
        step: e.step,
        source: e.source,
    })?;
    drive(conn, function, bar, dma, SystemClock::new())
}

#[cfg(not(target_os = "linux"))]
fn linux(
    _conn: driver::DriverConnection,
    function: &PciFunction,
    _sysfs_path: &str,
) -> Result<(), Fatal> {
    Err(Fatal::BackendUnavailable {
        address: function.address.to_string(),
        what: "the Linux sysfs backend exists only on Linux".to_string(),
    })
}

/// Brings the controller up, then serves the shutdown protocol (and, on
/// Redox, the controller's namespaces as a `disk.*` scheme).
fn drive<R, D, C>(
    #[allow(unused_mut)] mut conn: driver::DriverConnection,
    function: &PciFunction,
    regs: R,
    dma: D,
    clock: C,
) -> Result<(), Fatal>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
{
    let address = function.address.to_string();
    let ctrl = service::bring_up(function, regs, dma, clock)
        .map_err(|e| Fatal::Nvme(e, address.clone()))?;
    #[cfg(target_os = "redox")]
    return redox::serve(conn, function, ctrl);
    #[cfg(not(target_os = "redox"))]
    {
        conn.ready().map_err(|source| Fatal::Serve {
            address: address.clone(),
            source,
        })?;
        // Everything nvmed will ever open is open now (the channel with its
        // event queue and timer, BAR0, the DMA allocator and buffers): drop
        // privileges where Redox drivers do. Off Redox the drop is only
        // recorded, which makes any later open through pcid_interface fail
        // as on Redox, so the process tests check this order.
        if let Err(e) = pcid_interface::privileges::drop_privileges() {
            log::error!("{address}: {e}");
        }
        let outcome = conn
            .serve(service::ShutdownService::new(std::sync::Arc::new(ctrl)))
            .map_err(|source| Fatal::Serve {
                address: address.clone(),
                source,
            })?;
        service::log_serve_outcome(&address, &outcome);
        Ok(())
    }
}
