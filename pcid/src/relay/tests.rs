use super::*;
use pcid_interface::function::FunctionBackend;
use pcid_interface::protocol::{FinishOutcome, ShutdownKind};

const T0_HELLO: Duration = Duration::from_secs(5);

fn function(dev: u8) -> PciFunction {
    PciFunction {
        address: PciAddress {
            segment: 0,
            bus: 0,
            device: dev,
            function: 0,
        },
        vendor: 0x1b36,
        device: 0x0010,
        class: 1,
        subclass: 8,
        interface: 2,
        revision: 0,
        parent: None,
        backend: FunctionBackend::Simulated,
    }
}

fn addr(dev: u8) -> PciAddress {
    function(dev).address
}

struct Fixture {
    relay: Relay,
    t0: Instant,
}

impl Fixture {
    fn new(n: u8, exit_after_shutdown: bool) -> Self {
        let t0 = Instant::now();
        let mut relay = Relay::new(RelayConfig {
            deadlines: StartDeadlines {
                hello: T0_HELLO,
                ready: Duration::from_secs(30),
            },
            exit_after_shutdown,
        });
        for i in 0..n {
            relay.add_driver(function(4 + i), "nvmed".into(), 100 + u32::from(i), t0);
        }
        Self { relay, t0 }
    }

    fn at(&mut self, input: Input, after: Duration) -> Vec<Output> {
        self.relay.handle(input, self.t0 + after)
    }

    fn h(&mut self, input: Input) -> Vec<Output> {
        self.at(input, Duration::from_millis(1))
    }

    fn drv(&mut self, driver: DriverId, message: DriverMessage) -> Vec<Output> {
        self.h(Input::DriverMessage { driver, message })
    }

    fn ctl(&mut self, client: ClientId, message: ControlMessage) -> Vec<Output> {
        self.h(Input::ClientMessage { client, message })
    }

    /// Bring every driver up as a two-phase driver.
    fn start_all(&mut self, support: ShutdownSupport) {
        for d in 0..self.relay.driver_count() {
            self.drv(
                d,
                DriverMessage::Hello {
                    version: 1,
                    driver: "nvmed".into(),
                    support,
                },
            );
            self.drv(d, DriverMessage::Ready);
        }
    }
}

fn begin(id: u32, dev: u8) -> ControlMessage {
    ControlMessage::Begin {
        id,
        address: addr(dev),
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(10),
    }
}

fn finish(id: u32, dev: u8) -> ControlMessage {
    ControlMessage::Finish {
        id,
        address: addr(dev),
        deadline: Duration::from_secs(10),
    }
}

/// The sequence number of the single Begin/Finish/Shutdown sent to `driver`.
fn sent_seq(out: &[Output], driver: DriverId) -> u32 {
    let seqs: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToDriver {
                driver: d,
                message:
                    DriverMessage::Begin { seq, .. }
                    | DriverMessage::Finish { seq, .. }
                    | DriverMessage::Shutdown { seq, .. },
            } if *d == driver => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), 1, "{out:?}");
    seqs[0]
}

fn device_error(out: &[Output], client: ClientId, id: u32) -> (DeviceErrorKind, String) {
    out.iter()
        .find_map(|o| match o {
            Output::ToClient {
                client: c,
                message:
                    ControlMessage::DeviceError {
                        id: i,
                        kind,
                        message,
                        ..
                    },
            } if *c == client && *i == id => Some((*kind, message.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no DeviceError id {id} for client {client} in {out:?}"))
}

#[test]
fn hello_gets_welcome_with_the_channel_function() {
    let mut f = Fixture::new(2, false);
    let out = f.drv(
        1,
        DriverMessage::Hello {
            version: 7,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    assert_eq!(
        out,
        vec![Output::ToDriver {
            driver: 1,
            message: DriverMessage::Welcome {
                version: PROTOCOL_VERSION,
                function: function(5),
            }
        }]
    );
    let devices = f.relay.devices();
    assert_eq!(devices[1].support, ShutdownSupport::TwoPhase);
    assert_eq!(devices[1].state, DriverState::Running);
    assert_eq!(devices[0].state, DriverState::Starting);
    assert_eq!(devices[1].pid, 101);
}

#[test]
fn ready_is_announced_once_when_every_driver_is_settled() {
    let mut f = Fixture::new(3, false);
    for d in 0..3 {
        f.drv(
            d,
            DriverMessage::Hello {
                version: 1,
                driver: "x".into(),
                support: ShutdownSupport::TwoPhase,
            },
        );
    }
    assert!(f.drv(0, DriverMessage::Ready).is_empty());
    // A driver that dies before Ready counts as settled.
    f.h(Input::DriverExited {
        driver: 1,
        status: "exit status: 1".into(),
    });
    let out = f.h(Input::DriverChannelClosed { driver: 1 });
    assert!(!out.iter().any(|o| matches!(o, Output::Ready { .. })));
    let out = f.drv(2, DriverMessage::Ready);
    assert!(
        out.contains(&Output::Ready { ready: 2, total: 3 }),
        "{out:?}"
    );
    assert!(f.h(Input::Tick).is_empty());
}

#[test]
fn silent_driver_becomes_no_support_and_settled_at_hello_deadline() {
    let mut f = Fixture::new(2, false);
    f.drv(
        0,
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    assert!(f.drv(0, DriverMessage::Ready).is_empty());
    assert_eq!(f.relay.next_deadline(), Some(f.t0 + T0_HELLO));
    assert!(f
        .at(Input::Tick, T0_HELLO - Duration::from_millis(1))
        .is_empty());
    assert_eq!(f.relay.devices()[1].state, DriverState::Starting);
    // At the hello deadline the silent driver counts as a driver without
    // shutdown support, and as settled.
    let out = f.at(Input::Tick, T0_HELLO);
    assert_eq!(out, vec![Output::Ready { ready: 1, total: 2 }]);
    let dev = &f.relay.devices()[1];
    assert_eq!(dev.support, ShutdownSupport::None);
    assert_eq!(dev.state, DriverState::Running);
    assert_eq!(f.relay.next_deadline(), None);
}

#[test]
fn ready_deadline_settles_a_driver_that_said_hello_but_not_ready() {
    let mut f = Fixture::new(1, false);
    f.drv(
        0,
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    assert!(f.at(Input::Tick, T0_HELLO).is_empty());
    assert_eq!(
        f.relay.next_deadline(),
        Some(f.t0 + Duration::from_secs(30))
    );
    let out = f.at(Input::Tick, Duration::from_secs(30));
    assert_eq!(out, vec![Output::Ready { ready: 0, total: 1 }]);
    assert_eq!(f.relay.next_deadline(), None);
}

#[test]
fn begin_finish_relay_with_request_ids_and_pcid_sequence_numbers() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 9 });
    let out = f.ctl(9, begin(77, 4));
    let seq = sent_seq(&out, 0);
    assert_ne!(seq, 77);
    assert_eq!(
        out,
        vec![Output::ToDriver {
            driver: 0,
            message: DriverMessage::Begin {
                seq,
                kind: ShutdownKind::Poweroff,
                deadline: Duration::from_secs(10)
            }
        }]
    );
    let out = f.drv(
        0,
        DriverMessage::BeginAck {
            seq,
            budget: Duration::from_millis(4500),
        },
    );
    assert_eq!(
        out,
        vec![Output::ToClient {
            client: 9,
            message: ControlMessage::BeginAck {
                id: 77,
                address: addr(4),
                budget: Duration::from_millis(4500)
            }
        }]
    );
    let out = f.ctl(9, finish(78, 4));
    let fseq = sent_seq(&out, 0);
    assert_ne!(fseq, seq);
    let out = f.drv(
        0,
        DriverMessage::FinishAck {
            seq: fseq,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(4501),
            detail: "CSTS.SHST=10b".into(),
        },
    );
    assert_eq!(
        out,
        vec![Output::ToClient {
            client: 9,
            message: ControlMessage::FinishAck {
                id: 78,
                address: addr(4),
                outcome: FinishOutcome::Clean,
                elapsed: Duration::from_millis(4501),
                detail: "CSTS.SHST=10b".into()
            }
        }]
    );
}

#[test]
fn requests_to_different_drivers_are_independent() {
    let mut f = Fixture::new(3, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    // Begin to all before any ack; every Begin goes out immediately.
    let seqs: Vec<u32> = (0..3u8)
        .map(|i| sent_seq(&f.ctl(1, begin(10 + u32::from(i), 4 + i)), usize::from(i)))
        .collect();
    // Acks in reverse order are relayed as they come.
    for i in (0..3usize).rev() {
        let out = f.drv(
            i,
            DriverMessage::BeginAck {
                seq: seqs[i],
                budget: Duration::ZERO,
            },
        );
        assert!(
            matches!(&out[..], [Output::ToClient { message: ControlMessage::BeginAck { id, .. }, .. }] if *id == 10 + i as u32),
            "{out:?}"
        );
    }
    // Finish to all, driver 2 never answers; the others complete.
    let fseqs: Vec<u32> = (0..3u8)
        .map(|i| sent_seq(&f.ctl(1, finish(20 + u32::from(i), 4 + i)), usize::from(i)))
        .collect();
    for (i, &seq) in fseqs.iter().enumerate().take(2) {
        let out = f.drv(
            i,
            DriverMessage::FinishAck {
                seq,
                outcome: FinishOutcome::Clean,
                elapsed: Duration::ZERO,
                detail: String::new(),
            },
        );
        assert_eq!(out.len(), 1, "{out:?}");
    }
}

#[test]
fn sequence_numbers_are_counted_per_channel_and_acks_answer_only_their_channel() {
    let mut f = Fixture::new(2, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    // Each channel numbers its own requests from 1.
    let s0 = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let s1 = sent_seq(&f.ctl(1, begin(2, 5)), 1);
    assert_eq!((s0, s1), (1, 1));
    // Driver 1's BeginAck 1 answers driver 1's Begin (request 2), never
    // driver 0's, though both carry 1: the channel decides the device.
    let out = f.drv(
        1,
        DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::from_millis(7),
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::BeginAck { id: 2, address, .. },
                ..
            }] if *address == addr(5)
        ),
        "{out:?}"
    );
    let out = f.drv(
        0,
        DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::ZERO,
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::BeginAck { id: 1, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // Finish follows its channel's Begin by one.
    assert_eq!(sent_seq(&f.ctl(1, finish(3, 5)), 1), 2);
    assert_eq!(sent_seq(&f.ctl(1, finish(4, 4)), 0), 2);
}

#[test]
fn a_channel_sequence_number_wraps_to_one() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    f.relay.drivers[0].next_seq = u32::MAX;
    assert_eq!(sent_seq(&f.ctl(1, begin(1, 4)), 0), u32::MAX);
    f.drv(
        0,
        DriverMessage::BeginAck {
            seq: u32::MAX,
            budget: Duration::ZERO,
        },
    );
    assert_eq!(sent_seq(&f.ctl(1, finish(2, 4)), 0), 1);
}

/// The `Error` pcid sends `driver` before closing its channel, which must
/// come right before the `CloseDriver`.
fn error_before_close(out: &[Output], driver: DriverId) -> (u32, String) {
    let close = out
        .iter()
        .position(|o| *o == Output::CloseDriver { driver })
        .unwrap_or_else(|| panic!("no CloseDriver for {driver} in {out:?}"));
    match close.checked_sub(1).map(|i| &out[i]) {
        Some(Output::ToDriver {
            driver: d,
            message: DriverMessage::Error { seq, message },
        }) if *d == driver => (*seq, message.clone()),
        other => {
            panic!("expected Error to driver {driver} before its close, got {other:?} in {out:?}")
        }
    }
}

#[test]
fn wrong_sequence_number_is_named_to_the_driver_and_isolated_to_it() {
    let mut f = Fixture::new(2, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    let s0 = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let s1 = sent_seq(&f.ctl(1, begin(2, 5)), 1);
    let out = f.drv(
        1,
        DriverMessage::BeginAck {
            seq: s1 + 1000,
            budget: Duration::ZERO,
        },
    );
    let (seq, text) = error_before_close(&out, 1);
    assert_eq!(seq, s1 + 1000);
    assert_eq!(
        text,
        format!(
            "protocol violation: BeginAck with sequence number {}, expected {s1}; \
             pcid closes this channel",
            s1 + 1000
        )
    );
    let (kind, msg) = device_error(&out, 1, 2);
    assert_eq!(kind, DeviceErrorKind::ProtocolViolation);
    assert!(msg.contains(&format!("expected {s1}")), "{msg}");
    let (kind, _) = device_error(&out, 1, 0);
    assert_eq!(kind, DeviceErrorKind::ProtocolViolation);
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::ToClient {
            message: ControlMessage::BeginAck { .. },
            ..
        }
    )));
    // Driver 0 is unaffected.
    let out = f.drv(
        0,
        DriverMessage::BeginAck {
            seq: s0,
            budget: Duration::ZERO,
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::BeginAck { id: 1, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(f.relay.devices()[1].state, DriverState::Gone);
    assert_eq!(f.relay.devices()[0].state, DriverState::Running);
    // Later requests to the cut-off driver fail with the same kind and text,
    // whether its process lives on or exits.
    let (kind, text) = device_error(&f.ctl(1, finish(3, 5)), 1, 3);
    assert_eq!(kind, DeviceErrorKind::ProtocolViolation);
    assert!(text.contains("BeginAck with sequence number"), "{text}");
    f.h(Input::DriverExited {
        driver: 1,
        status: "exit status: 0".into(),
    });
    f.h(Input::DriverChannelClosed { driver: 1 });
    let (kind, text2) = device_error(&f.ctl(1, finish(4, 5)), 1, 4);
    assert_eq!((kind, &text2), (DeviceErrorKind::ProtocolViolation, &text));
    // Messages queued before the cut are ignored.
    assert!(f.drv(1, DriverMessage::Ready).is_empty());
}

#[test]
fn a_live_violator_is_reported_as_a_violation_to_requests_made_later() {
    // A second Hello long before any shutdown: the process stays alive.
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    let out = f.drv(
        0,
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    let (seq, text) = error_before_close(&out, 0);
    assert_eq!(seq, 0);
    assert!(text.contains("second Hello"), "{text}");
    assert_eq!(f.relay.devices()[0].state, DriverState::Gone);
    f.h(Input::ClientConnected { client: 1 });
    let (kind, message) = device_error(&f.ctl(1, begin(1, 4)), 1, 1);
    assert_eq!(kind, DeviceErrorKind::ProtocolViolation);
    assert_eq!(message, "driver broke the protocol: second Hello");
}

#[test]
fn an_unsolicited_driver_error_is_logged_and_changes_nothing() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    for seq in [0, 77] {
        let out = f.drv(
            0,
            DriverMessage::Error {
                seq,
                message: "fan failure".into(),
            },
        );
        assert!(out.is_empty(), "{out:?}");
    }
    assert_eq!(f.relay.devices()[0].state, DriverState::Running);
    assert_eq!(sent_seq(&f.ctl(1, begin(1, 4)), 0), 1);
}

#[test]
fn requests_for_a_driver_that_finished_are_answered_by_pcid() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    let s = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    f.drv(
        0,
        DriverMessage::BeginAck {
            seq: s,
            budget: Duration::ZERO,
        },
    );
    let s = sent_seq(&f.ctl(1, finish(2, 4)), 0);
    f.drv(
        0,
        DriverMessage::FinishAck {
            seq: s,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::ZERO,
            detail: String::new(),
        },
    );
    // The driver is Done: nothing more is sent to it.
    for (id, request) in [(3, begin(3, 4)), (4, finish(4, 4))] {
        let out = f.ctl(1, request);
        assert!(
            !out.iter().any(|o| matches!(o, Output::ToDriver { .. })),
            "{out:?}"
        );
        assert_eq!(device_error(&out, 1, id).0, DeviceErrorKind::NotSupported);
    }
}

#[test]
fn duplicate_and_out_of_phase_acks_are_violations() {
    let mut f = Fixture::new(3, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    // Duplicate BeginAck.
    let s = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let ack = DriverMessage::BeginAck {
        seq: s,
        budget: Duration::ZERO,
    };
    assert_eq!(f.drv(0, ack.clone()).len(), 1);
    let out = f.drv(0, ack);
    assert!(out.contains(&Output::CloseDriver { driver: 0 }), "{out:?}");
    // Unsolicited FinishAck with nothing outstanding.
    let out = f.drv(
        1,
        DriverMessage::FinishAck {
            seq: 0,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::ZERO,
            detail: String::new(),
        },
    );
    assert!(out.contains(&Output::CloseDriver { driver: 1 }), "{out:?}");
    // A pcid-to-driver message sent by a driver.
    let out = f.drv(
        2,
        DriverMessage::Finish {
            seq: 1,
            deadline: Duration::ZERO,
        },
    );
    assert!(out.contains(&Output::CloseDriver { driver: 2 }), "{out:?}");
}

#[test]
fn bad_frames_and_startup_violations() {
    let mut f = Fixture::new(3, false);
    let out = f.h(Input::DriverBadFrame {
        driver: 0,
        error: "bad magic".into(),
    });
    assert_eq!(
        error_before_close(&out, 0),
        (
            0,
            "protocol violation: undecodable frame: bad magic; pcid closes this channel".into()
        )
    );
    let out = f.drv(1, DriverMessage::Ready);
    assert_eq!(error_before_close(&out, 1).0, 0);
    let hello = DriverMessage::Hello {
        version: 1,
        driver: "x".into(),
        support: ShutdownSupport::OnePhase,
    };
    f.drv(2, hello.clone());
    let out = f.drv(2, hello);
    assert!(error_before_close(&out, 2).1.contains("second Hello"));
    // All three settled (gone): ready with 0.
    assert!(
        out.contains(&Output::Ready { ready: 0, total: 3 }),
        "{out:?}"
    );
}

#[test]
fn driver_death_fails_outstanding_request_and_notifies_every_client() {
    let mut f = Fixture::new(2, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    f.h(Input::ClientConnected { client: 2 });
    sent_seq(&f.ctl(1, begin(5, 4)), 0);
    // Reaped first: pcid still waits for the channel's last messages.
    let out = f.h(Input::DriverExited {
        driver: 0,
        status: "signal: 9 (SIGKILL)".into(),
    });
    assert!(out.is_empty(), "{out:?}");
    let out = f.h(Input::DriverChannelClosed { driver: 0 });
    let (kind, msg) = device_error(&out, 1, 5);
    assert_eq!(kind, DeviceErrorKind::DriverDied);
    assert!(msg.contains("SIGKILL"), "{msg}");
    assert_eq!(device_error(&out, 1, 0).0, DeviceErrorKind::DriverDied);
    assert_eq!(device_error(&out, 2, 0).0, DeviceErrorKind::DriverDied);
    // Another exit report adds nothing.
    assert!(f
        .h(Input::DriverExited {
            driver: 0,
            status: "x".into()
        })
        .is_empty());
    // Channel closed without exit: pcid waits for the exit status, then
    // reports DriverDied anyway once the grace period is over.
    assert!(f.h(Input::DriverChannelClosed { driver: 1 }).is_empty());
    assert_eq!(f.relay.devices()[1].state, DriverState::Running);
    let grace = Duration::from_millis(1) + DRIVER_EXIT_WAIT;
    assert_eq!(f.relay.next_deadline(), Some(f.t0 + grace));
    let out = f.at(Input::Tick, grace);
    let (kind, msg) = device_error(&out, 2, 0);
    assert_eq!(kind, DeviceErrorKind::DriverDied);
    assert!(msg.contains("closed its channel"), "{msg}");
    assert_eq!(f.relay.devices()[1].state, DriverState::Gone);
}

#[test]
fn exit_status_arriving_after_end_of_file_is_reported() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    assert!(f.h(Input::DriverChannelClosed { driver: 0 }).is_empty());
    let out = f.h(Input::DriverExited {
        driver: 0,
        status: "signal: 9 (SIGKILL)".into(),
    });
    let (kind, msg) = device_error(&out, 1, 0);
    assert_eq!(kind, DeviceErrorKind::DriverDied);
    assert!(msg.contains("SIGKILL"), "{msg}");
    assert_eq!(f.relay.next_deadline(), None);
}

#[test]
fn second_session_is_busy_until_the_first_client_leaves() {
    let mut f = Fixture::new(2, true);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    f.h(Input::ClientConnected { client: 2 });
    sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let out = f.ctl(2, begin(1, 5));
    assert_eq!(device_error(&out, 2, 1).0, DeviceErrorKind::Busy);
    // Listing is always allowed.
    let out = f.ctl(2, ControlMessage::ListDevices { id: 4 });
    assert!(
        matches!(&out[..], [Output::ToClient { message: ControlMessage::Devices { id: 4, devices }, .. }] if devices.len() == 2)
    );
    // The owner leaves: with exit_after_shutdown pcid exits.
    let out = f.h(Input::ClientClosed { client: 1 });
    assert_eq!(out, vec![Output::Exit]);
    // A client that only listed does not end a session.
    assert!(f.h(Input::ClientClosed { client: 2 }).is_empty());
}

#[test]
fn requests_that_do_not_fit_the_driver_are_refused_without_relaying() {
    let mut f = Fixture::new(3, false);
    f.drv(
        0,
        DriverMessage::Hello {
            version: 1,
            driver: "legacyd".into(),
            support: ShutdownSupport::OnePhase,
        },
    );
    f.drv(
        1,
        DriverMessage::Hello {
            version: 1,
            driver: "plaind".into(),
            support: ShutdownSupport::None,
        },
    );
    f.drv(
        2,
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    f.h(Input::ClientConnected { client: 1 });
    let (k, m) = device_error(&f.ctl(1, begin(1, 4)), 1, 1);
    assert_eq!(k, DeviceErrorKind::NotSupported);
    assert!(m.contains("one-phase"), "{m}");
    let (k, _) = device_error(&f.ctl(1, begin(2, 5)), 1, 2);
    assert_eq!(k, DeviceErrorKind::NotSupported);
    let (k, m) = device_error(&f.ctl(1, finish(3, 6)), 1, 3);
    assert_eq!(k, DeviceErrorKind::NotSupported);
    assert!(m.contains("out of phase"), "{m}");
    let (k, _) = device_error(
        &f.ctl(
            1,
            ControlMessage::Shutdown {
                id: 4,
                address: addr(5),
                kind: ShutdownKind::Reboot,
                deadline: Duration::from_secs(1),
            },
        ),
        1,
        4,
    );
    assert_eq!(k, DeviceErrorKind::NotSupported);
    let (k, _) = device_error(&f.ctl(1, begin(5, 30)), 1, 5);
    assert_eq!(k, DeviceErrorKind::UnknownDevice);
    // One-phase Shutdown relays and its FinishAck comes back.
    let out = f.ctl(
        1,
        ControlMessage::Shutdown {
            id: 6,
            address: addr(4),
            kind: ShutdownKind::Reboot,
            deadline: Duration::from_secs(1),
        },
    );
    let seq = sent_seq(&out, 0);
    let out = f.drv(
        0,
        DriverMessage::FinishAck {
            seq,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::ZERO,
            detail: String::new(),
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::FinishAck { id: 6, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // A second Begin while one is in flight is out of phase.
    sent_seq(&f.ctl(1, begin(7, 6)), 2);
    let (k, _) = device_error(&f.ctl(1, begin(8, 6)), 1, 8);
    assert_eq!(k, DeviceErrorKind::NotSupported);
}

#[test]
fn driver_error_reply_fails_the_request_but_keeps_the_channel() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    let seq = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let out = f.drv(
        0,
        DriverMessage::Error {
            seq,
            message: "busy".into(),
        },
    );
    assert!(!out.iter().any(|o| matches!(o, Output::CloseDriver { .. })));
    assert_eq!(device_error(&out, 1, 1).0, DeviceErrorKind::NotSupported);
    // Begin can be retried.
    sent_seq(&f.ctl(1, begin(2, 4)), 0);
}

#[test]
fn non_requests_from_clients_get_an_error() {
    let mut f = Fixture::new(1, false);
    f.h(Input::ClientConnected { client: 1 });
    let out = f.ctl(
        1,
        ControlMessage::Error {
            id: 3,
            message: "x".into(),
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::Error { id: 3, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    let out = f.h(Input::ClientBadFrame {
        client: 1,
        error: "bad magic".into(),
        fatal: true,
    });
    assert!(out.contains(&Output::CloseClient { client: 1 }), "{out:?}");
}

#[test]
fn ack_sent_just_before_exit_is_relayed_and_exit_after_finish_is_quiet() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    let seq = sent_seq(&f.ctl(1, begin(1, 4)), 0);
    f.drv(
        0,
        DriverMessage::BeginAck {
            seq,
            budget: Duration::ZERO,
        },
    );
    let fseq = sent_seq(&f.ctl(1, finish(2, 4)), 0);
    // The process is reaped before its FinishAck is read from the channel.
    assert!(f
        .h(Input::DriverExited {
            driver: 0,
            status: "exit status: 0".into()
        })
        .is_empty());
    let out = f.drv(
        0,
        DriverMessage::FinishAck {
            seq: fseq,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::ZERO,
            detail: String::new(),
        },
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::FinishAck { id: 2, .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // End of file after the final FinishAck: no error for anyone.
    assert!(f.h(Input::DriverChannelClosed { driver: 0 }).is_empty());
    assert_eq!(f.relay.devices()[0].state, DriverState::Gone);
}

#[test]
fn exit_grace_bounds_the_wait_for_end_of_file() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    f.h(Input::ClientConnected { client: 1 });
    sent_seq(&f.ctl(1, begin(1, 4)), 0);
    let exited_at = Duration::from_millis(1);
    assert!(f
        .at(
            Input::DriverExited {
                driver: 0,
                status: "exit status: 3".into()
            },
            exited_at
        )
        .is_empty());
    assert_eq!(
        f.relay.next_deadline(),
        Some(f.t0 + exited_at + DRIVER_EXIT_WAIT)
    );
    assert!(f
        .at(
            Input::Tick,
            exited_at + DRIVER_EXIT_WAIT - Duration::from_millis(1)
        )
        .is_empty());
    let out = f.at(Input::Tick, exited_at + DRIVER_EXIT_WAIT);
    assert!(out.contains(&Output::CloseDriver { driver: 0 }), "{out:?}");
    let (kind, msg) = device_error(&out, 1, 1);
    assert_eq!(kind, DeviceErrorKind::DriverDied);
    assert!(msg.contains("exit status: 3"), "{msg}");
}

#[test]
fn opened_channels_are_legacy_until_hello_and_forgotten_when_closed_silently() {
    let t0 = Instant::now();
    let mut relay = Relay::new(RelayConfig::default());
    let (legacy, out) = relay.add_opened(function(4), "redox-driver".into(), 7, t0);
    assert!(out.is_empty());
    let (ours, _) = relay.add_opened(function(5), "redox-driver".into(), 8, t0);
    relay.handle(Input::ClientConnected { client: 1 }, t0);
    // No start deadline: nothing is logged or changed as time passes.
    relay.handle(Input::Tick, t0 + Duration::from_secs(3600));
    let devices = relay.devices();
    assert_eq!(devices.len(), 2);
    assert!(devices
        .iter()
        .all(|d| d.support == ShutdownSupport::None && d.state == DriverState::Running));
    // Hello upgrades the second one and is answered with Welcome.
    relay.set_pid(ours, 42);
    let out = relay.handle(
        Input::DriverMessage {
            driver: ours,
            message: DriverMessage::Hello {
                version: 1,
                driver: "nvmed".into(),
                support: ShutdownSupport::TwoPhase,
            },
        },
        t0,
    );
    assert!(matches!(
        &out[..],
        [Output::ToDriver {
            message: DriverMessage::Welcome { .. },
            ..
        }]
    ));
    assert!(relay.said_hello(ours) && !relay.said_hello(legacy));
    let d = &relay.devices()[1];
    assert_eq!(
        (d.driver.as_str(), d.pid, d.support),
        ("nvmed", 42, ShutdownSupport::TwoPhase)
    );
    // A legacy driver's channel closing: it leaves the list without a word.
    assert!(relay.retire(legacy).is_empty());
    assert_eq!(relay.devices().len(), 1);
    let begin = ControlMessage::Begin {
        id: 1,
        address: addr(4),
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(1),
    };
    let out = relay.handle(
        Input::ClientMessage {
            client: 1,
            message: begin,
        },
        t0,
    );
    assert!(
        matches!(
            &out[..],
            [Output::ToClient {
                message: ControlMessage::DeviceError {
                    kind: DeviceErrorKind::UnknownDevice,
                    ..
                },
                ..
            }]
        ),
        "{out:?}"
    );
    // Reopening a function replaces a driver of this protocol that is still
    // listed: it is reported gone first.
    let (_, out) = relay.add_opened(function(5), "redox-driver".into(), 9, t0);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::ToClient {
                message: ControlMessage::DeviceError {
                    id: 0,
                    kind: DeviceErrorKind::DriverDied,
                    ..
                },
                ..
            }
        )),
        "{out:?}"
    );
    let devices = relay.devices();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        (devices[0].pid, devices[0].support),
        (9, ShutdownSupport::None)
    );
}

// --- participants -----------------------------------------------------------

fn register(name: &str, providers: Vec<Provider>) -> DriverMessage {
    DriverMessage::Register {
        version: 1,
        name: name.into(),
        support: ShutdownSupport::TwoPhase,
        providers,
    }
}

fn registered_id(out: &[Output], driver: DriverId) -> u32 {
    out.iter()
        .find_map(|o| match o {
            Output::ToDriver {
                driver: d,
                message: DriverMessage::Registered { id, version },
            } if *d == driver => {
                assert_eq!(*version, 1);
                Some(*id)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Registered for {driver}: {out:?}"))
}

#[test]
fn participants_register_are_listed_and_relayed_like_drivers() {
    let mut f = Fixture::new(1, false);
    f.start_all(ShutdownSupport::TwoPhase);
    let p = f.relay.add_participant(77, f.t0);
    assert!(
        f.relay.participants().is_empty(),
        "listed only once registered"
    );
    let out = f.drv(p, register("file", vec![Provider::Device(addr(4))]));
    let pid_id = registered_id(&out, p);
    assert!((1..=MAX_PARTICIPANT_ID).contains(&pid_id));
    assert_eq!(
        f.relay.participants(),
        vec![ParticipantInfo {
            id: pid_id,
            name: "file".into(),
            support: ShutdownSupport::TwoPhase,
            pid: 77,
            state: DriverState::Running,
            providers: vec![Provider::Device(addr(4))],
        }]
    );
    // Participants are not devices.
    assert_eq!(f.relay.devices().len(), 1);

    f.h(Input::ClientConnected { client: 1 });
    let out = f.ctl(1, ControlMessage::ListParticipants { id: 3 });
    assert!(matches!(
        &out[..],
        [Output::ToClient { client: 1, message: ControlMessage::Participants { id: 3, participants } }]
            if participants.len() == 1
    ));
    let out = f.ctl(
        1,
        ControlMessage::ParticipantBegin {
            id: 5,
            participant: pid_id,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(2),
        },
    );
    assert_eq!(sent_seq(&out, p), 1, "its own channel counts from 1");
    let out = f.drv(
        p,
        DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::from_millis(30),
        },
    );
    assert_eq!(
        out,
        vec![Output::ToClient {
            client: 1,
            message: ControlMessage::ParticipantBeginAck {
                id: 5,
                participant: pid_id,
                budget: Duration::from_millis(30)
            }
        }]
    );
    let out = f.ctl(
        1,
        ControlMessage::ParticipantFinish {
            id: 6,
            participant: pid_id,
            deadline: Duration::from_secs(2),
        },
    );
    assert_eq!(sent_seq(&out, p), 2);
    let out = f.drv(
        p,
        DriverMessage::FinishAck {
            seq: 2,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(25),
            detail: "unmounted".into(),
        },
    );
    assert!(matches!(
        &out[..],
        [Output::ToClient { client: 1, message: ControlMessage::ParticipantFinishAck { id: 6, participant, outcome: FinishOutcome::Clean, .. } }]
            if *participant == pid_id
    ));
}

#[test]
fn participant_names_are_unique_and_each_channel_gets_its_own_id() {
    let mut f = Fixture::new(0, false);
    let a = f.relay.add_participant(1, f.t0);
    let b = f.relay.add_participant(2, f.t0);
    let ida = registered_id(&f.drv(a, register("file", vec![])), a);
    let out = f.drv(b, register("file", vec![]));
    let (_, text) = error_before_close(&out, b);
    assert!(text.contains("\"file\" is in use"), "{text}");
    assert!(out.contains(&Output::CloseDriver { driver: b }));
    // Once the first is gone, the name is free again.
    f.h(Input::DriverChannelClosed { driver: a });
    let c = f.relay.add_participant(3, f.t0);
    let idc = registered_id(&f.drv(c, register("file", vec![])), c);
    assert_ne!(ida, idc);
    let states: Vec<(u32, DriverState)> = f
        .relay
        .participants()
        .iter()
        .map(|p| (p.id, p.state))
        .collect();
    assert_eq!(
        states,
        vec![(ida, DriverState::Gone), (idc, DriverState::Running)]
    );
}

#[test]
fn participant_channels_speak_register_not_hello_and_drivers_the_reverse() {
    let mut f = Fixture::new(1, false);
    let p = f.relay.add_participant(9, f.t0);
    let out = f.drv(
        p,
        DriverMessage::Hello {
            version: 1,
            driver: "x".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    assert!(error_before_close(&out, p)
        .1
        .contains("participant channel"));
    let out = f.drv(0, register("file", vec![]));
    assert!(error_before_close(&out, 0).1.contains("driver channel"));
    let q = f.relay.add_participant(10, f.t0);
    f.drv(q, register("db", vec![]));
    let out = f.drv(q, DriverMessage::Ready);
    assert!(error_before_close(&out, q)
        .1
        .contains("Ready on a participant"));
    let r = f.relay.add_participant(11, f.t0);
    f.drv(r, register("log", vec![]));
    let out = f.drv(r, register("log", vec![]));
    assert!(error_before_close(&out, r).1.contains("second Register"));
}

#[test]
fn a_participant_that_goes_away_fails_its_request_and_every_client_hears_it() {
    let mut f = Fixture::new(0, false);
    let p = f.relay.add_participant(5, f.t0);
    let id = registered_id(&f.drv(p, register("file", vec![Provider::AllDevices])), p);
    f.h(Input::ClientConnected { client: 1 });
    f.h(Input::ClientConnected { client: 2 });
    f.ctl(
        1,
        ControlMessage::ParticipantBegin {
            id: 4,
            participant: id,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(2),
        },
    );
    let out = f.h(Input::DriverChannelClosed { driver: p });
    let errors: Vec<(ClientId, u32, DeviceErrorKind)> = out
        .iter()
        .filter_map(|o| match o {
            Output::ToClient {
                client,
                message:
                    ControlMessage::ParticipantError {
                        id: rid,
                        participant,
                        kind,
                        message,
                    },
            } => {
                assert_eq!(*participant, id);
                assert!(
                    message.contains("participant closed its channel"),
                    "{message}"
                );
                Some((*client, *rid, *kind))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, 4, DeviceErrorKind::DriverDied),
            (1, 0, DeviceErrorKind::DriverDied),
            (2, 0, DeviceErrorKind::DriverDied)
        ]
    );
    // Later requests are answered by pcid.
    let out = f.ctl(
        1,
        ControlMessage::ParticipantFinish {
            id: 7,
            participant: id,
            deadline: Duration::from_secs(1),
        },
    );
    assert!(matches!(
        &out[..],
        [Output::ToClient {
            message: ControlMessage::ParticipantError {
                id: 7,
                kind: DeviceErrorKind::DriverDied,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn unknown_and_unregistered_participants_are_unknown_and_silent_channels_are_closed() {
    let mut f = Fixture::new(0, false);
    let p = f.relay.add_participant(5, f.t0);
    f.h(Input::ClientConnected { client: 1 });
    // Ids start at 1: the channel above holds id 1 but has not registered.
    for participant in [1, 99] {
        let out = f.ctl(
            1,
            ControlMessage::ParticipantBegin {
                id: 2,
                participant,
                kind: ShutdownKind::Poweroff,
                deadline: Duration::from_secs(1),
            },
        );
        assert!(
            matches!(
                &out[..],
                [Output::ToClient {
                    message: ControlMessage::ParticipantError {
                        kind: DeviceErrorKind::UnknownDevice,
                        ..
                    },
                    ..
                }]
            ),
            "{out:?}"
        );
    }
    assert_eq!(
        f.relay.next_deadline(),
        Some(f.t0 + T0_HELLO),
        "the registration deadline is the only deadline"
    );
    let out = f.at(Input::Tick, T0_HELLO);
    assert!(out.contains(&Output::CloseDriver { driver: p }), "{out:?}");
    assert!(f.relay.participants().is_empty());
    assert_eq!(f.relay.next_deadline(), None);
}

#[test]
fn participants_do_not_hold_up_readiness() {
    let mut f = Fixture::new(1, false);
    f.relay.add_participant(5, f.t0);
    let out = f.drv(
        0,
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Ready { .. })));
    let out = f.drv(0, DriverMessage::Ready);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Ready { ready: 1, total: 1 })),
        "{out:?}"
    );
}
