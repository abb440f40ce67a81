//! `pcid-conformance` against the project's drivers: the test build of nvmed,
//! legacyd, plaind and the C driver pass; every misbehaviour of faultyd is
//! flagged by the check that names it. Needs `cargo build --release
//! --workspace` first (the drivers are other packages' binaries), like the
//! other process-level tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nvme_sim::SimConfig;
use pcid_conformance::{check, Options, Status, Verdict, CHECKS};
use serde::Serialize;
use shutdown_tests::sim::models::{write_model, FaultyModel, Misbehave};

/// `target/<profile>`, where the workspace's binaries are.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

fn driver(name: &str) -> String {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: run cargo build --release --workspace first",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// Options with room for a loaded machine: a longer watch after Ready, so
/// a driver exiting right after it is seen as such; a shorter wait for the
/// exit of drivers that linger on purpose.
fn options(program: String, args: &[&str], model: Option<&Path>) -> Options {
    let mut o = Options::new(program, args.iter().map(|s| s.to_string()).collect());
    o.model = model.map(Path::to_path_buf);
    o.settle = Duration::from_secs(1);
    // Drivers that linger on purpose (faultyd's truncated frame) cost this.
    o.exit_timeout = Duration::from_secs(3);
    o
}

/// `model` written into a fresh directory (kept as long as the result).
fn model_file(model: &impl Serialize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.toml");
    write_model(&path, model).unwrap();
    (dir, path)
}

fn show(v: &Verdict) -> String {
    let mut s = String::new();
    for r in &v.results {
        s.push_str(&format!("{} {} {}\n", r.status.as_str(), r.name, r.figure));
    }
    s.push_str("stderr:\n");
    s.push_str(&v.stderr);
    s
}

fn assert_passes(v: &Verdict, must_pass: &[&str]) {
    assert_eq!(v.results.len(), CHECKS.len());
    assert!(v.passed(), "{}", show(v));
    for name in must_pass {
        assert_eq!(
            v.get(name).map(|r| r.status),
            Some(Status::Pass),
            "{name}\n{}",
            show(v)
        );
    }
}

const ALWAYS: [&str; 11] = [
    "hello",
    "ready",
    "stays-up",
    "error-from-pcid",
    "unknown-type",
    "sequence",
    "state",
    "frames",
    "stdout",
    "exit",
    "closed-channel",
];

#[test]
fn nvmed_test_build_passes_on_a_simulated_controller() {
    let (_dir, model) = model_file(&SimConfig {
        shutdown_latency_ms: 300,
        rtd3e_us: 300_000,
        ..SimConfig::default()
    });
    let v = check(&options(driver("nvmed-test"), &[], Some(&model))).unwrap();
    assert_passes(&v, &ALWAYS);
    assert_passes(
        &v,
        &[
            "begin-ack",
            "begin-no-wait",
            "finish-ack",
            "unsupported-version",
        ],
    );
    assert_eq!(v.get("shutdown").unwrap().status, Status::Skip);
}

#[test]
fn legacyd_passes_as_a_one_phase_driver() {
    let v = check(&options(driver("legacyd"), &[], None)).unwrap();
    assert_passes(&v, &ALWAYS);
    assert_passes(&v, &["refusal", "shutdown"]);
    assert_eq!(v.get("begin-ack").unwrap().status, Status::Skip);
}

#[test]
fn plaind_passes_as_a_driver_without_shutdown_support() {
    let v = check(&options(driver("plaind"), &[], None)).unwrap();
    assert_passes(&v, &ALWAYS);
    assert_passes(&v, &["refusal", "shutdown"]);
}

#[test]
fn the_c_driver_passes() {
    let dir = tempfile::tempdir().unwrap();
    let interface = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interface");
    let exe = dir.path().join("c-driver");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Werror",
            "-O1",
        ])
        .arg("-I")
        .arg(interface.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(interface.join("tests/c_driver.c"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} (set CC): {e}"));
    assert!(status.success());
    let v = check(&options(exe.to_string_lossy().into_owned(), &[], None)).unwrap();
    assert_passes(&v, &ALWAYS);
    assert_passes(&v, &["begin-ack", "finish-ack", "unsupported-version"]);
}

#[test]
fn a_well_behaved_faultyd_passes() {
    let (_dir, model) = model_file(&FaultyModel {
        latency_ms: 300,
        misbehave: None,
    });
    let v = check(&options(driver("faultyd"), &[], Some(&model))).unwrap();
    assert_passes(&v, &ALWAYS);
    assert_passes(&v, &["begin-ack", "begin-no-wait", "finish-ack"]);
}

/// Every misbehaviour of faultyd, and the check that must name it.
const MODES: [(&str, &str); 20] = [
    ("ignores-begin", "begin-ack"),
    ("ignores-finish", "finish-ack"),
    ("exits-in-begin", "begin-ack"),
    ("exits-in-finish", "finish-ack"),
    ("sends-garbage", "frames"),
    ("killed-in-begin", "begin-ack"),
    ("killed-in-finish", "finish-ack"),
    ("exits-before-shutdown", "stays-up"),
    ("killed-before-shutdown", "stays-up"),
    ("panics-in-begin", "begin-ack"),
    ("sends-truncated-frame", "frames"),
    ("sends-oversize-length", "frames"),
    ("sends-unknown-version", "frames"),
    ("sends-unknown-type", "frames"),
    ("sends-duplicate-ack", "state"),
    ("sends-out-of-phase-ack", "state"),
    ("sends-wrong-seq", "sequence"),
    ("sends-second-hello", "state"),
    ("waits-in-begin", "begin-no-wait"),
    ("prints-to-stdout", "stdout"),
];

#[test]
fn every_faultyd_misbehaviour_is_flagged_by_its_check() {
    let faultyd = driver("faultyd");
    // Four at a time: the runs mostly wait on deadlines.
    let failures: Vec<String> = MODES
        .chunks(4)
        .flat_map(|pair| {
            let handles: Vec<_> = pair
                .iter()
                .map(|&(mode, want)| {
                    let (dir, model) = model_file(&FaultyModel {
                        latency_ms: 100,
                        misbehave: Some(mode.parse::<Misbehave>().unwrap()),
                    });
                    let o = options(faultyd.clone(), &[], Some(&model));
                    std::thread::spawn(move || {
                        let v = check(&o).unwrap();
                        drop(dir);
                        let mut bad = Vec::new();
                        if v.get(want).map(|r| r.status) != Some(Status::Fail) {
                            bad.push(format!("{mode}: {want} did not fail\n{}", show(&v)));
                        }
                        // The driver got as far as its fault.
                        for early in ["hello", "ready"] {
                            if v.get(early).map(|r| r.status) != Some(Status::Pass) {
                                bad.push(format!("{mode}: {early} did not pass\n{}", show(&v)));
                            }
                        }
                        if v.passed() {
                            bad.push(format!("{mode}: the verdict passed"));
                        }
                        bad
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_command_line_prints_a_line_per_check_and_exits_by_the_verdict() {
    let tool = env!("CARGO_BIN_EXE_pcid-conformance");
    let (_dir, model) = model_file(&FaultyModel {
        latency_ms: 100,
        misbehave: Some(Misbehave::IgnoresFinish),
    });
    let out = Command::new(tool)
        .arg("--model")
        .arg(&model)
        .arg("--")
        .arg(driver("faultyd"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (name, _) in CHECKS {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{name} in\n{stdout}"
        );
    }
    assert!(stdout.contains("FAIL  finish-ack"), "{stdout}");
    assert!(stdout.contains("checks failed: finish-ack"), "{stdout}");

    let out = Command::new(tool).arg(driver("legacyd")).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    for args in [&["--bogus"][..], &[][..], &["--ids", "zz:10", "x"][..]] {
        let out = Command::new(tool).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("pcid-conformance: "), "{err}");
    }
    let out = Command::new(tool)
        .arg("/nonexistent/driver")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(tool).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("begin-no-wait"));
}
