//! The shutdownd binary against a scripted pcid on a real control socket.
//!
//! The scripted pcid answers in ways that make the assertions causal rather
//! than timed: in two-phase mode it withholds every `FinishAck` until it has
//! received a `Finish` for every device, so a scheduler that waited for one
//! device before beginning the next could not end with all devices clean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{
    ControlMessage, DeviceInfo, DriverState, FinishOutcome, ShutdownSupport,
};
use pcid_interface::transport::ControlListener;

#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Answer FinishAcks only once every device has been sent Finish/Shutdown.
    ReleaseWhenAllFinishing,
    /// Answer at once, and record how many devices were in flight at most.
    Immediate,
    /// Never answer Finish for device 0; answer the others at once.
    Device0SilentInFinish,
    /// Close the connection after the first Begin.
    HangUpAfterFirstBegin,
}

struct Trace {
    max_in_flight: usize,
    received: Vec<String>,
}

fn addr(i: usize) -> PciAddress {
    PciAddress {
        segment: 0,
        bus: 1,
        device: i as u8,
        function: 0,
    }
}

fn devices(n: usize) -> Vec<DeviceInfo> {
    (0..n)
        .map(|i| DeviceInfo {
            address: addr(i),
            parent: None,
            driver: if i == n - 1 { "legacyd" } else { "nvmed" }.into(),
            support: if i == n - 1 {
                ShutdownSupport::OnePhase
            } else {
                ShutdownSupport::TwoPhase
            },
            pid: 1000 + i as u32,
            state: DriverState::Running,
        })
        .collect()
}

fn fake_pcid(path: &Path, n: usize, script: Script) -> JoinHandle<Trace> {
    let listener = ControlListener::bind(path).expect("bind control socket");
    std::thread::spawn(move || {
        let (mut ch, _cred) = listener
            .accept(Some(Duration::from_secs(20)))
            .expect("shutdownd connects");
        let mut trace = Trace {
            max_in_flight: 0,
            received: Vec::new(),
        };
        let mut in_flight = BTreeMap::new();
        let mut held: Vec<ControlMessage> = Vec::new();
        let mut finishing = 0;
        let ack = |id, address| ControlMessage::FinishAck {
            id,
            address,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(1),
            detail: "scripted".into(),
        };
        loop {
            let msg = match ch.recv(Some(Duration::from_secs(20))) {
                Ok(m) => m,
                Err(_) => return trace,
            };
            match msg {
                ControlMessage::ListDevices { id } => {
                    ch.send(&ControlMessage::Devices {
                        id,
                        devices: devices(n),
                    })
                    .expect("send Devices");
                }
                // A pcid of before participants: the request is an unknown
                // type, answered as pcid answers undecodable frames. shutdownd
                // goes on without participants.
                ControlMessage::ListParticipants { .. } => {
                    ch.send(&ControlMessage::Error {
                        id: 0,
                        message: "undecodable frame: unknown message type 0x4a".into(),
                    })
                    .expect("send Error");
                }
                ControlMessage::Begin { id, address, .. } => {
                    trace.received.push(format!("Begin {address}"));
                    in_flight.insert(address, ());
                    trace.max_in_flight = trace.max_in_flight.max(in_flight.len());
                    if script == Script::HangUpAfterFirstBegin {
                        return trace;
                    }
                    ch.send(&ControlMessage::BeginAck {
                        id,
                        address,
                        budget: Duration::from_secs(5),
                    })
                    .expect("send BeginAck");
                }
                ControlMessage::Finish { id, address, .. }
                | ControlMessage::Shutdown { id, address, .. } => {
                    trace.received.push(format!("Finish {address}"));
                    in_flight.insert(address, ());
                    trace.max_in_flight = trace.max_in_flight.max(in_flight.len());
                    finishing += 1;
                    match script {
                        Script::ReleaseWhenAllFinishing => {
                            held.push(ack(id, address));
                            if finishing == n {
                                for m in held.drain(..) {
                                    ch.send(&m).expect("send FinishAck");
                                }
                            }
                        }
                        Script::Device0SilentInFinish if address == addr(0) => {}
                        _ => {
                            in_flight.remove(&address);
                            ch.send(&ack(id, address)).expect("send FinishAck");
                        }
                    }
                }
                other => panic!("unexpected message from shutdownd: {other:?}"),
            }
        }
    })
}

struct Run {
    out: Output,
    report: serde_json::Value,
}

fn shutdownd(dir: &Path, socket: &Path, args: &[&str]) -> Run {
    let json: PathBuf = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shutdownd"))
        .arg("--control")
        .arg(socket)
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .expect("run shutdownd");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        out,
        report: serde_json::from_str(&text).expect("report is JSON"),
    }
}

fn outcomes(r: &serde_json::Value) -> Vec<String> {
    r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_phase_begins_every_device_before_any_finish_completes() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let pcid = fake_pcid(&sock, 8, Script::ReleaseWhenAllFinishing);
    let run = shutdownd(dir.path(), &sock, &[]);
    let trace = pcid.join().unwrap();
    assert_eq!(run.out.status.code(), Some(0), "{run:?}", run = run.out);
    assert_eq!(outcomes(&run.report), vec!["clean"; 8]);
    assert_eq!(trace.max_in_flight, 8);
    // Every Begin (and the one-phase Shutdown) was received before any Finish.
    let first_finish = trace
        .received
        .iter()
        .position(|m| m.starts_with("Finish"))
        .unwrap();
    let begins = trace
        .received
        .iter()
        .filter(|m| m.starts_with("Begin"))
        .count();
    assert_eq!(begins, 7);
    assert!(trace.received[..first_finish]
        .iter()
        .all(|m| m.starts_with("Begin")));
    let d = &run.report["devices"][0];
    assert_eq!(d["protocol"], "two-phase");
    assert_eq!(d["budget_ms"], 5000.0);
    assert_eq!(run.report["devices"][7]["protocol"], "one-phase");
    assert!(String::from_utf8_lossy(&run.out.stdout).contains("8 clean"));
}

#[test]
fn sequential_mode_keeps_one_device_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let pcid = fake_pcid(&sock, 5, Script::Immediate);
    let run = shutdownd(dir.path(), &sock, &["--sequential", "--kind", "reboot"]);
    let trace = pcid.join().unwrap();
    assert_eq!(run.out.status.code(), Some(0));
    assert_eq!(trace.max_in_flight, 1);
    assert_eq!(run.report["mode"], "sequential");
    assert_eq!(run.report["kind"], "reboot");
    assert_eq!(outcomes(&run.report), vec!["clean"; 5]);
}

#[test]
fn silent_device_ends_at_the_global_deadline_and_exit_status_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let pcid = fake_pcid(&sock, 4, Script::Device0SilentInFinish);
    let run = shutdownd(dir.path(), &sock, &["--deadline-ms", "1500"]);
    drop(pcid);
    assert_eq!(run.out.status.code(), Some(1));
    assert_eq!(
        outcomes(&run.report),
        vec!["no-response", "clean", "clean", "clean"]
    );
    // shutdownd's own record: the silent device was given up when shutdownd
    // saw the global deadline pass (its finish deadline was clamped to it),
    // not before the deadline, and nothing happened after that moment. (How
    // late the machine let shutdownd wake up does not matter; that it plans
    // no wait past the deadline is shown in `run`'s fake-clock test.)
    let r = &run.report;
    let deadline_at = r["deadline_at_ms"].as_f64().unwrap();
    let reached = r["deadline_reached_ms"].as_f64().unwrap();
    let done = r["devices"][0]["done_ms"].as_f64().unwrap();
    assert!(deadline_at <= 1500.0 && reached >= deadline_at, "{r}");
    assert_eq!(done, reached, "{r}");
    assert_eq!(r["total_ms"].as_f64().unwrap(), reached, "{r}");
}

#[test]
fn lost_connection_gives_every_open_device_an_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let pcid = fake_pcid(&sock, 3, Script::HangUpAfterFirstBegin);
    let run = shutdownd(dir.path(), &sock, &[]);
    pcid.join().unwrap();
    assert_eq!(run.out.status.code(), Some(1));
    assert_eq!(outcomes(&run.report), vec!["no-response"; 3]);
    assert!(run.report["devices"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("control connection"));
}

#[test]
fn without_pcid_shutdownd_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shutdownd"))
        .arg("--control")
        .arg(dir.path().join("nobody.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pcid is not running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The binary under the name `shutdown`, as an image installs it in place
/// of Redox's coreutils `shutdown`.
fn shutdown_link(dir: &Path) -> PathBuf {
    let link = dir.join(shutdownd::cli::SHUTDOWN_NAME);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_shutdownd"), &link).expect("symlink");
    link
}

#[test]
fn as_shutdown_it_takes_redox_flags_ignores_the_rest_and_runs_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let json = dir.path().join("report.json");
    let pcid = fake_pcid(&sock, 3, Script::Immediate);
    let out = Command::new(shutdown_link(dir.path()))
        .arg("-r")
        .arg("now")
        .arg("--control")
        .arg(&sock)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run shutdown");
    let trace = pcid.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("shutdown: ignoring argument `now`"), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["kind"], "reboot");
    assert_eq!(outcomes(&report), vec!["clean"; 3]);
    assert_eq!(trace.received.len(), 5, "{:?}", trace.received);
}

#[test]
fn as_shutdown_help_prints_and_shuts_nothing_down() {
    let dir = tempfile::tempdir().unwrap();
    // No pcid anywhere: connecting would fail with status 2.
    for flag in ["-h", "--help"] {
        let out = Command::new(shutdown_link(
            &tempfile::tempdir_in(dir.path()).unwrap().keep(),
        ))
        .arg(flag)
        .arg("--control")
        .arg(dir.path().join("nobody.sock"))
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("shutdown [ -h | --help ] [ -r | --reboot ]"),
            "{text}"
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A control socket whose accept queue is full: a connect to it blocks
/// until someone accepts, which nobody does — like an open of pcid's scheme
/// on Redox when pcid no longer answers requests.
fn unanswered_socket(path: &Path) -> (rustix::fd::OwnedFd, std::os::unix::net::UnixStream) {
    use rustix::net::{bind, listen, socket, AddressFamily, SocketAddrUnix, SocketType};
    let fd = socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket");
    bind(&fd, &SocketAddrUnix::new(path).expect("address")).expect("bind");
    // Backlog 0: one pending connection fills the queue.
    listen(&fd, 0).expect("listen");
    let filler = std::os::unix::net::UnixStream::connect(path).expect("first connect");
    (fd, filler)
}

#[test]
fn an_unanswering_pcid_cannot_hold_shutdownd_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pcid.sock");
    let _held = unanswered_socket(&sock);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shutdownd"))
        .arg("--control")
        .arg(&sock)
        .arg("--deadline-ms")
        .arg("300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded wait: without its watchdog shutdownd would block for ever.
    let guard = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= guard {
            child.kill().unwrap();
            panic!("shutdownd still blocked in connect after 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("no result from pcid within 1300 ms"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
/// One statement of the exit status: `--help`, the README and
/// docs/fault-matrix.md all say `shutdownd::EXIT_STATUS` (line breaks aside).
#[test]
fn the_exit_status_is_stated_once_everywhere() {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = squash(shutdownd::EXIT_STATUS);
    let help = Command::new(env!("CARGO_BIN_EXE_shutdownd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(
        squash(&String::from_utf8_lossy(&help.stdout)).contains(&want),
        "--help"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for doc in ["README.md", "docs/fault-matrix.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        assert!(
            squash(&text).contains(&want),
            "{doc} does not state {want:?}"
        );
        assert!(
            !text.contains("exits 0 exactly when"),
            "{doc} has another statement"
        );
    }
}
