//! The test build of the NVMe driver (`nvmed-test`: `nvmed` with the
//! simulated controller and the data checks) as pcid sees it: spawned with an
//! inherited channel, Hello → Welcome (simulated backend) → Ready →
//! Begin/BeginAck → Finish/FinishAck, with the self-test's data durable in
//! the backing file. The controller's description reaches it as pcid's
//! simulated bus hands it over: a device model file named in
//! `PCID_SIM_MODEL`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nvme_sim::{Fault, SimConfig};
use pcid_interface::PCID_SIM_MODEL;

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::protocol::{
    DriverMessage, FinishOutcome, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
};
use pcid_interface::transport::{spawn_with_channel, DriverChannel};

/// Every wait in this test is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

fn function() -> PciFunction {
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
        backend: FunctionBackend::Simulated,
    }
}

/// `config` written as a device model file in `dir`.
fn model(dir: &Path, config: &SimConfig) -> PathBuf {
    let path = dir.join("model.toml");
    std::fs::write(&path, config.to_toml_string().unwrap()).unwrap();
    path
}

#[test]
fn nvmed_serves_two_phase_shutdown_on_the_simulated_backend() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ns.img");
    let model = model(
        dir.path(),
        &SimConfig {
            serial: "BIN-SERIAL-7".into(),
            rtd3e_us: 300_000,
            shutdown_latency_ms: 200,
            volatile_write_cache: true,
            namespace_blocks: 1024,
            backing_file: Some(image.clone()),
            ..SimConfig::default()
        },
    );
    let (mut pcid, child_end) = DriverChannel::pair().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvmed-test"));
    cmd.env(PCID_SIM_MODEL, &model)
        .env("NVMED_SELFTEST", "1")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped());
    let mut child = spawn_with_channel(&mut cmd, child_end).unwrap();

    let hello = pcid.recv(Some(WAIT)).unwrap();
    assert!(matches!(
        hello,
        DriverMessage::Hello { ref driver, support: ShutdownSupport::TwoPhase, .. } if driver == "nvmed"
    ));
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: function(),
    })
    .unwrap();
    assert!(matches!(
        pcid.recv(Some(WAIT)).unwrap(),
        DriverMessage::Ready
    ));

    // The self-test wrote and flushed its pattern before Ready.
    let expected = shutdown_tests::nvme::selftest::pattern("BIN-SERIAL-7", 8 * 512);
    let mut head = vec![0u8; expected.len()];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(head, expected);

    pcid.send(&DriverMessage::Begin {
        seq: 1,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(5),
    })
    .unwrap();
    match pcid.recv(Some(WAIT)).unwrap() {
        DriverMessage::BeginAck { seq, budget } => {
            assert_eq!(seq, 1);
            assert_eq!(budget, Duration::from_millis(300));
        }
        other => panic!("expected BeginAck, got {other:?}"),
    }
    pcid.send(&DriverMessage::Finish {
        seq: 2,
        deadline: Duration::from_secs(5),
    })
    .unwrap();
    match pcid.recv(Some(WAIT)).unwrap() {
        DriverMessage::FinishAck {
            seq,
            outcome,
            elapsed,
            detail,
        } => {
            assert_eq!(seq, 2);
            assert_eq!(outcome, FinishOutcome::Clean, "{detail}");
            // The model takes 200 ms from the SHN write: the driver cannot
            // have seen completion earlier.
            assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
            assert!(detail.contains("CSTS.SHST=10b"), "{detail}");
        }
        other => panic!("expected FinishAck, got {other:?}"),
    }

    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("nvmed did not exit after FinishAck");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "nvmed failed: {stderr}");
    assert!(
        stderr.contains("0000:00:04.0"),
        "logs name the address: {stderr}"
    );
    assert!(stderr.contains("self-test passed"), "{stderr}");
}

#[test]
fn nvmed_reports_a_bad_description_in_one_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = model(
        dir.path(),
        &SimConfig {
            block_size: 1000,
            ..SimConfig::default()
        },
    );
    let stderr = refused(&invalid);
    assert!(stderr.contains("block_size"), "{stderr}");
    let missing = dir.path().join("missing.toml");
    let stderr = refused(&missing);
    assert!(
        stderr.contains(&format!("device model {}", missing.display())),
        "{stderr}"
    );
}

/// Runs nvmed-test with the device model at `model` up to Welcome; checks
/// it fails with one line naming the function, and returns that line.
fn refused(model: &Path) -> String {
    let (mut pcid, child_end) = DriverChannel::pair().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvmed-test"));
    cmd.env("RUST_LOG", "off")
        .env(PCID_SIM_MODEL, model)
        .stderr(std::process::Stdio::piped());
    let mut child = spawn_with_channel(&mut cmd, child_end).unwrap();
    let _hello = pcid.recv(Some(WAIT)).unwrap();
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: function(),
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
    assert!(!status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("nvmed: error: 0000:00:04.0"),
        "{stderr}"
    );
    stderr
}

/// Runs nvmed through Hello/Welcome/Ready/Begin/Finish on the controller
/// `config` describes and returns the FinishAck's outcome and detail, and
/// the exit status.
fn run_shutdown(config: SimConfig, finish_deadline: Duration) -> (FinishOutcome, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path(), &config);
    let (mut pcid, child_end) = DriverChannel::pair().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nvmed-test"));
    cmd.env("RUST_LOG", "off")
        .env(PCID_SIM_MODEL, &model)
        .stderr(std::process::Stdio::null());
    let mut child = spawn_with_channel(&mut cmd, child_end).unwrap();
    let _hello = pcid.recv(Some(WAIT)).unwrap();
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: function(),
    })
    .unwrap();
    assert!(matches!(
        pcid.recv(Some(WAIT)).unwrap(),
        DriverMessage::Ready
    ));
    pcid.send(&DriverMessage::Begin {
        seq: 1,
        kind: ShutdownKind::Reboot,
        deadline: Duration::from_secs(5),
    })
    .unwrap();
    assert!(matches!(
        pcid.recv(Some(WAIT)).unwrap(),
        DriverMessage::BeginAck { seq: 1, .. }
    ));
    pcid.send(&DriverMessage::Finish {
        seq: 2,
        deadline: finish_deadline,
    })
    .unwrap();
    let (outcome, detail) = match pcid.recv(Some(WAIT)).unwrap() {
        DriverMessage::FinishAck {
            outcome, detail, ..
        } => (outcome, detail),
        other => panic!("expected FinishAck, got {other:?}"),
    };
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
    (outcome, detail, status.success())
}

#[test]
fn nvmed_reports_faults_as_protocol_outcomes() {
    let faulty = |fault| SimConfig {
        faults: vec![fault],
        ..SimConfig::default()
    };
    let (o, detail, ok) = run_shutdown(
        faulty(Fault::ShutdownNeverCompletes),
        Duration::from_millis(300),
    );
    assert_eq!(o, FinishOutcome::TimedOut, "{detail}");
    assert!(detail.contains("escalated"), "{detail}");
    assert!(ok);

    let (o, detail, _) = run_shutdown(faulty(Fault::FatalStatus), Duration::from_secs(2));
    assert_eq!(o, FinishOutcome::Failed);
    assert!(detail.contains("CFS"), "{detail}");

    let (o, detail, _) = run_shutdown(faulty(Fault::SurpriseRemoval), Duration::from_secs(2));
    assert_eq!(o, FinishOutcome::Failed);
    assert!(detail.contains("all-ones"), "{detail}");

    let (o, detail, _) = run_shutdown(
        SimConfig {
            shutdown_latency_ms: 60_000,
            abrupt_latency_ms: 0,
            ..SimConfig::default()
        },
        Duration::from_millis(500),
    );
    assert_eq!(o, FinishOutcome::Abrupt, "{detail}");
}
