//! A driver written in C from PROTOCOL.md and its C header
//! (`tests/c_driver.c`, `include/pcid_shutdown.h`), spawned the way pcid
//! spawns drivers, talks to this crate's pcid side.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::protocol::{
    DriverMessage, FinishOutcome, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
};
use pcid_interface::transport::{spawn_with_channel, DriverChannel};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn build_c_driver(tag: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c_driver.c");
    let out = std::env::temp_dir().join(format!("pcid-c-driver-{}-{tag}", std::process::id()));
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
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} (set CC): {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

#[test]
fn driver_written_in_c_from_the_spec_completes_two_phase_shutdown() {
    let exe = build_c_driver("two-phase");
    let (mut pcid, theirs) = DriverChannel::pair().expect("pair");
    let mut cmd = Command::new(&exe);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = spawn_with_channel(&mut cmd, theirs).expect("spawn");

    assert_eq!(
        pcid.recv(T).expect("hello"),
        DriverMessage::Hello {
            version: 1,
            driver: "cdriver".into(),
            support: ShutdownSupport::TwoPhase
        }
    );
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: PciFunction {
            address: PciAddress {
                segment: 0x12,
                bus: 3,
                device: 0x1f,
                function: 7,
            },
            vendor: 0x1b36,
            device: 0x10,
            class: 1,
            subclass: 8,
            interface: 2,
            revision: 2,
            parent: None,
            // A long path: the driver reads a Welcome of several KiB.
            backend: FunctionBackend::LinuxSysfs {
                sysfs_path: format!("/sys/{}", "d/".repeat(2000)),
            },
        },
    })
    .expect("welcome");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    // A driver may send Error on its own (seq 0): PROTOCOL.md §6.1.
    assert_eq!(
        pcid.recv(T).expect("note"),
        DriverMessage::Error {
            seq: 0,
            message: "c driver note: ready".into()
        }
    );
    // pcid's informational Error is read, not answered.
    pcid.send(&DriverMessage::Error {
        seq: 0,
        message: "from pcid".into(),
    })
    .expect("send");

    // Out of phase, then a frame of an unknown type: Error naming the seq.
    pcid.send(&DriverMessage::Finish {
        seq: 40,
        deadline: Duration::from_secs(1),
    })
    .expect("send");
    assert!(matches!(
        pcid.recv(T).expect("error"),
        DriverMessage::Error { seq: 40, ref message } if message == "Finish before Begin"
    ));
    let mut unknown = DriverMessage::Ready.encode_frame();
    unknown[6] = 0x30;
    unknown[8] = 41;
    pcid.send_raw(&unknown).expect("send");
    assert!(matches!(
        pcid.recv(T).expect("error"),
        DriverMessage::Error { seq: 41, .. }
    ));

    pcid.send(&DriverMessage::Begin {
        seq: 42,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_millis(3000),
    })
    .expect("begin");
    assert_eq!(
        pcid.recv(T).expect("begin ack"),
        DriverMessage::BeginAck {
            seq: 42,
            budget: Duration::from_millis(1500)
        }
    );
    // The driver relies on per-channel numbering: Finish = Begin + 1.
    pcid.send(&DriverMessage::Finish {
        seq: 50,
        deadline: Duration::from_secs(5),
    })
    .expect("finish");
    assert!(matches!(
        pcid.recv(T).expect("error"),
        DriverMessage::Error { seq: 50, ref message } if message == "Finish seq is not Begin seq + 1"
    ));
    pcid.send(&DriverMessage::Finish {
        seq: 43,
        deadline: Duration::from_secs(5),
    })
    .expect("finish");
    assert_eq!(
        pcid.recv(T).expect("finish ack"),
        DriverMessage::FinishAck {
            seq: 43,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_micros(777),
            detail: "c ok".into()
        }
    );
    // Done: every further request gets Error(seq), until pcid closes.
    pcid.send(&DriverMessage::Begin {
        seq: 44,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_millis(3000),
    })
    .expect("begin");
    assert_eq!(
        pcid.recv(T).expect("error"),
        DriverMessage::Error {
            seq: 44,
            message: "shutdown already finished".into()
        }
    );
    drop(pcid);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "C driver failed: {}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "0012:03:1f.7\npcid error 0: from pcid\n"
    );
    assert!(out.stdout.is_empty(), "standard output stays quiet");
    let _ = std::fs::remove_file(exe);
}

/// PROTOCOL.md §6.1: every frame carries header version 1, also after the
/// negotiation; the C driver refuses another with Error(seq) and stops.
#[test]
fn the_c_driver_refuses_a_frame_of_another_header_version() {
    let exe = build_c_driver("version");
    let (mut pcid, theirs) = DriverChannel::pair().expect("pair");
    let mut cmd = Command::new(&exe);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = spawn_with_channel(&mut cmd, theirs).expect("spawn");
    assert!(matches!(
        pcid.recv(T).expect("hello"),
        DriverMessage::Hello { .. }
    ));
    pcid.send(&DriverMessage::Welcome {
        version: PROTOCOL_VERSION,
        function: PciFunction {
            address: PciAddress {
                segment: 0,
                bus: 0,
                device: 4,
                function: 0,
            },
            vendor: 0x1b36,
            device: 0x10,
            class: 1,
            subclass: 8,
            interface: 2,
            revision: 2,
            parent: None,
            backend: FunctionBackend::Redox {
                bars: Vec::new(),
                legacy_irq: None,
            },
        },
    })
    .expect("welcome");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    assert!(matches!(
        pcid.recv(T).expect("note"),
        DriverMessage::Error { seq: 0, .. }
    ));
    let mut frame = DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(1),
    }
    .encode_frame();
    frame[4] = 2;
    pcid.send_raw(&frame).expect("send");
    assert_eq!(
        pcid.recv(T).expect("error"),
        DriverMessage::Error {
            seq: 7,
            message: "unsupported version".into()
        }
    );
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(9), "{}", out.status);
    let _ = std::fs::remove_file(exe);
}

trait EncodeFrame {
    fn encode_frame(&self) -> Vec<u8>;
}

impl EncodeFrame for DriverMessage {
    fn encode_frame(&self) -> Vec<u8> {
        use pcid_interface::wire::WireMessage;
        self.encode().expect("encodes")
    }
}
