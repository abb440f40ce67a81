//! The driver-side state machine, driven by a test playing pcid.

use super::*;
use crate::function::FunctionBackend;
use crate::wire::WireMessage;
use std::sync::{Arc, Mutex};

const T: Option<Duration> = Some(Duration::from_secs(10));

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

/// Records the calls it gets; `begin` fails if `fail_begin` is set.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
    fail_begin: bool,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

impl ShutdownHandler for Recorder {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::TwoPhase
    }
    fn begin(&mut self, kind: ShutdownKind, deadline: Deadline) -> Result<Duration, String> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("begin {kind:?} {:?}", deadline.allowed()));
        if self.fail_begin {
            Err("queue deletion failed".into())
        } else {
            Ok(Duration::from_millis(4500))
        }
    }
    fn finish(&mut self, deadline: Deadline) -> FinishReport {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("finish {:?}", deadline.allowed()));
        FinishReport::new(
            FinishOutcome::Clean,
            Duration::from_millis(4400),
            "SHST=10b",
        )
    }
}

/// Runs the handshake with `support` and returns pcid's end plus the
/// connection (not yet serving).
fn handshake(support: ShutdownSupport) -> (DriverChannel, DriverConnection) {
    let (driver_end, mut pcid) = DriverChannel::pair().expect("pair");
    let pcid_side = std::thread::spawn(move || {
        let hello = pcid.recv(T).expect("hello");
        assert_eq!(
            hello,
            DriverMessage::Hello {
                version: PROTOCOL_VERSION,
                driver: "testd".into(),
                support,
            }
        );
        pcid.send(&DriverMessage::Welcome {
            version: PROTOCOL_VERSION,
            function: function(),
        })
        .expect("welcome");
        pcid
    });
    let (conn, f) = connect_over(driver_end, "testd", support, WELCOME_TIMEOUT).expect("connect");
    assert_eq!(f, function());
    assert_eq!(conn.address(), Some(function().address));
    (pcid_side.join().expect("join"), conn)
}

fn begin(seq: u32) -> DriverMessage {
    DriverMessage::Begin {
        seq,
        kind: ShutdownKind::Reboot,
        deadline: Duration::from_secs(2),
    }
}

fn finish(seq: u32) -> DriverMessage {
    DriverMessage::Finish {
        seq,
        deadline: Duration::from_secs(6),
    }
}

fn expect_error(pcid: &mut DriverChannel, seq: u32, needle: &str) {
    match pcid.recv(T).expect("recv") {
        DriverMessage::Error { seq: s, message } => {
            assert_eq!(s, seq, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected Error, got {other:?}"),
    }
}

#[test]
fn two_phase_happy_path() {
    let (mut pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let rec = Recorder::default();
    let server = conn.serve_in_background(rec.clone()).expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    pcid.send(&begin(10)).expect("send");
    assert_eq!(
        pcid.recv(T).expect("ack"),
        DriverMessage::BeginAck {
            seq: 10,
            budget: Duration::from_millis(4500)
        }
    );
    pcid.send(&finish(11)).expect("send");
    assert_eq!(
        pcid.recv(T).expect("ack"),
        DriverMessage::FinishAck {
            seq: 11,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(4400),
            detail: "SHST=10b".into()
        }
    );
    let outcome = server.join().expect("join").expect("serve");
    assert!(matches!(outcome, ServeOutcome::Finished(ref r) if r.outcome == FinishOutcome::Clean));
    assert_eq!(rec.calls(), vec!["begin Reboot 2s", "finish 6s"]);
    // The driver dropped its end after finishing.
    assert!(matches!(pcid.recv(T), Err(TransportError::Closed)));
}

#[test]
fn out_of_order_requests_get_errors_and_serving_continues() {
    let (mut pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let rec = Recorder::default();
    let server = conn.serve_in_background(rec.clone()).expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);

    pcid.send(&finish(1)).expect("send");
    expect_error(&mut pcid, 1, "Finish before Begin");

    // Messages only a driver sends.
    pcid.send(&DriverMessage::BeginAck {
        seq: 2,
        budget: Duration::ZERO,
    })
    .expect("send");
    expect_error(&mut pcid, 2, "unexpected BeginAck");
    pcid.send(&DriverMessage::Ready).expect("send");
    expect_error(&mut pcid, 0, "unexpected Ready");

    // A well-framed unknown type and bad enum value: Error naming the seq.
    let mut unknown = begin(3).encode().expect("encode");
    unknown[6] = 0x3f;
    pcid.send_raw(&unknown).expect("send");
    expect_error(&mut pcid, 3, "unknown message type");
    let mut bad_kind = begin(4).encode().expect("encode");
    bad_kind[crate::wire::HEADER_LEN] = 9;
    pcid.send_raw(&bad_kind).expect("send");
    expect_error(&mut pcid, 4, "invalid value 9");

    // An Error from pcid is only logged.
    pcid.send(&DriverMessage::Error {
        seq: 0,
        message: "hi".into(),
    })
    .expect("send");

    pcid.send(&begin(5)).expect("send");
    assert!(matches!(
        pcid.recv(T).expect("ack"),
        DriverMessage::BeginAck { seq: 5, .. }
    ));
    pcid.send(&begin(6)).expect("send");
    expect_error(&mut pcid, 6, "duplicate Begin");
    pcid.send(&DriverMessage::Shutdown {
        seq: 7,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(1),
    })
    .expect("send");
    expect_error(&mut pcid, 7, "Shutdown after Begin");

    pcid.send(&finish(8)).expect("send");
    assert!(matches!(
        pcid.recv(T).expect("ack"),
        DriverMessage::FinishAck { seq: 8, .. }
    ));
    server.join().expect("join").expect("serve");
    // begin and finish ran exactly once each.
    assert_eq!(rec.calls(), vec!["begin Reboot 2s", "finish 6s"]);
}

#[test]
fn failed_begin_is_reported_as_failed_finish() {
    let (mut pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let rec = Recorder {
        fail_begin: true,
        ..Recorder::default()
    };
    let server = conn.serve_in_background(rec.clone()).expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    pcid.send(&begin(1)).expect("send");
    assert_eq!(
        pcid.recv(T).expect("ack"),
        DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::ZERO
        }
    );
    pcid.send(&finish(2)).expect("send");
    match pcid.recv(T).expect("ack") {
        DriverMessage::FinishAck {
            seq: 2,
            outcome: FinishOutcome::Failed,
            detail,
            ..
        } => assert!(detail.contains("queue deletion failed"), "{detail}"),
        other => panic!("{other:?}"),
    }
    server.join().expect("join").expect("serve");
    // finish was not called after a failed begin.
    assert_eq!(rec.calls(), vec!["begin Reboot 2s"]);
}

struct Legacy {
    calls: Arc<Mutex<u32>>,
}

impl OnePhaseShutdown for Legacy {
    fn shutdown(&mut self, kind: ShutdownKind, deadline: Deadline) -> FinishReport {
        *self.calls.lock().expect("lock") += 1;
        FinishReport::new(
            FinishOutcome::Clean,
            Duration::from_millis(3),
            format!("{kind:?} within {:?}", deadline.allowed()),
        )
    }
}

#[test]
fn one_phase_driver_answers_shutdown_and_refuses_begin() {
    let (mut pcid, conn) = handshake(ShutdownSupport::OnePhase);
    let calls = Arc::new(Mutex::new(0));
    let server = conn
        .serve_in_background(OnePhase::new(Legacy {
            calls: Arc::clone(&calls),
        }))
        .expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    pcid.send(&begin(1)).expect("send");
    expect_error(&mut pcid, 1, "OnePhase");
    pcid.send(&DriverMessage::Shutdown {
        seq: 2,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(1),
    })
    .expect("send");
    assert_eq!(
        pcid.recv(T).expect("ack"),
        DriverMessage::FinishAck {
            seq: 2,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(3),
            detail: "Poweroff within 1s".into()
        }
    );
    server.join().expect("join").expect("serve");
    assert_eq!(*calls.lock().expect("lock"), 1);
}

#[test]
fn driver_without_support_refuses_everything_until_closed() {
    let (mut pcid, conn) = handshake(ShutdownSupport::None);
    let server = conn.serve_in_background(NoShutdown).expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    pcid.send(&begin(1)).expect("send");
    expect_error(&mut pcid, 1, "Begin refused");
    pcid.send(&DriverMessage::Shutdown {
        seq: 2,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(1),
    })
    .expect("send");
    expect_error(&mut pcid, 2, "no shutdown support");
    drop(pcid);
    assert_eq!(
        server.join().expect("join").expect("serve"),
        ServeOutcome::Closed
    );
}

#[test]
fn garbage_from_pcid_ends_serving_with_an_error() {
    let (pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let server = conn
        .serve_in_background(Recorder::default())
        .expect("spawn");
    pcid.send_raw(&[0xde; 40]).expect("send");
    let e = server.join().expect("join").unwrap_err();
    assert!(
        matches!(
            e,
            DriverError::Transport(TransportError::Malformed {
                error: crate::wire::DecodeError::BadMagic { .. },
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn handshake_failures_are_typed() {
    // No answer.
    let (a, _pcid) = DriverChannel::pair().expect("pair");
    assert!(matches!(
        connect_over(a, "d", ShutdownSupport::None, Duration::from_millis(5)),
        Err(DriverError::NoWelcome(_))
    ));

    // pcid refuses.
    let (a, mut pcid) = DriverChannel::pair().expect("pair");
    let t = std::thread::spawn(move || {
        pcid.recv(T).expect("hello");
        pcid.send(&DriverMessage::Error {
            seq: 0,
            message: "no such function".into(),
        })
        .expect("send");
    });
    assert!(
        matches!(connect_over(a, "d", ShutdownSupport::None, WELCOME_TIMEOUT), Err(DriverError::Refused(m)) if m == "no such function")
    );
    t.join().expect("join");

    // Newer protocol version than ours: Error sent back, typed error here.
    let (a, mut pcid) = DriverChannel::pair().expect("pair");
    let t = std::thread::spawn(move || {
        pcid.recv(T).expect("hello");
        pcid.send(&DriverMessage::Welcome {
            version: PROTOCOL_VERSION + 1,
            function: function(),
        })
        .expect("send");
        pcid.recv(T).expect("error")
    });
    assert!(matches!(
        connect_over(a, "d", ShutdownSupport::None, WELCOME_TIMEOUT),
        Err(DriverError::Version { .. })
    ));
    assert!(matches!(
        t.join().expect("join"),
        DriverMessage::Error { .. }
    ));

    // pcid closes.
    let (a, pcid) = DriverChannel::pair().expect("pair");
    drop(pcid);
    assert!(connect_over(a, "d", ShutdownSupport::None, WELCOME_TIMEOUT).is_err());
}

#[test]
fn long_detail_is_clipped_to_the_wire_limit() {
    let s = "é".repeat(crate::wire::MAX_TEXT_LEN);
    let c = clip(s, crate::wire::MAX_TEXT_LEN);
    assert!(c.len() <= crate::wire::MAX_TEXT_LEN);
    assert!(c.chars().all(|ch| ch == 'é'));
}

#[test]
fn deadline_counts_from_receipt() {
    let received = Instant::now();
    let d = Deadline::starting_at(received, Duration::from_secs(3));
    assert_eq!(d.allowed(), Duration::from_secs(3));
    assert_eq!(d.at(), received.checked_add(Duration::from_secs(3)));
    assert!(d.remaining() <= Duration::from_secs(3));
    let past = Deadline::starting_at(received, Duration::ZERO);
    assert!(past.expired());
    assert_eq!(past.remaining(), Duration::ZERO);
}

#[test]
fn unsupported_version_gets_an_error_then_the_driver_stops() {
    let (mut pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let server = conn
        .serve_in_background(Recorder::default())
        .expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    let mut f = begin(12).encode().expect("encode");
    f[4] = 2;
    pcid.send_raw(&f).expect("send");
    expect_error(&mut pcid, 0, "unsupported frame version 2");
    assert!(server.join().expect("join").is_err());
    assert!(matches!(pcid.recv(T), Err(TransportError::Closed)));
}

/// PROTOCOL.md §7: a deadline counts from receipt of the *whole* frame.
#[test]
fn a_deadline_starts_when_the_last_byte_of_its_frame_arrives() {
    /// Records when `begin` was told the request was received.
    struct Receipt(Arc<Mutex<Option<Instant>>>);
    impl ShutdownHandler for Receipt {
        fn support(&self) -> ShutdownSupport {
            ShutdownSupport::TwoPhase
        }
        fn begin(&mut self, _: ShutdownKind, deadline: Deadline) -> Result<Duration, String> {
            *self.0.lock().expect("lock") = Some(deadline.received());
            Ok(Duration::ZERO)
        }
        fn finish(&mut self, _: Deadline) -> FinishReport {
            FinishReport::new(FinishOutcome::Clean, Duration::ZERO, "")
        }
    }
    let (mut pcid, conn) = handshake(ShutdownSupport::TwoPhase);
    let received = Arc::new(Mutex::new(None));
    let server = conn
        .serve_in_background(Receipt(Arc::clone(&received)))
        .expect("spawn");
    assert_eq!(pcid.recv(T).expect("ready"), DriverMessage::Ready);
    let frame = begin(1).encode().expect("encode");
    // Header and part of the payload now, the rest later.
    pcid.send_raw(&frame[..20]).expect("send");
    std::thread::sleep(Duration::from_millis(100));
    let last_part_sent = Instant::now();
    pcid.send_raw(&frame[20..]).expect("send");
    assert!(matches!(
        pcid.recv(T).expect("ack"),
        DriverMessage::BeginAck { seq: 1, .. }
    ));
    let at = received.lock().expect("lock").expect("begin ran");
    assert!(
        at >= last_part_sent,
        "the deadline started {:?} before the frame was complete",
        last_part_sent - at
    );
    pcid.send(&finish(2)).expect("send");
    assert!(matches!(
        pcid.recv(T).expect("ack"),
        DriverMessage::FinishAck { seq: 2, .. }
    ));
    server.join().expect("join").expect("serve");
}

#[test]
fn a_participant_registers_sends_no_ready_and_serves_begin_and_finish() {
    let (mine, mut pcid) = DriverChannel::pair().expect("pair");
    let pcid_side = std::thread::spawn(move || {
        let register = pcid.recv(T).expect("register");
        pcid.send(&DriverMessage::Registered { version: 1, id: 7 })
            .expect("send");
        pcid.send(&DriverMessage::Begin {
            seq: 1,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(2),
        })
        .expect("send");
        // The first frame after Registered must answer the Begin: no Ready.
        let ack = pcid.recv(T).expect("begin ack");
        pcid.send(&DriverMessage::Finish {
            seq: 2,
            deadline: Duration::from_secs(2),
        })
        .expect("send");
        let fin = pcid.recv(T).expect("finish ack");
        (register, ack, fin)
    });
    let (conn, id) = register_over(
        mine,
        "file",
        ShutdownSupport::TwoPhase,
        vec![Provider::AllDevices],
        Duration::from_secs(10),
    )
    .expect("registered");
    assert_eq!(id, 7);
    assert_eq!(conn.address(), None);
    let rec = Recorder::default();
    let outcome = conn.serve(rec.clone()).expect("serve");
    assert!(matches!(outcome, ServeOutcome::Finished(_)));
    let (register, ack, fin) = pcid_side.join().expect("pcid thread");
    assert_eq!(
        register,
        DriverMessage::Register {
            version: PROTOCOL_VERSION,
            name: "file".into(),
            support: ShutdownSupport::TwoPhase,
            providers: vec![Provider::AllDevices],
        }
    );
    assert!(
        matches!(ack, DriverMessage::BeginAck { seq: 1, .. }),
        "{ack:?}"
    );
    assert!(
        matches!(fin, DriverMessage::FinishAck { seq: 2, .. }),
        "{fin:?}"
    );
    assert_eq!(rec.calls().len(), 2);
}

#[test]
fn a_refused_registration_is_an_error_naming_why() {
    let (mine, mut pcid) = DriverChannel::pair().expect("pair");
    let pcid_side = std::thread::spawn(move || {
        let _ = pcid.recv(T);
        let _ = pcid.send(&DriverMessage::Error {
            seq: 0,
            message: "protocol violation: participant name \"file\" is in use".into(),
        });
    });
    let err = register_over(
        mine,
        "file",
        ShutdownSupport::TwoPhase,
        vec![],
        Duration::from_secs(10),
    )
    .expect_err("refused");
    pcid_side.join().expect("pcid thread");
    assert!(err.to_string().contains("is in use"), "{err}");
}
