//! `faultyd`: an example two-phase driver that misbehaves on request, so that
//! `simulate --fault INDEX:driver-...` and the tests can show what shutdownd
//! does with a broken driver.
//!
//! It speaks the protocol by hand over the inherited channel. Its simulated
//! device takes `latency_ms` to shut down (announced as the budget);
//! `misbehave` picks the fault:
//!
//! | `misbehave` | what the driver does |
//! |---|---|
//! | (absent) | behaves: `BeginAck(latency)`, then `FinishAck(clean)` after the latency |
//! | `ignores-begin` | never answers `Begin` |
//! | `ignores-finish` | answers `Begin`, never answers `Finish` |
//! | `exits-in-begin` | exits (status 3) on `Begin` |
//! | `exits-in-finish` | exits (status 3) on `Finish` |
//! | `sends-garbage` | answers `Begin` with bytes that are not a frame |
//!
//! ```toml
//! [function.sim]
//! latency_ms = 200
//! misbehave = "ignores-finish"
//! ```
//!
//! It exits when pcid closes its channel.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pcid_interface::function::FunctionBackend;
use pcid_interface::protocol::{DriverMessage, FinishOutcome, ShutdownSupport, PROTOCOL_VERSION};
use pcid_interface::transport::{DriverChannel, TransportError};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Misbehave {
    IgnoresBegin,
    IgnoresFinish,
    ExitsInBegin,
    ExitsInFinish,
    SendsGarbage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Properties {
    #[serde(default = "default_latency")]
    latency_ms: u64,
    #[serde(default)]
    misbehave: Option<Misbehave>,
}

fn default_latency() -> u64 {
    100
}

/// How long to wait for pcid's `Welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

fn run() -> Result<(), String> {
    let mut ch =
        DriverChannel::from_env().map_err(|e| format!("cannot adopt the pcid channel: {e}"))?;
    let send = |ch: &DriverChannel, m: &DriverMessage| {
        ch.send(m).map_err(|e| format!("cannot send to pcid: {e}"))
    };
    send(
        &ch,
        &DriverMessage::Hello {
            version: PROTOCOL_VERSION,
            driver: "faultyd".into(),
            support: ShutdownSupport::TwoPhase,
        },
    )?;
    let function = match ch.recv(Some(WELCOME_TIMEOUT)) {
        Ok(DriverMessage::Welcome { function, .. }) => function,
        Ok(other) => return Err(format!("expected Welcome, got {other:?}")),
        Err(e) => return Err(format!("no Welcome from pcid: {e}")),
    };
    let address = function.address;
    let props: Properties = match &function.backend {
        FunctionBackend::Simulated { properties } => toml::from_str(properties)
            .map_err(|e| format!("{address}: bad [function.sim] properties: {e}"))?,
        _ => {
            return Err(format!(
                "{address}: faultyd only drives simulated functions"
            ))
        }
    };
    let latency = Duration::from_millis(props.latency_ms);
    send(&ch, &DriverMessage::Ready)?;
    let mut begun: Option<Instant> = None;
    loop {
        let msg = match ch.recv(None) {
            Ok(m) => m,
            Err(TransportError::Closed) => return Ok(()),
            Err(e) if !e.is_fatal() => {
                log::warn!("{address}: {e}");
                continue;
            }
            Err(e) => return Err(format!("{address}: channel: {e}")),
        };
        match (msg, props.misbehave) {
            (DriverMessage::Begin { .. }, Some(Misbehave::IgnoresBegin)) => {
                log::warn!("{address}: ignoring Begin (misbehave = ignores-begin)");
            }
            (DriverMessage::Begin { .. }, Some(Misbehave::ExitsInBegin)) => {
                eprintln!("faultyd: {address}: exiting in Begin (misbehave = exits-in-begin)");
                std::process::exit(3);
            }
            (DriverMessage::Begin { .. }, Some(Misbehave::SendsGarbage)) => {
                log::warn!("{address}: answering Begin with garbage (misbehave = sends-garbage)");
                ch.send_raw(b"\x00\x01 this is not a pcid frame \xff\xfe")
                    .map_err(|e| format!("{address}: {e}"))?;
            }
            (DriverMessage::Begin { seq, .. }, _) => {
                begun = Some(Instant::now());
                send(
                    &ch,
                    &DriverMessage::BeginAck {
                        seq,
                        budget: latency,
                    },
                )?;
            }
            (DriverMessage::Finish { .. }, Some(Misbehave::IgnoresFinish)) => {
                log::warn!("{address}: ignoring Finish (misbehave = ignores-finish)");
            }
            (DriverMessage::Finish { .. }, Some(Misbehave::ExitsInFinish)) => {
                eprintln!("faultyd: {address}: exiting in Finish (misbehave = exits-in-finish)");
                std::process::exit(3);
            }
            (DriverMessage::Finish { seq, deadline }, _) => {
                let received = Instant::now();
                let done_at = begun.unwrap_or(received) + latency;
                let limit = received + deadline;
                let until = done_at.min(limit);
                // The simulated device is busy until its latency has passed.
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                let (outcome, detail) = if done_at <= limit {
                    (
                        FinishOutcome::Clean,
                        format!("done after {} ms", latency.as_millis()),
                    )
                } else {
                    (
                        FinishOutcome::TimedOut,
                        format!("needs {} ms, deadline passed", latency.as_millis()),
                    )
                };
                send(
                    &ch,
                    &DriverMessage::FinishAck {
                        seq,
                        outcome,
                        elapsed: begun.map_or(Duration::ZERO, |b| b.elapsed()),
                        detail,
                    },
                )?;
            }
            (other, _) => log::warn!("{address}: ignoring unexpected {other:?}"),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultyd: {e}");
            ExitCode::FAILURE
        }
    }
}
