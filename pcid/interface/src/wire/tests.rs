//! Golden byte vectors, error cases and property tests for the codec.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).expect("ascii");
            u8::from_str_radix(s, 16).expect("hex digit")
        })
        .collect()
}

fn addr(segment: u16, bus: u8, device: u8, function: u8) -> PciAddress {
    PciAddress {
        segment,
        bus,
        device,
        function,
    }
}

fn golden_driver(msg: DriverMessage, expected_hex: &str) {
    let expected = hex(expected_hex);
    let encoded = msg.encode().expect("encodes");
    assert_eq!(encoded, expected, "encoding of {msg:?}");
    assert_eq!(DriverMessage::decode(&expected), Ok(msg));
}

fn golden_control(msg: ControlMessage, expected_hex: &str) {
    let expected = hex(expected_hex);
    let encoded = msg.encode().expect("encodes");
    assert_eq!(encoded, expected, "encoding of {msg:?}");
    assert_eq!(ControlMessage::decode(&expected), Ok(msg));
}

// --- golden vectors: driver channel -------------------------------------

#[test]
fn golden_hello() {
    golden_driver(
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        },
        "50434944 0100 01 00 00000000 0a000000
         0100 03 0500 6e766d6564",
    );
}

#[test]
fn golden_welcome() {
    golden_driver(
        DriverMessage::Welcome {
            version: 1,
            function: PciFunction {
                address: addr(0, 0, 4, 0),
                vendor: 0x1b36,
                device: 0x0010,
                class: 0x01,
                subclass: 0x08,
                interface: 0x02,
                revision: 0x02,
                parent: Some(addr(0, 0, 0x1c, 0)),
                backend: FunctionBackend::Simulated,
            },
        },
        "50434944 0100 02 00 00000000 16000000
         0100
         0000 00 04 00  361b 1000  01 08 02 02
         01 0000 00 1c 00
         01",
    );
}

#[test]
fn golden_welcome_sysfs_and_redox() {
    let base = PciFunction {
        address: addr(0, 1, 0, 0),
        vendor: 0x8086,
        device: 0x5845,
        class: 1,
        subclass: 8,
        interface: 2,
        revision: 0,
        parent: None,
        backend: FunctionBackend::LinuxSysfs {
            sysfs_path: "/s".into(),
        },
    };
    golden_driver(
        DriverMessage::Welcome {
            version: 1,
            function: base.clone(),
        },
        "50434944 0100 02 00 00000000 15000000
         0100  0000 01 00 00  8680 4558  01 08 02 00  00  02 0200 2f73",
    );
    golden_driver(
        DriverMessage::Welcome {
            version: 1,
            function: PciFunction {
                backend: FunctionBackend::Redox {
                    bars: vec![
                        Bar {
                            index: 0,
                            kind: BarKind::Memory64 {
                                prefetchable: false,
                            },
                            address: 0xfebf_0000,
                            size: 0x4000,
                        },
                        Bar {
                            index: 4,
                            kind: BarKind::Io,
                            address: 0xc000,
                            size: 0x20,
                        },
                    ],
                    legacy_irq: Some(11),
                },
                ..base.clone()
            },
        },
        "50434944 0100 02 00 00000000 38000000
         0100  0000 01 00 00  8680 4558  01 08 02 00  00
         03 02
         00 03 0000bffe00000000 0040000000000000
         04 05 00c0000000000000 2000000000000000
         01 0b",
    );
    golden_driver(
        DriverMessage::Welcome {
            version: 1,
            function: PciFunction {
                backend: FunctionBackend::Redox {
                    bars: vec![],
                    legacy_irq: None,
                },
                ..base
            },
        },
        "50434944 0100 02 00 00000000 13000000
         0100  0000 01 00 00  8680 4558  01 08 02 00  00  03 00 00",
    );
}

#[test]
fn redox_function_fields_are_checked_both_ways() {
    let frame = |backend: &str| {
        let payload = format!("0100 0000 01 00 00 8680 4558 01 08 02 00 00 {backend}");
        let payload = hex(&payload);
        let mut f = hex("50434944 0100 02 00 00000000");
        f.extend((payload.len() as u32).to_le_bytes());
        f.extend(payload);
        f
    };
    let bar = "00 03 0000bffe00000000 0040000000000000";
    for (backend, field, value) in [
        ("03 07", "bar count", 7),
        (
            "03 01 06 03 0000bffe00000000 0040000000000000 00",
            "bar index",
            6,
        ),
        (
            "03 01 00 09 0000bffe00000000 0040000000000000 00",
            "bar kind",
            9,
        ),
        (&format!("03 01 {bar} 02") as &str, "legacy irq", 2),
    ] {
        assert_eq!(
            DriverMessage::decode(&frame(backend)),
            Err(DecodeError::InvalidEnumValue { field, value }),
            "{backend}"
        );
    }
    let too_many = PciFunction {
        address: addr(0, 1, 0, 0),
        vendor: 0,
        device: 0,
        class: 0,
        subclass: 0,
        interface: 0,
        revision: 0,
        parent: None,
        backend: FunctionBackend::Redox {
            bars: vec![
                Bar {
                    index: 0,
                    kind: BarKind::Io,
                    address: 0,
                    size: 4
                };
                7
            ],
            legacy_irq: None,
        },
    };
    assert!(matches!(
        DriverMessage::Welcome {
            version: 1,
            function: too_many
        }
        .encode(),
        Err(EncodeError::InvalidBars(_))
    ));
}

#[test]
fn golden_ready() {
    golden_driver(
        DriverMessage::Ready,
        "50434944 0100 03 00 00000000 00000000",
    );
}

/// The example frame in PROTOCOL.md ("Example: a Begin frame").
#[test]
fn golden_begin_matches_protocol_md() {
    golden_driver(
        DriverMessage::Begin {
            seq: 7,
            kind: ShutdownKind::Reboot,
            deadline: Duration::from_millis(2500),
        },
        "50 43 49 44 01 00 04 00 07 00 00 00 09 00 00 00
         02 a0 25 26 00 00 00 00 00",
    );
}

/// The example in PROTOCOL.md §2.4, read from the document itself.
#[test]
fn protocol_md_begin_example_is_the_encoding() {
    let doc = include_str!("../../PROTOCOL.md");
    let section = doc
        .split("### 2.4 Example: a Begin frame")
        .nth(1)
        .expect("PROTOCOL.md has section 2.4");
    let block = section
        .split("```")
        .nth(1)
        .expect("section 2.4 has a code block");
    // Each line: two-digit hex bytes, then a description.
    let bytes: Vec<u8> = block
        .lines()
        .flat_map(|line| {
            line.split_whitespace()
                .take_while(|t| t.len() == 2 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|t| u8::from_str_radix(t, 16).expect("hex"))
                .collect::<Vec<_>>()
        })
        .collect();
    let msg = DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Reboot,
        deadline: Duration::from_millis(2500),
    };
    assert_eq!(bytes, msg.encode().expect("encodes"));
    assert_eq!(DriverMessage::decode(&bytes), Ok(msg));
}

#[test]
fn golden_begin_ack() {
    golden_driver(
        DriverMessage::BeginAck {
            seq: 7,
            budget: Duration::from_millis(4500),
        },
        "50434944 0100 05 00 07000000 08000000  20aa440000000000",
    );
}

#[test]
fn golden_finish() {
    golden_driver(
        DriverMessage::Finish {
            seq: 8,
            deadline: Duration::from_secs(6),
        },
        "50434944 0100 06 00 08000000 08000000  808d5b0000000000",
    );
}

#[test]
fn golden_shutdown() {
    golden_driver(
        DriverMessage::Shutdown {
            seq: 9,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(1),
        },
        "50434944 0100 07 00 09000000 09000000  01 40420f0000000000",
    );
}

#[test]
fn golden_finish_ack() {
    golden_driver(
        DriverMessage::FinishAck {
            seq: 8,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_micros(4_500_123),
            detail: "ok".into(),
        },
        "50434944 0100 08 00 08000000 0d000000  01 9baa440000000000 0200 6f6b",
    );
}

#[test]
fn golden_driver_error() {
    golden_driver(
        DriverMessage::Error {
            seq: 3,
            message: "bad".into(),
        },
        "50434944 0100 09 00 03000000 05000000  0300 626164",
    );
}

// --- golden vectors: control endpoint -----------------------------------

#[test]
fn golden_list_devices() {
    golden_control(
        ControlMessage::ListDevices { id: 1 },
        "50434944 0100 41 00 01000000 00000000",
    );
}

#[test]
fn golden_devices() {
    golden_control(
        ControlMessage::Devices {
            id: 1,
            devices: vec![
                DeviceInfo {
                    address: addr(0, 0, 4, 0),
                    parent: None,
                    driver: "nvmed".into(),
                    support: ShutdownSupport::TwoPhase,
                    pid: 1234,
                    state: DriverState::Running,
                },
                DeviceInfo {
                    address: addr(0, 2, 0, 1),
                    parent: Some(addr(0, 0, 0x1c, 0)),
                    driver: "x".into(),
                    support: ShutdownSupport::None,
                    pid: 0,
                    state: DriverState::Gone,
                },
            ],
        },
        "50434944 0100 42 00 01000000 29000000
         0200
         0000 00 04 00  00              03 d2040000 02 0500 6e766d6564
         0000 02 00 01  01 0000 00 1c 00 01 00000000 03 0100 78",
    );
}

#[test]
fn golden_control_begin() {
    golden_control(
        ControlMessage::Begin {
            id: 2,
            address: addr(0, 0, 4, 0),
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(5),
        },
        "50434944 0100 43 00 02000000 0e000000  0000 00 04 00  01 404b4c0000000000",
    );
}

#[test]
fn golden_control_finish() {
    golden_control(
        ControlMessage::Finish {
            id: 3,
            address: addr(0, 0, 4, 0),
            deadline: Duration::from_secs(5),
        },
        "50434944 0100 44 00 03000000 0d000000  0000 00 04 00  404b4c0000000000",
    );
}

#[test]
fn golden_control_shutdown() {
    golden_control(
        ControlMessage::Shutdown {
            id: 4,
            address: addr(1, 2, 3, 4),
            kind: ShutdownKind::Reboot,
            deadline: Duration::from_secs(1),
        },
        "50434944 0100 45 00 04000000 0e000000  0100 02 03 04  02 40420f0000000000",
    );
}

#[test]
fn golden_control_begin_ack() {
    golden_control(
        ControlMessage::BeginAck {
            id: 2,
            address: addr(0, 0, 4, 0),
            budget: Duration::from_millis(4500),
        },
        "50434944 0100 46 00 02000000 0d000000  0000 00 04 00  20aa440000000000",
    );
}

#[test]
fn golden_control_finish_ack() {
    golden_control(
        ControlMessage::FinishAck {
            id: 3,
            address: addr(0, 0, 4, 0),
            outcome: FinishOutcome::TimedOut,
            elapsed: Duration::from_secs(5),
            detail: String::new(),
        },
        "50434944 0100 47 00 03000000 10000000  0000 00 04 00  03 404b4c0000000000 0000",
    );
}

#[test]
fn golden_control_device_error() {
    golden_control(
        ControlMessage::DeviceError {
            id: 0,
            address: addr(0, 0, 4, 0),
            kind: DeviceErrorKind::DriverDied,
            message: "exit 1".into(),
        },
        "50434944 0100 48 00 00000000 0e000000  0000 00 04 00  02 0600 657869742031",
    );
}

#[test]
fn golden_control_error() {
    golden_control(
        ControlMessage::Error {
            id: 5,
            message: "?".into(),
        },
        "50434944 0100 49 00 05000000 03000000  0100 3f",
    );
}

// --- golden vectors: participants ---------------------------------------

#[test]
fn golden_register() {
    golden_driver(
        DriverMessage::Register {
            version: 1,
            name: "file".into(),
            support: ShutdownSupport::TwoPhase,
            providers: vec![
                Provider::Device(addr(0, 0, 1, 0)),
                Provider::Participant("lvm".into()),
                Provider::AllDevices,
            ],
        },
        "50434944 0100 0a 00 00000000 18000000
         0100 03 0400 66696c65
         0300  01 0000 00 01 00  02 0300 6c766d  03",
    );
}

#[test]
fn golden_registered() {
    golden_driver(
        DriverMessage::Registered { version: 1, id: 3 },
        "50434944 0100 0b 00 00000000 06000000  0100 03000000",
    );
}

#[test]
fn golden_list_participants_and_participants() {
    golden_control(
        ControlMessage::ListParticipants { id: 2 },
        "50434944 0100 4a 00 02000000 00000000",
    );
    golden_control(
        ControlMessage::Participants {
            id: 2,
            participants: vec![ParticipantInfo {
                id: 3,
                name: "file".into(),
                support: ShutdownSupport::TwoPhase,
                pid: 42,
                state: DriverState::Running,
                providers: vec![Provider::Device(addr(0, 0, 1, 0))],
            }],
        },
        "50434944 0100 4b 00 02000000 1a000000
         0100
         03000000 03 2a000000 02 0400 66696c65
         0100 01 0000 00 01 00",
    );
}

#[test]
fn golden_participant_requests_and_answers() {
    golden_control(
        ControlMessage::ParticipantBegin {
            id: 9,
            participant: 3,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(2),
        },
        "50434944 0100 4c 00 09000000 0d000000  03000000 01 80841e0000000000",
    );
    golden_control(
        ControlMessage::ParticipantFinish {
            id: 10,
            participant: 3,
            deadline: Duration::from_secs(1),
        },
        "50434944 0100 4d 00 0a000000 0c000000  03000000 40420f0000000000",
    );
    golden_control(
        ControlMessage::ParticipantShutdown {
            id: 11,
            participant: 3,
            kind: ShutdownKind::Reboot,
            deadline: Duration::from_secs(1),
        },
        "50434944 0100 4e 00 0b000000 0d000000  03000000 02 40420f0000000000",
    );
    golden_control(
        ControlMessage::ParticipantBeginAck {
            id: 9,
            participant: 3,
            budget: Duration::from_millis(30),
        },
        "50434944 0100 4f 00 09000000 0c000000  03000000 3075000000000000",
    );
    golden_control(
        ControlMessage::ParticipantFinishAck {
            id: 10,
            participant: 3,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(30),
            detail: "ok".into(),
        },
        "50434944 0100 50 00 0a000000 11000000  03000000 01 3075000000000000 0200 6f6b",
    );
    golden_control(
        ControlMessage::ParticipantError {
            id: 0,
            participant: 3,
            kind: DeviceErrorKind::DriverDied,
            message: "gone".into(),
        },
        "50434944 0100 51 00 00000000 0b000000  03000000 02 0400 676f6e65",
    );
}

#[test]
fn provider_lists_are_checked_both_ways() {
    let many = DriverMessage::Register {
        version: 1,
        name: "x".into(),
        support: ShutdownSupport::OnePhase,
        providers: vec![Provider::AllDevices; MAX_PROVIDERS + 1],
    };
    assert!(matches!(many.encode(), Err(EncodeError::TooMany { .. })));
    // An unknown provider kind, and a count above the maximum.
    let mut f = hex("50434944 0100 0a 00 00000000 09000000
         0100 02 0100 78  0100 07");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::InvalidEnumValue {
            field: "provider kind",
            value: 7
        })
    );
    f[HEADER_LEN + 6..HEADER_LEN + 8].copy_from_slice(&0x0101u16.to_le_bytes());
    assert!(matches!(
        DriverMessage::decode(&f),
        Err(DecodeError::TooMany { count: 257, .. })
    ));
}

// --- decode errors --------------------------------------------------------

fn begin_frame() -> Vec<u8> {
    DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Reboot,
        deadline: Duration::from_millis(2500),
    }
    .encode()
    .expect("encodes")
}

#[test]
fn error_bad_magic() {
    let mut f = begin_frame();
    f[0] = b'X';
    let e = DriverMessage::decode(&f).unwrap_err();
    assert_eq!(e, DecodeError::BadMagic { found: *b"XCID" });
    assert!(e.is_stream_fatal());
}

#[test]
fn error_unsupported_version() {
    let mut f = begin_frame();
    f[4] = 2;
    let e = DriverMessage::decode(&f).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedVersion { version: 2 });
    assert!(e.is_stream_fatal());
}

#[test]
fn error_oversize() {
    let mut f = begin_frame();
    f[12..16].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let e = DriverMessage::decode(&f).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Oversize {
            length: 0xffff_fff0,
            max: MAX_PAYLOAD_LEN as u32
        }
    );
    assert!(e.is_stream_fatal());
    // Exactly at the limit is accepted by the header check.
    f[12..16].copy_from_slice(&(MAX_PAYLOAD_LEN as u32).to_le_bytes());
    assert!(FrameHeader::parse(&f).is_ok());
}

#[test]
fn error_truncated() {
    let f = begin_frame();
    for cut in 0..f.len() {
        let e = DriverMessage::decode(&f[..cut]).unwrap_err();
        assert!(
            matches!(e, DecodeError::Truncated { .. }),
            "cut at {cut}: {e:?}"
        );
        assert!(!e.is_stream_fatal());
    }
}

#[test]
fn error_payload_shorter_than_message() {
    // Header says 1 byte of payload; Begin needs 9.
    let f = hex("50434944 0100 04 00 07000000 01000000 02");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::Truncated {
            what: "deadline",
            needed: 8,
            available: 0
        })
    );
}

#[test]
fn error_trailing_bytes() {
    let mut f = begin_frame();
    f.push(0);
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    // Payload longer than the message, as announced by the header.
    let f = hex("50434944 0100 03 00 00000000 02000000 0000");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::TrailingBytes { extra: 2 })
    );
}

#[test]
fn error_unknown_type_and_wrong_family() {
    let f = hex("50434944 0100 7f 00 01000000 00000000");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::UnknownMessageType { msg_type: 0x7f })
    );
    let list = ControlMessage::ListDevices { id: 1 }
        .encode()
        .expect("encodes");
    assert_eq!(
        DriverMessage::decode(&list),
        Err(DecodeError::UnknownMessageType { msg_type: 0x41 })
    );
    assert_eq!(
        ControlMessage::decode(&begin_frame()),
        Err(DecodeError::UnknownMessageType { msg_type: 0x04 })
    );
}

#[test]
fn error_flags() {
    let mut f = begin_frame();
    f[7] = 0x80;
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::UnsupportedFlags { flags: 0x80 })
    );
}

#[test]
fn error_invalid_enum_values() {
    let mut f = begin_frame();
    f[HEADER_LEN] = 0;
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::InvalidEnumValue {
            field: "kind",
            value: 0
        })
    );
    let f = hex("50434944 0100 01 00 00000000 05000000 0100 09 0000");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::InvalidEnumValue {
            field: "support",
            value: 9
        })
    );
}

#[test]
fn error_invalid_utf8() {
    let f = hex("50434944 0100 09 00 03000000 04000000 0200 c328");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::InvalidUtf8 { field: "message" })
    );
}

#[test]
fn error_string_too_long() {
    // A driver name claiming 256 bytes (max 255), checked before reading it.
    let f = hex("50434944 0100 01 00 00000000 05000000 0100 03 0001");
    assert_eq!(
        DriverMessage::decode(&f),
        Err(DecodeError::StringTooLong {
            field: "driver",
            len: 256,
            max: MAX_NAME_LEN
        })
    );
}

#[test]
fn error_invalid_address() {
    let f = hex("50434944 0100 44 00 03000000 0d000000  0000 00 20 00  404b4c0000000000");
    assert_eq!(
        ControlMessage::decode(&f),
        Err(DecodeError::InvalidAddress {
            device: 32,
            function: 0
        })
    );
}

#[test]
fn devices_count_larger_than_payload_is_truncated_not_allocated() {
    let f = hex("50434944 0100 42 00 01000000 02000000 ffff");
    assert!(matches!(
        ControlMessage::decode(&f),
        Err(DecodeError::Truncated { .. })
    ));
}

// --- encode errors --------------------------------------------------------

#[test]
fn encode_rejects_long_strings_and_bad_addresses() {
    let e = DriverMessage::Hello {
        version: 1,
        driver: "n".repeat(MAX_NAME_LEN + 1),
        support: ShutdownSupport::None,
    }
    .encode()
    .unwrap_err();
    assert_eq!(
        e,
        EncodeError::StringTooLong {
            field: "driver",
            len: MAX_NAME_LEN + 1,
            max: MAX_NAME_LEN
        }
    );
    let e = ControlMessage::Finish {
        id: 1,
        address: addr(0, 0, 0, 8),
        deadline: Duration::ZERO,
    }
    .encode()
    .unwrap_err();
    assert_eq!(
        e,
        EncodeError::InvalidAddress {
            device: 0,
            function: 8
        }
    );
}

#[test]
fn sysfs_path_of_maximum_length_fits_a_frame() {
    let msg = DriverMessage::Welcome {
        version: 1,
        function: PciFunction {
            address: addr(0, 0, 4, 0),
            vendor: 0x1b36,
            device: 0x10,
            class: 1,
            subclass: 8,
            interface: 2,
            revision: 2,
            parent: None,
            backend: FunctionBackend::LinuxSysfs {
                sysfs_path: "x".repeat(MAX_PATH_LEN),
            },
        },
    };
    let f = msg.encode().expect("encodes");
    assert!(f.len() <= MAX_FRAME_LEN);
    assert_eq!(DriverMessage::decode(&f), Ok(msg));
}

#[test]
fn too_many_devices_is_an_encode_error() {
    let d = DeviceInfo {
        address: addr(0, 0, 4, 0),
        parent: Some(addr(0, 0, 1, 0)),
        driver: "d".repeat(MAX_NAME_LEN),
        support: ShutdownSupport::TwoPhase,
        pid: 1,
        state: DriverState::Running,
    };
    let e = ControlMessage::Devices {
        id: 1,
        devices: vec![d; 300],
    }
    .encode()
    .unwrap_err();
    assert!(matches!(e, EncodeError::FrameTooLarge { .. }), "{e:?}");
}

#[test]
fn sub_microsecond_durations_truncate_and_huge_ones_saturate() {
    let f = DriverMessage::BeginAck {
        seq: 1,
        budget: Duration::from_nanos(1_999),
    }
    .encode()
    .expect("encodes");
    assert_eq!(
        DriverMessage::decode(&f),
        Ok(DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::from_micros(1)
        })
    );
    let f = DriverMessage::BeginAck {
        seq: 1,
        budget: Duration::MAX,
    }
    .encode()
    .expect("encodes");
    assert_eq!(
        DriverMessage::decode(&f),
        Ok(DriverMessage::BeginAck {
            seq: 1,
            budget: Duration::from_micros(u64::MAX)
        })
    );
}

// --- property tests ------------------------------------------------------

fn duration() -> impl Strategy<Value = Duration> {
    any::<u64>().prop_map(Duration::from_micros)
}

fn address() -> impl Strategy<Value = PciAddress> {
    (any::<u16>(), any::<u8>(), 0u8..32, 0u8..8).prop_map(|(segment, bus, device, function)| {
        PciAddress {
            segment,
            bus,
            device,
            function,
        }
    })
}

fn kind() -> impl Strategy<Value = ShutdownKind> {
    prop_oneof![Just(ShutdownKind::Poweroff), Just(ShutdownKind::Reboot)]
}

fn support() -> impl Strategy<Value = ShutdownSupport> {
    prop_oneof![
        Just(ShutdownSupport::None),
        Just(ShutdownSupport::OnePhase),
        Just(ShutdownSupport::TwoPhase)
    ]
}

fn outcome() -> impl Strategy<Value = FinishOutcome> {
    prop_oneof![
        Just(FinishOutcome::Clean),
        Just(FinishOutcome::Abrupt),
        Just(FinishOutcome::TimedOut),
        Just(FinishOutcome::Failed)
    ]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,100}"
}

fn backend() -> impl Strategy<Value = FunctionBackend> {
    prop_oneof![
        Just(FunctionBackend::Simulated),
        text().prop_map(|sysfs_path| FunctionBackend::LinuxSysfs { sysfs_path }),
        (
            proptest::collection::vec((0u8..6, 1u8..6, any::<u64>(), any::<u64>()), 0..=6),
            proptest::option::of(any::<u8>())
        )
            .prop_map(|(bars, legacy_irq)| FunctionBackend::Redox {
                bars: bars
                    .into_iter()
                    .map(|(index, kind, address, size)| Bar {
                        index,
                        kind: match kind {
                            1 => BarKind::Memory32 {
                                prefetchable: false
                            },
                            2 => BarKind::Memory32 { prefetchable: true },
                            3 => BarKind::Memory64 {
                                prefetchable: false
                            },
                            4 => BarKind::Memory64 { prefetchable: true },
                            _ => BarKind::Io,
                        },
                        address,
                        size,
                    })
                    .collect(),
                legacy_irq,
            }),
    ]
}

fn function() -> impl Strategy<Value = PciFunction> {
    (
        address(),
        any::<u16>(),
        any::<u16>(),
        any::<[u8; 4]>(),
        proptest::option::of(address()),
        backend(),
    )
        .prop_map(
            |(address, vendor, device, c, parent, backend)| PciFunction {
                address,
                vendor,
                device,
                class: c[0],
                subclass: c[1],
                interface: c[2],
                revision: c[3],
                parent,
                backend,
            },
        )
}

fn driver_message() -> impl Strategy<Value = DriverMessage> {
    prop_oneof![
        (any::<u16>(), "\\PC{0,60}", support()).prop_map(|(version, driver, support)| {
            DriverMessage::Hello {
                version,
                driver,
                support,
            }
        }),
        (any::<u16>(), function())
            .prop_map(|(version, function)| DriverMessage::Welcome { version, function }),
        Just(DriverMessage::Ready),
        (any::<u32>(), kind(), duration()).prop_map(|(seq, kind, deadline)| {
            DriverMessage::Begin {
                seq,
                kind,
                deadline,
            }
        }),
        (any::<u32>(), duration())
            .prop_map(|(seq, budget)| DriverMessage::BeginAck { seq, budget }),
        (any::<u32>(), duration())
            .prop_map(|(seq, deadline)| DriverMessage::Finish { seq, deadline }),
        (any::<u32>(), kind(), duration()).prop_map(|(seq, kind, deadline)| {
            DriverMessage::Shutdown {
                seq,
                kind,
                deadline,
            }
        }),
        (any::<u32>(), outcome(), duration(), text()).prop_map(
            |(seq, outcome, elapsed, detail)| DriverMessage::FinishAck {
                seq,
                outcome,
                elapsed,
                detail,
            }
        ),
        (any::<u32>(), text()).prop_map(|(seq, message)| DriverMessage::Error { seq, message }),
        (
            any::<u16>(),
            "\\PC{0,40}",
            support(),
            proptest::collection::vec(provider(), 0..8)
        )
            .prop_map(
                |(version, name, support, providers)| DriverMessage::Register {
                    version,
                    name,
                    support,
                    providers,
                }
            ),
        (any::<u16>(), any::<u32>())
            .prop_map(|(version, id)| DriverMessage::Registered { version, id }),
    ]
}

fn provider() -> impl Strategy<Value = Provider> {
    prop_oneof![
        address().prop_map(Provider::Device),
        "\\PC{0,30}".prop_map(Provider::Participant),
        Just(Provider::AllDevices),
    ]
}

fn participant_info() -> impl Strategy<Value = ParticipantInfo> {
    (
        any::<u32>(),
        "\\PC{0,40}",
        support(),
        any::<u32>(),
        prop_oneof![Just(DriverState::Running), Just(DriverState::Gone)],
        proptest::collection::vec(provider(), 0..6),
    )
        .prop_map(
            |(id, name, support, pid, state, providers)| ParticipantInfo {
                id,
                name,
                support,
                pid,
                state,
                providers,
            },
        )
}

fn device_info() -> impl Strategy<Value = DeviceInfo> {
    (
        address(),
        proptest::option::of(address()),
        "\\PC{0,60}",
        support(),
        any::<u32>(),
        prop_oneof![
            Just(DriverState::Starting),
            Just(DriverState::Running),
            Just(DriverState::Gone)
        ],
    )
        .prop_map(
            |(address, parent, driver, support, pid, state)| DeviceInfo {
                address,
                parent,
                driver,
                support,
                pid,
                state,
            },
        )
}

fn error_kind() -> impl Strategy<Value = DeviceErrorKind> {
    prop_oneof![
        Just(DeviceErrorKind::UnknownDevice),
        Just(DeviceErrorKind::DriverDied),
        Just(DeviceErrorKind::ProtocolViolation),
        Just(DeviceErrorKind::NotSupported),
        Just(DeviceErrorKind::Busy),
    ]
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        any::<u32>().prop_map(|id| ControlMessage::ListDevices { id }),
        (
            any::<u32>(),
            proptest::collection::vec(device_info(), 0..40)
        )
            .prop_map(|(id, devices)| ControlMessage::Devices { id, devices }),
        (any::<u32>(), address(), kind(), duration()).prop_map(|(id, address, kind, deadline)| {
            ControlMessage::Begin {
                id,
                address,
                kind,
                deadline,
            }
        }),
        (any::<u32>(), address(), duration()).prop_map(|(id, address, deadline)| {
            ControlMessage::Finish {
                id,
                address,
                deadline,
            }
        }),
        (any::<u32>(), address(), kind(), duration()).prop_map(|(id, address, kind, deadline)| {
            ControlMessage::Shutdown {
                id,
                address,
                kind,
                deadline,
            }
        }),
        (any::<u32>(), address(), duration()).prop_map(|(id, address, budget)| {
            ControlMessage::BeginAck {
                id,
                address,
                budget,
            }
        }),
        (any::<u32>(), address(), outcome(), duration(), text()).prop_map(
            |(id, address, outcome, elapsed, detail)| ControlMessage::FinishAck {
                id,
                address,
                outcome,
                elapsed,
                detail,
            }
        ),
        (any::<u32>(), address(), error_kind(), text()).prop_map(|(id, address, kind, message)| {
            ControlMessage::DeviceError {
                id,
                address,
                kind,
                message,
            }
        }),
        (any::<u32>(), text()).prop_map(|(id, message)| ControlMessage::Error { id, message }),
        any::<u32>().prop_map(|id| ControlMessage::ListParticipants { id }),
        (
            any::<u32>(),
            proptest::collection::vec(participant_info(), 0..10)
        )
            .prop_map(|(id, participants)| ControlMessage::Participants { id, participants }),
        (any::<u32>(), any::<u32>(), kind(), duration()).prop_map(
            |(id, participant, kind, deadline)| ControlMessage::ParticipantBegin {
                id,
                participant,
                kind,
                deadline,
            }
        ),
        (any::<u32>(), any::<u32>(), duration()).prop_map(|(id, participant, deadline)| {
            ControlMessage::ParticipantFinish {
                id,
                participant,
                deadline,
            }
        }),
        (any::<u32>(), any::<u32>(), kind(), duration()).prop_map(
            |(id, participant, kind, deadline)| ControlMessage::ParticipantShutdown {
                id,
                participant,
                kind,
                deadline,
            }
        ),
        (any::<u32>(), any::<u32>(), duration()).prop_map(|(id, participant, budget)| {
            ControlMessage::ParticipantBeginAck {
                id,
                participant,
                budget,
            }
        }),
        (any::<u32>(), any::<u32>(), outcome(), duration(), text()).prop_map(
            |(id, participant, outcome, elapsed, detail)| ControlMessage::ParticipantFinishAck {
                id,
                participant,
                outcome,
                elapsed,
                detail,
            }
        ),
        (any::<u32>(), any::<u32>(), error_kind(), text()).prop_map(
            |(id, participant, kind, message)| ControlMessage::ParticipantError {
                id,
                participant,
                kind,
                message,
            }
        ),
    ]
}

/// Mutations applied to a valid frame to reach deep decoder paths.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    FixLength,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Mutation::Append),
        Just(Mutation::FixLength),
    ]
}

fn mutate(mut f: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Set(i, b) => {
                if !f.is_empty() {
                    let i = i % f.len();
                    f[i] = *b;
                }
            }
            Mutation::Truncate(n) => {
                let n = n % (f.len() + 1);
                f.truncate(n);
            }
            Mutation::Append(bytes) => f.extend_from_slice(bytes),
            Mutation::FixLength => {
                if f.len() >= HEADER_LEN {
                    let len = (f.len() - HEADER_LEN) as u32;
                    f[12..16].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
    }
    f
}

fn canonical(mut f: Vec<u8>, seq: u32) -> Vec<u8> {
    f[8..12].copy_from_slice(&seq.to_le_bytes());
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn driver_round_trip(msg in driver_message()) {
        let f = msg.encode().expect("generated messages fit");
        prop_assert!(f.len() <= MAX_FRAME_LEN);
        let h = FrameHeader::parse(&f).expect("header");
        prop_assert_eq!(h.frame_len(), f.len());
        prop_assert_eq!(h.seq, msg.seq());
        prop_assert_eq!(DriverMessage::decode(&f), Ok(msg));
    }

    #[test]
    fn control_round_trip(msg in control_message()) {
        let f = msg.encode().expect("generated messages fit");
        let h = FrameHeader::parse(&f).expect("header");
        prop_assert_eq!(h.frame_len(), f.len());
        prop_assert_eq!(h.seq, msg.seq());
        prop_assert_eq!(ControlMessage::decode(&f), Ok(msg));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = DriverMessage::decode(&bytes);
        let _ = ControlMessage::decode(&bytes);
        let _ = FrameHeader::parse(&bytes);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_payload_behind_a_valid_header(
        msg_type in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        f.push(msg_type);
        f.push(0);
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        f.extend_from_slice(&payload);
        let _ = DriverMessage::decode(&f);
        let _ = ControlMessage::decode(&f);
    }

    #[test]
    fn decode_never_panics_on_mutated_frames(
        msg in driver_message(),
        ctl in control_message(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let f = mutate(msg.encode().expect("fits"), &ms);
        if let Ok(back) = DriverMessage::decode(&f) {
            // Whatever decodes re-encodes to the same bytes, except that the
            // header's sequence field of a message without one is written as 0.
            prop_assert_eq!(back.encode().expect("re-encodes"), canonical(f, back.seq()));
        }
        let f = mutate(ctl.encode().expect("fits"), &ms);
        if let Ok(back) = ControlMessage::decode(&f) {
            prop_assert_eq!(back.encode().expect("re-encodes"), f);
        }
    }
}

/// The participant examples in PROTOCOL.md §4/§5, read from the document:
/// each is written `` `50 43 49 44 … | …` `` after the message it shows.
#[test]
fn protocol_md_participant_examples_are_the_encoding() {
    let doc = include_str!("../../PROTOCOL.md").replace('\n', " ");
    let example = |after: &str| -> Vec<u8> {
        let start = doc
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} not in PROTOCOL.md"));
        let rest = &doc[start..];
        let open = rest.find("`50 43 49 44").expect("an example follows");
        let body = &rest[open + 1..];
        let close = body.find('`').expect("closed");
        hex(&body[..close].replace('|', " "))
    };
    let register = DriverMessage::Register {
        version: 1,
        name: "file".into(),
        support: ShutdownSupport::TwoPhase,
        providers: vec![
            Provider::Device(addr(0, 0, 1, 0)),
            Provider::Participant("lvm".into()),
            Provider::AllDevices,
        ],
    };
    assert_eq!(
        example("participant \"lvm\", every device] }`"),
        register.encode().unwrap()
    );
    assert_eq!(
        example("`Registered { version: 1, id: 3 }`"),
        DriverMessage::Registered { version: 1, id: 3 }
            .encode()
            .unwrap()
    );
    let list = ControlMessage::Participants {
        id: 2,
        participants: vec![ParticipantInfo {
            id: 3,
            name: "file".into(),
            support: ShutdownSupport::TwoPhase,
            pid: 42,
            state: DriverState::Running,
            providers: vec![Provider::Device(addr(0, 0, 1, 0))],
        }],
    };
    assert_eq!(
        example("[device 0000:00:01.0]} ] }`"),
        list.encode().unwrap()
    );
}
