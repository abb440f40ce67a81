//! Process-level tests: the real pcid, nvmed, example drivers and shutdownd
//! binaries on simulated machines.
//!
//! Needs the workspace's binaries: `cargo build --release --workspace` before
//! `cargo test --release` (as `tests/run.sh` does).
//!
//! Assertions are about order and outcomes, as shutdownd recorded them, never
//! about how long something took on this machine: "every device was between
//! its Begin and its FinishAck at the same instant" is shown by
//! max(begin_sent_ms) < min(finish_ack_ms).

use std::time::Duration;

use nvme_sim::{Fault, SimConfig};
use shutdown_tests::sim::machine::{DeviceSpec, MachineSpec};
use shutdown_tests::sim::stack::{
    load_report, Binaries, DeviceReport, Report, ShutdowndRun, Stack, StackOptions,
};

/// Upper bound on any one shutdownd run in these tests (it bounds itself far
/// earlier; this only keeps a broken build from hanging the suite).
const RUN_LIMIT: Duration = Duration::from_secs(60);

struct Rig {
    dir: tempfile::TempDir,
    stack: Stack,
}

fn start(machine: &MachineSpec) -> Rig {
    let bins = Binaries::beside_current_exe().expect("locate binaries");
    bins.check()
        .unwrap_or_else(|e| panic!("{e} (the tests use the real binaries)"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("machine.toml");
    machine.write(&path).expect("write machine");
    let opts = StackOptions {
        machine: path,
        work_dir: dir.path().to_path_buf(),
        ready_timeout: Duration::from_secs(30),
        env: vec![("RUST_LOG".into(), "warn".into())],
        driver_env: Vec::new(),
        // A driver that never says Hello is settled after 500 ms instead of 5 s.
        pcid_args: vec!["--hello-timeout-ms".into(), "500".into()],
        inherit_stderr: false,
    };
    let stack = Stack::start(&bins, &opts).unwrap_or_else(|e| panic!("start pcid: {e}"));
    Rig { dir, stack }
}

impl Rig {
    /// shutdownd's output and the end of pcid's (and its drivers') log, for
    /// assertion messages.
    fn explain(&self, run: &ShutdowndRun) -> String {
        let log = self
            .stack
            .log()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "shutdownd stdout:\n{}\nshutdownd stderr:\n{}\npcid log (last 40 lines):\n{tail}",
            run.stdout, run.stderr
        )
    }

    fn shutdown(&self, args: &[&str]) -> (ShutdowndRun, Report) {
        let json = self.dir.path().join("report.json");
        let run = self
            .stack
            .run_shutdownd(args, &json, RUN_LIMIT)
            .unwrap_or_else(|e| panic!("run shutdownd: {e}"));
        let report = run.report.clone().unwrap_or_else(|| {
            panic!(
                "no JSON report; status {}\nstdout:\n{}\nstderr:\n{}",
                run.status, run.stdout, run.stderr
            )
        });
        (run, report)
    }
}

fn nvme_machine(n: usize, latency_ms: u64) -> MachineSpec {
    MachineSpec::nvme(n, latency_ms, None)
}

fn outcomes(r: &Report) -> Vec<&str> {
    r.devices.iter().map(|d| d.outcome.as_str()).collect()
}

fn max_begin(devs: &[&DeviceReport]) -> f64 {
    devs.iter()
        .map(|d| d.begin_sent_ms.expect("begin sent"))
        .fold(f64::NEG_INFINITY, f64::max)
}

fn min_finish_ack(devs: &[&DeviceReport]) -> f64 {
    devs.iter()
        .map(|d| d.finish_ack_ms.expect("finish ack"))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn all_devices_clean_and_every_begin_precedes_the_first_finish_ack() {
    let rig = start(&nvme_machine(8, 300));
    let (run, report) = rig.shutdown(&[]);
    assert_eq!(run.status.code(), Some(0), "{}", rig.explain(&run));
    assert_eq!(report.mode, "two-phase");
    assert_eq!(report.kind, "poweroff");
    assert_eq!(outcomes(&report), vec!["clean"; 8]);
    let all: Vec<&DeviceReport> = report.devices.iter().collect();
    // Every Begin went out before the first device finished: at that instant all
    // eight controllers were shutting down together.
    assert!(
        max_begin(&all) < min_finish_ack(&all),
        "{}",
        rig.explain(&run)
    );
    for d in &report.devices {
        assert_eq!(d.driver, "nvmed");
        assert_eq!(d.protocol, "two-phase");
        // nvmed announced RTD3E and measured at least the model's latency.
        assert_eq!(d.budget_ms, Some(300.0));
        assert!(d.elapsed_ms.expect("elapsed") >= 300.0, "{d:?}");
        // Finish follows BeginAck, FinishAck follows Finish.
        assert!(d.begin_ack_ms.unwrap() <= d.finish_sent_ms.unwrap());
        assert!(d.finish_sent_ms.unwrap() < d.finish_ack_ms.unwrap());
    }
    assert!(run.stdout.contains("8 devices: 8 clean"), "{}", run.stdout);
    rig.stack.stop(Duration::from_secs(5)).expect("pcid stops");
}

#[test]
fn sequential_mode_shuts_devices_down_one_after_another() {
    let rig = start(&nvme_machine(3, 100));
    let (run, report) = rig.shutdown(&["--sequential", "--kind", "reboot"]);
    assert_eq!(run.status.code(), Some(0), "{}", rig.explain(&run));
    assert_eq!(report.mode, "sequential");
    assert_eq!(report.kind, "reboot");
    assert_eq!(outcomes(&report), vec!["clean"; 3]);
    let mut devs: Vec<&DeviceReport> = report.devices.iter().collect();
    devs.sort_by(|a, b| a.begin_sent_ms.partial_cmp(&b.begin_sent_ms).unwrap());
    for w in devs.windows(2) {
        assert!(
            w[1].begin_sent_ms.unwrap() >= w[0].finish_ack_ms.unwrap(),
            "{} began before {} finished",
            w[1].label(),
            w[0].label()
        );
    }
}

#[test]
fn one_phase_and_no_support_drivers_are_handled() {
    let mut m = nvme_machine(2, 200);
    m.devices.push(DeviceSpec::Legacy { shutdown_ms: 200 });
    m.devices.push(DeviceSpec::Plain);
    m.devices.push(DeviceSpec::Silent);
    let rig = start(&m);
    let (run, report) = rig.shutdown(&[]);
    assert_eq!(run.status.code(), Some(0), "{}", rig.explain(&run));
    let d = &report.devices;
    assert_eq!(d.len(), 5);
    assert_eq!(outcomes(&report)[..2], ["clean", "clean"]);

    let legacy = &d[2];
    assert_eq!(legacy.driver, "legacyd");
    assert_eq!(legacy.protocol, "one-phase");
    assert_eq!(legacy.outcome, "clean", "{legacy:?}");
    assert!(legacy.begin_sent_ms.is_some());
    assert!(legacy.begin_ack_ms.is_none() && legacy.finish_sent_ms.is_none());
    assert!(legacy.elapsed_ms.unwrap() >= 200.0);
    // The one-phase Shutdown went out with the Begins, not after the NVMe
    // controllers finished.
    let nvme: Vec<&DeviceReport> = d[..2].iter().collect();
    assert!(legacy.begin_sent_ms.unwrap() < min_finish_ack(&nvme));

    let plain = &d[3];
    assert_eq!(plain.driver, "plaind");
    assert_eq!(plain.protocol, "none");
    assert_eq!(plain.outcome, "not-supported");
    assert!(plain.begin_sent_ms.is_none());

    // The silent driver never said Hello; pcid lists it as not speaking the
    // protocol, and nothing is sent to it.
    let silent = &d[4];
    assert_eq!(silent.outcome, "not-supported", "{silent:?}");
    assert!(silent.begin_sent_ms.is_none());
}

#[test]
fn controller_that_never_completes_times_out_at_its_deadline_while_others_finish_clean() {
    let mut m = nvme_machine(4, 200);
    if let DeviceSpec::Nvme(n) = &mut m.devices[0] {
        n.faults = vec![Fault::ShutdownNeverCompletes];
    }
    let rig = start(&m);
    let (run, report) = rig.shutdown(&[]);
    assert_eq!(run.status.code(), Some(1), "{}", rig.explain(&run));
    let stuck = &report.devices[0];
    assert!(
        stuck.outcome == "timed-out" || stuck.outcome == "abrupt",
        "{stuck:?}"
    );
    // The driver waited out its whole finish deadline (max(200 ms × 1.5 + 500 ms,
    // 1 s) = 1 s) before giving up; had it answered later than shutdownd's wait,
    // the outcome would be no-response.
    let deadline = stuck.finish_deadline_ms.unwrap();
    assert_eq!(deadline, 1000.0);
    assert!(stuck.elapsed_ms.unwrap() >= deadline, "{stuck:?}");
    assert_eq!(outcomes(&report)[1..], ["clean", "clean", "clean"]);
    // The healthy controllers were not held up by the stuck one.
    let healthy: Vec<&DeviceReport> = report.devices[1..].iter().collect();
    assert!(healthy
        .iter()
        .all(|d| d.finish_ack_ms.unwrap() < stuck.finish_ack_ms.unwrap()));
}

#[test]
fn shutdownd_ends_within_its_global_deadline() {
    let mut m = nvme_machine(3, 200);
    if let DeviceSpec::Nvme(n) = &mut m.devices[0] {
        // Claims to need 10 s (finish deadline 15.5 s) and never finishes: only
        // the global deadline can end its wait.
        *n = SimConfig {
            rtd3e_us: 10_000_000,
            faults: vec![Fault::ShutdownNeverCompletes],
            ..n.clone()
        };
    }
    let rig = start(&m);
    let (run, report) = rig.shutdown(&["--deadline-ms", "2000"]);
    assert_eq!(run.status.code(), Some(1), "{}", rig.explain(&run));
    assert_eq!(report.kept_deadline(), Ok(()));
    let stuck = &report.devices[0];
    assert_eq!(stuck.budget_ms, Some(10_000.0));
    assert!(
        ["timed-out", "abrupt", "no-response"].contains(&stuck.outcome.as_str()),
        "{stuck:?}"
    );
    assert_eq!(outcomes(&report)[1..], ["clean", "clean"]);
}

#[test]
fn shutdownd_without_pcid_fails_with_one_clear_line() {
    let bins = Binaries::beside_current_exe().expect("locate binaries");
    bins.check().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bins.path("shutdownd"))
        .arg("--control")
        .arg(dir.path().join("pcid.sock"))
        .output()
        .expect("run shutdownd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pcid is not running"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn every_injectable_fault_gets_its_outcome_and_healthy_devices_stay_clean() {
    use shutdown_tests::sim::fault::{FaultSpec, KINDS};
    // The first eight kinds; tests/tests/fault_matrix.rs covers all of them.
    let kinds = &KINDS[..8];
    let mut m = nvme_machine(kinds.len() + 2, 200);
    for (i, (kind, _)) in kinds.iter().enumerate() {
        let f: FaultSpec = format!("{i}:{kind}").parse().expect("fault");
        f.apply(&mut m).expect("apply");
    }
    let rig = start(&m);
    let (run, report) = rig.shutdown(&["--deadline-ms", "5000"]);
    assert_eq!(run.status.code(), Some(1), "{}", rig.explain(&run));
    let got: Vec<(&str, &str)> = kinds
        .iter()
        .zip(&report.devices)
        .map(|((k, _), d)| (*k, d.outcome.as_str()))
        .collect();
    let abrupt_or_timed_out = |o: &str| o == "timed-out" || o == "abrupt";
    assert!(abrupt_or_timed_out(got[0].1), "{got:?}");
    assert_eq!(
        got[1..],
        [
            ("fatal-status", "failed"),
            ("surprise-removal", "failed"),
            ("driver-ignores-begin", "no-response"),
            ("driver-ignores-finish", "no-response"),
            ("driver-exits-in-begin", "driver-died"),
            ("driver-exits-in-finish", "driver-died"),
            ("driver-sends-garbage", "failed"),
        ]
    );
    assert!(
        report.devices[7].detail.contains("protocol"),
        "{:?}",
        report.devices[7]
    );
    let n = report.devices.len();
    assert_eq!(outcomes(&report)[n - 2..], ["clean", "clean"]);
    assert_eq!(report.kept_deadline(), Ok(()));
    // Every device has a terminal outcome and was begun before anything finished.
    let all: Vec<&DeviceReport> = report.devices.iter().collect();
    let first_done = all
        .iter()
        .filter_map(|d| d.done_ms)
        .fold(f64::INFINITY, f64::min);
    assert!(max_begin(&all) <= first_done);
}

#[test]
fn a_driven_bridge_begins_only_after_every_device_behind_it_finished() {
    // 34 controllers: 32 behind root port 0, 2 behind root port 1. Both root
    // ports have a (two-phase) driver, so shutdownd sees the parent links.
    let mut m = nvme_machine(34, 200);
    m.driven_root_ports_ms = Some(50);
    let rig = start(&m);
    let (run, report) = rig.shutdown(&[]);
    assert_eq!(run.status.code(), Some(0), "{}", rig.explain(&run));
    assert_eq!(report.devices.len(), 36);
    assert_eq!(report.count("clean"), 36, "{}", rig.explain(&run));
    let by_addr = |a: &str| {
        report
            .devices
            .iter()
            .find(|d| d.address.as_deref() == Some(a))
            .unwrap_or_else(|| panic!("{a} not in the report"))
    };
    for (port, children) in [("0000:00:10.0", 0..32), ("0000:00:11.0", 32..34)] {
        let bridge = by_addr(port);
        assert_eq!(bridge.driver, "faultyd");
        let begun = bridge.begin_sent_ms.expect("bridge begun");
        for i in children {
            let child = by_addr(&shutdown_tests::sim::machine::device_address(i));
            assert!(
                child.finish_ack_ms.unwrap() <= begun,
                "{port} began at {begun} ms, before {} finished",
                child.label()
            );
        }
    }
    // The controllers themselves were all begun before any of them finished.
    let nvme: Vec<&DeviceReport> = report
        .devices
        .iter()
        .filter(|d| d.driver == "nvmed")
        .collect();
    assert!(max_begin(&nvme) < min_finish_ack(&nvme));
}

#[test]
fn a_second_shutdown_while_one_is_in_flight_is_refused_per_device() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let rig = start(&nvme_machine(3, 2000));
    let first_json = rig.dir.path().join("first.json");
    let mut first = rig
        .stack
        .shutdownd_command()
        .arg("--json")
        .arg(&first_json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first shutdownd");
    // Wait (bounded) until the first shutdownd has sent its Begins.
    let stdout = first.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("sent Begin") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the first shutdownd sends its Begins");

    let (run, second) = rig.shutdown(&[]);
    assert_eq!(run.status.code(), Some(1), "{}", rig.explain(&run));
    for d in &second.devices {
        assert_eq!(d.outcome, "failed", "{d:?}");
        assert!(d.detail.contains("busy"), "{d:?}");
    }

    let status = shutdown_tests::sim::stack::wait_deadline(&mut first, RUN_LIMIT)
        .expect("the first shutdownd exits");
    assert_eq!(status.code(), Some(0));
    let first_report = load_report(&first_json).expect("first report");
    assert_eq!(first_report.count("clean"), 3);
}

/// The number of threads of process `pid`, from `/proc/<pid>/status`.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pcid's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads line")
}

/// The nice value of process `pid` (field 19 of `/proc/<pid>/stat`).
fn nice_of(pid: u32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    // Field 3 (state) is the first after the command name; nice is field 19.
    rest.split_whitespace()
        .nth(19 - 3)
        .and_then(|v| v.parse().ok())
        .expect("a nice value")
}

/// Live children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.get(s.rfind(')')? + 2..)?.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

#[test]
fn pcid_is_one_thread_however_many_drivers_it_serves() {
    for n in [1, 24] {
        let rig = start(&nvme_machine(n, 0));
        let pcid = rig.stack.pcid_pid().expect("pcid runs");
        assert_eq!(threads_of(pcid), 1, "{n} drivers, when ready");
        // pcid raises its priority once its drivers are spawned, when it
        // may (as root); the drivers keep the one they inherited (this
        // process's).
        if rustix::process::geteuid().is_root() {
            assert_eq!(nice_of(pcid), pcid::daemon::PRIORITY);
        }
        let inherited = nice_of(std::process::id());
        let drivers = children_of(pcid);
        assert_eq!(drivers.len(), n);
        for d in drivers {
            assert_eq!(nice_of(d), inherited, "driver {d}");
        }
        let (run, report) = rig.shutdown(&[]);
        assert_eq!(report.count("clean"), n, "{}", rig.explain(&run));
        assert_eq!(threads_of(pcid), 1, "{n} drivers, after the shutdown");
    }
}

#[test]
fn a_control_client_that_never_reads_delays_nobody_and_is_closed() {
    use pcid_interface::protocol::ControlMessage;
    use pcid_interface::wire::WireMessage;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let rig = start(&nvme_machine(4, 0));
    // A client that asks for the device list thousands of times and never
    // reads an answer: more than pcid keeps queued for one peer.
    let hog = UnixStream::connect(rig.stack.control()).expect("connect");
    let requests: Vec<u8> = (1..=20_000u32)
        .flat_map(|id| ControlMessage::ListDevices { id }.encode().expect("encode"))
        .collect();
    let mut writer = hog.try_clone().expect("clone");
    let flood = std::thread::spawn(move || {
        // pcid closes the connection at some point: the write may fail.
        let _ = writer.write_all(&requests);
    });

    // Meanwhile a real shutdown goes through.
    let (run, report) = rig.shutdown(&[]);
    assert_eq!(report.count("clean"), 4, "{}", rig.explain(&run));
    let _ = flood.join();

    // pcid gave up on the hog: reading what was queued for it ends in end
    // of file (bounded: pcid closes a peer that takes nothing for 5 s).
    let mut hog = hog;
    hog.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match hog.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("pcid never closed the client that does not read: {e}"),
        }
    }
    assert!(total > 0, "pcid answered some requests before giving up");
    let log = std::fs::read_to_string(rig.stack.log().expect("log")).unwrap_or_default();
    assert!(
        log.contains("control client 1") && log.contains("closing it"),
        "pcid logs why it closed the client:\n{log}"
    );
}
