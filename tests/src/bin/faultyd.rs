//! `faultyd`: an example two-phase driver that misbehaves on request, so that
//! `simulate --fault INDEX:driver-...` and the tests can show what shutdownd
//! does with a broken driver.
//!
//! It speaks the protocol by hand over the inherited channel. Its simulated
//! device, described by its device model file
//! (`shutdown_tests::sim::models::FaultyModel`, named by pcid's simulated bus
//! in `PCID_SIM_MODEL`), takes `latency_ms` to shut down (default 100,
//! announced as the budget); `misbehave` picks the fault:
//!
//! | `misbehave` | what the driver does |
//! |---|---|
//! | (absent) | behaves: `BeginAck(latency)`, then `FinishAck(clean)` after the latency |
//! | `ignores-begin` | never answers `Begin` |
//! | `ignores-finish` | answers `Begin`, never answers `Finish` |
//! | `exits-in-begin` | exits (status 3) on `Begin` |
//! | `exits-in-finish` | exits (status 3) on `Finish` |
//! | `sends-garbage` | answers `Begin` with bytes that are not a frame |
//! | `killed-in-begin` | is killed by `SIGKILL` (sent to itself) on `Begin` |
//! | `killed-in-finish` | is killed by `SIGKILL` (sent to itself) on `Finish` |
//! | `exits-before-shutdown` | exits (status 3) right after sending `Ready` |
//! | `killed-before-shutdown` | is killed by `SIGKILL` (sent to itself) right after sending `Ready` |
//! | `panics-in-begin` | panics on `Begin` (a driver bug; the process exits with status 101) |
//! | `sends-truncated-frame` | answers `Begin` with the first half of a `BeginAck` frame, then closes its end of the channel and stays alive |
//! | `sends-oversize-length` | answers `Begin` with a `BeginAck` whose header states a 1 MiB payload (above the 64 KiB frame limit) |
//! | `sends-unknown-version` | answers `Begin` with a `BeginAck` whose header has frame version 9 |
//! | `sends-unknown-type` | answers `Begin` with a `BeginAck` whose message type byte is `0x7f` |
//! | `sends-duplicate-ack` | answers `Begin` with two identical `BeginAck`s |
//! | `sends-out-of-phase-ack` | answers `Begin` with a `FinishAck` |
//! | `sends-wrong-seq` | answers `Begin` with a `BeginAck` whose sequence number is 1000 past the right one |
//! | `waits-in-begin` | waits in `Begin` until its device is done (the latency), then answers `BeginAck`: the serialisation two-phase shutdown exists to avoid |
//! | `prints-to-stdout` | behaves, but prints a line on standard output after `Ready` |
//! | `sends-second-hello` | says `Hello` again right after `Ready` — a protocol violation long before any shutdown — and stays alive after pcid closed its channel, until pcid is gone |
//!
//! ```toml
//! latency_ms = 200
//! misbehave = "ignores-finish"
//! ```
//!
//! `waits-in-begin` and `prints-to-stdout` are not simulator fault kinds
//! (shutdownd cannot tell them apart from a healthy driver); they exist for
//! `pcid-conformance`, which must flag them. A frame from pcid that does not
//! decode (but keeps the stream in sync) is answered with `Error(seq)`
//! (PROTOCOL.md §8).
//!
//! It exits when pcid closes its channel.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use pcid_interface::function::FunctionBackend;
use pcid_interface::protocol::{DriverMessage, FinishOutcome, ShutdownSupport, PROTOCOL_VERSION};
use pcid_interface::transport::{DriverChannel, TransportError};
use pcid_interface::wire::WireMessage;
use shutdown_tests::sim::models::{read_model, FaultyModel, Misbehave};

/// Ends this process with `SIGKILL`, as an outside killer would.
fn kill_self(address: impl std::fmt::Display, why: &str) -> ! {
    eprintln!("faultyd: {address}: killing itself with SIGKILL (misbehave = {why})");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; should the signal not be delivered at once,
    // exit with the status a shell would report for it.
    std::process::exit(137);
}

/// A frame of `msg` with some header bytes overwritten.
fn patched(msg: &DriverMessage, patch: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>, String> {
    let mut frame = msg
        .encode()
        .map_err(|e| format!("cannot encode {msg:?}: {e}"))?;
    patch(&mut frame);
    Ok(frame)
}

/// How long a driver that closed its end of the channel stays alive at most.
const LINGER: Duration = Duration::from_secs(60);

/// Stays alive (bounded by [`LINGER`]) until the parent (pcid) is gone.
fn linger_while_parent_lives() {
    let parent = std::os::unix::process::parent_id();
    let end = Instant::now() + LINGER;
    while Instant::now() < end && std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let props: FaultyModel = match &function.backend {
        FunctionBackend::Simulated => read_model()
            .map_err(|e| format!("{address}: {e}"))?
            .unwrap_or_default(),
        _ => {
            return Err(format!(
                "{address}: faultyd only drives simulated functions"
            ))
        }
    };
    let latency = Duration::from_millis(props.latency_ms);
    send(&ch, &DriverMessage::Ready)?;
    match props.misbehave {
        Some(Misbehave::ExitsBeforeShutdown) => {
            eprintln!(
                "faultyd: {address}: exiting after Ready (misbehave = exits-before-shutdown)"
            );
            std::process::exit(3);
        }
        Some(Misbehave::KilledBeforeShutdown) => kill_self(address, "killed-before-shutdown"),
        Some(Misbehave::PrintsToStdout) => {
            println!("faultyd: {address}: ready (misbehave = prints-to-stdout)");
        }
        Some(Misbehave::SendsSecondHello) => {
            eprintln!("faultyd: {address}: saying Hello again (misbehave = sends-second-hello)");
            send(
                &ch,
                &DriverMessage::Hello {
                    version: PROTOCOL_VERSION,
                    driver: "faultyd".into(),
                    support: ShutdownSupport::TwoPhase,
                },
            )?;
            // Read what pcid says until it closes the channel, then live on.
            loop {
                match ch.recv(Some(WELCOME_TIMEOUT)) {
                    Ok(DriverMessage::Error { seq, message }) => {
                        eprintln!("faultyd: {address}: pcid says (seq {seq}): {message}")
                    }
                    Ok(other) => eprintln!("faultyd: {address}: pcid sent {}", other.name()),
                    Err(_) => break,
                }
            }
            eprintln!("faultyd: {address}: channel closed; staying alive");
            linger_while_parent_lives();
            return Ok(());
        }
        _ => {}
    }
    let mut begun: Option<Instant> = None;
    // waits-in-begin: how long the device took, measured inside Begin.
    let mut waited: Option<Duration> = None;
    loop {
        let msg = match ch.recv(None) {
            Ok(m) => m,
            Err(TransportError::Closed) => return Ok(()),
            Err(TransportError::Malformed { seq, error }) if !error.is_stream_fatal() => {
                log::warn!("{address}: malformed frame from pcid (seq {seq}): {error}");
                send(
                    &ch,
                    &DriverMessage::Error {
                        seq,
                        message: format!("malformed frame: {error}"),
                    },
                )?;
                continue;
            }
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
            (DriverMessage::Begin { .. }, Some(Misbehave::PanicsInBegin)) => {
                // Deliberately: this mode stands for a driver with a bug.
                panic!("{address}: panicking in Begin (misbehave = panics-in-begin)")
            }
            (DriverMessage::Begin { .. }, Some(Misbehave::KilledInBegin)) => {
                kill_self(address, "killed-in-begin")
            }
            (DriverMessage::Finish { .. }, Some(Misbehave::KilledInFinish)) => {
                kill_self(address, "killed-in-finish")
            }
            (DriverMessage::Begin { seq, .. }, Some(m)) if bad_ack(m) => {
                let ack = DriverMessage::BeginAck {
                    seq,
                    budget: latency,
                };
                log::warn!("{address}: answering Begin seq {seq} badly (misbehave = {m:?})");
                let raw = |bytes: &[u8]| ch.send_raw(bytes).map_err(|e| format!("{address}: {e}"));
                match m {
                    Misbehave::SendsTruncatedFrame => {
                        let frame = patched(&ack, |_| {})?;
                        raw(frame.get(..frame.len() / 2).unwrap_or_default())?;
                        // Close the channel mid-frame but stay alive, so that
                        // pcid sees a truncated frame, not a dead driver.
                        ch.shutdown().map_err(|e| format!("{address}: {e}"))?;
                        linger_while_parent_lives();
                        return Ok(());
                    }
                    Misbehave::SendsOversizeLength => raw(&patched(&ack, |f| {
                        if let Some(len) = f.get_mut(12..16) {
                            len.copy_from_slice(&(1u32 << 20).to_le_bytes());
                        }
                    })?)?,
                    Misbehave::SendsUnknownVersion => raw(&patched(&ack, |f| {
                        if let Some(v) = f.get_mut(4..6) {
                            v.copy_from_slice(&9u16.to_le_bytes());
                        }
                    })?)?,
                    Misbehave::SendsUnknownType => raw(&patched(&ack, |f| {
                        if let Some(t) = f.get_mut(6) {
                            *t = 0x7f;
                        }
                    })?)?,
                    Misbehave::SendsDuplicateAck => {
                        send(&ch, &ack)?;
                        send(&ch, &ack)?;
                    }
                    Misbehave::SendsOutOfPhaseAck => send(
                        &ch,
                        &DriverMessage::FinishAck {
                            seq,
                            outcome: FinishOutcome::Clean,
                            elapsed: Duration::ZERO,
                            detail: String::new(),
                        },
                    )?,
                    Misbehave::SendsWrongSeq => send(
                        &ch,
                        &DriverMessage::BeginAck {
                            seq: seq.wrapping_add(1000),
                            budget: latency,
                        },
                    )?,
                    other => {
                        return Err(format!(
                            "{address}: {other:?} is not a bad-ack misbehaviour"
                        ))
                    }
                }
            }
            (DriverMessage::Begin { seq, .. }, Some(Misbehave::WaitsInBegin)) => {
                let start = Instant::now();
                log::warn!(
                    "{address}: waiting for the device in Begin (misbehave = waits-in-begin)"
                );
                std::thread::sleep(latency);
                begun = Some(start);
                waited = Some(start.elapsed());
                send(
                    &ch,
                    &DriverMessage::BeginAck {
                        seq,
                        budget: Duration::ZERO,
                    },
                )?;
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
                        elapsed: waited
                            .or_else(|| begun.map(|b| b.elapsed()))
                            .unwrap_or_default(),
                        detail,
                    },
                )?;
            }
            (other, _) => log::warn!("{address}: ignoring unexpected {other:?}"),
        }
    }
}

/// Whether `m` is one of the misbehaviours that answer `Begin` with a bad frame
/// or a bad ack.
fn bad_ack(m: Misbehave) -> bool {
    matches!(
        m,
        Misbehave::SendsTruncatedFrame
            | Misbehave::SendsOversizeLength
            | Misbehave::SendsUnknownVersion
            | Misbehave::SendsUnknownType
            | Misbehave::SendsDuplicateAck
            | Misbehave::SendsOutOfPhaseAck
            | Misbehave::SendsWrongSeq
    )
}

fn main() -> ExitCode {
    if let Some(code) = shutdown_tests::cli::driver_without_options(
        "faultyd",
        "An example two-phase driver that misbehaves as its device model's `misbehave`\nsays, started by pcid; see the source's documentation.",
    ) {
        return code;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultyd: {e}");
            ExitCode::FAILURE
        }
    }
}
