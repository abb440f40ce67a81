//! The `simulate` command itself (its options, machine generation and exit
//! status), with the real binaries. Needs `cargo build --release --workspace`
//! first, like the other process-level tests.

use std::process::Command;

use shutdown_tests::sim::stack::{load_report, Binaries, Report};

fn simulate(args: &[&str]) -> (std::process::Output, Option<Report>) {
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
    let report = json.exists().then(|| load_report(&json).expect("report"));
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

/// `(address, outcome)` of each device row of a picture, top to bottom, and
/// the number of devices in folded rows; the SVG must parse as XML.
fn picture_rows(svg: &str) -> (Vec<(String, String)>, usize) {
    let doc = roxmltree::Document::parse(svg).expect("the picture is well-formed XML");
    let has = |n: &roxmltree::Node, c: &str| {
        n.attribute("class")
            .is_some_and(|a| a.split_whitespace().any(|x| x == c))
    };
    let rows = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "g" && has(n, "device"))
        .map(|n| {
            let outcome = n.attribute("data-outcome").unwrap().to_string();
            assert!(has(&n, &format!("outcome-{outcome}")), "class of {outcome}");
            (n.attribute("data-address").unwrap().to_string(), outcome)
        })
        .collect();
    let folded = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "g" && has(n, "fold"))
        .map(|n| n.attribute("data-count").unwrap().parse::<usize>().unwrap())
        .sum();
    (rows, folded)
}

#[test]
fn simulate_draws_the_shutdown_and_shutdownd_redraws_it_from_the_saved_report() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("shutdown.svg");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--no-build", "--devices", "3", "--latency-ms", "100"])
        .args([
            "--driven-bridges-ms",
            "20",
            "--fault",
            "1:driver-exits-in-finish",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .expect("run simulate");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = load_report(&json).expect("report");
    let picture = std::fs::read_to_string(&svg).expect("simulate wrote the picture");
    let (rows, folded) = picture_rows(&picture);
    assert_eq!(folded, 0);
    // One row per device with its outcome; the bridge after its devices.
    let mut want: Vec<(String, String)> = report
        .devices
        .iter()
        .map(|d| (d.label(), d.outcome.clone()))
        .collect();
    let bridge = want.iter().position(|d| d.0 == "0000:00:10.0").unwrap();
    let b = want.remove(bridge);
    want.push(b);
    assert_eq!(rows, want);
    assert_eq!(rows[1].1, "driver-died");

    // The saved report draws the same picture.
    let redrawn = dir.path().join("redrawn.svg");
    let bins = Binaries::beside_current_exe().unwrap();
    let out = Command::new(bins.path("shutdownd"))
        .arg("report")
        .arg("--svg")
        .arg(&redrawn)
        .arg(&json)
        .output()
        .expect("run shutdownd report");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("driver-died"));
    assert_eq!(std::fs::read_to_string(&redrawn).unwrap(), picture);

    // And a real renderer takes it.
    let png = dir.path().join("shutdown.png");
    let out = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(&svg)
        .output()
        .expect("rsvg-convert (librsvg2-bin; tests/setup.sh --svg installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");

    // A report that is not one is a clear error, exit status 2.
    std::fs::write(&json, "{\"devices\": 3}").unwrap();
    let out = Command::new(bins.path("shutdownd"))
        .args(["report", "--svg"])
        .arg(&redrawn)
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a shutdownd report"));
}
