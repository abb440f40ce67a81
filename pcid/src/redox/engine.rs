//! The OS-free heart of pcid's Redox runtime: scheme events in, relay
//! decisions out.
//!
//! [`Engine`] owns the scheme state and the [`Relay`]. The runtime hands it the
//! events its scheme requests produced; the core turns them into relay
//! inputs and carries out the relay's outputs on the scheme state (queue a
//! frame, close a handle), asking its [`Host`] for the few things that need
//! the OS: posting `EVENT_READ` on a handle, enabling a function, announcing
//! readiness, dropping privileges. The Redox runtime implements [`Host`] with
//! the scheme socket, configuration space and `redox_daemon`; the unit tests
//! implement it with a recorder and run whole driver and shutdownd
//! conversations through the scheme on any host.
//!
//! Events that arrive before the spawned drivers are registered with the
//! relay (a driver may say `Hello` before pcid has heard back from its
//! spawner thread) are kept and replayed in order after registration, so the
//! relay never announces readiness for an incomplete set of drivers.

use std::collections::BTreeMap;
use std::time::Instant;

use pcid_interface::function::{PciAddress, PciFunction};
use pcid_interface::redox::{format_bars, Bar};

use super::state::{Event, SchemeState};
use crate::relay::{DriverId, Input, Output, Relay, RelayConfig};

/// What the core needs from the operating system.
pub trait Host {
    /// Post `EVENT_READ` on a scheme handle (pcid queued bytes or closed it).
    fn notify(&mut self, handle: usize);
    /// A function's channel was opened: enable memory decoding and bus mastering.
    fn enable(&mut self, address: PciAddress, bars: &[Bar]);
    /// Every driver is settled: tell init.
    fn ready(&mut self, ready: usize, total: usize);
    /// Spawning is over: give up the ability to open new resources.
    fn drop_privileges(&mut self);
}

/// The outcome of starting one planned driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The function.
    pub function: PciFunction,
    /// Driver name (from the match table).
    pub name: String,
    /// Process id, or why the driver could not be started.
    pub result: Result<u32, String>,
}

/// Scheme state plus relay; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    /// The scheme's handles and channels.
    pub state: SchemeState,
    relay: Relay,
    bars: BTreeMap<PciAddress, Vec<Bar>>,
    ids: BTreeMap<PciAddress, DriverId>,
    pending: Option<Vec<Event>>,
    exit: bool,
}

impl Engine {
    /// A core showing `functions` (with their BARs) in the scheme.
    pub fn new(functions: &[(PciFunction, Vec<Bar>)], config: RelayConfig) -> Self {
        Self {
            state: SchemeState::new(
                functions
                    .iter()
                    .map(|(f, bars)| (f.address, format_bars(bars))),
            ),
            relay: Relay::new(config),
            bars: functions
                .iter()
                .map(|(f, bars)| (f.address, bars.clone()))
                .collect(),
            ids: BTreeMap::new(),
            pending: Some(Vec::new()),
            exit: false,
        }
    }

    /// Whether the relay asked pcid to exit.
    pub fn exit_requested(&self) -> bool {
        self.exit
    }

    /// Whether the spawned drivers have been registered.
    pub fn registered(&self) -> bool {
        self.pending.is_none()
    }

    /// When the relay next needs [`Engine::tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.registered() {
            self.relay.next_deadline()
        } else {
            None
        }
    }

    /// Handles events from scheme requests.
    pub fn dispatch(&mut self, host: &mut dyn Host, events: Vec<Event>, now: Instant) {
        for event in events {
            if let Event::ChannelOpened { address, .. } = &event {
                // As Redox's pcid: the function decodes memory and may master
                // the bus from the moment its channel is handed out.
                let bars = self.bars.get(address).map(Vec::as_slice).unwrap_or(&[]);
                host.enable(*address, bars);
            }
            match self.pending.as_mut() {
                Some(pending) => pending.push(event),
                None => self.feed(host, event, now),
            }
        }
    }

    /// Registers the started drivers with the relay, drops privileges and
    /// replays the events that arrived meanwhile.
    pub fn register(&mut self, host: &mut dyn Host, started: Vec<Started>, now: Instant) {
        for s in started {
            match s.result {
                Ok(pid) => {
                    log::info!("{}: started {} as pid {pid}", s.function.address, s.name);
                    let address = s.function.address;
                    let id = self.relay.add_driver(s.function, s.name, pid, now);
                    self.ids.insert(address, id);
                }
                Err(e) => log::error!("{}: cannot start {}: {e}", s.function.address, s.name),
            }
        }
        host.drop_privileges();
        for event in self.pending.take().unwrap_or_default() {
            self.feed(host, event, now);
        }
        self.step(host, Input::Tick, now);
    }

    /// Lets the relay check its deadlines.
    pub fn tick(&mut self, host: &mut dyn Host, now: Instant) {
        if self.registered() {
            self.step(host, Input::Tick, now);
        }
    }

    fn feed(&mut self, host: &mut dyn Host, event: Event, now: Instant) {
        let driver = |ids: &BTreeMap<PciAddress, DriverId>, a: &PciAddress| {
            let id = ids.get(a).copied();
            if id.is_none() {
                log::info!("{a}: channel activity from a process pcid did not start; ignored");
            }
            id
        };
        let input = match event {
            Event::ChannelOpened { .. } => return,
            Event::DriverMessage { address, message } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverMessage { driver, message },
                None => return,
            },
            Event::DriverBadFrame { address, error } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverBadFrame { driver, error },
                None => return,
            },
            Event::ChannelClosed { address } => match driver(&self.ids, &address) {
                Some(driver) => Input::DriverChannelClosed { driver },
                None => return,
            },
            Event::ClientOpened { client } => Input::ClientConnected { client },
            Event::ClientMessage { client, message } => Input::ClientMessage { client, message },
            Event::ClientBadFrame {
                client,
                error,
                fatal,
            } => Input::ClientBadFrame {
                client,
                error,
                fatal,
            },
            Event::ClientClosed { client } => Input::ClientClosed { client },
        };
        self.step(host, input, now);
    }

    fn step(&mut self, host: &mut dyn Host, input: Input, now: Instant) {
        let outputs = self.relay.handle(input, now);
        self.execute(host, outputs, now);
    }

    fn execute(&mut self, host: &mut dyn Host, outputs: Vec<Output>, now: Instant) {
        for output in outputs {
            match output {
                Output::ToDriver { driver, message } => {
                    let Some(address) = self.relay.address(driver) else {
                        continue;
                    };
                    match self.state.send_to_driver(address, &message) {
                        Ok(handle) => host.notify(handle),
                        Err(e) => {
                            log::error!("{address}: cannot queue a message for the driver: {e}");
                            if let Some(handle) = self.state.close_driver(address) {
                                host.notify(handle);
                            }
                            self.step(host, Input::DriverChannelClosed { driver }, now);
                        }
                    }
                }
                Output::CloseDriver { driver } => {
                    if let Some(handle) = self
                        .relay
                        .address(driver)
                        .and_then(|a| self.state.close_driver(a))
                    {
                        host.notify(handle);
                    }
                }
                Output::ToClient { client, message } => {
                    match self.state.send_to_client(client, &message) {
                        Ok(handle) => host.notify(handle),
                        Err(e) => {
                            log::warn!("control client {client}: {e}; closing it");
                            if let Some(handle) = self.state.close_client(client) {
                                host.notify(handle);
                                self.step(host, Input::ClientClosed { client }, now);
                            }
                        }
                    }
                }
                Output::CloseClient { client } => {
                    if let Some(handle) = self.state.close_client(client) {
                        host.notify(handle);
                    }
                }
                Output::Ready { ready, total } => host.ready(ready, total),
                Output::Exit => self.exit = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcid_interface::function::FunctionBackend;
    use pcid_interface::protocol::{
        ControlMessage, DeviceErrorKind, DriverMessage, FinishOutcome, ShutdownKind,
        ShutdownSupport, PROTOCOL_VERSION,
    };
    use pcid_interface::redox::BarKind;
    use pcid_interface::wire::{FrameHeader, WireMessage};

    use super::super::state::Caller;
    use super::*;

    const ROOT: Caller = Caller { uid: 0, pid: 1 };

    /// Records what the core asked of the OS.
    #[derive(Default)]
    struct Recorder {
        notified: Vec<usize>,
        enabled: Vec<PciAddress>,
        ready: Vec<(usize, usize)>,
        dropped: bool,
    }

    impl Host for Recorder {
        fn notify(&mut self, handle: usize) {
            self.notified.push(handle);
        }
        fn enable(&mut self, address: PciAddress, _bars: &[Bar]) {
            self.enabled.push(address);
        }
        fn ready(&mut self, ready: usize, total: usize) {
            self.ready.push((ready, total));
        }
        fn drop_privileges(&mut self) {
            self.dropped = true;
        }
    }

    fn function(s: &str) -> PciFunction {
        PciFunction {
            address: s.parse().unwrap(),
            vendor: 0x1b36,
            device: 0x0010,
            class: 1,
            subclass: 8,
            interface: 2,
            revision: 2,
            parent: None,
            backend: FunctionBackend::Redox,
        }
    }

    fn bar() -> Bar {
        Bar {
            index: 0,
            kind: BarKind::Memory64 {
                prefetchable: false,
            },
            address: 0xfebf_0000,
            size: 0x4000,
        }
    }

    struct World {
        core: Engine,
        host: Recorder,
        t0: Instant,
    }

    impl World {
        fn new(addrs: &[&str]) -> Self {
            let functions: Vec<_> = addrs.iter().map(|a| (function(a), vec![bar()])).collect();
            Self {
                core: Engine::new(&functions, RelayConfig::default()),
                host: Recorder::default(),
                t0: Instant::now(),
            }
        }
        fn open(&mut self, path: &str) -> usize {
            let (id, ev) = self.core.state.open(path, ROOT).unwrap();
            self.core
                .dispatch(&mut self.host, ev.into_iter().collect(), self.t0);
            id
        }
        fn write(&mut self, handle: usize, frame: &[u8]) {
            let (_, events) = self.core.state.write(handle, frame).unwrap();
            self.core.dispatch(&mut self.host, events, self.t0);
        }
        fn send_driver(&mut self, handle: usize, m: &DriverMessage) {
            self.write(handle, &m.encode().unwrap());
        }
        fn send_control(&mut self, handle: usize, m: &ControlMessage) {
            self.write(handle, &m.encode().unwrap());
        }
        fn close(&mut self, handle: usize) {
            let ev = self.core.state.close(handle);
            self.core
                .dispatch(&mut self.host, ev.into_iter().collect(), self.t0);
        }
        /// Reads every whole frame queued on a handle.
        fn frames<M: WireMessage>(&mut self, handle: usize) -> Vec<M> {
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.core.state.read(handle, &mut buf, 0) {
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            let mut out = Vec::new();
            while !bytes.is_empty() {
                let len = FrameHeader::parse(&bytes).unwrap().frame_len();
                out.push(M::decode(&bytes[..len]).unwrap());
                bytes.drain(..len);
            }
            out
        }
        fn register(&mut self, addrs: &[&str]) {
            let started = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| Started {
                    function: function(a),
                    name: "nvmed".into(),
                    result: Ok(100 + i as u32),
                })
                .collect();
            self.core.register(&mut self.host, started, self.t0);
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
    fn hello_before_registration_is_replayed_and_readiness_waits_for_ready() {
        let mut w = World::new(&["0000:00:04.0"]);
        let ch = w.open("0000-00--04.0/channel");
        assert_eq!(w.host.enabled, ["0000:00:04.0".parse().unwrap()]);
        // The driver speaks before pcid registered it.
        w.send_driver(ch, &hello());
        assert!(w.frames::<DriverMessage>(ch).is_empty(), "no Welcome yet");
        assert!(w.host.ready.is_empty());
        w.register(&["0000:00:04.0"]);
        assert!(w.host.dropped);
        let welcome = w.frames::<DriverMessage>(ch);
        assert!(
            matches!(&welcome[..], [DriverMessage::Welcome { function, .. }] if function.address.to_string() == "0000:00:04.0"),
            "{welcome:?}"
        );
        assert!(
            w.host.notified.contains(&ch),
            "EVENT_READ posted for Welcome"
        );
        assert!(
            w.host.ready.is_empty(),
            "not ready before the driver's Ready"
        );
        w.send_driver(ch, &DriverMessage::Ready);
        assert_eq!(w.host.ready, [(1, 1)]);
    }

    #[test]
    fn begin_and_finish_reach_the_driver_and_acks_reach_shutdownd() {
        let mut w = World::new(&["0000:00:04.0", "0000:00:05.0"]);
        let a = w.open("0000-00--04.0/channel");
        let b = w.open("0000-00--05.0/channel");
        w.register(&["0000:00:04.0", "0000:00:05.0"]);
        for ch in [a, b] {
            w.send_driver(ch, &hello());
            w.send_driver(ch, &DriverMessage::Ready);
            let _ = w.frames::<DriverMessage>(ch);
        }
        assert_eq!(w.host.ready, [(2, 2)]);

        let ctl = w.open("control");
        w.send_control(ctl, &ControlMessage::ListDevices { id: 1 });
        let devices = w.frames::<ControlMessage>(ctl);
        assert!(
            matches!(&devices[..], [ControlMessage::Devices { id: 1, devices }] if devices.len() == 2),
            "{devices:?}"
        );
        // Begin to both before any Finish: both drivers are notified at once.
        w.host.notified.clear();
        for (id, addr) in [(2, "0000:00:04.0"), (3, "0000:00:05.0")] {
            w.send_control(
                ctl,
                &ControlMessage::Begin {
                    id,
                    address: addr.parse().unwrap(),
                    kind: ShutdownKind::Poweroff,
                    deadline: Duration::from_secs(5),
                },
            );
        }
        assert!(w.host.notified.contains(&a) && w.host.notified.contains(&b));
        let mut seqs = Vec::new();
        for ch in [a, b] {
            match &w.frames::<DriverMessage>(ch)[..] {
                [DriverMessage::Begin { seq, kind, .. }] => {
                    assert_eq!(*kind, ShutdownKind::Poweroff);
                    seqs.push(*seq);
                }
                other => panic!("{other:?}"),
            }
        }
        w.send_driver(
            a,
            &DriverMessage::BeginAck {
                seq: seqs[0],
                budget: Duration::from_millis(4500),
            },
        );
        let acks = w.frames::<ControlMessage>(ctl);
        assert!(
            matches!(&acks[..], [ControlMessage::BeginAck { id: 2, budget, .. }] if *budget == Duration::from_millis(4500)),
            "{acks:?}"
        );
        w.send_control(
            ctl,
            &ControlMessage::Finish {
                id: 4,
                address: "0000:00:04.0".parse().unwrap(),
                deadline: Duration::from_secs(5),
            },
        );
        let seq = match &w.frames::<DriverMessage>(a)[..] {
            [DriverMessage::Finish { seq, .. }] => *seq,
            other => panic!("{other:?}"),
        };
        w.send_driver(
            a,
            &DriverMessage::FinishAck {
                seq,
                outcome: FinishOutcome::Clean,
                elapsed: Duration::from_millis(4400),
                detail: "CSTS.SHST=10b".into(),
            },
        );
        let acks = w.frames::<ControlMessage>(ctl);
        assert!(
            matches!(
                &acks[..],
                [ControlMessage::FinishAck {
                    id: 4,
                    outcome: FinishOutcome::Clean,
                    ..
                }]
            ),
            "{acks:?}"
        );
    }

    #[test]
    fn a_driver_that_dies_fails_its_request_and_one_that_sends_garbage_is_cut_off() {
        let mut w = World::new(&["0000:00:04.0", "0000:00:05.0"]);
        let a = w.open("0000-00--04.0/channel");
        let b = w.open("0000-00--05.0/channel");
        w.register(&["0000:00:04.0", "0000:00:05.0"]);
        for ch in [a, b] {
            w.send_driver(ch, &hello());
            w.send_driver(ch, &DriverMessage::Ready);
            let _ = w.frames::<DriverMessage>(ch);
        }
        let ctl = w.open("control");
        w.send_control(
            ctl,
            &ControlMessage::Begin {
                id: 7,
                address: "0000:00:04.0".parse().unwrap(),
                kind: ShutdownKind::Reboot,
                deadline: Duration::from_secs(5),
            },
        );
        // The driver exits: the kernel closes its last descriptor. Redox
        // reports no exit status for it (the process pcid spawned was only
        // the daemon's parent), so the relay declares the driver dead once
        // its exit grace has passed, at the deadline the runtime's timer
        // waits for.
        w.close(a);
        assert!(w.frames::<ControlMessage>(ctl).is_empty());
        let grace = w
            .core
            .next_deadline()
            .expect("a deadline for the closed channel");
        assert!(grace > w.t0);
        w.core.tick(&mut w.host, grace);
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
        // Garbage from the other driver: its channel is closed from pcid's side.
        w.host.notified.clear();
        w.write(b, &[0xEE; 40]);
        assert!(
            w.host.notified.contains(&b),
            "the driver is woken to see the close"
        );
        let mut buf = [0u8; 64];
        while w.core.state.read(b, &mut buf, 0).unwrap() > 0 {}
        assert_eq!(w.core.state.read(b, &mut buf, 0), Ok(0), "end of file");
    }

    #[test]
    fn a_failed_spawn_is_not_listed_and_readiness_counts_the_rest() {
        let mut w = World::new(&["0000:00:04.0", "0000:00:05.0"]);
        let a = w.open("0000-00--04.0/channel");
        let started = vec![
            Started {
                function: function("0000:00:04.0"),
                name: "nvmed".into(),
                result: Ok(10),
            },
            Started {
                function: function("0000:00:05.0"),
                name: "nvmed".into(),
                result: Err("spawn /usr/lib/drivers/nvmed: not found".into()),
            },
        ];
        w.core.register(&mut w.host, started, w.t0);
        w.send_driver(a, &hello());
        w.send_driver(a, &DriverMessage::Ready);
        assert_eq!(w.host.ready, [(1, 1)]);
        let ctl = w.open("control");
        w.send_control(ctl, &ControlMessage::ListDevices { id: 1 });
        let msgs = w.frames::<ControlMessage>(ctl);
        assert!(
            matches!(&msgs[..], [ControlMessage::Devices { devices, .. }] if devices.len() == 1),
            "{msgs:?}"
        );
    }

    #[test]
    fn with_no_drivers_pcid_is_ready_at_registration() {
        let mut w = World::new(&["0000:00:1f.0"]);
        w.register(&[]);
        assert_eq!(w.host.ready, [(0, 0)]);
        assert!(w.host.dropped);
    }
}
