//! `nvmed`: the NVMe driver daemon, one process per controller, spawned by pcid.
//!
//! 1. Connects to pcid over the channel named by `PCID_CLIENT_CHANNEL`, says
//!    `Hello` (two-phase shutdown) and receives the function description.
//! 2. Opens the controller through the backend pcid names: a Linux PCI
//!    function through sysfs, or on Redox BAR0 (from `Welcome`) through
//!    physmap (`nvmed::redox`). A simulated function is
//!    refused: the simulated controller is not part of this binary (test
//!    builds of the daemon, such as `nvmed-test` in the `shutdown_tests`
//!    crate, serve it).
//! 3. Brings the controller up and identifies it (`nvmed::service`).
//! 4. On Redox, reads the namespaces' partition tables and registers the
//!    `disk.*` scheme Redox's NVMe driver would (`nvmed::disk`,
//!    `nvmed::redox::serve_with_disk`).
//! 5. Sends `Ready`, drops privileges (`setrens(0, 0)` on Redox, recorded
//!    elsewhere; see `nvmed::service::ready_to_serve`), then serves the
//!    shutdown protocol: `Begin` → `Controller::begin`, `Finish` →
//!    `Controller::finish` — on Redox on a thread of its own, while the
//!    main thread serves the disk scheme.
//!
//! On Redox it first daemonizes as Redox's drivers do (`nvmed::redox`).
//!
//! This binary issues no I/O of its own: it writes nothing to a namespace
//! the block user did not ask for, whatever its environment says.
//!
//! Errors end the process with one line on stderr and exit status 1.

use std::process::ExitCode;
use std::sync::Arc;

use nvmed::daemon;
use nvmed::service::{self, HardwareError, ShutdownService};
use nvmed::NvmeError;
use pcid_hw::{Clock, DmaAllocator, RegisterIo, SystemClock};
use pcid_interface::driver;
use pcid_interface::function::{FunctionBackend, PciFunction};

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("cannot connect to pcid: {0}")]
    Connect(#[from] driver::DriverError),
    #[error("{address}: {source}")]
    Hardware {
        address: String,
        #[source]
        source: HardwareError,
    },
    #[error("{address}: {0}", address = .1)]
    Nvme(NvmeError, String),
    #[error("{address}: backend not available: {what}")]
    BackendUnavailable { address: String, what: String },
    #[error("{address}: {source}")]
    Serve {
        address: String,
        #[source]
        source: daemon::ServeError,
    },
}

/// `--help` and `--version`; pcid (and Redox's pcid-spawner) start nvmed
/// without arguments. `Some(code)`: exit with it.
fn command_line() -> Option<ExitCode> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let arg = match p.next() {
        Ok(None) => return None,
        Ok(Some(arg)) => arg,
        Err(e) => {
            eprintln!("nvmed: {e} (nvmed --help shows the usage)");
            return Some(ExitCode::from(2));
        }
    };
    match arg {
        Short('h') | Long("help") => {
            println!(
                "usage: nvmed\n\nThe NVMe driver, one process per controller, started by pcid with its\n\
                 channel in PCID_CLIENT_CHANNEL; it takes no arguments."
            );
            Some(ExitCode::SUCCESS)
        }
        Short('V') | Long("version") => {
            println!("nvmed {}", env!("CARGO_PKG_VERSION"));
            Some(ExitCode::SUCCESS)
        }
        other => {
            eprintln!(
                "nvmed: {} (nvmed --help shows the usage)",
                other.unexpected()
            );
            Some(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) = command_line() {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    daemon::run(run)
}

fn run() -> Result<(), Fatal> {
    let (conn, function) = daemon::connect("nvmed")?;
    let address = function.address.to_string();
    let hardware = |source| Fatal::Hardware {
        address: address.clone(),
        source,
    };
    match &function.backend {
        FunctionBackend::Simulated => Err(Fatal::BackendUnavailable {
            address,
            what: "a simulated function is served by a test build of nvmed (nvmed-test); \
                   this driver drives hardware only"
                .to_string(),
        }),
        #[cfg(target_os = "linux")]
        FunctionBackend::LinuxSysfs { sysfs_path } => {
            let (regs, dma) = service::open_linux(sysfs_path).map_err(hardware)?;
            drive(conn, &function, regs, dma, SystemClock::new())
        }
        #[cfg(target_os = "redox")]
        FunctionBackend::Redox { bars, .. } => {
            let (regs, dma) =
                nvmed::redox::open_hardware(function.address, bars).map_err(hardware)?;
            drive(conn, &function, regs, dma, SystemClock::new())
        }
        other => Err(Fatal::BackendUnavailable {
            address,
            what: format!("{} exists only on its own OS", backend_name(other)),
        }),
    }
}

/// What a backend is called in messages.
fn backend_name(backend: &FunctionBackend) -> &'static str {
    match backend {
        FunctionBackend::Simulated => "the simulated backend",
        FunctionBackend::LinuxSysfs { .. } => "the Linux sysfs backend",
        FunctionBackend::Redox { .. } => "the Redox backend",
    }
}

/// Brings the controller up, then serves the shutdown protocol (and, on
/// Redox, the controller's namespaces as a `disk.*` scheme).
fn drive<R, D, C>(
    conn: driver::DriverConnection,
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
    let ctrl = Arc::new(
        service::bring_up(function, regs, dma, clock)
            .map_err(|e| Fatal::Nvme(e, address.clone()))?,
    );
    let handler = ShutdownService::new(Arc::clone(&ctrl));
    daemon::serve(conn, function, ctrl, handler).map_err(|source| Fatal::Serve { address, source })
}
