//! OS transport for the channels: the inherited driver channel fd and pcid's
//! control endpoint, both Unix stream sockets carrying [`crate::wire`] frames.
//!
//! * [`Channel`] — one end of a connection carrying one message family
//!   ([`DriverChannel`] for a driver's channel, [`ControlChannel`] for the
//!   control endpoint). [`Channel::send`] writes one frame;
//!   [`Channel::recv`] reads one, waiting at most a given time. Partial frames
//!   are buffered across calls, so a timeout never loses bytes; a header
//!   announcing an oversize payload is rejected before anything is allocated.
//! * [`Sender`] — a cloneable send-only handle, so one thread can block in
//!   `recv` while others send.
//! * For event loops (pcid's Linux runtime, shutdownd): [`Channel::try_recv`]
//!   takes one frame without waiting (at most one read from the socket per
//!   call), and [`Channel::queue`] (or [`Channel::enqueue`], which only
//!   appends, for a burst written at once) / [`Channel::flush`] send without
//!   ever waiting: what the peer cannot take yet stays in the channel's send
//!   queue, in order, until a later `flush` (when the socket is writable)
//!   writes it. [`Channel::queued`] tells a loop whether to wait for
//!   writability, and since when the peer has taken nothing
//!   ([`Channel::stalled_since`]) so it can give up on a peer that stopped
//!   reading. A blocking [`Channel::send`] writes what is queued first.
//! * [`spawn_with_channel`] — how pcid hands one end of a [`Channel::pair`] to a
//!   driver process (fd number in `PCID_CLIENT_CHANNEL`);
//!   [`Channel::from_env`] is how the driver adopts it.
//! * [`ControlListener`] / [`ControlClient`] — pcid's control socket (mode
//!   0600, peer credentials from `SO_PEERCRED`) and shutdownd's connection.
//!
//! Sends are bounded too: a peer that stops reading makes [`Channel::send`]
//! fail with [`TransportError::SendTimeout`] after the channel's send timeout
//! ([`DEFAULT_SEND_TIMEOUT`] unless changed), never block forever.
//!
//! A channel's waiting primitives are opened once, when the channel is made,
//! and reused by every `recv`: on Redox an event queue subscribed to the
//! channel and a `/scheme/time` timer, which a driver cannot open any more
//! once it has dropped privileges (`setrens`); on Linux `poll` needs nothing.
//! Both go through [`crate::privileges::before_open`], so a channel made
//! after the privilege drop fails on every OS, and the Linux tests check the
//! order Redox requires.

use std::fmt;
use std::io;
use std::marker::PhantomData;
#[cfg(not(target_os = "redox"))]
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::{ControlMessage, DriverMessage};
use crate::wire::{DecodeError, EncodeError, FrameHeader, WireMessage, HEADER_LEN};

mod adopt;
#[cfg(not(target_os = "redox"))]
mod control;
#[cfg(not(target_os = "redox"))]
mod sys;
#[cfg(target_os = "redox")]
#[path = "transport/redox.rs"]
mod sys;
#[cfg(not(target_os = "redox"))]
mod unix;

#[cfg(not(target_os = "redox"))]
pub use control::{ControlClient, ControlError, ControlListener, ParticipantClient, PeerCred};
pub use sys::spawn_with_channel;
#[cfg(target_os = "redox")]
pub use sys::{
    spawn_with_fd, ControlClient, ControlError, ParticipantClient, CONTROL_PATH, PARTICIPANT_PATH,
};
#[cfg(not(target_os = "redox"))]
pub use unix::adopt_inherited_fd;

/// A channel carrying [`DriverMessage`]s (pcid ↔ one driver).
pub type DriverChannel = Channel<DriverMessage>;
/// A channel carrying [`ControlMessage`]s (shutdownd ↔ pcid).
pub type ControlChannel = Channel<ControlMessage>;

/// Send timeout a new channel starts with.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes [`Channel::queue`] keeps for a peer that does not read; a
/// message that would go beyond is refused with [`TransportError::Backlog`].
pub const MAX_QUEUED: usize = 1 << 20;

/// Errors of [`Channel`] operations.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer closed the channel cleanly (between frames).
    #[error("peer closed the channel")]
    Closed,
    /// The peer closed the channel after sending part of a frame.
    #[error("peer closed the channel in the middle of a frame ({buffered} bytes received)")]
    ClosedMidFrame {
        /// Bytes of the incomplete frame that were received.
        buffered: usize,
    },
    /// No complete frame arrived within the allowed time. The channel stays
    /// usable; bytes of a partial frame are kept for the next `recv`.
    #[error("no message within {0:?}")]
    Timeout(Duration),
    /// The peer did not take the frame within the send timeout.
    #[error("peer did not read a frame within {0:?}")]
    SendTimeout(Duration),
    /// A frame arrived but could not be decoded. `seq` is the header's
    /// sequence number (0 if the header itself was bad). When the error is not
    /// [stream-fatal](DecodeError::is_stream_fatal) the frame was consumed and
    /// the channel stays usable: answer `Error { seq, .. }` and go on.
    #[error("malformed frame (seq {seq}): {error}")]
    Malformed {
        /// Sequence number from the frame header, 0 if unknown.
        seq: u32,
        /// What was wrong.
        error: DecodeError,
    },
    /// The message could not be encoded (too long strings, too large frame).
    #[error("cannot encode message: {0}")]
    Encode(#[from] EncodeError),
    /// An earlier error left the byte stream out of sync; the channel is unusable.
    #[error("channel unusable after an earlier framing or I/O error")]
    Broken,
    /// [`Channel::queue`]: the peer has not taken [`MAX_QUEUED`] bytes sent
    /// to it; the message was not queued.
    #[error("peer is not reading: {queued} bytes already queued")]
    Backlog {
        /// Bytes waiting in the send queue.
        queued: usize,
    },
    /// Any other OS error.
    #[error("channel I/O error: {0}")]
    Io(#[from] io::Error),
}

impl TransportError {
    /// Whether the channel can no longer be used after this error.
    pub fn is_fatal(&self) -> bool {
        match self {
            TransportError::Timeout(_) | TransportError::Encode(_) => false,
            TransportError::Malformed { error, .. } => error.is_stream_fatal(),
            _ => true,
        }
    }
}

/// State shared by every handle that writes to one socket.
#[derive(Debug, Default)]
struct WriteSide {
    /// Set when a frame was only partly written: the stream is out of sync.
    broken: bool,
    /// Bytes accepted by [`Channel::queue`] that the socket did not take
    /// yet, whole frames in order (the first possibly partly written).
    queued: Vec<u8>,
    /// Since when `queued` has been waiting without the peer taking a byte.
    stalled_since: Option<Instant>,
}

impl WriteSide {
    /// Writes queued bytes without waiting. `Ok(true)` when the queue is empty.
    fn flush(&mut self, stream: &UnixStream) -> Result<bool, TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        let mut progress = false;
        while !self.queued.is_empty() {
            match sys::send_nonblocking(stream.as_fd(), &self.queued) {
                Ok(n) => {
                    self.queued.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.broken = true;
                    self.queued = Vec::new();
                    self.stalled_since = None;
                    return Err(send_error(e));
                }
            }
        }
        if self.queued.is_empty() {
            self.stalled_since = None;
            // Give back the memory a burst needed.
            if self.queued.capacity() > 64 * 1024 {
                self.queued = Vec::new();
            }
        } else if progress || self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
        Ok(self.queued.is_empty())
    }

    /// Appends `frame` to the queue, unless the queue is full.
    fn push(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        if self.broken {
            return Err(TransportError::Broken);
        }
        if self.queued.len() + frame.len() > MAX_QUEUED {
            return Err(TransportError::Backlog {
                queued: self.queued.len(),
            });
        }
        self.queued.extend_from_slice(frame);
        Ok(())
    }

    /// Appends `frame` to the queue and writes what the socket takes now.
    fn queue(&mut self, stream: &UnixStream, frame: &[u8]) -> Result<(), TransportError> {
        self.push(frame)?;
        self.flush(stream).map(drop)
    }
}

fn send_error(e: io::Error) -> TransportError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => TransportError::Closed,
        _ => TransportError::Io(e),
    }
}

/// One end of a framed, bidirectional channel carrying messages of type `M`.
pub struct Channel<M> {
    stream: Arc<UnixStream>,
    /// What `recv` waits with, opened with the channel; the error if that failed.
    waiter: Result<sys::Waiter, String>,
    write: Arc<Mutex<WriteSide>>,
    send_timeout: Duration,
    rx: Vec<u8>,
    rx_broken: bool,
    _m: PhantomData<fn() -> M>,
}

/// A cloneable, send-only handle to a [`Channel`], for use from other threads.
pub struct Sender<M> {
    stream: Arc<UnixStream>,
    write: Arc<Mutex<WriteSide>>,
    send_timeout: Duration,
    _m: PhantomData<fn() -> M>,
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Self {
            stream: Arc::clone(&self.stream),
            write: Arc::clone(&self.write),
            send_timeout: self.send_timeout,
            _m: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Channel<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("stream", &self.stream)
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl<M> fmt::Debug for Sender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("stream", &self.stream)
            .finish()
    }
}

fn lock(write: &Mutex<WriteSide>) -> MutexGuard<'_, WriteSide> {
    // A panic while holding the lock cannot leave `broken` inconsistent.
    write.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one whole frame, bounded by `timeout`, after whatever
/// [`Channel::queue`] left queued.
fn send_frame(
    stream: &UnixStream,
    write: &Mutex<WriteSide>,
    frame: &[u8],
    timeout: Duration,
) -> Result<(), TransportError> {
    let mut side = lock(write);
    if side.broken {
        return Err(TransportError::Broken);
    }
    // A timeout too large to represent as an instant is as good as none.
    let deadline = Instant::now().checked_add(timeout);
    side.queued.extend_from_slice(frame);
    loop {
        if side.flush(stream)? {
            return Ok(());
        }
        let now = Instant::now();
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if left.is_zero() || !sys::wait_writable(stream.as_fd(), left)? {
            let unsent = side.queued.len();
            if unsent >= frame.len() {
                // None of this frame went out: take it back.
                let keep = unsent - frame.len();
                side.queued.truncate(keep);
                if keep == 0 {
                    side.stalled_since = None;
                }
            } else {
                // Part of it did: the stream is out of sync.
                side.broken = true;
                side.queued = Vec::new();
                side.stalled_since = None;
            }
            return Err(TransportError::SendTimeout(timeout));
        }
    }
}

impl<M: WireMessage> Channel<M> {
    /// Wraps a connected Unix stream socket and opens what `recv` waits with.
    /// If that fails, the error is reported by the first `recv` that has to
    /// wait; [`try_from_stream`](Self::try_from_stream) reports it at once.
    pub fn from_stream(stream: UnixStream) -> Self {
        let waiter = sys::Waiter::new(stream.as_fd()).map_err(|e| e.to_string());
        Self::with_waiter(stream, waiter)
    }

    /// Like [`from_stream`](Self::from_stream), failing if the waiting
    /// primitives cannot be opened (on Redox: after the privilege drop).
    pub fn try_from_stream(stream: UnixStream) -> io::Result<Self> {
        let waiter = sys::Waiter::new(stream.as_fd())?;
        Ok(Self::with_waiter(stream, Ok(waiter)))
    }

    fn with_waiter(stream: UnixStream, waiter: Result<sys::Waiter, String>) -> Self {
        Self {
            stream: Arc::new(stream),
            waiter,
            write: Arc::new(Mutex::new(WriteSide::default())),
            send_timeout: DEFAULT_SEND_TIMEOUT,
            rx: Vec::new(),
            rx_broken: false,
            _m: PhantomData,
        }
    }

    /// A connected pair of channels (a `socketpair`). Both ends are
    /// close-on-exec; give one to a child with [`spawn_with_channel`].
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Self::try_from_stream(a)?, Self::try_from_stream(b)?))
    }

    /// Adopts the channel fd a driver process inherited from pcid, named by
    /// the environment variable [`PCID_CLIENT_CHANNEL`](crate::PCID_CLIENT_CHANNEL).
    ///
    /// The fd must be an open stream socket. It is made close-on-exec and the
    /// variable is removed, so it is adopted only once and not passed on to
    /// the driver's own children. Call it early, before starting threads that
    /// read the environment.
    #[cfg(not(target_os = "redox"))]
    pub fn from_env() -> Result<Self, AdoptError> {
        let stream = unix::adopt_from_env(crate::PCID_CLIENT_CHANNEL)?;
        let fd = stream.as_raw_fd();
        Self::try_from_stream(stream).map_err(|source| AdoptError::Io {
            var: crate::PCID_CLIENT_CHANNEL,
            fd,
            source,
        })
    }

    /// Changes the time [`send`](Self::send) may wait for the peer to read.
    /// Applies to this handle and to [`Sender`]s made afterwards.
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    /// Encodes and sends one message, waiting at most the send timeout.
    pub fn send(&self, msg: &M) -> Result<(), TransportError> {
        let frame = msg.encode()?;
        send_frame(&self.stream, &self.write, &frame, self.send_timeout)
    }

    /// Sends raw bytes as they are (for tests of the peer's error handling).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), TransportError> {
        send_frame(&self.stream, &self.write, bytes, self.send_timeout)
    }

    /// Encodes one message and sends it without waiting: what the socket
    /// does not take now stays queued, after anything queued before, until
    /// [`flush`](Self::flush) (or a blocking [`send`](Self::send)) writes it.
    /// Refused with [`TransportError::Backlog`] when [`MAX_QUEUED`] bytes
    /// would be waiting.
    pub fn queue(&self, msg: &M) -> Result<(), TransportError> {
        let frame = msg.encode()?;
        lock(&self.write).queue(&self.stream, &frame)
    }

    /// Appends one message to the send queue without writing anything: a
    /// burst of messages goes out in one write at the next
    /// [`flush`](Self::flush). Refused as [`queue`](Self::queue) refuses.
    pub fn enqueue(&self, msg: &M) -> Result<(), TransportError> {
        let frame = msg.encode()?;
        lock(&self.write).push(&frame)
    }

    /// Writes queued bytes without waiting; `Ok(true)` once none are left.
    pub fn flush(&self) -> Result<bool, TransportError> {
        lock(&self.write).flush(&self.stream)
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn queued(&self) -> usize {
        lock(&self.write).queued.len()
    }

    /// Since when queued bytes have been waiting without the peer taking
    /// any (`None` when nothing is queued).
    pub fn stalled_since(&self) -> Option<Instant> {
        lock(&self.write).stalled_since
    }

    /// A send-only handle sharing this channel's socket.
    pub fn sender(&self) -> Sender<M> {
        Sender {
            stream: Arc::clone(&self.stream),
            write: Arc::clone(&self.write),
            send_timeout: self.send_timeout,
            _m: PhantomData,
        }
    }

    /// Receives one message, waiting at most `timeout` (`None`: until a
    /// message arrives or the peer closes the channel).
    ///
    /// `Some(Duration::ZERO)` only takes what has already arrived.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<M, TransportError> {
        // A timeout too large to represent as an instant is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.rx_broken {
                return Err(TransportError::Broken);
            }
            if let Some(result) = self.take_buffered_frame() {
                return result;
            }
            let mut chunk = [0u8; 8192];
            match sys::recv_nonblocking(self.stream.as_fd(), &mut chunk) {
                Ok(0) => {
                    self.rx_broken = true;
                    return Err(if self.rx.is_empty() {
                        TransportError::Closed
                    } else {
                        TransportError::ClosedMidFrame {
                            buffered: self.rx.len(),
                        }
                    });
                }
                Ok(n) => self.rx.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait = match deadline {
                        None => None,
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return Err(TransportError::Timeout(timeout.unwrap_or_default()));
                            }
                            Some(d - now)
                        }
                    };
                    // Queued bytes go out while this waits, so a caller that
                    // only queues and receives never leaves them behind.
                    let writing = !lock(&self.write).flush(&self.stream).unwrap_or(true);
                    match &mut self.waiter {
                        Ok(waiter) => {
                            waiter.wait(self.stream.as_fd(), writing, wait)?;
                        }
                        Err(why) => {
                            return Err(TransportError::Io(io::Error::other(format!(
                                "cannot wait on this channel: {why}"
                            ))))
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.rx_broken = true;
                    return Err(TransportError::Closed);
                }
                Err(e) => {
                    self.rx_broken = true;
                    return Err(TransportError::Io(e));
                }
            }
        }
    }

    /// Takes one message without waiting: a complete frame already
    /// buffered, or else what one read from the socket brings. `Ok(None)`
    /// when no complete frame is there yet (bytes of a partial frame are
    /// kept). Errors as [`recv`](Self::recv). An event loop calls it when
    /// the socket is readable, and again while
    /// [`has_buffered_frame`](Self::has_buffered_frame) says so.
    pub fn try_recv(&mut self) -> Result<Option<M>, TransportError> {
        if self.rx_broken {
            return Err(TransportError::Broken);
        }
        if let Some(result) = self.take_buffered_frame() {
            return result.map(Some);
        }
        let mut chunk = [0u8; 8192];
        loop {
            return match sys::recv_nonblocking(self.stream.as_fd(), &mut chunk) {
                Ok(0) => {
                    self.rx_broken = true;
                    Err(if self.rx.is_empty() {
                        TransportError::Closed
                    } else {
                        TransportError::ClosedMidFrame {
                            buffered: self.rx.len(),
                        }
                    })
                }
                Ok(n) => {
                    self.rx.extend_from_slice(&chunk[..n]);
                    self.take_buffered_frame().transpose()
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.rx_broken = true;
                    Err(TransportError::Closed)
                }
                Err(e) => {
                    self.rx_broken = true;
                    Err(TransportError::Io(e))
                }
            };
        }
    }

    /// Whether a complete frame (or a header that cannot be parsed) is
    /// already buffered, so [`try_recv`](Self::try_recv) returns it without
    /// reading from the socket.
    pub fn has_buffered_frame(&self) -> bool {
        if self.rx_broken || self.rx.len() < HEADER_LEN {
            return false;
        }
        match FrameHeader::parse(&self.rx) {
            Ok(h) => self.rx.len() >= h.frame_len(),
            Err(_) => true,
        }
    }

    /// Decodes a complete frame from the receive buffer, if there is one.
    fn take_buffered_frame(&mut self) -> Option<Result<M, TransportError>> {
        if self.rx.len() < HEADER_LEN {
            return None;
        }
        let header = match FrameHeader::parse(&self.rx) {
            Ok(h) => h,
            Err(error) => {
                // Frame boundaries are lost: nothing after this can be trusted.
                self.rx_broken = true;
                // Only a version-1 header (oversize length) has a meaningful seq.
                let seq = match error {
                    DecodeError::Oversize { .. } => self
                        .rx
                        .get(8..12)
                        .and_then(|s| <[u8; 4]>::try_from(s).ok())
                        .map(u32::from_le_bytes)
                        .unwrap_or(0),
                    _ => 0,
                };
                return Some(Err(TransportError::Malformed { seq, error }));
            }
        };
        let len = header.frame_len();
        if self.rx.len() < len {
            self.rx.reserve_exact(len - self.rx.len());
            return None;
        }
        let result = M::decode_payload(&header, &self.rx[HEADER_LEN..len]).map_err(|error| {
            TransportError::Malformed {
                seq: header.seq,
                error,
            }
        });
        self.rx.drain(..len);
        Some(result)
    }

    /// Peer credentials of the socket (Linux `SO_PEERCRED`).
    #[cfg(not(target_os = "redox"))]
    pub fn peer_cred(&self) -> io::Result<PeerCred> {
        control::peer_cred(self.stream.as_fd())
    }

    /// Shuts down both directions: the peer's `recv` sees `Closed`, and so
    /// does a thread of ours blocked in `recv` on this channel's socket.
    pub fn shutdown(&self) -> io::Result<()> {
        match self.stream.shutdown(std::net::Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

impl<M> AsFd for Channel<M> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl<M: WireMessage> Sender<M> {
    /// Encodes and sends one message, waiting at most the send timeout.
    pub fn send(&self, msg: &M) -> Result<(), TransportError> {
        let frame = msg.encode()?;
        send_frame(&self.stream, &self.write, &frame, self.send_timeout)
    }

    /// See [`Channel::queue`].
    pub fn queue(&self, msg: &M) -> Result<(), TransportError> {
        let frame = msg.encode()?;
        lock(&self.write).queue(&self.stream, &frame)
    }

    /// See [`Channel::flush`].
    pub fn flush(&self) -> Result<bool, TransportError> {
        lock(&self.write).flush(&self.stream)
    }

    /// Shuts down both directions of the underlying socket.
    pub fn shutdown(&self) -> io::Result<()> {
        match self.stream.shutdown(std::net::Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

/// Why the inherited channel fd could not be adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The environment variable is not set: the process was not started by pcid.
    #[error("{var} is not set: this driver must be started by pcid")]
    NotSet {
        /// Variable name.
        var: &'static str,
    },
    /// The variable does not hold a file descriptor number.
    #[error("{var}={value:?} is not a file descriptor number")]
    InvalidValue {
        /// Variable name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The fd is not open.
    #[error("{var}: fd {fd} is not open")]
    NotOpen {
        /// Variable name.
        var: &'static str,
        /// The fd number.
        fd: i32,
    },
    /// The fd is open but not a stream socket.
    #[error("{var}: fd {fd} is not a stream socket")]
    NotASocket {
        /// Variable name.
        var: &'static str,
        /// The fd number.
        fd: i32,
    },
    /// The channel fd was already adopted by this process.
    #[error("the pcid channel was already adopted by this process")]
    AlreadyAdopted,
    /// An OS error while checking the fd.
    #[error("{var}: checking fd {fd}: {source}")]
    Io {
        /// Variable name.
        var: &'static str,
        /// The fd number.
        fd: i32,
        /// The OS error.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests;
