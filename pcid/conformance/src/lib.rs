//! `pcid-conformance`: runs a driver executable under a scripted pcid and
//! checks, rule by rule, that it keeps the shutdown protocol (PROTOCOL.md).
//!
//! The tool plays pcid's part on one simulated PCI function: it creates the
//! channel, starts the driver the way pcid does (channel fd in
//! `PCID_CLIENT_CHANNEL`, a minimal environment, standard output and error
//! captured), answers `Hello` with `Welcome`, and then drives a script. No
//! root and no hardware are needed when the driver can serve a simulated
//! function (its test build); a driver that cannot will fail `ready` and the
//! checks after it are skipped.
//!
//! The driver is started three times:
//!
//! 1. **the conversation**: `Hello` → `Welcome` → `Ready`; an informational
//!    `Error` from pcid and a frame of an unknown type; then the shutdown the
//!    driver declared (`Begin`/`Finish`, one-phase `Shutdown`, or refusals
//!    from a driver that takes no part), and its exit;
//! 2. a frame of an **unsupported header version** after `Ready`;
//! 3. pcid **closing the channel** after `Ready`.
//!
//! Every check ([`CHECKS`]) ends PASS, FAIL or SKIP (not applicable, or not
//! reached because an earlier step failed) with the figure it measured. The
//! verdict passes when no check failed.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::protocol::{DriverMessage, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION};
use pcid_interface::transport::{spawn_with_channel, DriverChannel, TransportError};
use pcid_interface::wire::WireMessage;

/// Every check, in report order, with what it asks of the driver.
pub const CHECKS: [(&str, &str); 17] = [
    ("hello", "first frame is Hello, within the hello deadline, with a valid version and support"),
    ("ready", "Ready follows Welcome within the ready deadline"),
    ("stays-up", "after Ready the driver keeps running and its channel open until shutdown"),
    ("error-from-pcid", "an informational Error from pcid is read and changes nothing"),
    ("unknown-type", "a frame of an unknown type is answered with Error(seq) and the driver goes on"),
    ("refusal", "a driver that does not do two-phase shutdown refuses Begin with Error(seq)"),
    ("begin-ack", "BeginAck (two-phase) before the Begin deadline"),
    ("begin-no-wait", "Begin does not wait for the device: BeginAck comes before the device is done"),
    ("finish-ack", "FinishAck to Finish before the Finish deadline"),
    ("shutdown", "one-phase drivers: FinishAck to Shutdown before its deadline; drivers without support refuse it"),
    ("sequence", "every ack and refusal carries the seq of the request it answers"),
    ("state", "every frame fits the protocol state: one Hello, one Ready, no ack without its request"),
    ("frames", "every frame is well formed (magic, version, length, type, payload)"),
    ("stdout", "nothing is written to standard output (pcid keeps it for its readiness line)"),
    ("exit", "after the conversation the driver exits with status 0 once pcid closes the channel"),
    ("unsupported-version", "a frame of another header version makes the driver close the channel"),
    ("closed-channel", "when pcid closes the channel the driver exits, not by a signal or a panic"),
];

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The driver did what the protocol asks.
    Pass,
    /// It did not.
    Fail,
    /// Not applicable to this driver, or not reached.
    Skip,
}

impl Status {
    /// `PASS`, `FAIL` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// One of [`CHECKS`].
    pub name: &'static str,
    /// PASS, FAIL or SKIP.
    pub status: Status,
    /// What was measured or seen.
    pub figure: String,
}

/// The whole verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The driver's name and declared support (from its first `Hello`).
    pub driver: Option<(String, ShutdownSupport)>,
    /// One result per check, in [`CHECKS`] order.
    pub results: Vec<CheckResult>,
    /// What the driver wrote to standard error (all runs).
    pub stderr: String,
}

impl Verdict {
    /// The result of check `name`.
    pub fn get(&self, name: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| r.name)
            .collect()
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.failed().is_empty()
    }
}

/// How to run the driver and what to send it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The driver executable.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra `NAME=VALUE` pairs for its environment.
    pub env: Vec<(String, String)>,
    /// The function described in `Welcome` (its backend is simulated).
    pub address: PciAddress,
    /// Vendor and device id.
    pub ids: (u16, u16),
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// The simulated function's device model file, handed to the driver in
    /// `PCID_SIM_MODEL` as pcid's simulated bus does (outside the protocol:
    /// `Welcome` says only that the function is simulated).
    pub model: Option<PathBuf>,
    /// How long `Hello` may take (pcid's default: 5 s).
    pub hello_timeout: Duration,
    /// How long `Ready` may take after `Welcome`.
    pub ready_timeout: Duration,
    /// The `Begin` deadline sent (shutdownd's default: 2 s).
    pub begin_deadline: Duration,
    /// The one-phase `Shutdown` deadline sent (shutdownd's default: 10 s).
    pub shutdown_deadline: Duration,
    /// Largest `Finish` deadline sent (the deadline is shutdownd's rule:
    /// max(budget × 1.5 + 500 ms, 1 s), capped by this).
    pub finish_deadline_max: Duration,
    /// How long an answer may arrive after its deadline (shutdownd's
    /// `ack_grace`: 250 ms).
    pub grace: Duration,
    /// How long the driver is watched after `Ready` for `stays-up`.
    pub settle: Duration,
    /// How long the driver has to exit once it should.
    pub exit_timeout: Duration,
    /// Copy the driver's standard error to ours as it comes.
    pub verbose: bool,
}

impl Options {
    /// Defaults for running `program` with `args`.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        Self {
            program: program.into(),
            args,
            env: Vec::new(),
            address: PciAddress {
                segment: 0,
                bus: 0,
                device: 4,
                function: 0,
            },
            ids: (0x1b36, 0x0010),
            class: (0x01, 0x08, 0x02),
            model: None,
            hello_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
            begin_deadline: Duration::from_secs(2),
            shutdown_deadline: Duration::from_secs(10),
            finish_deadline_max: Duration::from_secs(60),
            grace: Duration::from_millis(250),
            settle: Duration::from_millis(500),
            exit_timeout: Duration::from_secs(5),
            verbose: false,
        }
    }

    fn function(&self) -> PciFunction {
        PciFunction {
            address: self.address,
            vendor: self.ids.0,
            device: self.ids.1,
            class: self.class.0,
            subclass: self.class.1,
            interface: self.class.2,
            revision: 0,
            parent: None,
            backend: FunctionBackend::Simulated,
        }
    }
}

/// The tool itself could not run (not a verdict on the driver).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The channel pair could not be created.
    #[error("cannot create the channel: {0}")]
    Channel(#[source] std::io::Error),
    /// The driver could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The executable.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Below this, a device's shutdown is too short to tell whether `Begin`
/// waited for it.
pub const NO_WAIT_RESOLUTION: Duration = Duration::from_millis(20);

fn ms_text(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The results being collected: the first verdict given for a check stands.
struct Results {
    results: Vec<CheckResult>,
}

impl Results {
    fn new() -> Self {
        Self {
            results: Vec::new(),
        }
    }

    fn set(&mut self, name: &'static str, status: Status, figure: impl Into<String>) {
        debug_assert!(CHECKS.iter().any(|(n, _)| *n == name), "{name}");
        if self.results.iter().all(|r| r.name != name) {
            self.results.push(CheckResult {
                name,
                status,
                figure: figure.into(),
            });
        }
    }

    fn pass(&mut self, name: &'static str, figure: impl Into<String>) {
        self.set(name, Status::Pass, figure)
    }

    fn fail(&mut self, name: &'static str, figure: impl Into<String>) {
        self.set(name, Status::Fail, figure)
    }

    fn skip(&mut self, name: &'static str, figure: impl Into<String>) {
        self.set(name, Status::Skip, figure)
    }

    fn status(&self, name: &str) -> Option<Status> {
        self.results
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.status)
    }

    /// Every check not decided yet is skipped with `why`.
    fn skip_rest(&mut self, why: &str) {
        for (name, _) in CHECKS {
            self.skip(name, why);
        }
    }

    fn into_ordered(self) -> Vec<CheckResult> {
        CHECKS
            .iter()
            .filter_map(|(name, _)| self.results.iter().find(|r| r.name == *name).cloned())
            .collect()
    }
}

/// A request the driver owes an answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Begin,
    Finish,
    Shutdown,
}

/// What reading the channel gave.
#[derive(Debug)]
enum Event {
    /// A message that is not an ack or a refusal of the outstanding request
    /// (already checked against the state rules).
    Other(DriverMessage),
    /// The ack of the outstanding request, with the time it arrived.
    Ack(DriverMessage, Instant),
    /// `Error` carrying the outstanding request's seq: a refusal.
    Refused(String, Instant),
    /// `Error` carrying the probe's seq.
    ProbeAnswered(String),
    /// Nothing before the deadline.
    Timeout,
    /// The driver closed the channel (or broke the framing, or died).
    Closed(String),
}

/// One run of the driver.
struct Run {
    channel: DriverChannel,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    hellos: u32,
    readies: u32,
    /// Request outstanding: kind and seq.
    outstanding: Option<(Request, u32)>,
    /// Seq of the probe frame awaiting its Error.
    probe: Option<u32>,
    /// pcid's per-channel request counter.
    next_seq: u32,
    closed: bool,
    /// The driver's name and support, from its Hello.
    hello: Option<(String, ShutdownSupport)>,
}

fn drain(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    echo: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if echo {
                        use std::io::Write as _;
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    if let Ok(mut v) = into.lock() {
                        // Keep at most 1 MiB of what the driver writes.
                        if v.len() < 1 << 20 {
                            v.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
        }
    })
}

impl Run {
    fn start(opts: &Options) -> Result<Self, ConformanceError> {
        let (channel, theirs) = DriverChannel::pair().map_err(ConformanceError::Channel)?;
        let mut cmd = Command::new(&opts.program);
        cmd.args(&opts.args)
            .env_clear()
            .env("PCID_DEVICE", opts.address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(log) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", log);
        }
        if let Some(model) = &opts.model {
            let model = std::path::absolute(model).unwrap_or_else(|_| model.clone());
            cmd.env(pcid_interface::PCID_SIM_MODEL, model);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child =
            spawn_with_channel(&mut cmd, theirs).map_err(|source| ConformanceError::Spawn {
                program: opts.program.clone(),
                source,
            })?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(drain(out, stdout.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(drain(err, stderr.clone(), opts.verbose));
        }
        Ok(Self {
            channel,
            child,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
            hellos: 0,
            readies: 0,
            outstanding: None,
            probe: None,
            next_seq: 1,
            closed: false,
            hello: None,
        })
    }

    fn seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = if s == u32::MAX { 1 } else { s + 1 };
        s
    }

    /// Sends `msg`; a failure means the driver's end is gone.
    fn send(&mut self, msg: &DriverMessage) -> Result<(), String> {
        self.channel.send(msg).map_err(|e| {
            self.closed = true;
            format!("cannot send {}: {e}", msg.name())
        })
    }

    /// Sends request `msg` and records it as outstanding.
    fn request(&mut self, kind: Request, msg: DriverMessage) -> Result<Instant, String> {
        let seq = msg.seq();
        self.send(&msg)?;
        self.outstanding = Some((kind, seq));
        Ok(Instant::now())
    }

    /// Reads until `until`, judging every frame on the way against the
    /// `state`, `sequence` and `frames` rules.
    fn next(&mut self, until: Instant, r: &mut Results) -> Event {
        loop {
            if self.closed {
                return Event::Closed("the channel is closed".into());
            }
            let left = until.saturating_duration_since(Instant::now());
            let msg = match self.channel.recv(Some(left)) {
                Ok(m) => m,
                Err(TransportError::Timeout(_)) => return Event::Timeout,
                Err(TransportError::Closed) => {
                    self.closed = true;
                    return Event::Closed("the driver closed the channel".into());
                }
                Err(TransportError::ClosedMidFrame { buffered }) => {
                    self.closed = true;
                    r.fail(
                        "frames",
                        format!("the channel closed inside a frame ({buffered} bytes of it sent)"),
                    );
                    return Event::Closed("the driver closed the channel inside a frame".into());
                }
                Err(TransportError::Malformed { seq, error }) => {
                    r.fail("frames", format!("malformed frame (seq {seq}): {error}"));
                    if error.is_stream_fatal() {
                        self.closed = true;
                        return Event::Closed(format!("framing lost: {error}"));
                    }
                    continue;
                }
                Err(e) => {
                    self.closed = true;
                    return Event::Closed(format!("channel error: {e}"));
                }
            };
            let at = Instant::now();
            match msg {
                DriverMessage::Hello { .. } => {
                    self.hellos += 1;
                    if self.hellos > 1 {
                        r.fail("state", "a second Hello");
                        continue;
                    }
                    return Event::Other(msg);
                }
                DriverMessage::Ready => {
                    self.readies += 1;
                    if self.readies > 1 {
                        r.fail("state", "a second Ready");
                        continue;
                    }
                    if self.hellos == 0 {
                        r.fail("state", "Ready before Hello");
                    }
                    return Event::Other(msg);
                }
                DriverMessage::BeginAck { seq, .. } | DriverMessage::FinishAck { seq, .. } => {
                    let is_begin_ack = matches!(msg, DriverMessage::BeginAck { .. });
                    match self.outstanding {
                        None => r.fail(
                            "state",
                            format!("{} (seq {seq}) with no request outstanding", msg.name()),
                        ),
                        Some((kind, want)) => {
                            let fits = if is_begin_ack {
                                kind == Request::Begin
                            } else {
                                kind != Request::Begin
                            };
                            if !fits {
                                r.fail(
                                    "state",
                                    format!("{} (seq {seq}) answering {kind:?}", msg.name()),
                                );
                            } else if seq != want {
                                r.fail(
                                    "sequence",
                                    format!(
                                        "{} carries seq {seq}, its {kind:?} had {want}",
                                        msg.name()
                                    ),
                                );
                            } else {
                                self.outstanding = None;
                                return Event::Ack(msg, at);
                            }
                        }
                    }
                }
                DriverMessage::Error { seq, message } => {
                    if let Some((_, want)) = self.outstanding.filter(|(_, w)| *w == seq) {
                        let _ = want;
                        self.outstanding = None;
                        return Event::Refused(message, at);
                    }
                    if self.probe == Some(seq) {
                        self.probe = None;
                        return Event::ProbeAnswered(message);
                    }
                    // Unsolicited Error (seq 0, or no request outstanding):
                    // allowed, changes nothing (PROTOCOL.md §6.1).
                }
                DriverMessage::Welcome { .. }
                | DriverMessage::Begin { .. }
                | DriverMessage::Finish { .. }
                | DriverMessage::Shutdown { .. } => {
                    r.fail("state", format!("{} sent by the driver", msg.name()));
                }
                // Participant frames belong on the participant endpoint
                // (PROTOCOL.md §14), never on a device driver's channel.
                DriverMessage::Register { .. } | DriverMessage::Registered { .. } => {
                    r.fail(
                        "state",
                        format!(
                            "{} sent on a driver channel (participant endpoint only)",
                            msg.name()
                        ),
                    );
                }
            }
        }
    }

    /// Waits for the process to exit, at most `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Duration)> {
        let since = Instant::now();
        let end = since + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some((s, since.elapsed())),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    /// Ends the run: closes the channel, kills the process if it is still
    /// there, and returns what it wrote to stdout and stderr.
    fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        let _ = self.channel.shutdown();
        if self.wait_exit(Duration::from_millis(500)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |v: &Arc<Mutex<Vec<u8>>>| v.lock().map(|v| v.clone()).unwrap_or_default();
        (take(&self.stdout), take(&self.stderr))
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Hello, Welcome and Ready. Returns the driver's support when Ready came.
fn handshake(
    run: &mut Run,
    opts: &Options,
    r: &mut Results,
    judge: bool,
) -> Option<ShutdownSupport> {
    let hello_until = run.started + opts.hello_timeout;
    let (version, support, driver) = match run.next(hello_until, r) {
        Event::Other(DriverMessage::Hello {
            version,
            support,
            driver,
        }) => (version, support, driver),
        Event::Timeout => {
            if judge {
                r.fail(
                    "hello",
                    format!("no Hello within {}", ms_text(opts.hello_timeout)),
                );
            }
            return None;
        }
        Event::Closed(why) => {
            if judge {
                let exit = run.wait_exit(Duration::from_millis(500));
                r.fail(
                    "hello",
                    format!(
                        "no Hello: {why}{}",
                        exit.map(|(s, _)| format!(" ({})", describe(s)))
                            .unwrap_or_default()
                    ),
                );
            }
            return None;
        }
        other => {
            if judge {
                r.fail("hello", format!("the first frame is not Hello: {other:?}"));
            }
            return None;
        }
    };
    let took = run.started.elapsed();
    run.hello = Some((driver.clone(), support));
    if judge {
        if version == 0 {
            r.fail("hello", "Hello names protocol version 0");
            return None;
        }
        r.pass(
            "hello",
            format!(
                "Hello after {}: version {version}, shutdown support {}, driver \"{driver}\"",
                ms_text(took),
                support.name()
            ),
        );
    }
    let welcome = DriverMessage::Welcome {
        version: version.min(PROTOCOL_VERSION),
        function: opts.function(),
    };
    if let Err(e) = run.send(&welcome) {
        if judge {
            r.fail("ready", e);
        }
        return None;
    }
    let sent = Instant::now();
    let until = sent + opts.ready_timeout;
    loop {
        match run.next(until, r) {
            Event::Other(DriverMessage::Ready) => {
                if judge {
                    r.pass(
                        "ready",
                        format!("Ready {} after Welcome", ms_text(sent.elapsed())),
                    );
                }
                return Some(support);
            }
            Event::Timeout => {
                if judge {
                    r.fail(
                        "ready",
                        format!("no Ready within {}", ms_text(opts.ready_timeout)),
                    );
                }
                return None;
            }
            Event::Closed(why) => {
                if judge {
                    let exit = run.wait_exit(Duration::from_millis(500));
                    r.fail(
                        "ready",
                        format!(
                            "no Ready: {why}{}",
                            exit.map(|(s, _)| format!(" ({})", describe(s)))
                                .unwrap_or_default()
                        ),
                    );
                }
                return None;
            }
            _ => {}
        }
    }
}

/// The Finish deadline shutdownd would send for `budget`.
fn finish_deadline(budget: Duration, max: Duration) -> Duration {
    (budget.saturating_mul(3) / 2 + Duration::from_millis(500))
        .max(Duration::from_secs(1))
        .min(max)
}

/// The first run: the whole conversation.
fn conversation(run: &mut Run, opts: &Options, r: &mut Results) -> Option<ShutdownSupport> {
    let support = handshake(run, opts, r, true)?;

    // stays-up: watch the driver for a while after Ready.
    let until = Instant::now() + opts.settle;
    loop {
        match run.next(until, r) {
            Event::Timeout => {
                r.pass(
                    "stays-up",
                    format!("running {} after Ready", ms_text(opts.settle)),
                );
                break;
            }
            Event::Closed(why) => {
                let exit = run.wait_exit(Duration::from_millis(500));
                r.fail(
                    "stays-up",
                    format!(
                        "{why} after Ready, before any shutdown request{}",
                        exit.map(|(s, _)| format!(" ({})", describe(s)))
                            .unwrap_or_default()
                    ),
                );
                return None;
            }
            _ => {}
        }
    }

    // An informational Error, then a frame of an unknown type.
    let probe_seq: u32 = 0x00c0_ffee;
    let probe = {
        let mut f = DriverMessage::Ready.encode().unwrap_or_default();
        if f.len() >= 16 {
            f[6] = 0x3f;
            f[8..12].copy_from_slice(&probe_seq.to_le_bytes());
        }
        f
    };
    let sent = run
        .send(&DriverMessage::Error {
            seq: 0,
            message: "pcid-conformance: an informational error; carry on".into(),
        })
        .and_then(|()| {
            run.channel.send_raw(&probe).map_err(|e| {
                run.closed = true;
                format!("cannot send the probe: {e}")
            })
        });
    if let Err(e) = sent {
        r.fail("error-from-pcid", e);
        return None;
    }
    run.probe = Some(probe_seq);
    let until = Instant::now() + opts.begin_deadline;
    loop {
        match run.next(until, r) {
            Event::ProbeAnswered(text) => {
                r.pass("error-from-pcid", "still serving after pcid's Error");
                r.pass(
                    "unknown-type",
                    format!("answered Error(seq {probe_seq:#x}): \"{text}\""),
                );
                break;
            }
            Event::Timeout => {
                r.pass("error-from-pcid", "still serving after pcid's Error");
                r.fail(
                    "unknown-type",
                    format!(
                        "no Error(seq {probe_seq:#x}) within {} for a frame of type 0x3f",
                        ms_text(opts.begin_deadline)
                    ),
                );
                break;
            }
            Event::Closed(why) => {
                r.fail(
                    "error-from-pcid",
                    format!("{why} after an Error from pcid and an unknown frame"),
                );
                r.fail(
                    "unknown-type",
                    format!("{why} instead of answering Error(seq)"),
                );
                return None;
            }
            _ => {}
        }
    }
    run.probe = None;

    match support {
        ShutdownSupport::TwoPhase => two_phase(run, opts, r),
        ShutdownSupport::OnePhase => {
            if refuse(run, opts, r, "refusal") {
                one_phase(run, opts, r);
            }
        }
        ShutdownSupport::None => {
            for name in ["begin-ack", "finish-ack", "begin-no-wait"] {
                r.skip(name, "declared no shutdown support: refusals are checked");
            }
            if refuse(run, opts, r, "refusal") {
                let seq = run.seq();
                let shutdown = DriverMessage::Shutdown {
                    seq,
                    kind: ShutdownKind::Poweroff,
                    deadline: opts.shutdown_deadline,
                };
                if let Err(e) = run.request(Request::Shutdown, shutdown) {
                    r.fail("shutdown", e);
                    return None;
                }
                match run.next(Instant::now() + opts.begin_deadline + opts.grace, r) {
                    Event::Refused(text, _) => r.pass(
                        "shutdown",
                        format!("no shutdown support declared: Shutdown refused: \"{text}\""),
                    ),
                    Event::Ack(m, _) => r.fail(
                        "shutdown",
                        format!("declared no shutdown support but answered {}", m.name()),
                    ),
                    other => r.fail("shutdown", format!("Shutdown not refused: {other:?}")),
                }
            }
        }
    }
    Some(support)
}

/// Sends Begin to a driver that must refuse it; true if it did.
fn refuse(run: &mut Run, opts: &Options, r: &mut Results, check: &'static str) -> bool {
    let seq = run.seq();
    let begin = DriverMessage::Begin {
        seq,
        kind: ShutdownKind::Poweroff,
        deadline: opts.begin_deadline,
    };
    let sent = match run.request(Request::Begin, begin) {
        Ok(t) => t,
        Err(e) => {
            r.fail(check, e);
            return false;
        }
    };
    match run.next(sent + opts.begin_deadline + opts.grace, r) {
        Event::Refused(text, at) => {
            r.pass(
                check,
                format!("Begin refused after {}: \"{text}\"", ms_text(at - sent)),
            );
            true
        }
        Event::Ack(m, _) => {
            r.fail(
                check,
                format!(
                    "declared no two-phase support but answered Begin with {}",
                    m.name()
                ),
            );
            false
        }
        Event::Timeout => {
            r.fail(
                check,
                format!(
                    "Begin neither refused nor answered within {}",
                    ms_text(opts.begin_deadline)
                ),
            );
            false
        }
        Event::Closed(why) => {
            r.fail(check, format!("{why} on Begin"));
            false
        }
        other => {
            r.fail(check, format!("unexpected answer to Begin: {other:?}"));
            false
        }
    }
}

fn two_phase(run: &mut Run, opts: &Options, r: &mut Results) {
    r.skip("refusal", "declared two-phase");
    r.skip(
        "shutdown",
        "declared two-phase: Begin and Finish are checked",
    );
    let seq = run.seq();
    let begin = DriverMessage::Begin {
        seq,
        kind: ShutdownKind::Poweroff,
        deadline: opts.begin_deadline,
    };
    let begin_sent = match run.request(Request::Begin, begin) {
        Ok(t) => t,
        Err(e) => {
            r.fail("begin-ack", e);
            return;
        }
    };
    let (budget, begin_latency) = match run.next(begin_sent + opts.begin_deadline + opts.grace, r) {
        Event::Ack(DriverMessage::BeginAck { budget, .. }, at) => {
            let latency = at - begin_sent;
            if latency > opts.begin_deadline + opts.grace {
                r.fail(
                    "begin-ack",
                    format!(
                        "BeginAck after {}, past the {} deadline",
                        ms_text(latency),
                        ms_text(opts.begin_deadline)
                    ),
                );
            } else {
                r.pass(
                    "begin-ack",
                    format!(
                        "BeginAck after {} (deadline {}), budget {}",
                        ms_text(latency),
                        ms_text(opts.begin_deadline),
                        ms_text(budget)
                    ),
                );
            }
            (budget, latency)
        }
        Event::Refused(text, _) => {
            r.fail(
                "begin-ack",
                format!("declared two-phase but refused Begin: \"{text}\""),
            );
            return;
        }
        Event::Timeout => {
            r.fail(
                "begin-ack",
                format!(
                    "no BeginAck within the {} Begin deadline (+{} grace)",
                    ms_text(opts.begin_deadline),
                    ms_text(opts.grace)
                ),
            );
            return;
        }
        Event::Closed(why) => {
            let exit = run.wait_exit(Duration::from_millis(500));
            r.fail(
                "begin-ack",
                format!(
                    "{why} before BeginAck{}",
                    exit.map(|(s, _)| format!(" ({})", describe(s)))
                        .unwrap_or_default()
                ),
            );
            return;
        }
        other => {
            r.fail(
                "begin-ack",
                format!("unexpected answer to Begin: {other:?}"),
            );
            return;
        }
    };

    let seq = run.seq();
    let deadline = finish_deadline(budget, opts.finish_deadline_max);
    let finish = DriverMessage::Finish { seq, deadline };
    let finish_sent = match run.request(Request::Finish, finish) {
        Ok(t) => t,
        Err(e) => {
            r.fail("finish-ack", e);
            return;
        }
    };
    match run.next(finish_sent + deadline + opts.grace, r) {
        Event::Ack(
            DriverMessage::FinishAck {
                outcome,
                elapsed,
                detail,
                ..
            },
            at,
        ) => {
            let latency = at - finish_sent;
            r.pass(
                "finish-ack",
                format!(
                    "FinishAck after {} (deadline {}): {}, device took {}{}",
                    ms_text(latency),
                    ms_text(deadline),
                    outcome.name(),
                    ms_text(elapsed),
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(", \"{detail}\"")
                    }
                ),
            );
            if elapsed < NO_WAIT_RESOLUTION {
                r.skip(
                    "begin-no-wait",
                    format!(
                        "the device took {}, too short to tell (BeginAck after {})",
                        ms_text(elapsed),
                        ms_text(begin_latency)
                    ),
                );
            } else if begin_latency >= elapsed {
                r.fail(
                    "begin-no-wait",
                    format!("BeginAck after {}: the device's {} shutdown was over before Begin was answered", ms_text(begin_latency), ms_text(elapsed)),
                );
            } else {
                r.pass(
                    "begin-no-wait",
                    format!(
                        "BeginAck after {}, the device then took {} in all",
                        ms_text(begin_latency),
                        ms_text(elapsed)
                    ),
                );
            }
        }
        Event::Refused(text, _) => {
            r.fail("finish-ack", format!("refused Finish: \"{text}\""));
        }
        Event::Timeout => {
            r.fail(
                "finish-ack",
                format!(
                    "no FinishAck within the {} Finish deadline (+{} grace)",
                    ms_text(deadline),
                    ms_text(opts.grace)
                ),
            );
        }
        Event::Closed(why) => {
            let exit = run.wait_exit(Duration::from_millis(500));
            r.fail(
                "finish-ack",
                format!(
                    "{why} before FinishAck{}",
                    exit.map(|(s, _)| format!(" ({})", describe(s)))
                        .unwrap_or_default()
                ),
            );
        }
        other => r.fail(
            "finish-ack",
            format!("unexpected answer to Finish: {other:?}"),
        ),
    }
}

fn one_phase(run: &mut Run, opts: &Options, r: &mut Results) {
    for name in ["begin-ack", "finish-ack", "begin-no-wait"] {
        r.skip(name, "declared one-phase: Shutdown is checked");
    }
    let seq = run.seq();
    let shutdown = DriverMessage::Shutdown {
        seq,
        kind: ShutdownKind::Poweroff,
        deadline: opts.shutdown_deadline,
    };
    let sent = match run.request(Request::Shutdown, shutdown) {
        Ok(t) => t,
        Err(e) => {
            r.fail("shutdown", e);
            return;
        }
    };
    match run.next(sent + opts.shutdown_deadline + opts.grace, r) {
        Event::Ack(
            DriverMessage::FinishAck {
                outcome, elapsed, ..
            },
            at,
        ) => r.pass(
            "shutdown",
            format!(
                "FinishAck after {} (deadline {}): {}, device took {}",
                ms_text(at - sent),
                ms_text(opts.shutdown_deadline),
                outcome.name(),
                ms_text(elapsed)
            ),
        ),
        Event::Refused(text, _) => r.fail(
            "shutdown",
            format!("declared one-phase but refused Shutdown: \"{text}\""),
        ),
        Event::Timeout => r.fail(
            "shutdown",
            format!(
                "no FinishAck within the {} Shutdown deadline",
                ms_text(opts.shutdown_deadline)
            ),
        ),
        Event::Closed(why) => r.fail("shutdown", format!("{why} before FinishAck")),
        other => r.fail(
            "shutdown",
            format!("unexpected answer to Shutdown: {other:?}"),
        ),
    }
}

/// After the conversation: the driver exits by itself or once pcid closes
/// the channel, with status 0.
fn exit_check(run: &mut Run, opts: &Options, r: &mut Results) {
    // Frames still arriving (a duplicate ack, say) are judged first.
    let until = Instant::now() + Duration::from_millis(200);
    while !matches!(run.next(until, r), Event::Timeout | Event::Closed(_)) {}
    let _ = run.channel.shutdown();
    match run.wait_exit(opts.exit_timeout) {
        Some((s, after)) if s.success() => r.pass(
            "exit",
            format!(
                "exited with status 0, {} after pcid closed the channel",
                ms_text(after)
            ),
        ),
        Some((s, _)) => r.fail("exit", format!("{} after the conversation", describe(s))),
        None => r.fail(
            "exit",
            format!(
                "still running {} after pcid closed the channel",
                ms_text(opts.exit_timeout)
            ),
        ),
    }
}

fn unsupported_version(opts: &Options, r: &mut Results) -> Result<Run, ConformanceError> {
    let mut run = Run::start(opts)?;
    if handshake(&mut run, opts, &mut Results::new(), false).is_none() {
        r.skip(
            "unsupported-version",
            "the driver did not become ready in this run",
        );
        return Ok(run);
    }
    let seq = 0x5eed;
    let mut frame = DriverMessage::Begin {
        seq,
        kind: ShutdownKind::Poweroff,
        deadline: opts.begin_deadline,
    }
    .encode()
    .unwrap_or_default();
    if frame.len() >= 6 {
        frame[4..6].copy_from_slice(&2u16.to_le_bytes());
    }
    let sent = Instant::now();
    if run.channel.send_raw(&frame).is_err() {
        r.fail(
            "unsupported-version",
            "the channel closed before the frame could be sent",
        );
        return Ok(run);
    }
    let until = sent + opts.exit_timeout;
    let mut told = None;
    let mut scratch = Results::new();
    loop {
        // Only closing (with or without an Error first) is right.
        match run
            .channel
            .recv(Some(until.saturating_duration_since(Instant::now())))
        {
            Ok(DriverMessage::Error { seq: s, message }) => told = Some((s, message)),
            Ok(DriverMessage::BeginAck { .. }) => {
                r.fail(
                    "unsupported-version",
                    "answered a Begin of header version 2 with BeginAck",
                );
                return Ok(run);
            }
            Ok(_) => {}
            Err(TransportError::Timeout(_)) => {
                r.fail(
                    "unsupported-version",
                    format!(
                        "channel still open {} after a frame of header version 2",
                        ms_text(opts.exit_timeout)
                    ),
                );
                return Ok(run);
            }
            Err(TransportError::Malformed { error, .. }) if !error.is_stream_fatal() => {
                scratch.fail("frames", error.to_string());
            }
            Err(_) => break,
        }
    }
    run.closed = true;
    r.pass(
        "unsupported-version",
        format!(
            "closed the channel {} after a frame of header version 2{}",
            ms_text(sent.elapsed()),
            match told {
                Some((s, m)) => format!(", saying Error(seq {s}): \"{m}\""),
                None => " (without an Error first)".into(),
            }
        ),
    );
    Ok(run)
}

fn closed_channel(opts: &Options, r: &mut Results) -> Result<Run, ConformanceError> {
    let mut run = Run::start(opts)?;
    if handshake(&mut run, opts, &mut Results::new(), false).is_none() {
        r.skip(
            "closed-channel",
            "the driver did not become ready in this run",
        );
        return Ok(run);
    }
    let _ = run.channel.shutdown();
    run.closed = true;
    match run.wait_exit(opts.exit_timeout) {
        Some((s, after)) => {
            use std::os::unix::process::ExitStatusExt as _;
            if s.signal().is_some() || s.code() == Some(101) {
                r.fail(
                    "closed-channel",
                    format!(
                        "{} {} after pcid closed the channel{}",
                        describe(s),
                        ms_text(after),
                        if s.code() == Some(101) {
                            " (a Rust panic)"
                        } else {
                            ""
                        }
                    ),
                );
            } else {
                r.pass(
                    "closed-channel",
                    format!(
                        "{} {} after pcid closed the channel",
                        describe(s),
                        ms_text(after)
                    ),
                );
            }
        }
        None => r.fail(
            "closed-channel",
            format!(
                "still running {} after pcid closed the channel",
                ms_text(opts.exit_timeout)
            ),
        ),
    }
    Ok(run)
}

/// Runs every check against the driver.
pub fn check(opts: &Options) -> Result<Verdict, ConformanceError> {
    let mut r = Results::new();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();

    let mut run = Run::start(opts)?;
    let support = conversation(&mut run, opts, &mut r);
    if support.is_some() {
        exit_check(&mut run, opts, &mut r);
    }
    let driver = run.hello.clone();
    let (o, e) = run.finish();
    stdout.extend(o);
    stderr.extend(e);
    let ready = r.status("ready") == Some(Status::Pass);
    if ready {
        for name in ["sequence", "state", "frames"] {
            r.pass(name, "no violation seen");
        }
        let run = unsupported_version(opts, &mut r)?;
        let (o, e) = run.finish();
        stdout.extend(o);
        stderr.extend(e);
        let run = closed_channel(opts, &mut r)?;
        let (o, e) = run.finish();
        stdout.extend(o);
        stderr.extend(e);
    }
    if stdout.is_empty() {
        r.pass("stdout", "nothing written to standard output");
    } else {
        let text = String::from_utf8_lossy(&stdout);
        let first = text.lines().next().unwrap_or_default();
        r.fail(
            "stdout",
            format!(
                "{} bytes written to standard output, first line: \"{}\"",
                stdout.len(),
                first.chars().take(80).collect::<String>()
            ),
        );
    }
    r.skip_rest("not reached: an earlier step failed");
    Ok(Verdict {
        driver,
        results: r.into_ordered(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
