//! `pcid-test-driver MODE`: a driver for pcid's process-level tests.
//!
//! It serves one function like a real driver, or misbehaves in a chosen way so
//! the tests can check how pcid copes. Modes:
//!
//! * `two-phase`, `one-phase`, `none` — well-behaved, through
//!   `pcid_interface::driver` (begin answers the budget from its device
//!   model's `budget_ms`; finish waits `finish_ms`, bounded by the deadline;
//!   the model is a `shutdown_tests::sim::models::TestDriverModel` file that
//!   pcid's simulated bus names in `PCID_SIM_MODEL`);
//! * `no-hello` — never speaks (a driver not linking the protocol);
//! * `exit-before-ready` — exits with status 1 after `Welcome`;
//! * `ignore-begin`, `ignore-finish` — reads the request and never answers;
//! * `exit-in-begin`, `exit-in-finish` — exits with status 3 on the request;
//! * on `Begin`: `garbage` (bytes that are not a frame), `truncated` (half a
//!   frame, then close the channel), `oversize` (a header announcing 1 MiB), `bad-version`
//!   (frame version 9), `unknown-type` (message type 0x7f), `wrong-seq`
//!   (`BeginAck` with another sequence number), `duplicate-ack` (`BeginAck`
//!   twice), `out-of-phase-ack` (`FinishAck` instead of `BeginAck`),
//!   `borrow-seq` (`BeginAck` with the sequence number before the right one:
//!   with numbers counted per channel, one this channel never carried);
//! * `second-hello` — says `Hello` again after `Ready`, a protocol violation
//!   by a live driver: it prints what pcid sends it next (on stdout, which
//!   pcid logs) and stays alive after pcid closed its channel;
//! * `chatty` — two-phase, after printing on stdout (a line that looks like
//!   pcid's readiness line, a line longer than pcid forwards in one piece)
//!   and stderr;
//! * `show-env` — two-phase, after printing `env NAME=VALUE` for its whole
//!   environment and `fd N -> TARGET` for every open descriptor on stdout.
//!
//! Misbehaving modes speak the protocol by hand over the raw channel. Every
//! mode exits when pcid closes the channel.
//!
//! `pcid-test-driver control-client SOCKET` is not a driver: it connects to
//! pcid's control socket and asks for the device list, exiting 0 with
//! `devices: N` when answered, 4 when pcid closes the connection unanswered,
//! 5 when it cannot connect (used to test the control endpoint's uid check).

#[cfg(not(target_os = "redox"))]
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let (mode, socket) = match command_line() {
        Ok(Some(m)) => m,
        Ok(None) => return std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "pcid-test-driver: {e} (usage: pcid-test-driver MODE | control-client SOCKET)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    if mode == "control-client" {
        return imp::control_client(socket.unwrap_or_default());
    }
    let device = std::env::var("PCID_DEVICE").unwrap_or_else(|_| "?".into());
    match imp::run(&mode) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcid-test-driver {device} ({mode}): {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `(MODE, SOCKET)`, or `None` after `--help`/`--version`.
#[cfg(not(target_os = "redox"))]
fn command_line() -> Result<Option<(String, Option<String>)>, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut words = Vec::new();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                println!(
                    "usage: pcid-test-driver MODE | control-client SOCKET (modes: see the source)"
                );
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("pcid-test-driver {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Value(v) if words.len() < 2 => words.push(
                v.into_string()
                    .map_err(|v| format!("`{}` is not valid UTF-8", v.to_string_lossy()))?,
            ),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let mut it = words.into_iter();
    Ok(Some((it.next().unwrap_or_default(), it.next())))
}

#[cfg(target_os = "redox")]
fn main() -> std::process::ExitCode {
    eprintln!("pcid-test-driver: Linux only");
    std::process::ExitCode::FAILURE
}

#[cfg(not(target_os = "redox"))]
mod imp {
    use std::time::{Duration, Instant};

    use pcid_interface::driver::{
        self, Deadline, FinishReport, NoShutdown, OnePhase, OnePhaseShutdown, ShutdownHandler,
    };
    use pcid_interface::function::{FunctionBackend, PciFunction};
    use pcid_interface::protocol::{
        DriverMessage, FinishOutcome, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
    };
    use pcid_interface::transport::{DriverChannel, TransportError};
    use pcid_interface::wire::WireMessage;
    use shutdown_tests::sim::models::{read_model, TestDriverModel};

    type Error = Box<dyn std::error::Error>;

    const NAME: &str = "pcid-test-driver";

    /// Timing taken from the function's device model
    /// (`shutdown_tests::sim::models::TestDriverModel`).
    #[derive(Clone, Copy)]
    struct Timing {
        budget: Duration,
        finish: Duration,
    }

    fn timing(f: &PciFunction) -> Result<Timing, Error> {
        let model = match &f.backend {
            FunctionBackend::Simulated => read_model::<TestDriverModel>()?.unwrap_or_default(),
            _ => TestDriverModel::default(),
        };
        Ok(Timing {
            budget: Duration::from_millis(model.budget_ms),
            finish: Duration::from_millis(model.finish_ms),
        })
    }

    struct Device(Timing);

    impl ShutdownHandler for Device {
        fn support(&self) -> ShutdownSupport {
            ShutdownSupport::TwoPhase
        }
        fn begin(&mut self, _kind: ShutdownKind, _deadline: Deadline) -> Result<Duration, String> {
            Ok(self.0.budget)
        }
        fn finish(&mut self, deadline: Deadline) -> FinishReport {
            let start = Instant::now();
            // A stand-in for the device's own shutdown time, bounded by the deadline.
            let wait = self.0.finish.min(deadline.remaining());
            std::thread::sleep(wait);
            let outcome = if wait < self.0.finish {
                FinishOutcome::TimedOut
            } else {
                FinishOutcome::Clean
            };
            FinishReport::new(outcome, start.elapsed(), "test device")
        }
    }

    impl OnePhaseShutdown for Device {
        fn shutdown(&mut self, kind: ShutdownKind, deadline: Deadline) -> FinishReport {
            let _ = ShutdownHandler::begin(self, kind, deadline);
            ShutdownHandler::finish(self, deadline)
        }
    }

    pub fn control_client(socket: String) -> std::process::ExitCode {
        use pcid_interface::protocol::ControlMessage;
        use pcid_interface::transport::ControlClient;
        let mut ch = match ControlClient::connect(&socket) {
            Ok(ch) => ch,
            Err(e) => {
                println!("connect failed: {e}");
                return std::process::ExitCode::from(5);
            }
        };
        if let Err(e) = ch.send(&ControlMessage::ListDevices { id: 1 }) {
            println!("closed: {e}");
            return std::process::ExitCode::from(4);
        }
        match ch.recv(Some(Duration::from_secs(10))) {
            Ok(ControlMessage::Devices { devices, .. }) => {
                println!("devices: {}", devices.len());
                std::process::ExitCode::SUCCESS
            }
            Ok(other) => {
                println!("unexpected answer: {other:?}");
                std::process::ExitCode::from(6)
            }
            Err(e) => {
                println!("closed: {e}");
                std::process::ExitCode::from(4)
            }
        }
    }

    pub fn run(mode: &str) -> Result<(), Error> {
        match mode {
            "two-phase" => {
                let (conn, f) = driver::connect(NAME, ShutdownSupport::TwoPhase)?;
                conn.serve(Device(timing(&f)?))?;
                Ok(())
            }
            "one-phase" => {
                let (conn, f) = driver::connect(NAME, ShutdownSupport::OnePhase)?;
                conn.serve(OnePhase::new(Device(timing(&f)?)))?;
                Ok(())
            }
            "none" => {
                let (conn, _) = driver::connect(NAME, ShutdownSupport::None)?;
                conn.serve(NoShutdown)?;
                Ok(())
            }
            "no-hello" => {
                let mut ch = DriverChannel::from_env()?;
                drain_until_closed(&mut ch);
                Ok(())
            }
            "chatty" => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "pcid: ready: 99 drivers")?;
                writeln!(out, "chatty stdout line")?;
                writeln!(out, "{}", "x".repeat(5000))?;
                out.flush()?;
                eprintln!("chatty stderr line");
                let (conn, f) = driver::connect(NAME, ShutdownSupport::TwoPhase)?;
                conn.serve(Device(timing(&f)?))?;
                Ok(())
            }
            "show-env" => {
                let mut vars: Vec<String> = std::env::vars_os()
                    .map(|(k, v)| format!("env {}={}", k.to_string_lossy(), v.to_string_lossy()))
                    .collect();
                vars.sort();
                for v in vars {
                    println!("{v}");
                }
                for e in std::fs::read_dir("/proc/self/fd")? {
                    let e = e?;
                    if let Ok(target) = std::fs::read_link(e.path()) {
                        println!(
                            "fd {} -> {}",
                            e.file_name().to_string_lossy(),
                            target.display()
                        );
                    }
                }
                let (conn, f) = driver::connect(NAME, ShutdownSupport::TwoPhase)?;
                conn.serve(Device(timing(&f)?))?;
                Ok(())
            }
            "second-hello" => second_hello(),
            other => misbehave(other),
        }
    }

    /// Breaks the protocol after Ready and lives on: what a driver author's
    /// buggy driver looks like to pcid.
    fn second_hello() -> Result<(), Error> {
        let hello = DriverMessage::Hello {
            version: PROTOCOL_VERSION,
            driver: NAME.into(),
            support: ShutdownSupport::TwoPhase,
        };
        let mut ch = DriverChannel::from_env()?;
        ch.send(&hello)?;
        match ch.recv(Some(Duration::from_secs(10)))? {
            DriverMessage::Welcome { .. } => {}
            other => return Err(format!("expected Welcome, got {other:?}").into()),
        }
        ch.send(&DriverMessage::Ready)?;
        ch.send(&hello)?;
        loop {
            match ch.recv(Some(Duration::from_secs(60))) {
                Ok(DriverMessage::Error { seq, message }) => {
                    println!("received Error seq {seq}: {message}")
                }
                Ok(other) => println!("received {}", other.name()),
                Err(TransportError::Closed) => break,
                Err(e) => return Err(e.into()),
            }
        }
        println!("channel closed by pcid; still running");
        // Alive until pcid stops it (bounded, should pcid never do so).
        std::thread::sleep(Duration::from_secs(120));
        Ok(())
    }

    fn drain_until_closed(ch: &mut DriverChannel) {
        while ch.recv(None).is_ok() {}
    }

    /// A frame with its header fields overwritten.
    fn patched(msg: &DriverMessage, patch: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<u8>, Error> {
        let mut frame = msg.encode()?;
        patch(&mut frame);
        Ok(frame)
    }

    fn misbehave(mode: &str) -> Result<(), Error> {
        const KNOWN: &[&str] = &[
            "exit-before-ready",
            "ignore-begin",
            "ignore-finish",
            "exit-in-begin",
            "exit-in-finish",
            "garbage",
            "truncated",
            "oversize",
            "bad-version",
            "unknown-type",
            "wrong-seq",
            "duplicate-ack",
            "out-of-phase-ack",
            "borrow-seq",
        ];
        if !KNOWN.contains(&mode) {
            return Err(format!("unknown mode {mode:?}").into());
        }
        let mut ch = DriverChannel::from_env()?;
        ch.send(&DriverMessage::Hello {
            version: PROTOCOL_VERSION,
            driver: NAME.into(),
            support: ShutdownSupport::TwoPhase,
        })?;
        match ch.recv(Some(Duration::from_secs(10)))? {
            DriverMessage::Welcome { .. } => {}
            other => return Err(format!("expected Welcome, got {other:?}").into()),
        }
        if mode == "exit-before-ready" {
            std::process::exit(1);
        }
        ch.send(&DriverMessage::Ready)?;
        loop {
            let msg = match ch.recv(None) {
                Ok(m) => m,
                Err(TransportError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match (mode, msg) {
                ("ignore-begin", DriverMessage::Begin { .. }) => {}
                ("ignore-finish", DriverMessage::Finish { .. }) => {}
                ("exit-in-begin", DriverMessage::Begin { .. }) => std::process::exit(3),
                ("exit-in-finish", DriverMessage::Finish { .. }) => std::process::exit(3),
                (_, DriverMessage::Begin { seq, .. }) => {
                    let ack = DriverMessage::BeginAck {
                        seq,
                        budget: Duration::ZERO,
                    };
                    match mode {
                        "garbage" => ch.send_raw(b"this is not a pcid frame, not at all")?,
                        "truncated" => {
                            let frame = ack.encode()?;
                            let half = frame.get(..frame.len() / 2).unwrap_or_default();
                            ch.send_raw(half)?;
                            // Close the channel mid-frame but stay alive, so
                            // pcid sees a truncated frame, not a dead driver.
                            ch.shutdown()?;
                            std::thread::sleep(Duration::from_secs(120));
                            return Ok(());
                        }
                        "oversize" => ch.send_raw(&patched(&ack, |f| {
                            f[12..16].copy_from_slice(&(1u32 << 20).to_le_bytes())
                        })?)?,
                        "bad-version" => ch.send_raw(&patched(&ack, |f| {
                            f[4..6].copy_from_slice(&9u16.to_le_bytes())
                        })?)?,
                        "unknown-type" => ch.send_raw(&patched(&ack, |f| f[6] = 0x7f)?)?,
                        "wrong-seq" => ch.send(&DriverMessage::BeginAck {
                            seq: seq.wrapping_add(1000),
                            budget: Duration::ZERO,
                        })?,
                        "borrow-seq" => ch.send(&DriverMessage::BeginAck {
                            seq: seq.wrapping_sub(1),
                            budget: Duration::ZERO,
                        })?,
                        "duplicate-ack" => {
                            ch.send(&ack)?;
                            ch.send(&ack)?;
                        }
                        "out-of-phase-ack" => ch.send(&DriverMessage::FinishAck {
                            seq,
                            outcome: FinishOutcome::Clean,
                            elapsed: Duration::ZERO,
                            detail: String::new(),
                        })?,
                        _ => ch.send(&ack)?,
                    }
                }
                (_, DriverMessage::Finish { seq, .. }) => ch.send(&DriverMessage::FinishAck {
                    seq,
                    outcome: FinishOutcome::Clean,
                    elapsed: Duration::ZERO,
                    detail: String::new(),
                })?,
                (_, other) => log::warn!("ignoring {other:?}"),
            }
        }
    }
}
