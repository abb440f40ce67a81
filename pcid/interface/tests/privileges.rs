//! A driver that drops privileges where Redox drivers do (after `Ready`) can
//! still wait on its channel, because the channel's waiting primitives were
//! opened with it; and nothing this crate opens works after the drop.
//!
//! On Redox the drop is `setrens(0, 0)`, after which `/scheme/event` and
//! `/scheme/time` cannot be opened (`ENODEV`). nvmed once opened both for
//! every wait and died right after `Ready`. Here the drop is recorded and
//! `pcid_interface::privileges::before_open` plays Redox's null namespace,
//! so a channel that opened anything per wait fails this test.
//!
//! The drop is process-wide, so everything runs in one test, in order.

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use pcid_interface::driver::{self, Deadline, FinishReport, ServeOutcome, ShutdownHandler};
use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::privileges;
use pcid_interface::protocol::{
    DriverMessage, FinishOutcome, ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
};
use pcid_interface::transport::{DriverChannel, TransportError};

/// Bound on every wait that should end at once; reached only on failure.
const T: Option<Duration> = Some(Duration::from_secs(30));

struct Device;

impl ShutdownHandler for Device {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::TwoPhase
    }
    fn begin(&mut self, _kind: ShutdownKind, _deadline: Deadline) -> Result<Duration, String> {
        Ok(Duration::from_millis(5))
    }
    fn finish(&mut self, _deadline: Deadline) -> FinishReport {
        FinishReport::new(FinishOutcome::Clean, Duration::from_millis(1), "done")
    }
}

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
        backend: FunctionBackend::Redox {
            bars: Vec::new(),
            legacy_irq: None,
        },
    }
}

#[test]
fn waiting_after_the_privilege_drop_opens_nothing() {
    // --- Before the drop: everything the driver will use is made. ---
    // A plain channel pair, for a deterministic wait after the drop.
    let (pcid_a, mut driver_a) = DriverChannel::pair().expect("pair");
    // The driver's real channel, adopted from PCID_CLIENT_CHANNEL as nvmed does.
    let (pcid_side, driver_side) = UnixStream::pair().expect("socketpair");
    let mut pcid = DriverChannel::try_from_stream(pcid_side).expect("pcid end");
    std::env::set_var(
        pcid_interface::PCID_CLIENT_CHANNEL,
        driver_side.into_raw_fd().to_string(),
    );
    let handshake = std::thread::spawn(move || {
        let hello = pcid.recv(T).expect("Hello");
        assert!(matches!(hello, DriverMessage::Hello { .. }), "{hello:?}");
        pcid.send(&DriverMessage::Welcome {
            version: PROTOCOL_VERSION,
            function: function(),
        })
        .expect("Welcome");
        assert_eq!(pcid.recv(T).expect("Ready"), DriverMessage::Ready);
        pcid
    });
    let (mut conn, _function) =
        driver::connect("privtestd", ShutdownSupport::TwoPhase).expect("connect");
    conn.ready().expect("ready");
    let mut pcid = handshake.join().expect("pcid thread");

    // --- The drop. ---
    privileges::drop_privileges().expect("drop");
    assert!(privileges::dropped());

    // --- After it: waiting works, with nothing queued (so it must wait). ---
    match driver_a.recv(Some(Duration::from_millis(20))) {
        Err(TransportError::Timeout(_)) => {}
        other => panic!("a wait after the drop must time out normally, got {other:?}"),
    }
    pcid_a.send(&DriverMessage::Ready).expect("send");
    assert_eq!(driver_a.recv(T).expect("recv"), DriverMessage::Ready);

    // The driver helper serves a whole shutdown after the drop.
    let serving = conn.serve_in_background(Device).expect("thread");
    pcid.send(&DriverMessage::Begin {
        seq: 1,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(10),
    })
    .expect("Begin");
    assert!(matches!(
        pcid.recv(T).expect("BeginAck"),
        DriverMessage::BeginAck { seq: 1, .. }
    ));
    pcid.send(&DriverMessage::Finish {
        seq: 2,
        deadline: Duration::from_secs(10),
    })
    .expect("Finish");
    assert!(matches!(
        pcid.recv(T).expect("FinishAck"),
        DriverMessage::FinishAck {
            seq: 2,
            outcome: FinishOutcome::Clean,
            ..
        }
    ));
    let outcome = serving.join().expect("serve thread").expect("serve");
    assert!(matches!(outcome, ServeOutcome::Finished(_)), "{outcome:?}");

    // --- And the stand-in for the null namespace does refuse. ---
    let err = DriverChannel::pair().expect_err("a channel made after the drop");
    assert!(
        err.to_string().contains("after the privilege drop"),
        "unexpected error: {err}"
    );
    let (late, _peer) = UnixStream::pair().expect("socketpair");
    let mut late = DriverChannel::from_stream(late);
    match late.recv(Some(Duration::from_millis(10))) {
        Err(TransportError::Io(e)) => assert!(
            e.to_string().contains("after the privilege drop"),
            "unexpected error: {e}"
        ),
        other => panic!("waiting on a channel made after the drop must fail, got {other:?}"),
    }
}
