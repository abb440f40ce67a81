//! `nvmed`: the NVMe driver daemon, one process per controller, spawned by pcid.
//!
//! 1. Connects to pcid over the channel named by `PCID_CLIENT_CHANNEL`, says
//!    `Hello` (two-phase shutdown) and receives the function description.
//! 2. Reaches the controller through the backend pcid names: the simulated
//!    controller model in-process (its TOML description), or a Linux PCI
//!    function through sysfs.
//! 3. Brings the controller up and identifies it; with `NVMED_SELFTEST=1`
//!    writes, flushes and reads back a pattern unique to the controller (see
//!    `nvmed::selftest`); with `NVMED_WORKLOAD=<dir>` starts a write workload
//!    logging to `<dir>/<address>.log` (see `nvmed::workload`).
//! 4. Sends `Ready`, drops privileges (`setrens(0, 0)` on Redox, recorded
//!    elsewhere; see `pcid_interface::privileges`), then serves the shutdown
//!    protocol: `Begin` → `Controller::begin`, `Finish` → `Controller::finish`.
//!
//! Errors end the process with one line on stderr and exit status 1.

use std::process::ExitCode;
use std::sync::Arc;

use log::{error, info};
use nvmed::{Controller, NvmeError, Options, ShutdownOutcome};
use pcid_hw::{Clock, DmaAllocator, RegisterIo, SystemClock};
use pcid_interface::driver::{self, Deadline, FinishReport, ServeOutcome, ShutdownHandler};
use pcid_interface::function::{FunctionBackend, PciFunction};
use pcid_interface::protocol::{FinishOutcome, ShutdownKind, ShutdownSupport};

#[cfg(target_os = "redox")]
mod redox;

/// Name this driver gives in `Hello`.
const DRIVER_NAME: &str = "nvmed";

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("cannot connect to pcid: {0}")]
    Connect(#[from] driver::DriverError),
    #[error("{address}: simulated controller: {message}")]
    Sim { address: String, message: String },
    #[error("{address}: {step}: {source}")]
    Hardware {
        address: String,
        step: &'static str,
        #[source]
        source: pcid_hw::HwError,
    },
    #[error("{address}: {0}", address = .1)]
    Nvme(NvmeError, String),
    #[error("{address}: {0}", address = .1)]
    Selftest(nvmed::selftest::SelftestError, String),
    #[error("{address}: {0}", address = .1)]
    Workload(nvmed::workload::WorkloadError, String),
    #[error("{address}: backend not available: {what}")]
    BackendUnavailable { address: String, what: String },
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
    info!(
        "{address}: nvmed serving {:04x}:{:04x} class {:02x}.{:02x}.{:02x}",
        function.vendor, function.device, function.class, function.subclass, function.interface
    );
    match &function.backend {
        FunctionBackend::Simulated { properties } => {
            let config =
                nvme_sim::SimConfig::from_toml_str(properties).map_err(|e| Fatal::Sim {
                    address: address.clone(),
                    message: e.to_string(),
                })?;
            let clock = SystemClock::new();
            let sim_clock: Arc<dyn Clock> = Arc::new(clock);
            let sim =
                nvme_sim::SimController::with_label(config, sim_clock, &address).map_err(|e| {
                    Fatal::Sim {
                        address: address.clone(),
                        message: e.to_string(),
                    }
                })?;
            let dma = sim.dma();
            drive(conn, &function, sim, dma, clock)
        }
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
    use pcid_hw::linux::{enable_device, LockedDmaAllocator, SysfsBar};
    let address = function.address.to_string();
    let hw = |step: &'static str| {
        let address = address.clone();
        move |source| Fatal::Hardware {
            address,
            step,
            source,
        }
    };
    enable_device(sysfs_path).map_err(hw("enable memory space and bus mastering"))?;
    let bar = SysfsBar::open(sysfs_path, 0).map_err(hw("map BAR0"))?;
    let dma = LockedDmaAllocator::new().map_err(hw("set up DMA memory"))?;
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

/// Brings the controller up, runs the optional self-test, then serves the
/// shutdown protocol.
fn drive<R, D, C>(
    mut conn: driver::DriverConnection,
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
    let ctrl = Controller::bring_up(address.clone(), regs, dma, clock, Options::default())
        .map_err(|e| Fatal::Nvme(e, address.clone()))?;
    let info = ctrl.info();
    let namespaces: Vec<String> = ctrl
        .namespaces()
        .iter()
        .map(|n| format!("ns{} {} x {} B", n.nsid, n.blocks, n.block_size))
        .collect();
    info!(
        "{address}: NVMe {} serial {:?} model {:?} firmware {:?}, RTD3E {} us, VWC {}, max transfer {} B, {}",
        info.version,
        info.serial,
        info.model,
        info.firmware,
        info.rtd3e_us,
        if info.volatile_write_cache { "yes" } else { "no" },
        info.max_transfer_bytes,
        if namespaces.is_empty() {
            "no namespaces".to_string()
        } else {
            namespaces.join(", ")
        }
    );
    if std::env::var("NVMED_SELFTEST").is_ok_and(|v| v == "1") {
        nvmed::selftest::run(&ctrl).map_err(|e| Fatal::Selftest(e, address.clone()))?;
    }
    let ctrl = Arc::new(ctrl);
    let workload = match nvmed::workload::Workload::dir_from_env() {
        Some(dir) => Some(
            nvmed::workload::Workload::start(ctrl.clone(), &dir)
                .map_err(|e| Fatal::Workload(e, address.clone()))?,
        ),
        None => None,
    };
    conn.ready().map_err(|source| Fatal::Serve {
        address: address.clone(),
        source,
    })?;
    // Everything nvmed will ever open is open now (the channel with its
    // event queue and timer, BAR0, the DMA allocator and buffers): drop
    // privileges where Redox drivers do. Off Redox the drop is only recorded,
    // which makes any later open through pcid_interface fail as on Redox, so
    // the process tests check this order.
    #[cfg(target_os = "redox")]
    redox::ready(function);
    #[cfg(not(target_os = "redox"))]
    if let Err(e) = pcid_interface::privileges::drop_privileges() {
        log::error!("{address}: {e}");
    }
    let outcome = conn
        .serve(Handler { ctrl, workload })
        .map_err(|source| Fatal::Serve {
            address: address.clone(),
            source,
        })?;
    match outcome {
        ServeOutcome::Finished(report) => info!(
            "{address}: shutdown finished: {:?} after {:.3} s ({})",
            report.outcome,
            report.elapsed.as_secs_f64(),
            report.detail
        ),
        ServeOutcome::Closed => info!("{address}: pcid closed the channel; exiting"),
    }
    Ok(())
}

/// The shutdown protocol's view of the controller.
struct Handler<R: RegisterIo, D: DmaAllocator, C: Clock> {
    ctrl: Arc<Controller<R, D, C>>,
    /// The write workload, whose log records the shutdown phases.
    workload: Option<nvmed::workload::Workload>,
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> ShutdownHandler for Handler<R, D, C> {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::TwoPhase
    }

    fn begin(
        &mut self,
        kind: ShutdownKind,
        deadline: Deadline,
    ) -> Result<std::time::Duration, String> {
        info!("{}: shutdown begin ({kind:?})", self.ctrl.name());
        // Keep a little of pcid's deadline for sending BeginAck.
        let remaining = deadline.remaining();
        let margin = (remaining / 10).min(std::time::Duration::from_millis(100));
        if let Some(w) = &self.workload {
            w.note_begin();
        }
        let result = self
            .ctrl
            .begin_within(remaining.saturating_sub(margin))
            .map(|r| r.budget)
            .map_err(|e| e.to_string());
        if let Some(w) = &self.workload {
            w.note_begun(result.as_ref().map(|_| ()).map_err(String::as_str));
        }
        result
    }

    fn finish(&mut self, deadline: Deadline) -> FinishReport {
        match self.ctrl.finish(deadline.remaining()) {
            Ok(report) => {
                let outcome = protocol_outcome(report.outcome);
                FinishReport::new(outcome, report.duration, report.to_string())
            }
            Err(e) => FinishReport::new(
                FinishOutcome::Failed,
                std::time::Duration::ZERO,
                e.to_string(),
            ),
        }
    }
}

/// The protocol's outcome for the library's richer one: a controller that
/// reported fatal status or vanished is a failed shutdown.
fn protocol_outcome(outcome: ShutdownOutcome) -> FinishOutcome {
    match outcome {
        ShutdownOutcome::Clean => FinishOutcome::Clean,
        ShutdownOutcome::Abrupt => FinishOutcome::Abrupt,
        ShutdownOutcome::TimedOut { .. } => FinishOutcome::TimedOut,
        ShutdownOutcome::ControllerFatal | ShutdownOutcome::DeviceGone => FinishOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::ShutdownStatus;

    #[test]
    fn outcomes_map_to_the_protocol() {
        assert_eq!(
            protocol_outcome(ShutdownOutcome::Clean),
            FinishOutcome::Clean
        );
        assert_eq!(
            protocol_outcome(ShutdownOutcome::Abrupt),
            FinishOutcome::Abrupt
        );
        for escalated in [false, true] {
            assert_eq!(
                protocol_outcome(ShutdownOutcome::TimedOut {
                    escalated,
                    last_status: ShutdownStatus::Occurring
                }),
                FinishOutcome::TimedOut
            );
        }
        assert_eq!(
            protocol_outcome(ShutdownOutcome::ControllerFatal),
            FinishOutcome::Failed
        );
        assert_eq!(
            protocol_outcome(ShutdownOutcome::DeviceGone),
            FinishOutcome::Failed
        );
    }
}
