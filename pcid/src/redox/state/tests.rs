use std::time::Duration;

use pcid_interface::protocol::{ShutdownKind, ShutdownSupport};

use super::*;
use crate::redox::config_space::model::{addr, Model};
use crate::redox::driver_interface::{PciFeature, Response};
use crate::redox::enumerate::enumerate;

const ROOT: Caller = Caller { uid: 0, pid: 10 };
const USER: Caller = Caller { uid: 1000, pid: 11 };
const FILE: OpenFlags = OpenFlags {
    directory: false,
    stat: false,
};
const DIR: OpenFlags = OpenFlags {
    directory: true,
    stat: false,
};
const STAT: OpenFlags = OpenFlags {
    directory: false,
    stat: true,
};

fn nvme() -> PciAddress {
    addr(0, 0, 4, 0)
}

/// An NVMe controller at 00:04.0 (64-bit BAR0, MSI-X, INTA with line 0xFF)
/// and a multi-function device at 00:1f (LPC bridge, AHCI).
fn machine() -> Model {
    let mut m = Model::default();
    let n = nvme();
    m.function(n, 0x1B36, 0x0010, 0x0108_0202, 0);
    m.bar_mem64(n, 0, 0xFEBF_0000, 0x4000, false);
    m.capabilities(n, &[(0x40, 0x11 | (64 << 16) | (1 << 31))]);
    m.set(n, 0x3C, 0x0000_01FF);
    m.function(addr(0, 0, 0x1F, 0), 0x8086, 0x2918, 0x0601_0002, 0x80);
    m.function(addr(0, 0, 0x1F, 2), 0x8086, 0x2922, 0x0106_0102, 0);
    m
}

fn state(m: &Model) -> SchemeState {
    SchemeState::new(enumerate(m))
}

fn hello() -> DriverMessage {
    DriverMessage::Hello {
        version: 1,
        driver: "nvmed".into(),
        support: ShutdownSupport::TwoPhase,
    }
}

/// Reads everything queued on a handle.
fn drain(s: &mut SchemeState, id: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    while let Ok(n) = s.read(id, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn names_are_redox_pcid_names() {
    assert_eq!(function_name(nvme()), "00-00--04.0");
    assert_eq!(function_name(addr(0x12, 0x3a, 0x1f, 7)), "12-3a--1f.7");
    assert_eq!(function_name(addr(0x1234, 0, 0, 0)), "1234-00--00.0");
    for (name, a) in [
        ("00-00--04.0", nvme()),
        ("0000-00--04.0", nvme()),
        ("0-0--4.0", nvme()),
        ("12-3a--1f.7", addr(0x12, 0x3a, 0x1f, 7)),
    ] {
        assert_eq!(parse_function_name(name), Some(a), "{name}");
    }
    for bad in [
        "",
        "00-00-04.0",
        "00-00--20.0",
        "00-00--04.8",
        "x-00--04.0",
        "00-00--04.",
        "00:00:04.0",
    ] {
        assert_eq!(parse_function_name(bad), None, "{bad:?}");
    }
}

#[test]
fn the_root_lists_functions_only_and_access_and_control_open_unlisted() {
    let m = machine();
    let mut s = state(&m);
    let (root, ev) = s.open("", DIR, USER, &m).unwrap();
    assert_eq!(ev, None);
    assert_eq!(
        s.entries(root).unwrap(),
        ["00-00--04.0", "00-00--1f.0", "00-00--1f.2"]
    );
    assert_eq!(s.size(root).unwrap(), 3);
    assert_eq!(s.path(root).unwrap(), "/scheme/pci/");
    let (dir, _) = s.open("00-00--04.0/", FILE, USER, &m).unwrap();
    // As in Redox's pcid: the channel and nothing else (BARs come in Welcome).
    assert_eq!(s.entries(dir).unwrap(), ["channel"]);
    assert_eq!(s.size(dir).unwrap(), 1);
    assert_eq!(s.path(dir).unwrap(), "/scheme/pci/00-00--04.0/");
    assert!(s.open("access", FILE, ROOT, &m).is_ok());
    assert!(s.open("control", FILE, ROOT, &m).is_ok());
    for missing in [
        "00-00--05.0",
        "00-00--04.0/nope",
        "00-00--04.0/bars",
        "junk",
        "00-00--04.0channel",
    ] {
        assert_eq!(
            s.open(missing, FILE, ROOT, &m),
            Err(SchemeError::NotFound),
            "{missing}"
        );
    }
}

#[test]
fn directory_expectations_are_checked_as_redox_does() {
    let m = machine();
    let mut s = state(&m);
    assert_eq!(s.open("", FILE, USER, &m), Err(SchemeError::IsDirectory));
    assert_eq!(
        s.open("00-00--04.0", FILE, USER, &m),
        Err(SchemeError::IsDirectory)
    );
    assert!(s.open("00-00--04.0", DIR, USER, &m).is_ok());
    assert_eq!(
        s.open("00-00--04.0/channel/", FILE, USER, &m),
        Err(SchemeError::NotDirectory)
    );
    assert_eq!(
        s.open("access", DIR, ROOT, &m),
        Err(SchemeError::NotDirectory)
    );
    let (root, _) = s.open("/", FILE, USER, &m).unwrap();
    assert_eq!(s.read(root, &mut [0; 4]), Err(SchemeError::IsDirectory));
    assert_eq!(s.write(root, b"x", USER, &m), Err(SchemeError::BadHandle));
}

#[test]
fn channel_is_root_only_exclusive_and_enables_the_function_on_open() {
    let m = machine();
    let mut s = state(&m);
    assert_eq!(
        s.open("00-00--04.0/channel", FILE, USER, &m),
        Err(SchemeError::PermissionDenied)
    );
    assert!(m.writes().is_empty() || m.writes().iter().all(|w| w.offset != 0x04));
    let (id, ev) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    let Some(Event::ChannelOpened {
        function,
        handle,
        pid,
    }) = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!((function.address, handle, pid), (nvme(), id, 10));
    assert_eq!(function.class, 1);
    // Enabled: bus master + memory + I/O, MSI-X off, line 0xFF -> 9.
    assert_eq!(m.get(nvme(), 0x04) & 0x7, 0x7);
    assert_eq!(m.get(nvme(), 0x40) >> 31, 0);
    assert_eq!(m.get(nvme(), 0x3C) & 0xFF, 9);
    assert_eq!(
        s.open("/0000-00--04.0/channel", FILE, ROOT, &m),
        Err(SchemeError::InUse)
    );
    assert_eq!(s.path(id).unwrap(), "/scheme/pci/00-00--04.0/channel");
    assert_eq!(s.close(id), Some(Event::ChannelClosed { address: nvme() }));
    assert!(s.open("00-00--04.0/channel", FILE, ROOT, &m).is_ok());
    assert_eq!(s.close(id), None, "closing twice is harmless");
}

#[test]
fn stat_opens_have_no_side_effects_and_need_no_root() {
    let m = machine();
    let mut s = state(&m);
    let (id, ev) = s.open("00-00--04.0/channel", STAT, USER, &m).unwrap();
    assert_eq!(ev, None);
    assert!(m.writes().iter().all(|w| w.offset != 0x04), "not enabled");
    assert_eq!(s.node(id).unwrap(), Node::Channel(nvme()));
    assert_eq!(s.read(id, &mut [0; 4]), Err(SchemeError::BadHandle));
    assert_eq!(
        s.write(id, b"\x01\0\0\0", USER, &m),
        Err(SchemeError::BadHandle)
    );
    assert_eq!(s.fcntl(id, F_GETFL), Ok(0));
    // The channel is still free.
    assert!(s.open("00-00--04.0/channel", FILE, ROOT, &m).is_ok());
    assert_eq!(s.close(id), None);
}

#[test]
fn fcntl_getfl_and_setfl_are_answered_on_every_handle() {
    let m = machine();
    let mut s = state(&m);
    let mut ids = Vec::new();
    for (path, flags) in [
        ("", DIR),
        ("00-00--04.0", DIR),
        ("00-00--04.0/channel", FILE),
        ("access", FILE),
        ("control", FILE),
    ] {
        ids.push(s.open(path, flags, ROOT, &m).unwrap().0);
    }
    for id in ids {
        assert_eq!(s.fcntl(id, F_GETFL), Ok(0));
        assert_eq!(s.fcntl(id, F_SETFL), Ok(0));
        assert_eq!(s.fcntl(id, 99), Err(SchemeError::Invalid));
    }
    assert_eq!(s.fcntl(9999, F_GETFL), Err(SchemeError::BadHandle));
}

#[test]
fn a_redox_driver_request_is_answered_with_length_and_response() {
    let m = machine();
    let mut s = state(&m);
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    assert_eq!(s.read(id, &mut [0; 8]), Err(SchemeError::WouldBlock));
    let (n, ev) = s
        .write(id, &Request::RequestConfig.encode(), ROOT, &m)
        .unwrap();
    assert_eq!(n, 4);
    assert_eq!(
        ev,
        [
            Event::DriverRequest {
                address: nvme(),
                pid: 10,
                request: Request::RequestConfig
            },
            Event::Readable { handle: id }
        ]
    );
    assert!(s.readable(id).unwrap());
    let bytes = drain(&mut s, id);
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 8 + len);
    let Response::Config(config) = Response::decode(&bytes[8..]).unwrap() else {
        panic!()
    };
    assert_eq!(config.addr, nvme());
    assert_eq!(config.legacy_interrupt_line.map(|l| l.irq), Some(9));
    assert_eq!(
        config.bars[0],
        crate::redox::driver_interface::PciBar::Memory64 {
            addr: 0xFEBF_0000,
            size: 0x4000
        }
    );
    // Reads are strictly in request order.
    for r in [Request::RequestFeatures, Request::ReadConfig(0)] {
        s.write(id, &r.encode(), ROOT, &m).unwrap();
    }
    let bytes = drain(&mut s, id);
    let first = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(
        Response::decode(&bytes[8..first]).unwrap(),
        Response::AllFeatures(vec![PciFeature::MsiX])
    );
    assert_eq!(
        Response::decode(&bytes[first + 8..]).unwrap(),
        Response::ReadConfig(0x0010_1B36)
    );
    // A request that does not decode fails the write.
    assert_eq!(
        s.write(id, &[42, 0, 0, 0], ROOT, &m),
        Err(SchemeError::Invalid)
    );
    assert_eq!(s.write(id, &[1, 0], ROOT, &m), Err(SchemeError::Invalid));
}

#[test]
fn protocol_frames_and_requests_share_a_channel() {
    let m = machine();
    let mut s = state(&m);
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    // A frame split across writes: the second half starts with a byte that
    // would otherwise be a request's variant index.
    let frame = hello().encode().unwrap();
    let (n, ev) = s.write(id, &frame[..5], ROOT, &m).unwrap();
    assert_eq!((n, ev), (5, vec![]));
    let (_, ev) = s.write(id, &frame[5..], ROOT, &m).unwrap();
    assert_eq!(
        ev,
        vec![Event::DriverMessage {
            address: nvme(),
            pid: 10,
            message: hello()
        }]
    );
    // After Hello, Redox requests are still answered.
    let (_, ev) = s
        .write(id, &Request::EnableDevice.encode(), ROOT, &m)
        .unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        drain(&mut s, id),
        Response::EnabledDevice.frame(),
        "length-prefixed response"
    );
    // Two frames in one write.
    let mut two = DriverMessage::Ready.encode().unwrap();
    two.extend(DriverMessage::Ready.encode().unwrap());
    let (_, ev) = s.write(id, &two, ROOT, &m).unwrap();
    assert_eq!(ev.len(), 2);
    // Frames pcid sends and responses are read back in the order queued.
    let begin = DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(5),
    };
    s.send_to_driver(nvme(), &begin).unwrap();
    s.write(id, &Request::ReadConfig(0).encode(), ROOT, &m)
        .unwrap();
    let mut expected = begin.encode().unwrap();
    expected.extend(Response::ReadConfig(0x0010_1B36).frame());
    assert_eq!(drain(&mut s, id), expected);
}

#[test]
fn garbage_frames_are_reported_once_and_then_dropped() {
    let m = machine();
    let mut s = state(&m);
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    let mut garbage = b"PCIX".to_vec();
    garbage.extend([0xAB; 28]);
    let (_, ev) = s.write(id, &garbage, ROOT, &m).unwrap();
    assert!(matches!(&ev[..], [Event::DriverBadFrame { .. }]), "{ev:?}");
    let (n, ev) = s.write(id, &hello().encode().unwrap(), ROOT, &m).unwrap();
    assert!(n > 0 && ev.is_empty());
}

#[test]
fn pcid_to_driver_frames_queue_and_make_the_handle_readable() {
    let m = machine();
    let mut s = state(&m);
    assert_eq!(
        s.send_to_driver(nvme(), &DriverMessage::Ready),
        Err(SendError::NotOpen)
    );
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    assert!(!s.readable(id).unwrap());
    let begin = DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(5),
    };
    assert_eq!(s.send_to_driver(nvme(), &begin), Ok(id));
    assert!(s.readable(id).unwrap());
    let bytes = drain(&mut s, id);
    assert!(!s.readable(id).unwrap());
    assert_eq!(DriverMessage::decode(&bytes).unwrap(), begin);
}

#[test]
fn closing_from_pcid_drains_then_reads_eof_and_refuses_writes() {
    let m = machine();
    let mut s = state(&m);
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    s.send_to_driver(nvme(), &DriverMessage::Ready).unwrap();
    assert_eq!(s.close_driver(nvme()), Some(id));
    assert!(s.readable(id).unwrap());
    assert!(!drain(&mut s, id).is_empty());
    assert_eq!(s.read(id, &mut [0; 8]), Ok(0));
    assert!(s.readable(id).unwrap(), "EOF is readable");
    assert_eq!(s.write(id, b"x", ROOT, &m), Err(SchemeError::Closed));
    assert_eq!(
        s.write(id, &Request::RequestConfig.encode(), ROOT, &m),
        Err(SchemeError::Closed)
    );
    assert_eq!(
        s.send_to_driver(nvme(), &DriverMessage::Ready),
        Err(SendError::Closed)
    );
}

#[test]
fn a_peer_that_never_reads_hits_the_queue_limit() {
    let m = machine();
    let mut s = state(&m);
    let (id, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    let msg = DriverMessage::Error {
        seq: 1,
        message: "x".repeat(1000),
    };
    let mut sent = 0;
    let err = loop {
        match s.send_to_driver(nvme(), &msg) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, SendError::QueueFull);
    assert!(sent > 100);
    // Requests are refused too rather than queued without bound.
    assert_eq!(
        s.write(id, &Request::RequestConfig.encode(), ROOT, &m),
        Err(SchemeError::Invalid)
    );
}

#[test]
fn access_is_root_only_and_serves_calls() {
    let m = machine();
    let mut s = state(&m);
    assert_eq!(
        s.open("access", FILE, USER, &m),
        Err(SchemeError::PermissionDenied)
    );
    let (id, ev) = s.open("access", FILE, ROOT, &m).unwrap();
    assert_eq!(ev, None);
    let mut vendor = [0u8; 2];
    let meta = [access::READ, access::pack(nvme(), 0)];
    assert_eq!(s.call(id, &mut vendor, &meta, &m), Ok(2));
    assert_eq!(u16::from_le_bytes(vendor), 0x1B36);
    let meta = [access::WRITE, access::pack(nvme(), 0x3C)];
    assert_eq!(s.call(id, &mut [11], &meta, &m), Ok(1));
    assert_eq!(m.get(nvme(), 0x3C), 0x0000_010B);
    assert_eq!(
        s.call(id, &mut vendor, &[7, 0], &m),
        Err(SchemeError::Invalid)
    );
    assert_eq!(s.read(id, &mut [0; 4]), Err(SchemeError::BadHandle));
    assert_eq!(s.write(id, b"x", ROOT, &m), Err(SchemeError::BadHandle));
    assert_eq!(s.path(id).unwrap(), "/scheme/pci/access");
    // `call` on anything else is refused.
    let (dir, _) = s.open("00-00--04.0", DIR, USER, &m).unwrap();
    assert_eq!(
        s.call(dir, &mut vendor, &meta, &m),
        Err(SchemeError::BadHandle)
    );
}

#[test]
fn control_clients_are_root_only_and_numbered() {
    let m = machine();
    let mut s = state(&m);
    assert_eq!(
        s.open("control", FILE, USER, &m),
        Err(SchemeError::PermissionDenied)
    );
    let (h1, e1) = s.open("control", FILE, ROOT, &m).unwrap();
    let (h2, e2) = s.open("/control", FILE, ROOT, &m).unwrap();
    assert_eq!(e1, Some(Event::ClientOpened { client: 1 }));
    assert_eq!(e2, Some(Event::ClientOpened { client: 2 }));
    let list = ControlMessage::ListDevices { id: 3 };
    let (_, ev) = s.write(h2, &list.encode().unwrap(), ROOT, &m).unwrap();
    assert_eq!(
        ev,
        vec![Event::ClientMessage {
            client: 2,
            message: list
        }]
    );
    // A control handle never speaks Redox's interface: this is a bad frame.
    let (_, ev) = s.write(h1, &[1, 0, 0, 0], ROOT, &m).unwrap();
    assert!(ev.is_empty(), "incomplete frame, waiting for more: {ev:?}");
    let answer = ControlMessage::Devices {
        id: 3,
        devices: vec![],
    };
    assert_eq!(s.send_to_client(2, &answer), Ok(h2));
    assert!(!s.readable(h1).unwrap());
    assert!(s.readable(h2).unwrap());
    assert_eq!(s.close(h1), Some(Event::ClientClosed { client: 1 }));
    assert_eq!(s.send_to_client(1, &answer), Err(SendError::NotOpen));
    assert_eq!(s.path(h2).unwrap(), "/scheme/pci/control");
}

#[test]
fn openat_resolves_relative_to_directories() {
    let m = machine();
    let mut s = state(&m);
    let (root, _) = s.open("", DIR, USER, &m).unwrap();
    let (dir, _) = s.openat(root, "00-00--1f.2", DIR, USER, &m).unwrap();
    let (ch, ev) = s.openat(dir, "channel", FILE, ROOT, &m).unwrap();
    assert!(matches!(ev, Some(Event::ChannelOpened { .. })));
    assert_eq!(s.node(ch).unwrap(), Node::Channel(addr(0, 0, 0x1F, 2)));
    assert_eq!(
        s.openat(ch, "x", FILE, ROOT, &m),
        Err(SchemeError::NotDirectory)
    );
    assert_eq!(s.node(999), Err(SchemeError::BadHandle));
}

#[test]
fn arbitrary_writes_never_panic() {
    let m = machine();
    let mut s = state(&m);
    let (ch, _) = s.open("00-00--04.0/channel", FILE, ROOT, &m).unwrap();
    let (ctl, _) = s.open("control", FILE, ROOT, &m).unwrap();
    let (acc, _) = s.open("access", FILE, ROOT, &m).unwrap();
    let mut seed = 0x9E37_79B9_u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for round in 0..2000 {
        let len = (round % 70) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match round % 4 {
            0 if bytes.len() >= 8 => {
                bytes[..4].copy_from_slice(b"PCID");
                bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
            }
            1 if bytes.len() >= 4 => {
                bytes[0] %= 10;
                bytes[1..4].fill(0);
            }
            _ => {}
        }
        let _ = s.write(ch, &bytes, ROOT, &m);
        let _ = s.write(ctl, &bytes, ROOT, &m);
        let meta = [u64::from(next() % 3), u64::from(next())];
        let _ = s.call(acc, &mut bytes, &meta, &m);
        let _ = drain(&mut s, ch);
    }
}
