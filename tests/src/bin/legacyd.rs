//! `legacyd`: an example driver that speaks only one-phase shutdown.
//!
//! It declares [`ShutdownSupport::OnePhase`], so pcid sends it a single
//! `Shutdown` and shutdownd sends it no `Begin`/`Finish`. Its simulated device
//! takes `shutdown_ms` (from its device model file,
//! `shutdown_tests::sim::models::LegacyModel`, which pcid's simulated bus
//! names in `PCID_SIM_MODEL`; default 50) to shut down; when that exceeds the
//! deadline it gives up at the deadline and reports `timed-out`.
//!
//! ```toml
//! shutdown_ms = 200
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pcid_interface::driver::{self, Deadline, FinishReport, OnePhase, OnePhaseShutdown};
use pcid_interface::function::{FunctionBackend, PciAddress};
use pcid_interface::protocol::{FinishOutcome, ShutdownKind, ShutdownSupport};
use shutdown_tests::sim::models::{read_model, LegacyModel};

struct Legacy {
    address: PciAddress,
    shutdown: Duration,
}

impl OnePhaseShutdown for Legacy {
    fn shutdown(&mut self, kind: ShutdownKind, deadline: Deadline) -> FinishReport {
        let start = Instant::now();
        let allowed = deadline.remaining();
        log::info!(
            "{}: {kind:?}: shutting down ({} ms, {} ms allowed)",
            self.address,
            self.shutdown.as_millis(),
            allowed.as_millis()
        );
        if self.shutdown <= allowed {
            // The simulated device is busy for its configured time.
            std::thread::sleep(self.shutdown);
            FinishReport::new(
                FinishOutcome::Clean,
                start.elapsed(),
                format!("one-phase shutdown took {} ms", self.shutdown.as_millis()),
            )
        } else {
            std::thread::sleep(allowed);
            FinishReport::new(
                FinishOutcome::TimedOut,
                start.elapsed(),
                format!(
                    "device needs {} ms, deadline was {} ms",
                    self.shutdown.as_millis(),
                    allowed.as_millis()
                ),
            )
        }
    }
}

fn run() -> Result<(), String> {
    let (mut conn, function) = driver::connect("legacyd", ShutdownSupport::OnePhase)
        .map_err(|e| format!("cannot connect to pcid: {e}"))?;
    let address = function.address;
    let props = match &function.backend {
        FunctionBackend::Simulated => read_model::<LegacyModel>()
            .map_err(|e| format!("{address}: {e}"))?
            .unwrap_or_default(),
        _ => LegacyModel::default(),
    };
    conn.ready()
        .map_err(|e| format!("{address}: cannot send Ready: {e}"))?;
    let device = Legacy {
        address,
        shutdown: Duration::from_millis(props.shutdown_ms),
    };
    match conn.serve(OnePhase::new(device)) {
        Ok(outcome) => {
            log::info!("{address}: {outcome:?}");
            Ok(())
        }
        Err(e) => Err(format!("{address}: {e}")),
    }
}

fn main() -> ExitCode {
    if let Some(code) = shutdown_tests::cli::driver_without_options(
        "legacyd",
        "An example driver with one-phase shutdown, started by pcid (its channel in\nPCID_CLIENT_CHANNEL); see the source's documentation.",
    ) {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("legacyd: {e}");
            ExitCode::FAILURE
        }
    }
}
