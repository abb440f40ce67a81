//! Participants shutdownd serves itself: file systems unmounted through the
//! kernel (Redox's scheme unmount), for daemons that do not speak the
//! protocol — Redox's own, unmodified `redoxfs` above all.
//!
//! On Redox a file system is a scheme daemon. The kernel unmounts a scheme
//! when root calls `unlinkat` with a handle of `/scheme` and the scheme's
//! name: new calls to the scheme fail with `ENODEV`, and the daemon's next
//! read of its socket returns end of file. `redoxfs` then leaves its loop,
//! commits its final cleanup, closes its disk and exits; the name leaves
//! the `/scheme` listing when its socket is closed, that is once all of this
//! is done (kernel a919d26, `scheme/root.rs`; redoxfs 4726ebd,
//! `mount/redox/mod.rs`). Measured here: about 30–40 ms. Unlike `SIGTERM`,
//! this never leaves a caller blocked (a `SIGTERM`ed redoxfs notices only
//! after serving one more request, and a request pending when it exits is
//! never answered).
//!
//! So an [`Unmount`] participant is two-phase:
//!
//! * `Begin`: ask the kernel to unmount the scheme (returns at once);
//!   `BeginAck` with [`UNMOUNT_BUDGET`], or 0 when nothing was mounted;
//! * `Finish`: watch the `/scheme` listing (first look at once, then every
//!   1 ms doubling to 10 ms) until the name is gone — `clean`, the daemon
//!   committed and exited — or the deadline passes — `timed-out`, the daemon
//!   is still there, and the devices below it shut down anyway.
//!
//! These participants get ids from [`LOCAL_ID_BASE`] up, which pcid never
//! hands out; [`Router`] sends the scheduler's requests for them here and
//! everything else to pcid, so the scheduler treats both alike. The OS side
//! (the `unlinkat`, the listing) is a [`SchemeRegistry`]; shutdownd's Redox
//! module implements it, the tests fake it.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use pcid_interface::protocol::{
    ControlMessage, DeviceErrorKind, DriverState, FinishOutcome, ParticipantInfo, Provider,
    ShutdownSupport,
};

use crate::run::{ControlPort, PortError};

/// Participant ids from here up are shutdownd's own (pcid's stay below).
pub const LOCAL_ID_BASE: u32 = 0x8000_0000;

/// What an unmount participant announces in `BeginAck`: time its daemon may
/// need to commit and exit (redoxfs took 30–40 ms here; a large file system
/// with much to clean up takes longer). shutdownd's finish deadline follows
/// from it (× 1.5 + 0.5 s = 3.5 s).
pub const UNMOUNT_BUDGET: Duration = Duration::from_secs(2);

/// First and longest pause between looks at the scheme listing.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(10);

/// The operating system's scheme registry.
pub trait SchemeRegistry {
    /// Asks the kernel to unmount scheme `name`. `Ok(false)`: no such
    /// scheme is registered.
    fn unmount(&mut self, name: &str) -> io::Result<bool>;
    /// Whether scheme `name` is still registered.
    fn is_registered(&mut self, name: &str) -> io::Result<bool>;
}

/// A file system to unmount: its scheme's name and what it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmount {
    /// The scheme (Redox's root file system: `file`).
    pub scheme: String,
    /// What it depends on (default: every device).
    pub providers: Vec<Provider>,
}

impl Unmount {
    /// Parses `SCHEME[=PROVIDER,...]`: a PROVIDER is a PCI address
    /// (`0000:00:01.0`) or `all`; without any, the file system is unmounted
    /// before every device.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (scheme, providers) = match spec.split_once('=') {
            Some((s, p)) => (s, Some(p)),
            None => (spec, None),
        };
        let valid = !scheme.is_empty()
            && !scheme.contains('/')
            && scheme
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control());
        if !valid {
            return Err(format!(
                "--unmount {spec:?}: {scheme:?} is not a scheme name"
            ));
        }
        let providers = match providers {
            None => vec![Provider::AllDevices],
            Some(list) => list
                .split(',')
                .map(|p| match p.trim() {
                    "all" => Ok(Provider::AllDevices),
                    a => a.parse().map(Provider::Device).map_err(|_| {
                        format!("--unmount {spec:?}: {a:?} is neither a PCI address nor `all`")
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Self {
            scheme: scheme.to_string(),
            providers,
        })
    }
}

#[derive(Debug)]
enum State {
    Idle,
    /// Unmount asked for at `since` (or nothing was mounted).
    Begun {
        since: Duration,
        mounted: bool,
        error: Option<String>,
    },
    /// Waiting for the name to go, until `until`, answering request `id`.
    Finishing {
        id: u32,
        since: Duration,
        until: Duration,
        next_look: Duration,
        pause: Duration,
    },
    Done,
}

#[derive(Debug)]
struct Entry {
    spec: Unmount,
    state: State,
}

/// The unmount participants of one shutdown and their answers.
#[derive(Debug)]
pub struct LocalParticipants<R: SchemeRegistry> {
    registry: R,
    entries: Vec<Entry>,
    answers: VecDeque<ControlMessage>,
    pid: u32,
}

impl<R: SchemeRegistry> LocalParticipants<R> {
    /// Participants for `unmounts`, served through `registry`; `pid` is
    /// listed as theirs (shutdownd's own).
    pub fn new(registry: R, unmounts: Vec<Unmount>, pid: u32) -> Self {
        Self {
            registry,
            entries: unmounts
                .into_iter()
                .map(|spec| Entry {
                    spec,
                    state: State::Idle,
                })
                .collect(),
            answers: VecDeque::new(),
            pid,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The participants as the plan lists them.
    pub fn infos(&self) -> Vec<ParticipantInfo> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| ParticipantInfo {
                id: LOCAL_ID_BASE + i as u32,
                name: e.spec.scheme.clone(),
                support: ShutdownSupport::TwoPhase,
                pid: self.pid,
                state: DriverState::Running,
                providers: e.spec.providers.clone(),
            })
            .collect()
    }

    fn index(&self, participant: u32) -> Option<usize> {
        participant
            .checked_sub(LOCAL_ID_BASE)
            .map(|i| i as usize)
            .filter(|&i| i < self.entries.len())
    }

    /// Whether `msg` is a request for one of these participants.
    pub fn owns(&self, msg: &ControlMessage) -> bool {
        match msg {
            ControlMessage::ParticipantBegin { participant, .. }
            | ControlMessage::ParticipantFinish { participant, .. }
            | ControlMessage::ParticipantShutdown { participant, .. } => {
                *participant >= LOCAL_ID_BASE
            }
            _ => false,
        }
    }

    /// Takes a request at `now`; its answer comes from [`Self::poll`].
    pub fn request(&mut self, msg: ControlMessage, now: Duration) {
        match msg {
            ControlMessage::ParticipantBegin {
                id, participant, ..
            } => match self.index(participant) {
                Some(i) => {
                    let budget = self.begin(i, now);
                    self.answers.push_back(ControlMessage::ParticipantBeginAck {
                        id,
                        participant,
                        budget,
                    });
                }
                None => self.unknown(id, participant),
            },
            ControlMessage::ParticipantFinish {
                id,
                participant,
                deadline,
            } => match self.index(participant) {
                Some(i) => self.finish(i, id, participant, now, deadline),
                None => self.unknown(id, participant),
            },
            ControlMessage::ParticipantShutdown {
                id,
                participant,
                deadline,
                ..
            } => match self.index(participant) {
                Some(i) => {
                    self.begin(i, now);
                    self.finish(i, id, participant, now, deadline);
                }
                None => self.unknown(id, participant),
            },
            other => log::warn!("local participants: not a request for them: {other:?}"),
        }
    }

    fn unknown(&mut self, id: u32, participant: u32) {
        self.answers.push_back(ControlMessage::ParticipantError {
            id,
            participant,
            kind: DeviceErrorKind::UnknownDevice,
            message: format!("no local participant #{participant}"),
        });
    }

    fn begin(&mut self, i: usize, now: Duration) -> Duration {
        let e = &mut self.entries[i];
        if !matches!(e.state, State::Idle) {
            return Duration::ZERO;
        }
        let name = &e.spec.scheme;
        let (mounted, error) = match self.registry.unmount(name) {
            Ok(true) => {
                log::info!("unmounting scheme {name} (kernel unmount)");
                (true, None)
            }
            Ok(false) => {
                log::info!("scheme {name} is not mounted; nothing to unmount");
                (false, None)
            }
            Err(err) => {
                log::error!("unmounting scheme {name}: {err}");
                (true, Some(err.to_string()))
            }
        };
        e.state = State::Begun {
            since: now,
            mounted,
            error,
        };
        if mounted {
            UNMOUNT_BUDGET
        } else {
            Duration::ZERO
        }
    }

    fn finish(&mut self, i: usize, id: u32, participant: u32, now: Duration, deadline: Duration) {
        let e = &mut self.entries[i];
        let state = std::mem::replace(&mut e.state, State::Done);
        let (outcome, detail) = match state {
            State::Begun {
                error: Some(err), ..
            } => (
                FinishOutcome::Failed,
                format!(
                    "the kernel refused to unmount /scheme/{}: {err}",
                    e.spec.scheme
                ),
            ),
            State::Begun { mounted: false, .. } => (
                FinishOutcome::Clean,
                format!("/scheme/{} was not mounted", e.spec.scheme),
            ),
            State::Begun { since, .. } => {
                e.state = State::Finishing {
                    id,
                    since,
                    until: now.saturating_add(deadline),
                    next_look: now,
                    pause: POLL_FIRST,
                };
                return;
            }
            other => {
                e.state = other;
                self.answers.push_back(ControlMessage::ParticipantError {
                    id,
                    participant,
                    kind: DeviceErrorKind::NotSupported,
                    message: "Finish before Begin".to_string(),
                });
                return;
            }
        };
        self.answers
            .push_back(ControlMessage::ParticipantFinishAck {
                id,
                participant,
                outcome,
                elapsed: Duration::ZERO,
                detail,
            });
    }

    /// Looks at every file system being waited for whose look is due at
    /// `now`, and returns the answers ready.
    pub fn poll(&mut self, now: Duration) -> Vec<ControlMessage> {
        for i in 0..self.entries.len() {
            let State::Finishing {
                id,
                since,
                until,
                next_look,
                pause,
            } = self.entries[i].state
            else {
                continue;
            };
            if now < next_look {
                continue;
            }
            let participant = LOCAL_ID_BASE + i as u32;
            let name = self.entries[i].spec.scheme.clone();
            let elapsed = now.saturating_sub(since);
            let answer = match self.registry.is_registered(&name) {
                Ok(false) => Some((
                    FinishOutcome::Clean,
                    format!(
                        "unmounted: /scheme/{name} gone {:.1} ms after the unmount request \
                         (its daemon committed and exited)",
                        elapsed.as_secs_f64() * 1000.0
                    ),
                )),
                Ok(true) if now >= until => Some((
                    FinishOutcome::TimedOut,
                    format!(
                        "/scheme/{name} still registered {:.1} ms after the unmount request: \
                         its daemon did not exit in time",
                        elapsed.as_secs_f64() * 1000.0
                    ),
                )),
                Ok(true) => None,
                Err(err) => Some((
                    FinishOutcome::Failed,
                    format!("listing /scheme to watch {name}: {err}"),
                )),
            };
            match answer {
                Some((outcome, detail)) => {
                    self.entries[i].state = State::Done;
                    self.answers
                        .push_back(ControlMessage::ParticipantFinishAck {
                            id,
                            participant,
                            outcome,
                            elapsed,
                            detail,
                        });
                }
                None => {
                    self.entries[i].state = State::Finishing {
                        id,
                        since,
                        until,
                        next_look: now.saturating_add(pause).min(until),
                        pause: (pause * 2).min(POLL_MAX),
                    }
                }
            }
        }
        self.answers.drain(..).collect()
    }

    /// When [`Self::poll`] next has something to do (answers queued: now).
    pub fn next_poll(&self, now: Duration) -> Option<Duration> {
        if !self.answers.is_empty() {
            return Some(now);
        }
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Finishing { next_look, .. } => Some(next_look),
                _ => None,
            })
            .min()
    }
}

/// A [`ControlPort`] that sends requests for local participants to them
/// and everything else to pcid, and merges their answers into what it
/// receives.
pub struct Router<'a, R: SchemeRegistry> {
    /// pcid's control connection.
    pub pcid: &'a mut dyn ControlPort,
    /// The local participants.
    pub local: &'a mut LocalParticipants<R>,
    /// The clock (the run loop's).
    pub now: &'a dyn Fn() -> Duration,
    ready: VecDeque<ControlMessage>,
}

impl<'a, R: SchemeRegistry> Router<'a, R> {
    /// Routes between `pcid` and `local` with the clock `now`.
    pub fn new(
        pcid: &'a mut dyn ControlPort,
        local: &'a mut LocalParticipants<R>,
        now: &'a dyn Fn() -> Duration,
    ) -> Self {
        Self {
            pcid,
            local,
            now,
            ready: VecDeque::new(),
        }
    }
}

impl<R: SchemeRegistry> ControlPort for Router<'_, R> {
    fn send(&mut self, msg: &ControlMessage) -> Result<(), PortError> {
        if self.local.owns(msg) {
            self.local.request(msg.clone(), (self.now)());
            return Ok(());
        }
        self.pcid.send(msg)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<ControlMessage>, PortError> {
        let start = (self.now)();
        self.ready.extend(self.local.poll(start));
        if let Some(m) = self.ready.pop_front() {
            return Ok(Some(m));
        }
        let wait = match self.local.next_poll(start) {
            Some(at) => timeout.min(at.saturating_sub(start)),
            None => timeout,
        };
        if let Some(m) = self.pcid.recv(wait)? {
            return Ok(Some(m));
        }
        self.ready.extend(self.local.poll((self.now)()));
        Ok(self.ready.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A registry on a shared fake clock: `file` goes away `exits_after`
    /// after it is unmounted (never, with `None`).
    struct FakeRegistry {
        clock: Rc<Cell<Duration>>,
        mounted: Vec<String>,
        exits_after: Option<Duration>,
        unmounted_at: Option<Duration>,
        looks: Rc<Cell<u32>>,
    }

    impl SchemeRegistry for FakeRegistry {
        fn unmount(&mut self, name: &str) -> io::Result<bool> {
            if name == "broken" {
                return Err(io::Error::from_raw_os_error(1));
            }
            if !self.mounted.iter().any(|m| m == name) {
                return Ok(false);
            }
            self.unmounted_at = Some(self.clock.get());
            Ok(true)
        }
        fn is_registered(&mut self, name: &str) -> io::Result<bool> {
            self.looks.set(self.looks.get() + 1);
            let gone = match (self.unmounted_at, self.exits_after) {
                (Some(at), Some(after)) => self.clock.get() >= at + after,
                _ => false,
            };
            Ok(self.mounted.iter().any(|m| m == name) && !gone)
        }
    }

    fn rig(
        exits_after: Option<Duration>,
    ) -> (
        LocalParticipants<FakeRegistry>,
        Rc<Cell<Duration>>,
        Rc<Cell<u32>>,
    ) {
        let clock = Rc::new(Cell::new(Duration::from_secs(3)));
        let looks = Rc::new(Cell::new(0));
        let reg = FakeRegistry {
            clock: clock.clone(),
            mounted: vec!["file".into()],
            exits_after,
            unmounted_at: None,
            looks: looks.clone(),
        };
        let l = LocalParticipants::new(
            reg,
            vec![
                Unmount::parse("file=0000:00:01.0").unwrap(),
                Unmount::parse("usb").unwrap(),
                Unmount::parse("broken").unwrap(),
            ],
            42,
        );
        (l, clock, looks)
    }

    fn begin(p: u32) -> ControlMessage {
        ControlMessage::ParticipantBegin {
            id: p,
            participant: LOCAL_ID_BASE + p,
            kind: pcid_interface::protocol::ShutdownKind::Poweroff,
            deadline: Duration::from_secs(2),
        }
    }

    fn finish(p: u32, deadline: Duration) -> ControlMessage {
        ControlMessage::ParticipantFinish {
            id: 10 + p,
            participant: LOCAL_ID_BASE + p,
            deadline,
        }
    }

    /// Polls as a loop would, advancing the clock to each due look.
    fn run_until_answer(
        l: &mut LocalParticipants<FakeRegistry>,
        clock: &Rc<Cell<Duration>>,
    ) -> ControlMessage {
        for _ in 0..10_000 {
            let now = clock.get();
            if let Some(a) = l.poll(now).into_iter().next() {
                return a;
            }
            let next = l.next_poll(now).expect("something to wait for");
            assert!(next > now, "no busy polling");
            clock.set(next);
        }
        panic!("no answer");
    }

    #[test]
    fn specs_parse_with_and_without_providers() {
        assert_eq!(
            Unmount::parse("file").unwrap().providers,
            vec![Provider::AllDevices]
        );
        assert_eq!(
            Unmount::parse("file=0000:00:01.0,all").unwrap().providers,
            vec![
                Provider::Device("0000:00:01.0".parse().unwrap()),
                Provider::AllDevices
            ]
        );
        for bad in ["", "=all", "a/b", "file=nvme0", "file=0000:00:01.0,x"] {
            assert!(Unmount::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listed_as_two_phase_participants_with_their_own_ids() {
        let (l, _, _) = rig(None);
        let infos = l.infos();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].id, LOCAL_ID_BASE);
        assert_eq!(infos[0].name, "file");
        assert_eq!(infos[0].pid, 42);
        assert!(l.owns(&begin(0)));
        assert!(!l.owns(&ControlMessage::ParticipantBegin {
            id: 1,
            participant: 7,
            kind: pcid_interface::protocol::ShutdownKind::Poweroff,
            deadline: Duration::ZERO
        }));
    }

    #[test]
    fn an_unmounted_file_system_is_clean_once_its_scheme_is_gone() {
        let (mut l, clock, looks) = rig(Some(Duration::from_millis(35)));
        let t0 = clock.get();
        l.request(begin(0), t0);
        assert!(matches!(
            l.poll(t0)[..],
            [ControlMessage::ParticipantBeginAck { budget, .. }] if budget == UNMOUNT_BUDGET
        ));
        l.request(finish(0, Duration::from_millis(3500)), t0);
        let a = run_until_answer(&mut l, &clock);
        let ControlMessage::ParticipantFinishAck {
            id: 10,
            outcome: FinishOutcome::Clean,
            elapsed,
            detail,
            ..
        } = a
        else {
            panic!("{a:?}")
        };
        assert!(elapsed >= Duration::from_millis(35), "{elapsed:?}");
        assert!(
            elapsed <= Duration::from_millis(35) + POLL_MAX,
            "{elapsed:?}"
        );
        assert!(detail.contains("gone"), "{detail}");
        assert!(looks.get() < 20, "backs off: {} looks", looks.get());
    }

    #[test]
    fn a_daemon_that_never_exits_times_out_at_the_deadline() {
        let (mut l, clock, _) = rig(None);
        let t0 = clock.get();
        l.request(begin(0), t0);
        l.poll(t0);
        l.request(finish(0, Duration::from_millis(500)), t0);
        let a = run_until_answer(&mut l, &clock);
        assert!(
            matches!(
                a,
                ControlMessage::ParticipantFinishAck {
                    outcome: FinishOutcome::TimedOut,
                    ..
                }
            ),
            "{a:?}"
        );
        assert_eq!(
            clock.get(),
            t0 + Duration::from_millis(500),
            "answered at the deadline, not later"
        );
    }

    #[test]
    fn not_mounted_is_clean_at_once_and_a_refused_unmount_fails() {
        let (mut l, clock, _) = rig(None);
        let t0 = clock.get();
        l.request(begin(1), t0);
        l.request(finish(1, Duration::from_secs(1)), t0);
        let answers = l.poll(t0);
        assert!(matches!(
            answers[0],
            ControlMessage::ParticipantBeginAck {
                budget: Duration::ZERO,
                ..
            }
        ));
        assert!(matches!(
            &answers[1],
            ControlMessage::ParticipantFinishAck { outcome: FinishOutcome::Clean, detail, .. } if detail.contains("not mounted")
        ));
        l.request(
            ControlMessage::ParticipantShutdown {
                id: 5,
                participant: LOCAL_ID_BASE + 2,
                kind: pcid_interface::protocol::ShutdownKind::Poweroff,
                deadline: Duration::from_secs(1),
            },
            t0,
        );
        assert!(matches!(
            &l.poll(t0)[..],
            [ControlMessage::ParticipantFinishAck {
                id: 5,
                outcome: FinishOutcome::Failed,
                ..
            }]
        ));
        l.request(finish(9, Duration::from_secs(1)), t0);
        assert!(matches!(
            &l.poll(t0)[..],
            [ControlMessage::ParticipantError {
                kind: DeviceErrorKind::UnknownDevice,
                ..
            }]
        ));
    }
}

#[cfg(test)]
mod router_tests {
    use super::*;
    use crate::clocked_pcid::{ack, ClockedPcid};
    use crate::plan::Plan;
    use crate::run::run_plan_with_clock;
    use crate::scheduler::Config;
    use pcid_interface::function::PciAddress;
    use pcid_interface::protocol::DeviceInfo;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A registry whose `file` goes away 30 ms after it is unmounted.
    struct Registry {
        clock: Rc<Cell<Duration>>,
        unmounted_at: Option<Duration>,
    }

    impl SchemeRegistry for Registry {
        fn unmount(&mut self, _name: &str) -> io::Result<bool> {
            self.unmounted_at = Some(self.clock.get());
            Ok(true)
        }
        fn is_registered(&mut self, _name: &str) -> io::Result<bool> {
            Ok(self
                .unmounted_at
                .is_none_or(|at| self.clock.get() < at + Duration::from_millis(30)))
        }
    }

    /// pcid answering every device request 1 ms later.
    fn pcid(clock: Rc<Cell<Duration>>) -> ClockedPcid {
        ClockedPcid::new(
            clock,
            Duration::from_millis(1),
            Box::new(|msg| {
                let answer = ack(msg, Duration::from_millis(5));
                assert!(
                    answer.is_some(),
                    "pcid got a request not meant for it: {msg:?}"
                );
                answer
            }),
        )
    }

    #[test]
    fn the_root_file_system_is_unmounted_before_any_device_begins() {
        let clock = Rc::new(Cell::new(Duration::from_secs(1)));
        let mut local = LocalParticipants::new(
            Registry {
                clock: clock.clone(),
                unmounted_at: None,
            },
            vec![Unmount::parse("file").unwrap()],
            1,
        );
        let device = |d: u8| DeviceInfo {
            address: PciAddress {
                segment: 0,
                bus: 0,
                device: d,
                function: 0,
            },
            parent: None,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
            pid: 2,
            state: DriverState::Running,
        };
        let plan = Plan::with_participants(vec![device(1), device(2)], local.infos()).unwrap();
        let mut pcid = pcid(clock.clone());
        let now = || clock.get();
        let report = {
            let mut router = Router::new(&mut pcid, &mut local, &now);
            run_plan_with_clock(&mut router, plan, Config::default(), &now, &mut |_| {}).unwrap()
        };
        let fs = &report.devices[0];
        assert_eq!(
            (fs.kind.as_str(), fs.driver.as_str()),
            ("participant", "file")
        );
        assert_eq!(fs.outcome, "clean", "{}", fs.detail);
        let fs_done = fs.done_ms.unwrap();
        assert!((30.0..=40.0).contains(&fs_done), "{fs_done}");
        // Nothing reached pcid before the file system was gone.
        let first_device = pcid.sent[0].0;
        assert!(first_device >= Duration::from_secs(1) + Duration::from_millis(30));
        assert!(report.all_ok());
        assert_eq!(report.critical_path[0], "participant file");
    }
}
