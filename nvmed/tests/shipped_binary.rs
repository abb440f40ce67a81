//! The shipped `nvmed` binary (what `recipe.toml` builds) has no test hooks
//! and no simulator:
//!
//! * it does not depend on `nvme_sim` (`cargo tree -e normal -p nvmed`);
//! * its executable holds none of the test variables' names, the self-test's
//!   pattern text or the workload's block magic;
//! * run with `NVMED_SELFTEST=1` and `NVMED_WORKLOAD=<dir>` and handed a
//!   simulated function (whose backing file a test build would write), it
//!   refuses the function in one line and writes nothing: no backing file,
//!   no workload log;
//! * an unusable sysfs function is one error line naming the failing step.
//!
//! That the shipped binary ignores the variables on a working controller is
//! shown in the QEMU guest (`tests/src/qemu`, the "canary" controller).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::protocol::{DriverMessage, ShutdownSupport, PROTOCOL_VERSION};
use pcid_interface::transport::{spawn_with_channel, DriverChannel};

/// Every wait in this test is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

fn function(backend: FunctionBackend) -> PciFunction {
    PciFunction {
        address: PciAddress {
            segment: 0,
            bus: 0,
            device: 4,
            function: 0,
        },
        vendor: 0x1b36,
        device: 0x0010,
        class: 1,
        subclass: 8,
        interface: 2,
        revision: 2,
        parent: None,
        backend,
    }
}

/// Runs the shipped nvmed with `env` on `backend` through Hello/Welcome and
/// returns its exit status and standard error.
fn run_with(backend: FunctionBackend, env: &[(&str, &str)]) -> (bool, String) {
    let (mut pcid, child_end) = DriverChannel::pair().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvmed"));
    cmd.env("RUST_LOG", "off")
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let mut child = spawn_with_channel(&mut cmd, child_end).unwrap();
    let hello = pcid.recv(Some(WAIT)).unwrap();
    assert!(matches!(
        hello,
        DriverMessage::Hello { ref driver, support: ShutdownSupport::TwoPhase, .. } if driver == "nvmed"
    ));
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: function(backend),
    })
    .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("nvmed did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status.success(), stderr)
}

#[test]
fn the_shipped_driver_refuses_a_simulated_function_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ns.img");
    let logs = dir.path().join("workload");
    std::fs::create_dir(&logs).unwrap();
    // A device model as pcid's simulated bus would name it: the shipped
    // driver must not read it, let alone create its backing file.
    let model = dir.path().join("model.toml");
    let config = nvme_sim::SimConfig {
        serial: "SHIPPED-1".into(),
        namespace_blocks: 1024,
        backing_file: Some(image.clone()),
        ..nvme_sim::SimConfig::default()
    };
    std::fs::write(&model, config.to_toml_string().unwrap()).unwrap();
    let (ok, stderr) = run_with(
        FunctionBackend::Simulated,
        &[
            (pcid_interface::PCID_SIM_MODEL, model.to_str().unwrap()),
            ("NVMED_SELFTEST", "1"),
            ("NVMED_WORKLOAD", logs.to_str().unwrap()),
        ],
    );
    assert!(!ok, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("nvmed: error: 0000:00:04.0: backend not available")
            && lines[0].contains("test build"),
        "{stderr}"
    );
    assert!(!image.exists(), "the shipped driver created {image:?}");
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 0);
}

#[test]
fn the_shipped_driver_names_the_failing_step_for_an_unusable_sysfs_function() {
    let (ok, stderr) = run_with(
        FunctionBackend::LinuxSysfs {
            sysfs_path: "/nonexistent/0000:00:04.0".to_string(),
        },
        &[],
    );
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("nvmed: error: 0000:00:04.0: enable memory space and bus mastering"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_executable_contains_no_test_hook() {
    let exe = std::fs::read(env!("CARGO_BIN_EXE_nvmed")).unwrap();
    let contains = |needle: &[u8]| exe.windows(needle.len()).any(|w| w == needle);
    // The needles are built at run time so this test's own strings (which
    // are not in the nvmed executable anyway) cannot match by accident.
    for needle in [
        ["NVMED_", "SELFTEST"].concat(),
        ["NVMED_", "WORKLOAD"].concat(),
        ["nvmed-", "selftest serial="].concat(),
        ["NVMED", "WL1"].concat(),
        ["nvme_sim simulated ", "controller"].concat(),
        ["PCID_SIM", "_MODEL"].concat(),
    ] {
        assert!(
            !contains(needle.as_bytes()),
            "the shipped nvmed contains {needle:?}"
        );
    }
    // The check can see a string that is there.
    assert!(contains(b"backend not available"));
}

#[test]
fn the_shipped_driver_does_not_depend_on_the_simulator() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "-p",
            "nvmed",
            "--prefix",
            "none",
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.lines().any(|l| l.starts_with("nvmed ")), "{tree}");
    assert!(tree.lines().any(|l| l.starts_with("nvme_spec ")), "{tree}");
    assert!(
        !tree.lines().any(|l| l.starts_with("nvme_sim ")),
        "nvme_sim is a normal dependency of nvmed:\n{tree}"
    );
}
