//! The `simulate` command itself (its options, machine generation and exit
//! status), with the real binaries. Needs `cargo build --release --workspace`
//! first, like the other process-level tests.

use std::process::Command;

use shutdown_tests::sim::stack::{Binaries, ReportView};

fn simulate(args: &[&str]) -> (std::process::Output, Option<ReportView>) {
    let bins = Binaries::beside_current_exe().expect("locate binaries");
    bins.check().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--no-build")
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run simulate");
    let report = json
        .exists()
        .then(|| ReportView::load(&json).expect("report"));
    (out, report)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn simulate_shuts_down_its_generated_machine_and_exits_0() {
    let (out, report) = simulate(&["--devices", "3", "--latency-ms", "100"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = report.expect("report");
    assert_eq!(report.devices.len(), 3);
    assert_eq!(report.count("clean"), 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pcid: ready: 3 drivers"), "{stdout}");
    assert!(stdout.contains("3 devices: 3 clean"), "{stdout}");
}

#[test]
fn simulate_reports_injected_faults_and_exits_1() {
    let (out, report) = simulate(&[
        "--devices",
        "3",
        "--latency-ms",
        "100",
        "--fault",
        "0:fatal-status",
        "--fault",
        "2:driver-exits-in-finish",
        "--kind",
        "reboot",
        "--sequential",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = report.expect("report");
    assert_eq!(report.mode, "sequential");
    assert_eq!(report.kind, "reboot");
    let outcomes: Vec<&str> = report.devices.iter().map(|d| d.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "clean", "driver-died"]);
    assert_eq!(report.devices[2].driver, "faultyd");
}

#[test]
fn simulate_rejects_bad_options_with_status_2() {
    for args in [
        &["--fault", "9:fatal-status", "--devices", "2"][..],
        &["--fault", "0:melts"][..],
        &["--devices", "0"][..],
        &["--latency-ms", "soon"][..],
        &["--bogus"][..],
    ] {
        let (out, report) = simulate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(report.is_none());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("simulate: "), "{args:?}: {err}");
    }
}

#[test]
fn driven_bridges_begin_after_their_controllers() {
    let (out, report) = simulate(&[
        "--devices",
        "2",
        "--latency-ms",
        "100",
        "--driven-bridges-ms",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = report.expect("report");
    let bridge = report
        .devices
        .iter()
        .find(|d| d.address.as_deref() == Some("0000:00:10.0"))
        .expect("root port listed");
    let begun = bridge.begin_sent_ms.expect("bridge begun");
    for d in report.devices.iter().filter(|d| d.driver == "nvmed") {
        assert!(d.finish_ack_ms.unwrap() <= begun, "{d:?} vs {bridge:?}");
    }
}
