//! The fault matrix: every fault, bad input and privilege scenario run
//! against the real binaries (pcid, nvmed, the example drivers, shutdownd) on
//! simulated machines. `docs/fault-matrix.md` lists each scenario with the test
//! that shows it and the outcome observed.
//!
//! Needs the workspace's binaries: `cargo build --release --workspace` before
//! `cargo test --release -p shutdown_tests --test fault_matrix` (as
//! `tests/run.sh` does).
//!
//! Every shutdown run checks the same promises:
//!
//! * shutdownd kept its global deadline: its report records every outcome
//!   before the deadline, or, if the deadline passed with devices open, all
//!   of them at the moment shutdownd saw it pass and none later
//!   (`Report::kept_deadline`, a check a stalled machine cannot fail);
//!   and, measured outside, the process exits within the deadline plus
//!   [`PROCESS_GRACE`] (start-up, connecting, writing the report; generous so
//!   that a slow machine cannot fail it);
//! * every device of the machine is in the JSON report, with a terminal
//!   outcome;
//! * the healthy devices end `clean`;
//! * no process panicked: pcid's log (which also holds every driver's standard
//!   error) and shutdownd's output contain no `panicked at`, and pcid is still
//!   running afterwards and then stops with status 0.
//!
//! Several faults share one machine where they cannot influence each other,
//! so that the file runs in a few seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nvme_sim::{Fault, SimConfig};
use shutdown_tests::sim::fault::{FaultSpec, KINDS};
use shutdown_tests::sim::machine::{device_address, DeviceSpec, MachineSpec};
use shutdown_tests::sim::stack::{
    load_report, run_captured, Binaries, DeviceReport, Report, ShutdowndRun, Stack, StackOptions,
};

/// Outside bound on one shutdownd run; only keeps a broken build from
/// hanging the suite (shutdownd bounds itself by its global deadline).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Slack allowed between shutdownd's global deadline and its exit as seen from
/// outside the process.
const PROCESS_GRACE: Duration = Duration::from_secs(10);

/// How long a test waits for an expected line in pcid's log.
const LOG_WAIT: Duration = Duration::from_secs(20);

/// Outcomes the report may end a device with.
const TERMINAL: [&str; 7] = [
    "clean",
    "abrupt",
    "timed-out",
    "failed",
    "no-response",
    "driver-died",
    "not-supported",
];

/// pcid logs every relayed message at debug level (with its sequence
/// number); drivers and everything else stay at `warn`.
const LOG_FILTER: &str = "warn,pcid::relay=debug";

fn bins() -> Binaries {
    let bins = Binaries::beside_current_exe().expect("locate binaries");
    bins.check()
        .unwrap_or_else(|e| panic!("{e} (the tests use the real binaries)"));
    bins
}

struct Rig {
    dir: tempfile::TempDir,
    stack: Stack,
    /// Number of devices in the machine.
    devices: usize,
}

fn start(machine: &MachineSpec) -> Rig {
    let bins = bins();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("machine.toml");
    machine.write(&path).expect("write machine");
    let opts = StackOptions {
        machine: path,
        work_dir: dir.path().to_path_buf(),
        ready_timeout: Duration::from_secs(30),
        env: vec![("RUST_LOG".into(), LOG_FILTER.into())],
        driver_env: Vec::new(),
        pcid_args: vec!["--hello-timeout-ms".into(), "500".into()],
        inherit_stderr: false,
    };
    let stack = Stack::start(&bins, &opts).unwrap_or_else(|e| panic!("start pcid: {e}"));
    Rig {
        dir,
        stack,
        devices: machine.devices.len(),
    }
}

/// Applies `KIND` to device `index` exactly as `simulate --fault INDEX:KIND` does.
fn fault(m: &mut MachineSpec, index: usize, kind: &str) {
    format!("{index}:{kind}")
        .parse::<FaultSpec>()
        .unwrap_or_else(|e| panic!("{e}"))
        .apply(m)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The first line of `text` that reports a Rust panic.
fn panic_line(text: &str) -> Option<&str> {
    text.lines().find(|l| l.contains("panicked at"))
}

fn no_panic(what: &str, text: &str) {
    if let Some(line) = panic_line(text) {
        panic!("{what} shows a panic: {line}\n{text}");
    }
}

impl Rig {
    fn log(&self) -> String {
        self.stack
            .log()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    fn explain(&self, run: &ShutdowndRun) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "shutdownd status {}\nstdout:\n{}\nstderr:\n{}\npcid log (last 60 lines):\n{tail}",
            run.status, run.stdout, run.stderr
        )
    }

    /// Waits (bounded) until pcid's log has a line containing every one of
    /// `needles`; returns it.
    fn wait_log(&self, needles: &[&str]) -> String {
        let end = Instant::now() + LOG_WAIT;
        loop {
            if let Some(l) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < end,
                "no line with {needles:?} in pcid's log within {LOG_WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs shutdownd with a global deadline of `deadline_ms` and checks the
    /// promises listed in the module documentation; `healthy` are the device
    /// positions that must end clean.
    fn shutdown(&self, deadline_ms: u64, healthy: &[usize]) -> (ShutdowndRun, Report) {
        let (run, report) = self.shutdown_allowing_panics(deadline_ms, healthy);
        // Nobody panicked.
        no_panic("shutdownd's standard error", &run.stderr);
        no_panic("shutdownd's standard output", &run.stdout);
        no_panic("pcid's and the drivers' log", &self.log());
        (run, report)
    }

    /// [`Rig::shutdown`] without the check that nobody panicked.
    fn shutdown_allowing_panics(
        &self,
        deadline_ms: u64,
        healthy: &[usize],
    ) -> (ShutdowndRun, Report) {
        let json = self.dir.path().join("report.json");
        let deadline = deadline_ms.to_string();
        let run = self
            .stack
            .run_shutdownd(&["--deadline-ms", &deadline], &json, RUN_LIMIT)
            .unwrap_or_else(|e| panic!("run shutdownd: {e}"));
        let why = self.explain(&run);
        // The table, for `--nocapture` readers (docs/fault-matrix.md quotes it).
        eprintln!("{}", run.stdout);
        let report = run
            .report
            .clone()
            .unwrap_or_else(|| panic!("no JSON report\n{why}"));

        // Within the global deadline.
        assert_eq!(report.global_deadline_ms, deadline_ms as f64, "{why}");
        if let Err(e) = report.kept_deadline() {
            panic!("{e}\n{why}");
        }
        assert!(
            run.wall <= Duration::from_millis(deadline_ms) + PROCESS_GRACE,
            "shutdownd ran {:?}\n{why}",
            run.wall
        );
        // Every device, each with a terminal outcome.
        let listed: Vec<&str> = report
            .devices
            .iter()
            .filter_map(|d| d.address.as_deref())
            .collect();
        let machine: Vec<String> = (0..self.devices).map(device_address).collect();
        assert_eq!(listed, machine, "{why}");
        for d in &report.devices {
            assert!(TERMINAL.contains(&d.outcome.as_str()), "{d:?}\n{why}");
        }
        // Healthy devices clean.
        for &i in healthy {
            assert_eq!(
                report.devices[i].outcome, "clean",
                "{:?}\n{why}",
                report.devices[i]
            );
        }
        // shutdownd::EXIT_STATUS: 0 exactly when every device ended clean or
        // not-supported.
        let ok = report
            .devices
            .iter()
            .all(|d| d.outcome == "clean" || d.outcome == "not-supported");
        assert_eq!(run.status.code(), Some(if ok { 0 } else { 1 }), "{why}");
        (run, report)
    }

    /// Stops pcid, which must still be running and exit with status 0, and
    /// whose log shows no panic.
    fn stop(self) {
        let log_path = self.stack.log().map(Path::to_path_buf);
        let status = self
            .stack
            .stop(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("stop pcid: {e}"));
        let log = log_path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        assert!(status.success(), "pcid: {status}\n{log}");
        no_panic("pcid's and the drivers' log", &log);
    }
}

fn device(r: &Report, i: usize) -> &DeviceReport {
    &r.devices[i]
}

/// Devices of the lifecycle test whose driver dies, with how its process ends:
/// in Begin, in Finish, and before shutdown (the last two).
const DIED: [(usize, &str); 6] = [
    (5, "exited (exit status: 3)"),
    (6, "exited (signal: 9 (SIGKILL))"),
    (7, "exited (exit status: 3)"),
    (8, "exited (signal: 9 (SIGKILL))"),
    (9, "exited (exit status: 3)"),
    (10, "exited (signal: 9 (SIGKILL))"),
];

/// Driver lifecycle faults (silence, exit, SIGKILL in every phase) and
/// controller faults, side by side with healthy controllers, in one machine.
#[test]
fn driver_and_controller_faults_each_get_an_outcome_and_healthy_devices_stay_clean() {
    let faults = [
        "shutdown-never-completes",
        "fatal-status",
        "surprise-removal",
        "driver-ignores-begin",
        "driver-ignores-finish",
        "driver-exits-in-begin",
        "driver-killed-in-begin",
        "driver-exits-in-finish",
        "driver-killed-in-finish",
        "driver-exits-before-shutdown",
        "driver-killed-before-shutdown",
    ];
    let mut m = MachineSpec::nvme(faults.len() + 3, 200, None);
    for (i, kind) in faults.iter().enumerate() {
        fault(&mut m, i, kind);
    }
    let healthy: Vec<usize> = (faults.len()..m.devices.len()).collect();
    let rig = start(&m);
    // "Before shutdown starts" is causal: shutdownd runs only once pcid has
    // logged both deaths (at debug level pcid also logs the exit status of a
    // driver it had already given up on, so the status line always comes).
    for (i, status) in &DIED[4..] {
        rig.wait_log(&[&device_address(*i), status]);
    }

    let (run, r) = rig.shutdown(5000, &healthy);
    let why = rig.explain(&run);
    let outcome = |i: usize| device(&r, i).outcome.as_str();
    // The stuck controller waited out its finish deadline (1 s for 200 ms).
    assert!(
        ["timed-out", "abrupt"].contains(&outcome(0)),
        "{:?}",
        device(&r, 0)
    );
    assert!(device(&r, 0).elapsed_ms.expect("elapsed") >= 1000.0);
    let got: Vec<(&str, &str)> = faults[1..]
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, outcome(i + 1)))
        .collect();
    assert_eq!(
        got,
        [
            ("fatal-status", "failed"),
            ("surprise-removal", "failed"),
            ("driver-ignores-begin", "no-response"),
            ("driver-ignores-finish", "no-response"),
            ("driver-exits-in-begin", "driver-died"),
            ("driver-killed-in-begin", "driver-died"),
            ("driver-exits-in-finish", "driver-died"),
            ("driver-killed-in-finish", "driver-died"),
            ("driver-exits-before-shutdown", "driver-died"),
            ("driver-killed-before-shutdown", "driver-died"),
        ],
        "{why}"
    );
    // The controller faults are told apart in the detail.
    assert!(
        device(&r, 1).detail.contains("fatal"),
        "{:?}",
        device(&r, 1)
    );
    assert!(
        device(&r, 2).detail.contains("all-ones") || device(&r, 2).detail.contains("gone"),
        "{:?}",
        device(&r, 2)
    );
    // Each death is logged naming the device and saying how the process
    // ended (an error line, and the status once pcid has reaped it), and the
    // report's detail says so too. pcid waits up to 500 ms after the channel
    // closes for the status; on a machine slower than that the detail says the
    // driver closed its channel instead.
    for (i, status) in &DIED {
        rig.wait_log(&[&device_address(*i), status]);
        let d = device(&r, *i);
        assert!(
            d.detail.contains(status) || d.detail.contains("closed its channel"),
            "{d:?}"
        );
    }
    for (i, _) in DIED {
        let line = rig.wait_log(&[&device_address(i), "ERROR", "faultyd (pid "]);
        assert!(
            line.contains("driver process exited") || line.contains("closed its channel"),
            "{line}"
        );
    }
    // Drivers dead before shutdown were listed gone and still asked: pcid
    // answered at once with how each one died (checked in the loop above),
    // rather than shutdownd guessing.
    for i in [9, 10] {
        let d = device(&r, i);
        assert!(d.begin_sent_ms.is_some(), "{d:?}");
        assert_eq!(d.begin_ack_ms, None, "{d:?}");
    }
    rig.stop();
}

/// Malformed frames and wrong acks from drivers: each closes only the
/// offending driver's channel, is logged as an error naming its device, and
/// the healthy controllers between them end clean.
#[test]
fn malformed_frames_and_wrong_acks_are_logged_naming_the_device_and_isolated() {
    let faults = [
        "driver-sends-garbage",
        "driver-sends-truncated-frame",
        "driver-sends-oversize-length",
        "driver-sends-unknown-version",
        "driver-sends-unknown-type",
        "driver-sends-duplicate-ack",
        "driver-sends-out-of-phase-ack",
        "driver-sends-wrong-seq",
    ];
    // Faulty drivers at even positions, healthy controllers at odd ones.
    let mut m = MachineSpec::nvme(2 * faults.len() + 1, 200, None);
    for (i, kind) in faults.iter().enumerate() {
        fault(&mut m, 2 * i, kind);
    }
    let healthy: Vec<usize> = (0..faults.len()).map(|i| 2 * i + 1).collect();
    let rig = start(&m);
    let (run, r) = rig.shutdown(5000, &healthy);
    let why = rig.explain(&run);
    for (i, kind) in faults.iter().enumerate() {
        let d = device(&r, 2 * i);
        let address = device_address(2 * i);
        // The error line names the device and says what was wrong.
        let line = rig.wait_log(&[&address, "protocol violation by faultyd"]);
        assert!(line.contains("ERROR"), "{kind}: {line}");
        assert!(line.contains("closing its channel"), "{kind}: {line}");
        let (outcome, says): (&str, &str) = match *kind {
            "driver-sends-garbage" => ("failed", "undecodable frame"),
            "driver-sends-truncated-frame" => ("failed", "undecodable frame"),
            "driver-sends-oversize-length" => ("failed", "undecodable frame"),
            "driver-sends-unknown-version" => ("failed", "undecodable frame"),
            "driver-sends-unknown-type" => ("failed", "undecodable frame"),
            // The first BeginAck is good and relayed; the second is a violation
            // with nothing outstanding.
            "driver-sends-duplicate-ack" => ("failed", "unexpected BeginAck"),
            "driver-sends-out-of-phase-ack" => ("failed", "unexpected FinishAck"),
            "driver-sends-wrong-seq" => ("failed", "BeginAck with sequence number"),
            other => unreachable!("{other}"),
        };
        assert!(line.contains(says), "{kind}: {line}");
        assert_eq!(d.outcome, outcome, "{kind}: {d:?}\n{why}");
        assert!(d.detail.contains("protocol violation"), "{kind}: {d:?}");
    }
    rig.stop();
}

/// A driver's channel speaks only for its own function: driver messages
/// carry no address, and sequence numbers are counted per channel, so every
/// device's Begin carries 1. Two drivers' BeginAck 1 arrive while a third
/// device's Begin 1 is still outstanding: neither answers it.
#[test]
fn a_driver_cannot_acknowledge_for_another_device() {
    let mut m = MachineSpec::nvme(3, 200, None);
    fault(&mut m, 0, "driver-ignores-begin");
    let rig = start(&m);
    let (run, r) = rig.shutdown(3000, &[1, 2]);
    let why = rig.explain(&run);
    for i in 0..3 {
        rig.wait_log(&[&device_address(i), "relaying Begin seq 1 "]);
    }
    let silent = device(&r, 0);
    assert_eq!(silent.outcome, "no-response", "{silent:?}\n{why}");
    assert_eq!(silent.begin_ack_ms, None, "{silent:?}\n{why}");
    for i in [1, 2] {
        let d = device(&r, i);
        assert_eq!(d.budget_ms, Some(200.0), "{d:?}");
    }
    rig.stop();
}

/// A driver that breaks the protocol and stays alive (a second Hello, long
/// before any shutdown) is reported `failed` with its violation — never as a
/// dead driver — however the violation and shutdownd's device list race: 20
/// stacks, each shut down as soon as pcid is ready.
#[test]
fn a_live_protocol_violator_is_reported_failed_with_its_violation_every_time() {
    const RUNS: usize = 20;
    let mut m = MachineSpec::nvme(2, 50, None);
    fault(&mut m, 0, "driver-sends-second-hello");
    let mut failed_with_violation = 0;
    for run in 0..RUNS {
        let rig = start(&m);
        let (shutdownd, r) = rig.shutdown(5000, &[1]);
        let d = device(&r, 0);
        assert_eq!(
            d.outcome,
            "failed",
            "run {run}: {d:?}\n{}",
            rig.explain(&shutdownd)
        );
        assert_eq!(
            d.detail, "protocol violation: driver broke the protocol: second Hello",
            "run {run}"
        );
        if run == 0 {
            // It was told why, and it was alive after its channel closed.
            let a = device_address(0);
            rig.wait_log(&[&a, "pcid says (seq 0): protocol violation: second Hello"]);
            rig.wait_log(&[&a, "channel closed; staying alive"]);
        }
        failed_with_violation += 1;
        rig.stop();
    }
    assert_eq!(failed_with_violation, RUNS);
    eprintln!("live violator reported failed with its violation in {failed_with_violation} of {RUNS} runs");
}

/// The global deadline ends shutdownd even when a device's own deadline is
/// far later.
#[test]
fn shutdownd_ends_within_its_global_deadline_when_a_device_would_take_longer() {
    let mut m = MachineSpec::nvme(3, 200, None);
    if let DeviceSpec::Nvme(n) = &mut m.devices[0] {
        *n = SimConfig {
            rtd3e_us: 10_000_000,
            faults: vec![Fault::ShutdownNeverCompletes],
            ..n.clone()
        };
    }
    let rig = start(&m);
    let (run, r) = rig.shutdown(2000, &[1, 2]);
    let stuck = device(&r, 0);
    assert_eq!(stuck.budget_ms, Some(10_000.0), "{}", rig.explain(&run));
    // nvmed gives up at the Finish deadline shutdownd cut down to what was left
    // of the global one (timed-out or abrupt), or shutdownd stops waiting first.
    assert!(
        ["timed-out", "abrupt", "no-response"].contains(&stuck.outcome.as_str()),
        "{stuck:?}"
    );
    rig.stop();
}

/// A second shutdown request while the first is in flight is refused for
/// every device ("busy"); the first one completes undisturbed.
#[test]
fn a_second_shutdown_request_while_one_is_in_flight_is_refused() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut m = MachineSpec::nvme(3, 2000, None);
    fault(&mut m, 2, "driver-ignores-finish");
    let rig = start(&m);
    let first_json = rig.dir.path().join("first.json");
    let mut first = rig
        .stack
        .shutdownd_command()
        .args(["--deadline-ms", "10000", "--json"])
        .arg(&first_json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first shutdownd");
    let stdout = first.stdout.take().expect("stdout");
    let stderr = first.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("sent Begin") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    rx.recv_timeout(RUN_LIMIT)
        .expect("the first shutdownd sends its Begins");

    let (run, second) = rig.shutdown(5000, &[]);
    for d in &second.devices {
        assert_eq!(d.outcome, "failed", "{d:?}\n{}", rig.explain(&run));
        assert!(d.detail.contains("busy"), "{d:?}");
    }
    // The refusals all came while the first session was still running.
    assert!(
        first.try_wait().expect("first shutdownd").is_none(),
        "the first shutdownd ended before the second was refused"
    );

    let status = shutdown_tests::sim::stack::wait_deadline(&mut first, RUN_LIMIT)
        .expect("the first shutdownd exits");
    let first_out = out.join().unwrap_or_default();
    let first_err = err.join().unwrap_or_default();
    no_panic("first shutdownd", &first_out);
    no_panic("first shutdownd", &first_err);
    assert_eq!(status.code(), Some(1), "{first_out}\n{first_err}");
    let first_report = load_report(&first_json).expect("first report");
    let outcomes: Vec<&str> = first_report
        .devices
        .iter()
        .map(|d| d.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["clean", "clean", "no-response"]);
    assert_eq!(first_report.kept_deadline(), Ok(()));
    rig.stop();
}

/// A driver that panics is one more driver death; and the panic scan every
/// other test relies on does see it (the negative control of "no process
/// panicked").
#[test]
fn a_panicking_driver_dies_alone_and_the_panic_scan_sees_it() {
    let mut m = MachineSpec::nvme(2, 200, None);
    fault(&mut m, 0, "driver-panics-in-begin");
    let rig = start(&m);
    let (run, r) = rig.shutdown_allowing_panics(5000, &[1]);
    let d = device(&r, 0);
    assert_eq!(d.outcome, "driver-died", "{d:?}\n{}", rig.explain(&run));
    rig.wait_log(&[&device_address(0), "exited (exit status: 101)"]);
    let log = rig.log();
    let line =
        panic_line(&log).unwrap_or_else(|| panic!("the panic scan missed faultyd's panic:\n{log}"));
    assert!(line.contains("faultyd.rs"), "{line}");
    // shutdownd and pcid themselves did not panic.
    no_panic("shutdownd's standard error", &run.stderr);
    let stack = rig.stack;
    let status = stack.stop(Duration::from_secs(5)).expect("stop pcid");
    assert!(status.success(), "pcid: {status}");
}

/// shutdownd with no pcid behind the control path: no socket at all, and a
/// stale socket nobody listens on.
#[test]
fn shutdownd_without_pcid_exits_non_zero_with_one_clear_line() {
    let bins = bins();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("pcid.sock");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    for control in [&missing, &stale] {
        let json = dir.path().join("report.json");
        let mut cmd = Command::new(bins.path("shutdownd"));
        cmd.arg("--control").arg(control).arg("--json").arg(&json);
        let run = run_captured(cmd, "shutdownd", RUN_LIMIT, Some(&json)).expect("run shutdownd");
        assert_eq!(run.status.code(), Some(2), "{control:?}: {run:?}");
        eprintln!("{}", run.stderr.trim_end());
        let lines: Vec<&str> = run.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{control:?}: {}", run.stderr);
        assert!(lines[0].starts_with("shutdownd: "), "{}", lines[0]);
        assert!(lines[0].contains("pcid is not running"), "{}", lines[0]);
        assert!(
            lines[0].contains(&control.display().to_string()),
            "{}",
            lines[0]
        );
        assert!(run.report.is_none());
        no_panic("shutdownd", &run.stderr);
    }
}

/// Runs pcid on `machine` with match tables from `match_dir`, as the stack
/// does, expecting it to refuse to start.
fn pcid_refuses(machine: &Path, match_dir: &Path) -> (Option<i32>, String) {
    let bins = bins();
    let control = machine.with_file_name("pcid.sock");
    let mut cmd = Command::new(bins.path("pcid"));
    cmd.args(["--bus", "sim", "--machine"])
        .arg(machine)
        .arg("--match-dir")
        .arg(match_dir)
        .arg("--driver-path")
        .arg(bins.dir())
        .arg("--control")
        .arg(&control);
    // pcid refuses bad configuration before it starts anything; were it to
    // accept it, it would run until this limit.
    let run = run_captured(cmd, "pcid", Duration::from_secs(20), None)
        .unwrap_or_else(|e| panic!("pcid on {}: {e}", machine.display()));
    no_panic("pcid", &run.stderr);
    assert!(!control.exists(), "pcid left its control socket behind");
    (run.status.code(), run.stderr)
}

/// `err` is one error message: it starts with `want` (`pcid: FILE:LINE:`),
/// says `says`, and nothing else on standard error starts with `pcid:` (the
/// TOML parser's own message may continue on a second line, e.g. "expected `]`").
fn one_error(case: &str, err: &str, want: &str, says: &str) {
    eprintln!("{case}: {}", err.trim_end());
    assert!(err.starts_with(want), "{case}: want {want}…, got {err}");
    assert!(err.contains(says), "{case}: want {says:?} in {err}");
    let starts = err.lines().filter(|l| l.starts_with("pcid:")).count();
    assert_eq!(starts, 1, "{case}: {err}");
    assert!(err.lines().count() <= 3, "{case}: {err}");
}

fn repo_match_dir() -> PathBuf {
    shutdown_tests::sim::stack::match_dir()
}

#[test]
fn a_malformed_machine_description_is_one_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.toml");
    MachineSpec::nvme(2, 100, None).write(&good_path).unwrap();
    let good = std::fs::read_to_string(&good_path).unwrap();
    let cases: [(&str, String, &str); 3] = [
        // TOML syntax error.
        (
            "syntax",
            good.replacen("vendor = ", "vendor = = ", 2),
            "expected",
        ),
        // A misspelt key.
        (
            "unknown-key",
            good.replacen("subclass = ", "sub_class = ", 1),
            "unknown field `sub_class`",
        ),
        // A value of the wrong type.
        (
            "bad-value",
            good.replacen("address = \"0000:01:00.0\"", "address = \"0000:01:00\"", 1),
            "0000:01:00",
        ),
    ];
    for (name, text, says) in cases {
        assert_ne!(text, good, "{name}: the case did not change the machine");
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        let bad_line = text
            .lines()
            .zip(good.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{name}: no differing line"));
        let (code, err) = pcid_refuses(&path, &repo_match_dir());
        assert_eq!(code, Some(1), "{name}: {err}");
        let want = format!("pcid: {}:{bad_line}:", path.display());
        one_error(name, &err, &want, says);
    }
}

#[test]
fn a_malformed_match_table_is_one_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let machine = dir.path().join("machine.toml");
    MachineSpec::nvme(1, 100, None).write(&machine).unwrap();
    let cases: [(&str, &str, usize, &str); 3] = [
        (
            "syntax",
            "[[drivers]]\nname = \"x\"\nclass = = 1\ncommand = [\"nvmed\"]\n",
            3,
            "",
        ),
        // (An entry without `command` is valid Redox format and matches
        // nothing; an empty one is an error.)
        (
            "empty-command",
            "[[drivers]]\nname = \"x\"\nclass = 1\ncommand = [\"nvmed\"]\n\n[[drivers]]\nclass = 2\ncommand = []\n",
            8,
            "command",
        ),
        (
            "bad-value",
            "[[drivers]]\nname = \"x\"\nclass = 1\nvendor = \"red hat\"\ncommand = [\"nvmed\"]\n",
            4,
            "",
        ),
    ];
    for (name, table, line, says) in cases {
        let tables = dir.path().join(name);
        std::fs::create_dir_all(&tables).unwrap();
        let path = tables.join("table.toml");
        std::fs::write(&path, table).unwrap();
        let (code, err) = pcid_refuses(&machine, &tables);
        assert_eq!(code, Some(1), "{name}: {err}");
        let want = format!("pcid: {}:{line}:", path.display());
        one_error(name, &err, &want, says);
    }
}

/// The control endpoint refuses a peer running under another uid. Needs root
/// to start that peer; without root the test fails, saying so, unless
/// `SHUTDOWN_TESTS_UNPRIVILEGED=1` is set, in which case it prints that it was
/// skipped.
#[test]
fn the_control_endpoint_refuses_another_uid() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    if !rustix::process::geteuid().is_root() {
        let why = "not root: cannot start a peer under another uid, so pcid's refusal of \
                   one is not tested (tests/tests/pcid_process checks the socket's 0600 mode)";
        if std::env::var_os("SHUTDOWN_TESTS_UNPRIVILEGED").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED the_control_endpoint_refuses_another_uid: {why}");
            return;
        }
        panic!("{why}; run as root, or set SHUTDOWN_TESTS_UNPRIVILEGED=1 to skip this test");
    }
    const NOBODY: u32 = 65534;
    let rig = start(&MachineSpec::nvme(2, 100, None));
    let control = rig.stack.control().to_path_buf();
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");
    // A copy of shutdownd that nobody may run, wherever the build lives.
    let exe = rig.dir.path().join("shutdownd");
    std::fs::copy(bins().path("shutdownd"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(rig.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = || {
        let mut cmd = Command::new(&exe);
        cmd.arg("--control")
            .arg(&control)
            .args(["--deadline-ms", "5000"])
            .uid(NOBODY)
            .gid(NOBODY);
        run_captured(cmd, "shutdownd as nobody", RUN_LIMIT, None).expect("run shutdownd")
    };
    // The socket's mode keeps nobody out...
    let run = as_nobody();
    eprintln!("socket mode 0600: {}", run.stderr.trim_end());
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("shutdownd: "), "{}", run.stderr);
    no_panic("shutdownd as nobody", &run.stderr);
    // ...and with the mode opened up, pcid's own peer-uid check refuses it.
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = as_nobody();
    eprintln!(
        "socket mode 0666: status {}: {}",
        run.status,
        run.stderr.trim_end()
    );
    assert_ne!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("shutdownd: "), "{}", run.stderr);
    no_panic("shutdownd as nobody", &run.stderr);
    let line = rig.wait_log(&["refused connection", &format!("uid {NOBODY}")]);
    eprintln!("pcid: {line}");
    assert!(!line.contains("panicked"), "{line}");
    // Nothing was shut down: the owner's shutdown still finds every device
    // running and ends clean.
    rig.shutdown(5000, &[0, 1]);
    rig.stop();
}

/// `simulate --help` lists every fault kind, and `simulate --fault` accepts
/// the kinds of this matrix.
#[test]
fn simulate_offers_every_fault_kind() {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--help")
        .output()
        .expect("run simulate --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (kind, what) in KINDS {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(kind) && l.contains(what)),
            "{kind} missing from simulate --help:\n{help}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--no-build", "--devices", "4", "--latency-ms", "100"])
        .args(["--deadline-ms", "5000", "--json"])
        .arg(&json)
        .args(["--fault", "0:driver-killed-in-finish"])
        .args(["--fault", "1:driver-sends-unknown-version"])
        .args(["--fault", "2:driver-sends-duplicate-ack"])
        .output()
        .expect("run simulate");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    no_panic("simulate", &text);
    let r = load_report(&json).expect("report");
    let outcomes: Vec<&str> = r.devices.iter().map(|d| d.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["driver-died", "failed", "failed", "clean"],
        "{text}"
    );
}
