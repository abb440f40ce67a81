//! pcid's event loop on Linux: one thread, one `epoll` instance, every
//! source of work registered in it.
//!
//! | source | token | on readiness |
//! |---|---|---|
//! | each driver's and participant's channel | `Driver(id)` | take the frames that arrived → relay |
//! | each driver's output pipe | `Output(i)` | forward complete lines to pcid's log |
//! | the control socket | `Listener` | accept, check the peer's uid |
//! | the participant socket (`--participants`) | `Participants` | accept, check the peer's uid, add a participant channel |
//! | each control connection | `Client(id)` | take the frames that arrived → relay; write what is queued |
//! | a self-pipe for signals | `Signals` | `SIGCHLD` → reap; `SIGTERM`/`SIGINT` → exit |
//! | standard input (`--exit-on-stdin-eof`) | `Stdin` | end of file → exit |
//!
//! The loop waits in `epoll_wait` at most until the relay's next deadline
//! (or a send-queue deadline, below), handles every ready source, and feeds
//! the relay's outputs straight back: a `Begin` for a driver is written to
//! its channel in the same turn of the loop as the control message that
//! asked for it.
//!
//! **Why `epoll` through `rustix`, not `mio`.** pcid needs readiness of a few
//! hundred Unix sockets and pipes, a self-pipe and a timeout — the one thing
//! `epoll` does. rustix is already pcid's system-call layer (pipes, sockets,
//! process ids), exposes `epoll` as a safe API (no `unsafe` here), and adds
//! no dependency. mio would add a crate and an abstraction over several
//! OSes this runtime does not serve (Redox has its own runtime,
//! [`crate::redox`]); its registration is edge-triggered only, while this
//! loop relies on level-triggered readiness for fairness (below).
//!
//! **A slow or silent driver never delays another.** Nothing in the loop
//! blocks on a peer:
//! * reads are non-blocking, and each ready channel gives up at most
//!   [`FRAMES_PER_TURN`] frames per turn before the next source is served;
//!   readiness is level-triggered, so what is left is reported again in the
//!   next turn (frames already read into pcid's buffer are remembered and
//!   served then too);
//! * writes are queued ([`pcid_interface::transport::Channel::queue`]): what
//!   a peer's socket does not take at once waits in that channel's queue
//!   and goes out when `epoll` says the socket is writable. A driver that
//!   takes nothing for [`DRIVER_SEND_TIMEOUT`] (a control client:
//!   [`CLIENT_SEND_TIMEOUT`]) while bytes are queued for it is closed, as a
//!   blocking send would have failed; its outstanding request then fails as
//!   for any driver whose channel closes;
//! * a driver's output is read at most [`OUTPUT_CHUNK`] bytes per pipe per
//!   turn, after the channels and clients of that turn.
//!
//! Writes to pcid's own standard error (its log, including the drivers'
//! forwarded lines) and standard output (the readiness line) are ordinary
//! blocking writes, as every `log` call is.
//!
//! Children are reaped with `waitpid(-1, WNOHANG)` when `SIGCHLD` arrives
//! (and when a channel reaches end of file): one call per exited child,
//! however many drivers there are.
//!
//! Once the drivers are spawned pcid asks for a higher scheduling priority
//! ([`PRIORITY`], nice −5; drivers keep the default): each driver pcid
//! wakes would otherwise preempt it before the next one is told, and
//! relaying a burst of 256 `Begin`s would take as long as the 256 drivers'
//! own work. Without the right to do so pcid runs as it is.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use pcid_interface::protocol::DriverMessage;
use pcid_interface::transport::{ControlChannel, ControlListener, DriverChannel, TransportError};
use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::process::{Pid, WaitOptions};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use super::{announce_ready, DaemonError, DriverOutput, ExitReason};
use crate::relay::{ClientId, DriverId, Input, Output, Relay};

/// Time a driver may leave bytes queued for it unread before pcid closes
/// its channel.
pub const DRIVER_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a control client may leave bytes queued for it unread before pcid
/// closes the connection.
pub const CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames taken from one channel or connection per turn of the loop. A
/// burst of 256 `Begin`s is relayed 64 at a time, the acks that arrived
/// meanwhile passed on in between: the first devices' `Finish` is not held
/// up behind the last devices' `Begin`.
pub const FRAMES_PER_TURN: usize = 64;
/// Bytes read from one driver's output pipe per turn of the loop.
pub const OUTPUT_CHUNK: usize = 16 * 1024;
/// Events taken from `epoll_wait` at once.
const EVENTS: usize = 256;

/// What an `epoll` registration stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Signals,
    Stdin,
    Listener,
    Participants,
    Driver(DriverId),
    Output(usize),
    Client(ClientId),
}

const KIND_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

impl Token {
    fn encode(self) -> epoll::EventData {
        let (kind, index) = match self {
            Token::Signals => (0, 0),
            Token::Stdin => (1, 0),
            Token::Listener => (2, 0),
            Token::Driver(id) => (3, id as u64),
            Token::Output(i) => (4, i as u64),
            Token::Client(c) => (5, c),
            Token::Participants => (6, 0),
        };
        epoll::EventData::new_u64((kind << KIND_SHIFT) | (index & INDEX_MASK))
    }

    fn decode(data: epoll::EventData) -> Option<Self> {
        let v = data.u64();
        let index = v & INDEX_MASK;
        Some(match v >> KIND_SHIFT {
            0 => Token::Signals,
            1 => Token::Stdin,
            2 => Token::Listener,
            3 => Token::Driver(usize::try_from(index).ok()?),
            4 => Token::Output(usize::try_from(index).ok()?),
            5 => Token::Client(index),
            6 => Token::Participants,
            _ => return None,
        })
    }
}

/// A driver spawned by pcid, or a shutdown participant that connected to
/// the participant socket, as the loop knows it (indexed by [`DriverId`]).
pub(super) struct DriverSlot {
    /// The process, until it has been reaped (`None` for a participant:
    /// not pcid's child, it is gone when its channel closes).
    pub(super) pid: Option<Pid>,
    /// pcid's end of the driver's channel, until it is closed: after end of
    /// file once the process has been reaped, or when pcid closes it.
    pub(super) channel: Option<DriverChannel>,
}

impl DriverSlot {
    /// A spawned driver.
    pub(super) fn new(pid: Pid, channel: DriverChannel) -> Self {
        Self {
            pid: Some(pid),
            channel: Some(channel),
        }
    }

    /// Closes the channel, and kills (SIGKILL) and reaps the process if it
    /// has not been reaped yet.
    fn stop(&mut self) {
        if let Some(ch) = self.channel.take() {
            let _ = ch.shutdown();
        }
        if let Some(pid) = self.pid.take() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            while let Err(rustix::io::Errno::INTR) =
                rustix::process::waitpid(Some(pid), WaitOptions::empty())
            {}
        }
    }
}

/// A driver is never left running without pcid: whatever path drops its
/// slot (the loop failing to start included) stops it.
impl Drop for DriverSlot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per-driver bookkeeping of the loop.
#[derive(Debug, Default, Clone, Copy)]
struct ChannelState {
    /// Registered for reading (until end of file or a fatal frame).
    reading: bool,
    /// `epoll` is asked for writability (bytes are queued).
    writing: bool,
    /// Reached end of file, or stopped reading after a bad frame.
    done_reading: bool,
    /// pcid decided to close it once the queue is written, at the latest then.
    closing: Option<Instant>,
}

struct Client {
    channel: ControlChannel,
    state: ChannelState,
}

/// What the loop needs besides the relay.
pub(super) struct Sources {
    pub(super) drivers: Vec<DriverSlot>,
    pub(super) outputs: Vec<DriverOutput>,
    pub(super) listener: Option<ControlListener>,
    /// The participant socket, where daemons that are not PCI drivers
    /// (file systems) join the shutdown.
    pub(super) participants: Option<ControlListener>,
    pub(super) exit_on_stdin_eof: bool,
}

/// The signal self-pipe: its read end is registered in `epoll`.
struct Signals {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let delivery =
            SignalDelivery::with_pipe(read, write, SignalOnly, [SIGCHLD, SIGTERM, SIGINT])?;
        Ok(Self { delivery })
    }

    fn pending(&mut self) -> Vec<i32> {
        self.delivery.pending().collect()
    }
}

/// The event loop: see the module documentation.
pub(super) struct EventLoop<'a> {
    epoll: OwnedFd,
    relay: &'a mut Relay,
    drivers: Vec<DriverSlot>,
    driver_state: Vec<ChannelState>,
    by_pid: HashMap<Pid, DriverId>,
    outputs: Vec<Option<DriverOutput>>,
    clients: BTreeMap<ClientId, Client>,
    next_client: ClientId,
    listener: Option<ControlListener>,
    participants: Option<ControlListener>,
    signals: Signals,
    /// Standard input reached end of file before the loop started (a
    /// regular file or `/dev/null`, which `epoll` cannot watch).
    stdin_at_eof: bool,
    ready_file: Option<&'a std::fs::File>,
    /// Channels and clients with frames already in pcid's buffer.
    buffered: Vec<Token>,
    /// Clients with bytes enqueued in this turn, to be written at its end.
    dirty_clients: Vec<ClientId>,
    own_uid: u32,
}

fn io_error(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> DaemonError {
    move |e| DaemonError::EventLoop {
        what,
        source: e.into(),
    }
}

impl<'a> EventLoop<'a> {
    /// Sets up `epoll` with every source. Fails only if `epoll` or the
    /// signal pipe cannot be created or registered.
    pub(super) fn new(
        relay: &'a mut Relay,
        sources: Sources,
        ready_file: Option<&'a std::fs::File>,
    ) -> Result<Self, DaemonError> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(io_error("epoll_create"))?;
        let signals = Signals::new().map_err(DaemonError::Signals)?;
        epoll::add(
            &epoll,
            signals.delivery.get_read(),
            Token::Signals.encode(),
            epoll::EventFlags::IN,
        )
        .map_err(io_error("registering the signal pipe"))?;
        let mut this = Self {
            epoll,
            relay,
            driver_state: vec![ChannelState::default(); sources.drivers.len()],
            by_pid: HashMap::new(),
            drivers: sources.drivers,
            outputs: sources.outputs.into_iter().map(Some).collect(),
            clients: BTreeMap::new(),
            next_client: 1,
            listener: sources.listener,
            participants: sources.participants,
            signals,
            stdin_at_eof: false,
            ready_file,
            buffered: Vec::new(),
            dirty_clients: Vec::new(),
            own_uid: rustix::process::geteuid().as_raw(),
        };
        for id in 0..this.drivers.len() {
            if let Some(pid) = this.drivers[id].pid {
                this.by_pid.insert(pid, id);
            }
            this.watch_driver(id);
        }
        for i in 0..this.outputs.len() {
            if let Some(o) = &this.outputs[i] {
                if let Err(e) = epoll::add(
                    &this.epoll,
                    &o.fd,
                    Token::Output(i).encode(),
                    epoll::EventFlags::IN,
                ) {
                    log::warn!("{}: cannot watch its output: {e}", o.prefix);
                    this.outputs[i] = None;
                }
            }
        }
        if let Some(listener) = &this.listener {
            epoll::add(
                &this.epoll,
                listener,
                Token::Listener.encode(),
                epoll::EventFlags::IN,
            )
            .map_err(io_error("registering the control socket"))?;
        }
        if let Some(listener) = &this.participants {
            epoll::add(
                &this.epoll,
                listener,
                Token::Participants.encode(),
                epoll::EventFlags::IN,
            )
            .map_err(io_error("registering the participant socket"))?;
        }
        if sources.exit_on_stdin_eof {
            let stdin = std::io::stdin();
            match epoll::add(
                &this.epoll,
                stdin.as_fd(),
                Token::Stdin.encode(),
                epoll::EventFlags::IN,
            ) {
                Ok(()) => {}
                // A regular file or /dev/null cannot be watched; read it to
                // its end now.
                Err(rustix::io::Errno::PERM) => {
                    let mut buf = [0u8; 4096];
                    let mut lock = stdin.lock();
                    while let Ok(n) = std::io::Read::read(&mut lock, &mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                    this.stdin_at_eof = true;
                }
                Err(e) => return Err(io_error("registering standard input")(e)),
            }
        }
        Ok(this)
    }

    /// Registers a driver's channel for reading.
    fn watch_driver(&mut self, id: DriverId) {
        let Some(channel) = self.drivers[id].channel.as_ref() else {
            return;
        };
        match epoll::add(
            &self.epoll,
            channel,
            Token::Driver(id).encode(),
            epoll::EventFlags::IN,
        ) {
            Ok(()) => self.driver_state[id].reading = true,
            Err(e) => {
                log::error!("{}: cannot watch its channel: {e}", self.address_of(id));
                self.driver_state[id].done_reading = true;
            }
        }
    }

    fn address_of(&self, driver: DriverId) -> String {
        self.relay
            .address(driver)
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("driver #{driver}"))
    }

    /// Runs until an exit condition; returns why.
    pub(super) fn run(&mut self) -> Result<ExitReason, DaemonError> {
        raise_priority();
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        // Settle immediately when there are no drivers at all.
        let out = self.relay.handle(Input::Tick, Instant::now());
        if let Some(reason) = self.execute(out)? {
            return Ok(reason);
        }
        if self.stdin_at_eof {
            return Ok(ExitReason::StdinClosed);
        }
        loop {
            self.flush_clients();
            let timeout = if self.buffered.is_empty() {
                self.next_timeout()
            } else {
                Some(Duration::ZERO)
            };
            events.clear();
            let ts = timeout.map(ceil_ms_timespec);
            match epoll::wait(&self.epoll, spare_capacity(&mut events), ts.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io_error("epoll_wait")(e)),
            }
            // Channels and connections first, then the drivers' output.
            let mut tokens: Vec<(Token, epoll::EventFlags)> = std::mem::take(&mut self.buffered)
                .into_iter()
                .map(|t| (t, epoll::EventFlags::IN))
                .collect();
            tokens.extend(
                events
                    .iter()
                    .filter_map(|e| Token::decode(e.data).map(|t| (t, e.flags))),
            );
            tokens.sort_by_key(|(t, _)| matches!(t, Token::Output(_)));
            for (token, flags) in tokens {
                if let Some(reason) = self.dispatch(token, flags)? {
                    return Ok(reason);
                }
                // Acks go on to the client as they come.
                self.flush_clients();
            }
            if let Some(reason) = self.check_send_deadlines()? {
                return Ok(reason);
            }
            let now = Instant::now();
            if self.relay.next_deadline().is_some_and(|d| d <= now) {
                let out = self.relay.handle(Input::Tick, now);
                if let Some(reason) = self.execute(out)? {
                    return Ok(reason);
                }
            }
        }
    }

    /// Time until the earliest deadline: the relay's, or a send queue's.
    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self.relay.next_deadline();
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        for (slot, st) in self.drivers.iter().zip(&self.driver_state) {
            // Bytes are queued only where the loop asked for writability.
            if let (Some(ch), true) = (&slot.channel, st.writing || st.closing.is_some()) {
                consider(st.closing);
                consider(ch.stalled_since().map(|s| s + DRIVER_SEND_TIMEOUT));
            }
        }
        for c in self.clients.values() {
            consider(c.state.closing);
            consider(c.channel.stalled_since().map(|s| s + CLIENT_SEND_TIMEOUT));
        }
        next.map(|d| d.saturating_duration_since(now))
    }

    fn dispatch(
        &mut self,
        token: Token,
        flags: epoll::EventFlags,
    ) -> Result<Option<ExitReason>, DaemonError> {
        match token {
            Token::Signals => {
                for sig in self.signals.pending() {
                    if sig == signal_hook::consts::SIGCHLD {
                        if let Some(r) = self.reap()? {
                            return Ok(Some(r));
                        }
                    } else {
                        return Ok(Some(ExitReason::Signal(sig)));
                    }
                }
                Ok(None)
            }
            Token::Stdin => self.stdin_readable(),
            Token::Listener => self.accept(),
            Token::Participants => self.accept_participants(),
            Token::Driver(id) => {
                if flags.contains(epoll::EventFlags::OUT) {
                    self.flush_driver(id);
                }
                if flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    return self.driver_readable(id);
                }
                Ok(None)
            }
            Token::Client(id) => {
                if flags.contains(epoll::EventFlags::OUT) {
                    self.flush_client(id)?;
                }
                if flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    return self.client_readable(id);
                }
                Ok(None)
            }
            Token::Output(i) => {
                self.output_readable(i);
                Ok(None)
            }
        }
    }

    fn stdin_readable(&mut self) -> Result<Option<ExitReason>, DaemonError> {
        let mut buf = [0u8; 256];
        match rustix::io::read(std::io::stdin().as_fd(), &mut buf) {
            Ok(0) => Ok(Some(ExitReason::StdinClosed)),
            Ok(_) | Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => Ok(None),
            Err(_) => Ok(Some(ExitReason::StdinClosed)),
        }
    }

    /// Feeds one input to the relay and carries out its outputs.
    fn step(&mut self, input: Input) -> Result<Option<ExitReason>, DaemonError> {
        let out = self.relay.handle(input, Instant::now());
        self.execute(out)
    }

    fn driver_readable(&mut self, id: DriverId) -> Result<Option<ExitReason>, DaemonError> {
        for _ in 0..FRAMES_PER_TURN {
            let Some(channel) = self.drivers.get_mut(id).and_then(|d| d.channel.as_mut()) else {
                return Ok(None);
            };
            if self.driver_state[id].done_reading {
                return Ok(None);
            }
            let input = match channel.try_recv() {
                Ok(Some(message)) => Input::DriverMessage {
                    driver: id,
                    message,
                },
                Ok(None) => return Ok(None),
                Err(TransportError::Malformed { seq, error }) => Input::DriverBadFrame {
                    driver: id,
                    error: format!("{error} (seq {seq})"),
                },
                Err(e @ TransportError::ClosedMidFrame { .. }) => Input::DriverBadFrame {
                    driver: id,
                    error: format!("truncated frame: {e}"),
                },
                Err(_) => Input::DriverChannelClosed { driver: id },
            };
            let last = !matches!(input, Input::DriverMessage { .. });
            if last {
                self.stop_reading_driver(id);
                if let Input::DriverChannelClosed { .. } = input {
                    // The process probably exited; reap it first if so.
                    if let Some(r) = self.reap()? {
                        return Ok(Some(r));
                    }
                    if let Some(r) = self.step(input)? {
                        return Ok(Some(r));
                    }
                } else {
                    // After a bad frame the relay closes the channel; report
                    // the close too, as for any channel that closes.
                    if let Some(r) = self.step(input)? {
                        return Ok(Some(r));
                    }
                    if let Some(r) = self.reap()? {
                        return Ok(Some(r));
                    }
                    if let Some(r) = self.step(Input::DriverChannelClosed { driver: id })? {
                        return Ok(Some(r));
                    }
                }
                self.release_driver_channel(id);
                return Ok(None);
            }
            if let Some(r) = self.step(input)? {
                return Ok(Some(r));
            }
        }
        if self.drivers[id]
            .channel
            .as_ref()
            .is_some_and(|c| c.has_buffered_frame())
        {
            self.buffered.push(Token::Driver(id));
        }
        Ok(None)
    }

    fn stop_reading_driver(&mut self, id: DriverId) {
        let st = &mut self.driver_state[id];
        st.done_reading = true;
        if st.reading {
            st.reading = false;
            if let Some(ch) = &self.drivers[id].channel {
                let _ = epoll::delete(&self.epoll, ch);
            }
        }
    }

    /// Closes pcid's end of a driver channel that needs nothing more: done
    /// reading, nothing left to write, and the process reaped.
    fn release_driver_channel(&mut self, id: DriverId) {
        let st = self.driver_state[id];
        let slot = &mut self.drivers[id];
        let queued = slot.channel.as_ref().is_some_and(|c| c.queued() > 0);
        if st.done_reading && slot.pid.is_none() && !queued {
            if let Some(ch) = slot.channel.take() {
                let _ = epoll::delete(&self.epoll, &ch);
            }
            self.driver_state[id] = ChannelState {
                done_reading: true,
                ..ChannelState::default()
            };
        }
    }

    fn set_driver_interest(&mut self, id: DriverId) {
        let Some(ch) = self.drivers[id].channel.as_ref() else {
            return;
        };
        let st = &mut self.driver_state[id];
        let want_write = ch.queued() > 0;
        let want_read = !st.done_reading;
        if want_write == st.writing && want_read == st.reading {
            return;
        }
        let mut flags = epoll::EventFlags::empty();
        if want_read {
            flags |= epoll::EventFlags::IN;
        }
        if want_write {
            flags |= epoll::EventFlags::OUT;
        }
        let registered = st.reading || st.writing;
        let result = match (registered, flags.is_empty()) {
            (false, false) => epoll::add(&self.epoll, ch, Token::Driver(id).encode(), flags),
            (true, false) => epoll::modify(&self.epoll, ch, Token::Driver(id).encode(), flags),
            (true, true) => epoll::delete(&self.epoll, ch),
            (false, true) => Ok(()),
        };
        match result {
            Ok(()) => {
                st.reading = want_read;
                st.writing = want_write;
            }
            Err(e) => log::error!("{}: epoll: {e}", self.address_of(id)),
        }
    }

    fn flush_driver(&mut self, id: DriverId) {
        let Some(ch) = self.drivers.get(id).and_then(|d| d.channel.as_ref()) else {
            return;
        };
        match ch.flush() {
            Ok(true) => {
                if self.driver_state[id].closing.is_some() {
                    self.driver_state[id].closing = None;
                    let _ = ch.shutdown();
                }
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("{}: sending to driver failed: {e}", self.address_of(id));
                let _ = ch.shutdown();
            }
        }
        self.set_driver_interest(id);
        self.release_driver_channel(id);
    }

    fn send_to_driver(&mut self, id: DriverId, message: &DriverMessage) {
        let Some(ch) = self.drivers.get(id).and_then(|d| d.channel.as_ref()) else {
            return;
        };
        if let Err(e) = ch.queue(message) {
            log::warn!("{}: sending to driver failed: {e}", self.address_of(id));
            let _ = ch.shutdown();
        }
        self.set_driver_interest(id);
    }

    fn close_driver(&mut self, id: DriverId) {
        let Some(ch) = self.drivers.get(id).and_then(|d| d.channel.as_ref()) else {
            return;
        };
        if ch.queued() == 0 {
            let _ = ch.shutdown();
        } else {
            // The Error naming the violation goes out first.
            self.driver_state[id].closing = Some(Instant::now() + DRIVER_SEND_TIMEOUT);
        }
    }

    /// Reaps every exited child and tells the relay.
    fn reap(&mut self) -> Result<Option<ExitReason>, DaemonError> {
        loop {
            let (pid, status) = match rustix::process::waitpid(None, WaitOptions::NOHANG) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                // No children left.
                Err(rustix::io::Errno::CHILD) => return Ok(None),
                Err(e) => {
                    log::warn!("waiting for drivers: {e}");
                    return Ok(None);
                }
            };
            let Some(id) = self.by_pid.remove(&pid) else {
                log::debug!(
                    "reaped process {} that is not a driver",
                    pid.as_raw_nonzero()
                );
                continue;
            };
            let text = std::process::ExitStatus::from_raw(status.as_raw()).to_string();
            self.drivers[id].pid = None;
            // Its last messages are still read; after them the channel
            // reports end of file.
            if let Some(ch) = &self.drivers[id].channel {
                let _ = ch.shutdown();
            }
            if let Some(r) = self.step(Input::DriverExited {
                driver: id,
                status: text,
            })? {
                return Ok(Some(r));
            }
            self.release_driver_channel(id);
        }
    }

    fn accept(&mut self) -> Result<Option<ExitReason>, DaemonError> {
        // Several may be waiting; each is taken without waiting.
        for _ in 0..FRAMES_PER_TURN {
            let Some(listener) = &self.listener else {
                return Ok(None);
            };
            let (channel, cred) = match listener.accept(Some(Duration::ZERO)) {
                Ok(c) => c,
                Err(pcid_interface::transport::ControlError::Timeout(_)) => return Ok(None),
                Err(e) => {
                    log::error!("control endpoint {}: {e}", listener.path().display());
                    return Ok(None);
                }
            };
            if !cred.is_same_user() {
                log::error!(
                    "control endpoint: refused connection from pid {} uid {}: only uid {} may control pcid",
                    cred.pid,
                    cred.uid,
                    self.own_uid
                );
                let _ = channel.shutdown();
                continue;
            }
            let client = self.next_client;
            self.next_client += 1;
            log::info!("control client {client} connected (pid {})", cred.pid);
            if let Err(e) = epoll::add(
                &self.epoll,
                &channel,
                Token::Client(client).encode(),
                epoll::EventFlags::IN,
            ) {
                log::error!("control client {client}: cannot watch it: {e}");
                let _ = channel.shutdown();
                continue;
            }
            self.clients.insert(
                client,
                Client {
                    channel,
                    state: ChannelState {
                        reading: true,
                        ..ChannelState::default()
                    },
                },
            );
            // A client is known to the relay before its first message.
            if let Some(r) = self.step(Input::ClientConnected { client })? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Takes every waiting participant connection (same uid only): each
    /// becomes a channel of the relay, served like a driver's.
    fn accept_participants(&mut self) -> Result<Option<ExitReason>, DaemonError> {
        for _ in 0..FRAMES_PER_TURN {
            let Some(listener) = &self.participants else {
                return Ok(None);
            };
            let (channel, cred) =
                match listener.accept_channel::<DriverMessage>(Some(Duration::ZERO)) {
                    Ok(c) => c,
                    Err(pcid_interface::transport::ControlError::Timeout(_)) => return Ok(None),
                    Err(e) => {
                        log::error!("participant endpoint {}: {e}", listener.path().display());
                        return Ok(None);
                    }
                };
            if !cred.is_same_user() {
                log::error!(
                    "participant endpoint: refused connection from pid {} uid {}: only uid {} may take part",
                    cred.pid,
                    cred.uid,
                    self.own_uid
                );
                let _ = channel.shutdown();
                continue;
            }
            let id = self.relay.add_participant(cred.pid, Instant::now());
            // A DriverId indexes both the relay's channels and `drivers`.
            while self.drivers.len() < id {
                self.drivers.push(DriverSlot {
                    pid: None,
                    channel: None,
                });
                self.driver_state.push(ChannelState {
                    done_reading: true,
                    ..ChannelState::default()
                });
            }
            self.drivers.push(DriverSlot {
                pid: None,
                channel: Some(channel),
            });
            self.driver_state.push(ChannelState::default());
            self.watch_driver(id);
            log::info!("participant channel #{id} opened (pid {})", cred.pid);
            if let Some(r) = self.step(Input::Tick)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn client_readable(&mut self, client: ClientId) -> Result<Option<ExitReason>, DaemonError> {
        for _ in 0..FRAMES_PER_TURN {
            let Some(c) = self.clients.get_mut(&client) else {
                return Ok(None);
            };
            if c.state.done_reading {
                return Ok(None);
            }
            let input = match c.channel.try_recv() {
                Ok(Some(message)) => Input::ClientMessage { client, message },
                Ok(None) => return Ok(None),
                Err(TransportError::Malformed { seq, error }) => Input::ClientBadFrame {
                    client,
                    fatal: error.is_stream_fatal(),
                    error: format!("{error} (seq {seq})"),
                },
                Err(_) => Input::ClientClosed { client },
            };
            let stop = matches!(
                input,
                Input::ClientClosed { .. } | Input::ClientBadFrame { fatal: true, .. }
            );
            if let Some(r) = self.step(input)? {
                return Ok(Some(r));
            }
            if stop {
                if let Some(r) = self.step(Input::ClientClosed { client })? {
                    return Ok(Some(r));
                }
                // What the relay answered (the error naming a bad frame)
                // goes out first.
                self.drop_client(client, true);
                return Ok(None);
            }
        }
        if self
            .clients
            .get(&client)
            .is_some_and(|c| c.channel.has_buffered_frame())
        {
            self.buffered.push(Token::Client(client));
        }
        Ok(None)
    }

    /// Forgets a client: at once, or (`after_flush`) once what is queued for
    /// it has been written (at most [`CLIENT_SEND_TIMEOUT`]).
    fn drop_client(&mut self, client: ClientId, after_flush: bool) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.state.done_reading = true;
        if after_flush && c.channel.queued() > 0 {
            if c.state.closing.is_none() {
                c.state.closing = Some(Instant::now() + CLIENT_SEND_TIMEOUT);
            }
            let _ = epoll::modify(
                &self.epoll,
                &c.channel,
                Token::Client(client).encode(),
                epoll::EventFlags::OUT,
            );
            c.state.reading = false;
            c.state.writing = true;
            return;
        }
        if let Some(c) = self.clients.remove(&client) {
            let _ = c.channel.flush();
            let _ = epoll::delete(&self.epoll, &c.channel);
            let _ = c.channel.shutdown();
        }
    }

    fn flush_client(&mut self, client: ClientId) -> Result<(), DaemonError> {
        let Some(c) = self.clients.get_mut(&client) else {
            return Ok(());
        };
        let result = c.channel.flush();
        let closing = c.state.closing.is_some();
        match result {
            Ok(true) if closing => {
                self.drop_client(client, false);
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("control client {client}: send failed: {e}");
                let _ = c.channel.shutdown();
                // Reading reports the close.
                if closing {
                    self.drop_client(client, false);
                }
                return Ok(());
            }
        }
        let want_write = c.channel.queued() > 0;
        let want_read = !c.state.done_reading;
        if want_write != c.state.writing || want_read != c.state.reading {
            let mut flags = epoll::EventFlags::empty();
            if want_read {
                flags |= epoll::EventFlags::IN;
            }
            if want_write {
                flags |= epoll::EventFlags::OUT;
            }
            if let Err(e) = epoll::modify(
                &self.epoll,
                &c.channel,
                Token::Client(client).encode(),
                flags,
            ) {
                log::error!("control client {client}: epoll: {e}");
            }
            c.state.reading = want_read;
            c.state.writing = want_write;
        }
        Ok(())
    }

    /// Writes what this turn queued for control clients: one write per
    /// client for a burst of acks.
    fn flush_clients(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_clients);
        for client in dirty {
            let _ = self.flush_client(client);
        }
    }

    /// Closes peers that have not taken queued bytes in time, and channels
    /// whose close waited for a flush that did not come.
    fn check_send_deadlines(&mut self) -> Result<Option<ExitReason>, DaemonError> {
        let now = Instant::now();
        for id in 0..self.drivers.len() {
            let st = self.driver_state[id];
            let Some(ch) = self.drivers[id].channel.as_ref() else {
                continue;
            };
            if !st.writing && st.closing.is_none() {
                continue;
            }
            let closing_over = self.driver_state[id].closing.is_some_and(|d| now >= d);
            let stalled = ch
                .stalled_since()
                .is_some_and(|s| now >= s + DRIVER_SEND_TIMEOUT);
            if closing_over || stalled {
                log::warn!(
                    "{}: the driver took nothing of {} queued bytes for {:?}; closing its channel",
                    self.address_of(id),
                    ch.queued(),
                    DRIVER_SEND_TIMEOUT
                );
                let _ = ch.shutdown();
                self.driver_state[id].closing = None;
                // Nothing more will be written; end of file follows.
                let st = &mut self.driver_state[id];
                if st.writing {
                    st.writing = false;
                    let flags = if st.reading {
                        epoll::EventFlags::IN
                    } else {
                        epoll::EventFlags::empty()
                    };
                    let _ = if flags.is_empty() {
                        epoll::delete(&self.epoll, ch)
                    } else {
                        epoll::modify(&self.epoll, ch, Token::Driver(id).encode(), flags)
                    };
                }
            }
        }
        let late: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.state.closing.is_some_and(|d| now >= d)
                    || c.channel
                        .stalled_since()
                        .is_some_and(|s| now >= s + CLIENT_SEND_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        for client in late {
            log::warn!(
                "control client {client}: took nothing of what was queued for it for {CLIENT_SEND_TIMEOUT:?}; closing it"
            );
            self.drop_client(client, false);
            if let Some(r) = self.step(Input::ClientClosed { client })? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn output_readable(&mut self, i: usize) {
        let Some(Some(o)) = self.outputs.get_mut(i) else {
            return;
        };
        let mut chunk = [0u8; OUTPUT_CHUNK];
        let closed = match rustix::io::read(o.fd.as_fd(), &mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                o.pending.extend_from_slice(&chunk[..n]);
                o.emit(false);
                false
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => false,
            Err(e) => {
                log::warn!("{}: reading its output: {e}", o.prefix);
                true
            }
        };
        if closed {
            o.emit(true);
            let _ = epoll::delete(&self.epoll, &o.fd);
            self.outputs[i] = None;
        }
    }

    /// Carries out the relay's outputs.
    fn execute(&mut self, outputs: Vec<Output>) -> Result<Option<ExitReason>, DaemonError> {
        for output in outputs {
            match output {
                Output::ToDriver { driver, message } => self.send_to_driver(driver, &message),
                Output::CloseDriver { driver } => self.close_driver(driver),
                Output::ToClient { client, message } => {
                    if let Some(c) = self.clients.get(&client) {
                        match c.channel.enqueue(&message) {
                            Ok(()) => self.dirty_clients.push(client),
                            Err(e) => {
                                log::warn!("control client {client}: send failed: {e}; closing it");
                                self.drop_client(client, false);
                                let out = self
                                    .relay
                                    .handle(Input::ClientClosed { client }, Instant::now());
                                if let Some(r) = self.execute(out)? {
                                    return Ok(Some(r));
                                }
                            }
                        }
                    }
                }
                Output::CloseClient { client } => self.drop_client(client, true),
                Output::Ready { ready, total } => announce_ready(ready, total, self.ready_file)?,
                Output::Exit => return Ok(Some(ExitReason::ShutdownDone)),
            }
        }
        Ok(None)
    }

    /// Stops every driver still running (SIGKILL) and reaps it; closes
    /// every channel and connection.
    pub(super) fn stop_drivers(&mut self) {
        for client in self.clients.keys().copied().collect::<Vec<_>>() {
            self.drop_client(client, false);
        }
        for slot in &mut self.drivers {
            slot.stop();
        }
        // The drivers' last lines, as far as they are already there.
        for o in self.outputs.iter_mut().flatten() {
            let mut chunk = [0u8; OUTPUT_CHUNK];
            while let Ok(n) = rustix::io::read(o.fd.as_fd(), &mut chunk) {
                if n == 0 {
                    break;
                }
                o.pending.extend_from_slice(&chunk[..n]);
            }
            o.emit(true);
        }
        let _ = std::io::stderr().flush();
    }

    /// Number of drivers whose process has not been reaped.
    pub(super) fn running_drivers(&self) -> usize {
        self.drivers.iter().filter(|d| d.pid.is_some()).count()
    }

    /// Drivers spawned.
    pub(super) fn driver_count(&self) -> usize {
        self.drivers.len()
    }
}

/// pcid's scheduling priority while it serves (nice value).
pub const PRIORITY: i32 = -5;

/// Asks for [`PRIORITY`] once the drivers are spawned (they keep the
/// default): pcid relays to hundreds of drivers, and each driver it wakes
/// would otherwise preempt it before the next one is told — the relay of a
/// burst of `Begin`s would take as long as the drivers' own work. Needs the
/// right to raise a priority (root, or `CAP_SYS_NICE`); refused, pcid runs
/// as it is, and says so at debug level.
fn raise_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, PRIORITY) {
        log::debug!("keeping the default scheduling priority (nice {PRIORITY}: {e})");
    }
}

/// A timeout for `epoll_wait`, rounded up to whole milliseconds (the
/// kernel's resolution for it), so that the loop never wakes just before a
/// deadline and spins.
fn ceil_ms_timespec(d: Duration) -> rustix::event::Timespec {
    let ms = d.as_nanos().div_ceil(1_000_000);
    let ms = u64::try_from(ms).unwrap_or(u64::MAX).min(i32::MAX as u64);
    rustix::event::Timespec {
        tv_sec: (ms / 1000) as _,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Signals,
            Token::Stdin,
            Token::Listener,
            Token::Participants,
            Token::Driver(0),
            Token::Driver(1023),
            Token::Output(7),
            Token::Client(1),
            Token::Client(INDEX_MASK),
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(
            Token::decode(epoll::EventData::new_u64(9 << KIND_SHIFT)),
            None
        );
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        let t = ceil_ms_timespec(Duration::from_micros(1));
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 1_000_000));
        let t = ceil_ms_timespec(Duration::from_millis(1500));
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
        let t = ceil_ms_timespec(Duration::ZERO);
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 0));
        let t = ceil_ms_timespec(Duration::MAX);
        assert!(t.tv_sec > 0);
    }
}
