//! `nvmed-test`'s main: `nvmed` plus the simulated backend and the data checks.
//!
//! 1. Connects to pcid (`Hello` as `nvmed`, two-phase) and receives the function.
//! 2. Opens the controller: on Linux the simulated controller model
//!    in-process for a simulated function (the device model file pcid's
//!    simulated bus names in `PCID_SIM_MODEL`, parsed as
//!    `nvme_sim::SimConfig`; the defaults when it names none), or the sysfs
//!    function as `nvmed` does; on
//!    Redox the function's BAR0 (from `Welcome`) through physmap, as `nvmed`
//!    does (`nvmed::redox`).
//! 3. Brings it up with `nvmed::service::bring_up`.
//! 4. With `NVMED_SELFTEST=1`: writes, flushes and reads back a pattern unique
//!    to the controller at LBA 0 ([`super::selftest`]); with
//!    `NVMED_WORKLOAD=<dir>`: starts the write workload ([`super::workload`]);
//!    with `NVMED_DISK_DIR=<dir>` (Linux): serves the disk interface on
//!    `<dir>/<address>.sock` ([`super::disk_socket`]).
//! 5. Sends `Ready`, drops privileges (`nvmed::service::ready_to_serve`:
//!    `setrens(0, 0)` on Redox, then the readiness signal) and serves
//!    shutdown with `nvmed::service::ShutdownService`, noting the phases in
//!    the workload's log.
//!
//! On Redox it starts as `nvmed` does: it daemonizes for Redox's
//! pcid-spawner (`nvmed::redox::daemonize`), so the process pcid-spawner
//! waits for exits once the self-test passed and `Ready` was sent, and it
//! serves the controller's `disk.*` scheme as `nvmed` does
//! (`nvmed::redox::serve_with_disk`).
//!
//! On the simulated backend it also holds the driver to the DMA lifetime rule
//! (`nvmed`'s controller module): if the model recorded a violation by the
//! time shutdown finished, the `FinishAck` says `failed` and names it; one
//! recorded while the controller is released, after the `FinishAck`, ends the
//! process with an error line and status 1.
//!
//! Errors end the process with one line on stderr (`nvmed: error: …`) and exit
//! status 1, like `nvmed`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nvmed::service::{self, ShutdownService};
use pcid_hw::{Clock, DmaAllocator, RegisterIo, SystemClock};
use pcid_interface::driver::{self, Deadline, FinishReport, ShutdownHandler};
use pcid_interface::function::{FunctionBackend, PciFunction};
use pcid_interface::protocol::{ShutdownKind, ShutdownSupport};

#[cfg(target_os = "linux")]
use super::disk_socket;
use super::{selftest, workload};

/// Environment variable that turns the self-test on (value `1`).
pub const SELFTEST_ENV: &str = "NVMED_SELFTEST";

/// Why the test build stopped.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("cannot connect to pcid: {0}")]
    Connect(#[from] driver::DriverError),
    #[cfg(target_os = "linux")]
    #[error("{address}: simulated controller: {message}")]
    Sim { address: String, message: String },
    #[error("{address}: {source}")]
    Hardware {
        address: String,
        #[source]
        source: service::HardwareError,
    },
    #[error("{address}: {0}", address = .1)]
    Nvme(nvmed::NvmeError, String),
    #[error("{address}: {0}", address = .1)]
    Selftest(selftest::SelftestError, String),
    #[error("{address}: {0}", address = .1)]
    Workload(workload::WorkloadError, String),
    #[error("{address}: backend not available: {what}")]
    BackendUnavailable { address: String, what: String },
    #[error("{address}: {source}")]
    Serve {
        address: String,
        #[source]
        source: nvmed::daemon::ServeError,
    },
    #[cfg(target_os = "linux")]
    #[error("{address}: serving the disk socket: {0}", address = .1)]
    Disk(std::io::Error, String),
    #[cfg(target_os = "linux")]
    #[error("{address}: DMA lifetime violation seen by the simulated controller: {what}")]
    DmaLifetime { address: String, what: String },
}

/// The first DMA lifetime violation the simulated controller recorded, if
/// any (`None` on hardware, where nothing checks).
type DmaCheck = Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>;

/// Runs the test build; the exit status of the process. On Redox the
/// process daemonizes first, as `nvmed` does.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    nvmed::daemon::run(run)
}

fn run() -> Result<(), Fatal> {
    let (conn, function) = nvmed::daemon::connect("nvmed (test build)")?;
    let address = function.address.to_string();
    let hardware = |source| Fatal::Hardware {
        address: address.clone(),
        source,
    };
    match &function.backend {
        #[cfg(target_os = "linux")]
        FunctionBackend::Simulated => simulated(conn, &function),
        #[cfg(target_os = "linux")]
        FunctionBackend::LinuxSysfs { sysfs_path } => {
            let (regs, dma) = service::open_linux(sysfs_path).map_err(hardware)?;
            drive(conn, &function, regs, dma, SystemClock::new(), None)
        }
        #[cfg(target_os = "redox")]
        FunctionBackend::Redox { bars, .. } => {
            let (regs, dma) =
                nvmed::redox::open_hardware(function.address, bars).map_err(hardware)?;
            drive(conn, &function, regs, dma, SystemClock::new(), None)
        }
        other => Err(Fatal::BackendUnavailable {
            address,
            what: format!("{other:?} is not served by the test build on this OS"),
        }),
    }
}

/// The simulated controller in-process, with its DMA lifetime checks.
#[cfg(target_os = "linux")]
fn simulated(conn: driver::DriverConnection, function: &PciFunction) -> Result<(), Fatal> {
    let address = function.address.to_string();
    let sim_error = |message: String| Fatal::Sim {
        address: address.clone(),
        message,
    };
    let config =
        match crate::sim::models::read_model_text().map_err(|e| sim_error(e.to_string()))? {
            Some((path, text)) => nvme_sim::SimConfig::from_toml_str(&text)
                .map_err(|e| sim_error(format!("device model {}: {e}", path.display())))?,
            None => {
                log::info!("{address}: no device model named, simulating the default controller");
                nvme_sim::SimConfig::default()
            }
        };
    let clock = SystemClock::new();
    let sim_clock: Arc<dyn Clock> = Arc::new(clock);
    let sim = nvme_sim::SimController::with_label(config, sim_clock, &address)
        .map_err(|e| sim_error(e.to_string()))?;
    let dma = sim.dma();
    let checker = sim.dma();
    let check = {
        let checker = checker.clone();
        move || checker.violations().first().map(ToString::to_string)
    };
    let result = drive(conn, function, sim, dma, clock, Some(Arc::new(check)));
    // The controller has been released (reset, memory freed) by now.
    if let Some(v) = checker.violations().first() {
        return Err(Fatal::DmaLifetime {
            address,
            what: v.to_string(),
        });
    }
    result
}

fn drive<R, D, C>(
    conn: driver::DriverConnection,
    function: &PciFunction,
    regs: R,
    dma: D,
    clock: C,
    checker: DmaCheck,
) -> Result<(), Fatal>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
{
    let address = function.address.to_string();
    let ctrl = service::bring_up(function, regs, dma, clock)
        .map_err(|e| Fatal::Nvme(e, address.clone()))?;
    if std::env::var(SELFTEST_ENV).is_ok_and(|v| v == "1") {
        selftest::run(&ctrl).map_err(|e| Fatal::Selftest(e, address.clone()))?;
    }
    let ctrl = Arc::new(ctrl);
    let workload = match workload::Workload::dir_from_env() {
        Some(dir) => Some(
            workload::Workload::start(ctrl.clone(), &dir)
                .map_err(|e| Fatal::Workload(e, address.clone()))?,
        ),
        None => None,
    };
    #[cfg(target_os = "linux")]
    if let Some(dir) = std::env::var_os(disk_socket::DISK_DIR_ENV) {
        let service =
            nvmed::disk::DiskService::new(ctrl.clone(), nvmed::disk::scheme_name(function.address));
        let path = disk_socket::serve(service, std::path::Path::new(&dir), &address)
            .map_err(|e| Fatal::Disk(e, address.clone()))?;
        log::info!("{address}: disk served on {}", path.display());
    }
    let handler = Noting {
        inner: ShutdownService::new(ctrl.clone()),
        workload,
        checker,
    };
    nvmed::daemon::serve(conn, function, ctrl, handler)
        .map_err(|source| Fatal::Serve { address, source })
}

/// `nvmed`'s shutdown handler, with the phases noted in the workload's log.
struct Noting<R: RegisterIo, D: DmaAllocator, C: Clock> {
    inner: ShutdownService<R, D, C>,
    workload: Option<workload::Workload>,
    /// The simulated controller's DMA checks, on the simulated backend.
    checker: DmaCheck,
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> ShutdownHandler for Noting<R, D, C> {
    fn support(&self) -> ShutdownSupport {
        self.inner.support()
    }

    fn begin(&mut self, kind: ShutdownKind, deadline: Deadline) -> Result<Duration, String> {
        if let Some(w) = &self.workload {
            w.note_begin();
        }
        let result = self.inner.begin(kind, deadline);
        if let Some(w) = &self.workload {
            w.note_begun(result.as_ref().map(|_| ()).map_err(String::as_str));
        }
        result
    }

    fn finish(&mut self, deadline: Deadline) -> FinishReport {
        let report = self.inner.finish(deadline);
        match self.checker.as_ref().and_then(|check| check()) {
            Some(v) => FinishReport::new(
                pcid_interface::protocol::FinishOutcome::Failed,
                report.elapsed,
                format!("DMA lifetime violation seen by the simulated controller: {v}"),
            ),
            None => report,
        }
    }
}
