//! Whole conversations through the scheme: Redox's pcid-spawner, a Redox
//! driver speaking only Redox's interface, this project's driver, shutdownd.

use std::time::Duration;

use pcid_interface::function::FunctionBackend;
use pcid_interface::function::{Bar, BarKind};
use pcid_interface::protocol::{
    ControlMessage, DeviceErrorKind, DriverMessage, DriverState, FinishOutcome, ShutdownKind,
    ShutdownSupport, PROTOCOL_VERSION,
};
use pcid_interface::wire::{FrameHeader, WireMessage};

use super::*;
use crate::redox::config_space::model::{addr, Model};
use crate::redox::driver_interface::{Request, Response};
use crate::redox::enumerate::enumerate;
use crate::redox::state::{Caller, OpenFlags};

const SPAWNER: Caller = Caller { uid: 0, pid: 5 };
const AHCID: Caller = Caller { uid: 0, pid: 6 };
const NVMED: Caller = Caller { uid: 0, pid: 7 };
const SHUTDOWND: Caller = Caller { uid: 0, pid: 8 };
const FILE: OpenFlags = OpenFlags {
    directory: false,
    stat: false,
};

/// Records what the engine asked of the OS.
#[derive(Default)]
struct Recorder {
    notified: Vec<usize>,
}

impl Host for Recorder {
    fn notify(&mut self, handle: usize) {
        self.notified.push(handle);
    }
}

fn nvme() -> PciAddress {
    addr(0, 0, 4, 0)
}
fn ahci() -> PciAddress {
    addr(0, 0, 0x1F, 2)
}
fn host_bridge() -> PciAddress {
    addr(0, 0, 0, 0)
}

struct World {
    cfg: Model,
    engine: Engine,
    host: Recorder,
    t0: Instant,
}

impl World {
    fn new() -> Self {
        let mut m = Model::default();
        m.function(host_bridge(), 0x8086, 0x29C0, 0x0600_0000, 0);
        m.function(nvme(), 0x1B36, 0x0010, 0x0108_0202, 0);
        m.bar_mem64(nvme(), 0, 0xFEBF_0000, 0x4000, false);
        m.set(nvme(), 0x3C, 0x0000_010B);
        m.function(addr(0, 0, 0x1F, 0), 0x8086, 0x2918, 0x0601_0002, 0x80);
        m.function(ahci(), 0x8086, 0x2922, 0x0106_0102, 0);
        m.bar_mem32(ahci(), 5, 0xFEBE_8000, 0x1000, false);
        let engine = Engine::new(enumerate(&m), RelayConfig::default());
        Self {
            cfg: m,
            engine,
            host: Recorder::default(),
            t0: Instant::now(),
        }
    }

    fn open(&mut self, path: &str, who: Caller) -> usize {
        let (id, ev) = self.engine.state.open(path, FILE, who, &self.cfg).unwrap();
        self.engine
            .dispatch(&mut self.host, ev.into_iter().collect(), self.t0);
        id
    }

    fn write(&mut self, handle: usize, bytes: &[u8], who: Caller) {
        let (_, events) = self
            .engine
            .state
            .write(handle, bytes, who, &self.cfg)
            .unwrap();
        self.engine.dispatch(&mut self.host, events, self.t0);
    }

    /// A request of Redox's interface and its answer, as pcid_interface does it.
    fn request(&mut self, handle: usize, r: Request, who: Caller) -> Response {
        self.write(handle, &r.encode(), who);
        let bytes = self.read_all(handle);
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), 8 + len);
        Response::decode(&bytes[8..]).unwrap()
    }

    fn send_driver(&mut self, handle: usize, m: &DriverMessage, who: Caller) {
        self.write(handle, &m.encode().unwrap(), who);
    }

    fn send_control(&mut self, handle: usize, m: &ControlMessage) {
        self.write(handle, &m.encode().unwrap(), SHUTDOWND);
    }

    fn close(&mut self, handle: usize) {
        let ev = self.engine.state.close(handle);
        self.engine
            .dispatch(&mut self.host, ev.into_iter().collect(), self.t0);
    }

    fn read_all(&mut self, handle: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.engine.state.read(handle, &mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    }

    fn frames<M: WireMessage>(&mut self, handle: usize) -> Vec<M> {
        let mut bytes = self.read_all(handle);
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = FrameHeader::parse(&bytes).unwrap().frame_len();
            out.push(M::decode(&bytes[..len]).unwrap());
            bytes.drain(..len);
        }
        out
    }

    /// What pcid-spawner does for one listed function: open the channel,
    /// RequestConfig, and (when a driver matches) EnableDevice.
    fn spawner(&mut self, function: PciAddress, matched: bool) -> usize {
        let ch = self.open(&format!("{}/channel", function_name(function)), SPAWNER);
        assert!(matches!(
            self.request(ch, Request::RequestConfig, SPAWNER),
            Response::Config(c) if c.addr == function
        ));
        if matched {
            assert_eq!(
                self.request(ch, Request::EnableDevice, SPAWNER),
                Response::EnabledDevice
            );
        } else {
            self.close(ch);
        }
        ch
    }

    fn devices(&mut self, ctl: usize) -> Vec<pcid_interface::protocol::DeviceInfo> {
        self.send_control(ctl, &ControlMessage::ListDevices { id: 99 });
        match &self.frames::<ControlMessage>(ctl)[..] {
            [ControlMessage::Devices { id: 99, devices }] => devices.clone(),
            other => panic!("{other:?}"),
        }
    }
}

fn hello() -> DriverMessage {
    DriverMessage::Hello {
        version: PROTOCOL_VERSION,
        driver: "nvmed".into(),
        support: ShutdownSupport::TwoPhase,
    }
}

#[test]
fn redox_drivers_and_ours_share_pcid_and_shutdown_sees_each_for_what_it_is() {
    let mut w = World::new();
    let ctl = w.open("control", SHUTDOWND);
    assert!(w.devices(ctl).is_empty(), "no channel open yet");

    // pcid-spawner walks the listing: no driver for the host bridge, ahcid
    // for AHCI, nvmed for NVMe.
    w.spawner(host_bridge(), false);
    let sata = w.spawner(ahci(), true);
    let disk = w.spawner(nvme(), true);

    // ahcid (Redox's, unchanged) asks for its config over the same handle.
    match w.request(sata, Request::RequestConfig, AHCID) {
        Response::Config(c) => assert_eq!(c.full_device_id.subclass, 6),
        other => panic!("{other:?}"),
    }
    // Our nvmed says Hello and gets Welcome, then Ready.
    w.host.notified.clear();
    w.send_driver(disk, &hello(), NVMED);
    let welcome = w.frames::<DriverMessage>(disk);
    let [DriverMessage::Welcome { function, .. }] = &welcome[..] else {
        panic!("{welcome:?}")
    };
    assert_eq!((function.address, function.class), (nvme(), 1));
    // What nvmed needs on Redox without Redox's interface: BARs and the IRQ.
    assert_eq!(
        function.backend,
        FunctionBackend::Redox {
            bars: vec![Bar {
                index: 0,
                kind: BarKind::Memory64 {
                    prefetchable: false
                },
                address: 0xFEBF_0000,
                size: 0x4000
            }],
            legacy_irq: Some(11),
        }
    );
    assert!(w.host.notified.contains(&disk), "EVENT_READ for Welcome");
    w.send_driver(disk, &DriverMessage::Ready, NVMED);

    let devices = w.devices(ctl);
    let summary: Vec<_> = devices
        .iter()
        .map(|d| (d.address, d.driver.as_str(), d.support, d.pid, d.state))
        .collect();
    assert_eq!(
        summary,
        [
            (
                ahci(),
                NO_HELLO_NAME,
                ShutdownSupport::None,
                6,
                DriverState::Running
            ),
            (
                nvme(),
                "nvmed",
                ShutdownSupport::TwoPhase,
                7,
                DriverState::Running
            ),
        ],
        "the host bridge's channel is closed: not listed"
    );

    // Shutdown: Begin to the Redox driver is refused as not supported,
    // Begin/Finish to ours are relayed.
    w.send_control(
        ctl,
        &ControlMessage::Begin {
            id: 1,
            address: ahci(),
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(5),
        },
    );
    assert!(matches!(
        &w.frames::<ControlMessage>(ctl)[..],
        [ControlMessage::DeviceError {
            id: 1,
            kind: DeviceErrorKind::NotSupported,
            ..
        }]
    ));
    assert!(w.read_all(sata).is_empty(), "nothing sent to ahcid");
    w.host.notified.clear();
    w.send_control(
        ctl,
        &ControlMessage::Begin {
            id: 2,
            address: nvme(),
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(5),
        },
    );
    assert!(w.host.notified.contains(&disk), "driver woken for Begin");
    let seq = match &w.frames::<DriverMessage>(disk)[..] {
        [DriverMessage::Begin { seq, .. }] => *seq,
        other => panic!("{other:?}"),
    };
    w.send_driver(
        disk,
        &DriverMessage::BeginAck {
            seq,
            budget: Duration::from_millis(10),
        },
        NVMED,
    );
    assert!(matches!(
        &w.frames::<ControlMessage>(ctl)[..],
        [ControlMessage::BeginAck { id: 2, .. }]
    ));
    // Redox requests still work between protocol frames.
    assert!(matches!(
        w.request(disk, Request::ReadConfig(0), NVMED),
        Response::ReadConfig(0x0010_1B36)
    ));
    w.send_control(
        ctl,
        &ControlMessage::Finish {
            id: 3,
            address: nvme(),
            deadline: Duration::from_secs(5),
        },
    );
    let seq = match &w.frames::<DriverMessage>(disk)[..] {
        [DriverMessage::Finish { seq, .. }] => *seq,
        other => panic!("{other:?}"),
    };
    w.send_driver(
        disk,
        &DriverMessage::FinishAck {
            seq,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(3),
            detail: "CSTS.SHST=10b".into(),
        },
        NVMED,
    );
    assert!(matches!(
        &w.frames::<ControlMessage>(ctl)[..],
        [ControlMessage::FinishAck {
            id: 3,
            outcome: FinishOutcome::Clean,
            ..
        }]
    ));
}

#[test]
fn a_redox_driver_that_exits_leaves_the_list_quietly_and_its_function_can_be_reopened() {
    let mut w = World::new();
    let ctl = w.open("control", SHUTDOWND);
    let sata = w.spawner(ahci(), true);
    assert_eq!(w.devices(ctl).len(), 1);
    w.close(sata);
    assert!(w.frames::<ControlMessage>(ctl).is_empty(), "no DeviceError");
    assert!(w.devices(ctl).is_empty());
    assert_eq!(w.engine.next_deadline(), None, "nothing to wait for");
    // A second pcid-spawner run (e.g. from the root filesystem) reopens it.
    w.spawner(ahci(), true);
    assert_eq!(w.devices(ctl).len(), 1);
}

#[test]
fn a_protocol_driver_that_dies_is_reported_after_the_grace_and_stays_listed_as_gone() {
    let mut w = World::new();
    let disk = w.spawner(nvme(), true);
    w.send_driver(disk, &hello(), NVMED);
    w.send_driver(disk, &DriverMessage::Ready, NVMED);
    let _ = w.frames::<DriverMessage>(disk);
    let ctl = w.open("control", SHUTDOWND);
    w.send_control(
        ctl,
        &ControlMessage::Begin {
            id: 7,
            address: nvme(),
            kind: ShutdownKind::Reboot,
            deadline: Duration::from_secs(5),
        },
    );
    // The driver exits: the kernel closes its last descriptor. Redox gives
    // pcid no exit status, so the relay declares it dead once its exit
    // grace has passed, at the deadline the runtime's timer waits for.
    w.close(disk);
    assert!(w.frames::<ControlMessage>(ctl).is_empty());
    let grace = w.engine.next_deadline().expect("a deadline for the close");
    assert!(grace > w.t0);
    w.engine.tick(&mut w.host, grace);
    let msgs = w.frames::<ControlMessage>(ctl);
    assert!(
        msgs.iter().any(|m| matches!(
            m,
            ControlMessage::DeviceError {
                id: 7,
                kind: DeviceErrorKind::DriverDied,
                ..
            }
        )),
        "{msgs:?}"
    );
    let devices = w.devices(ctl);
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].state, DriverState::Gone);
}

#[test]
fn garbage_cuts_off_only_the_sender_and_wakes_it_to_see_the_close() {
    let mut w = World::new();
    let disk = w.spawner(nvme(), true);
    let sata = w.spawner(ahci(), true);
    w.send_driver(disk, &hello(), NVMED);
    let _ = w.frames::<DriverMessage>(disk);
    w.host.notified.clear();
    let mut garbage = b"PCIX".to_vec();
    garbage.extend([0xEE; 40]);
    w.write(disk, &garbage, NVMED);
    assert!(w.host.notified.contains(&disk));
    // pcid names the violation in an Error before it closes the channel.
    let frames = w.frames::<DriverMessage>(disk);
    assert!(
        matches!(frames.as_slice(), [DriverMessage::Error { message, .. }] if message.contains("protocol violation")),
        "{frames:?}"
    );
    assert_eq!(
        w.engine.state.read(disk, &mut [0; 64]),
        Ok(0),
        "end of file"
    );
    // The Redox driver on the other function is unaffected.
    assert!(matches!(
        w.request(sata, Request::RequestFeatures, AHCID),
        Response::AllFeatures(_)
    ));
}

#[test]
fn acpid_reaches_configuration_space_through_access() {
    let mut w = World::new();
    let (h, ev) = w
        .engine
        .state
        .open("access", FILE, Caller { uid: 0, pid: 3 }, &w.cfg)
        .unwrap();
    assert_eq!(ev, None);
    let mut class = [0u8; 4];
    let meta = [
        crate::redox::access::READ,
        crate::redox::access::pack(ahci(), 0x08),
    ];
    assert_eq!(w.engine.state.call(h, &mut class, &meta, &w.cfg), Ok(4));
    assert_eq!(u32::from_le_bytes(class), 0x0106_0102);
    assert!(w.engine.devices().is_empty(), "acpid is not a driver");
}

#[test]
fn a_participant_registers_through_the_scheme_and_is_asked_before_the_disk() {
    use pcid_interface::protocol::Provider;
    const FS: Caller = Caller { uid: 0, pid: 11 };
    let mut w = World::new();
    // A non-root process may not take part.
    assert_eq!(
        w.engine
            .state
            .open("participant", FILE, Caller { uid: 1000, pid: 12 }, &w.cfg)
            .unwrap_err(),
        crate::redox::state::SchemeError::PermissionDenied
    );
    let p = w.open("participant", FS);
    let q = w.open("/participant", FS);
    assert_ne!(p, q, "each open is a channel of its own");
    assert_eq!(w.engine.state.path(p).unwrap(), "/scheme/pci/participant");
    w.send_driver(
        p,
        &DriverMessage::Register {
            version: PROTOCOL_VERSION,
            name: "file".into(),
            support: ShutdownSupport::TwoPhase,
            providers: vec![Provider::Device(nvme())],
        },
        FS,
    );
    let id = match &w.frames::<DriverMessage>(p)[..] {
        [DriverMessage::Registered { id, .. }] => *id,
        other => panic!("{other:?}"),
    };
    assert!(w.host.notified.contains(&p), "the participant was woken");
    let ctl = w.open("control", SHUTDOWND);
    w.send_control(ctl, &ControlMessage::ListParticipants { id: 3 });
    match &w.frames::<ControlMessage>(ctl)[..] {
        [ControlMessage::Participants {
            id: 3,
            participants,
        }] => {
            assert_eq!(
                participants.len(),
                1,
                "the unregistered channel is not listed"
            );
            assert_eq!(participants[0].id, id);
            assert_eq!(participants[0].pid, 11);
            assert_eq!(participants[0].providers, vec![Provider::Device(nvme())]);
        }
        other => panic!("{other:?}"),
    }
    w.send_control(
        ctl,
        &ControlMessage::ParticipantShutdown {
            id: 4,
            participant: id,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(1),
        },
    );
    let seq = match &w.frames::<DriverMessage>(p)[..] {
        [DriverMessage::Shutdown { seq, .. }] => *seq,
        other => panic!("{other:?}"),
    };
    w.send_driver(
        p,
        &DriverMessage::FinishAck {
            seq,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(20),
            detail: "unmounted".into(),
        },
        FS,
    );
    assert!(matches!(
        &w.frames::<ControlMessage>(ctl)[..],
        [ControlMessage::ParticipantFinishAck {
            id: 4,
            outcome: FinishOutcome::Clean,
            ..
        }]
    ));
    // Its handle closing after the answer is no death; the other, never
    // registered, leaves without a trace.
    w.close(p);
    w.close(q);
    assert!(w.frames::<ControlMessage>(ctl).is_empty());
}
