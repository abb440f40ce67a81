//! The state behind pcid's `pci` scheme on Redox, without any OS calls.
//!
//! The scheme (served by the Redox-only `scheme` module, which translates
//! each request into a call here) looks like this:
//!
//! ```text
//! /scheme/pci/                         directory: one entry per function, plus `control`
//! /scheme/pci/0000-01--00.0/           directory: `channel`, `bars`
//! /scheme/pci/0000-01--00.0/channel    the driver's channel (root only, one opener at a time)
//! /scheme/pci/0000-01--00.0/bars       the function's BARs, text (`pcid_interface::redox`)
//! /scheme/pci/control                  shutdownd's control endpoint (root only)
//! ```
//!
//! `channel` and `control` handles carry [`pcid_interface::wire`] frames:
//!
//! * **write** appends to the handle's receive buffer; every complete frame is
//!   decoded at once and becomes an [`Event`] for the relay. Writes never
//!   block. After a framing error (bad magic, version, oversize length) the
//!   boundaries are lost: the bytes are dropped and later writes fail with
//!   [`SchemeError::Closed`] once pcid closes the handle.
//! * **read** takes bytes pcid queued for the peer ([`SchemeState::send_to_driver`],
//!   [`SchemeState::send_to_client`]); with nothing queued it fails with
//!   [`SchemeError::WouldBlock`] (`EAGAIN`), and once pcid closed the handle
//!   and the queue is drained it returns 0 (end of file).
//! * **readiness** ([`SchemeState::readable`]) is what `fevent` reports:
//!   readable when bytes are queued or the handle was closed by pcid. The
//!   runtime posts `EVENT_READ` on the handle whenever that becomes true, so
//!   a driver waiting in an event queue learns of `Begin`/`Finish` without a
//!   request outstanding.
//!
//! Every rule is unit-tested on the host.

use std::collections::{BTreeMap, VecDeque};

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::{ControlMessage, DriverMessage};
use pcid_interface::redox::parse_function_name;
use pcid_interface::wire::{FrameHeader, WireMessage, HEADER_LEN};

use crate::relay::ClientId;

/// Name of the control endpoint in the scheme root.
pub const CONTROL: &str = "control";
/// Name of a function's channel.
pub const CHANNEL: &str = "channel";
/// Name of a function's BAR listing.
pub const BARS: &str = "bars";
/// Bytes pcid may queue for one peer before the peer counts as not reading.
pub const MAX_QUEUED: usize = 1 << 20;

/// Errors of scheme operations (mapped to errno values by the Redox adaptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// No such path (`ENOENT`).
    #[error("no such entry")]
    NotFound,
    /// The caller is not root (`EACCES`).
    #[error("permission denied")]
    PermissionDenied,
    /// The channel is already open (`ENOLCK`, as Redox's pcid answers).
    #[error("channel already open")]
    InUse,
    /// Unknown handle (`EBADF`).
    #[error("bad handle")]
    BadHandle,
    /// The operation needs a file, the handle is a directory (`EISDIR`).
    #[error("is a directory")]
    IsDirectory,
    /// The operation needs a directory (`ENOTDIR`).
    #[error("not a directory")]
    NotDirectory,
    /// Nothing to read yet (`EAGAIN`); wait for `EVENT_READ`.
    #[error("nothing queued")]
    WouldBlock,
    /// pcid closed this channel (`EPIPE`).
    #[error("closed by pcid")]
    Closed,
    /// The operation does not apply to this handle (`EINVAL`).
    #[error("invalid operation for this handle")]
    Invalid,
}

/// Who is calling (from the scheme request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Process id.
    pub pid: usize,
}

/// What a handle refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The scheme root directory.
    Root,
    /// A function's directory.
    Function(PciAddress),
    /// A function's BAR listing.
    Bars(PciAddress),
    /// A driver's channel.
    Channel(PciAddress),
    /// A control connection.
    Control(ClientId),
}

impl Node {
    /// Whether the node is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Root | Node::Function(_))
    }
}

/// Something the relay must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A channel was opened (by pcid's spawner, or by hand).
    ChannelOpened {
        /// Its function.
        address: PciAddress,
        /// The handle.
        handle: usize,
    },
    /// A decoded message from a driver.
    DriverMessage {
        /// The function whose channel it arrived on.
        address: PciAddress,
        /// The message.
        message: DriverMessage,
    },
    /// Undecodable bytes from a driver.
    DriverBadFrame {
        /// The function.
        address: PciAddress,
        /// What was wrong.
        error: String,
    },
    /// The last descriptor of a channel was closed (the driver exited).
    ChannelClosed {
        /// The function.
        address: PciAddress,
    },
    /// A control client connected.
    ClientOpened {
        /// The client.
        client: ClientId,
    },
    /// A decoded control message.
    ClientMessage {
        /// The client.
        client: ClientId,
        /// The message.
        message: ControlMessage,
    },
    /// Undecodable bytes from a control client.
    ClientBadFrame {
        /// The client.
        client: ClientId,
        /// What was wrong.
        error: String,
        /// Whether frame boundaries are lost.
        fatal: bool,
    },
    /// A control client closed its handle.
    ClientClosed {
        /// The client.
        client: ClientId,
    },
}

/// A framed byte stream between pcid and one peer.
#[derive(Debug, Default)]
struct Stream {
    /// Bytes from the peer not yet forming a whole frame.
    rx: Vec<u8>,
    /// Frame boundaries were lost; further input is dropped.
    rx_broken: bool,
    /// Bytes queued for the peer.
    tx: VecDeque<u8>,
    /// pcid closed the stream: reads drain `tx`, then see end of file.
    closed: bool,
}

/// Result of taking one frame off a receive buffer.
enum Frame<M> {
    Message(M),
    Bad { error: String, fatal: bool },
}

impl Stream {
    fn take_frames<M: WireMessage>(&mut self) -> Vec<Frame<M>> {
        let mut out = Vec::new();
        while !self.rx_broken && self.rx.len() >= HEADER_LEN {
            let header = match FrameHeader::parse(&self.rx) {
                Ok(h) => h,
                Err(error) => {
                    self.rx_broken = true;
                    self.rx.clear();
                    out.push(Frame::Bad {
                        error: error.to_string(),
                        fatal: true,
                    });
                    break;
                }
            };
            let len = header.frame_len();
            if self.rx.len() < len {
                break;
            }
            match M::decode_payload(&header, &self.rx[HEADER_LEN..len]) {
                Ok(m) => out.push(Frame::Message(m)),
                Err(error) => {
                    let fatal = error.is_stream_fatal();
                    out.push(Frame::Bad {
                        error: error.to_string(),
                        fatal,
                    });
                    if fatal {
                        self.rx_broken = true;
                        self.rx.clear();
                        break;
                    }
                }
            }
            self.rx.drain(..len);
        }
        out
    }

    fn queue(&mut self, frame: &[u8]) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if self.tx.len() + frame.len() > MAX_QUEUED {
            return Err(SendError::QueueFull);
        }
        self.tx.extend(frame);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, SchemeError> {
        if self.tx.is_empty() {
            return if self.closed {
                Ok(0)
            } else {
                Err(SchemeError::WouldBlock)
            };
        }
        let n = buf.len().min(self.tx.len());
        for (dst, src) in buf.iter_mut().zip(self.tx.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn readable(&self) -> bool {
        !self.tx.is_empty() || self.closed
    }
}

/// Why a message could not be queued for a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No open channel / client with that identity.
    #[error("no open handle")]
    NotOpen,
    /// pcid already closed it.
    #[error("closed")]
    Closed,
    /// The peer has not read [`MAX_QUEUED`] bytes.
    #[error("peer is not reading (more than {MAX_QUEUED} bytes queued)")]
    QueueFull,
    /// The message could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

#[derive(Debug)]
struct Handle {
    node: Node,
    stream: Option<Stream>,
}

/// A function as the scheme shows it.
#[derive(Debug, Clone)]
struct FunctionEntry {
    bars: String,
}

/// The scheme's state. See the module documentation.
#[derive(Debug, Default)]
pub struct SchemeState {
    functions: BTreeMap<PciAddress, FunctionEntry>,
    handles: BTreeMap<usize, Handle>,
    channels: BTreeMap<PciAddress, usize>,
    clients: BTreeMap<ClientId, usize>,
    next_handle: usize,
    next_client: ClientId,
}

fn dir_name(a: PciAddress) -> String {
    format!(
        "{:04x}-{:02x}--{:02x}.{:x}",
        a.segment, a.bus, a.device, a.function
    )
}

impl SchemeState {
    /// A scheme showing `functions`, each with its BAR listing text.
    pub fn new(functions: impl IntoIterator<Item = (PciAddress, String)>) -> Self {
        Self {
            functions: functions
                .into_iter()
                .map(|(a, bars)| (a, FunctionEntry { bars }))
                .collect(),
            next_handle: 1,
            next_client: 1,
            ..Self::default()
        }
    }

    fn resolve(&self, path: &str) -> Result<Node, SchemeError> {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Ok(Node::Root);
        }
        if path == CONTROL {
            return Ok(Node::Control(0));
        }
        let (name, rest) = path.split_once('/').unwrap_or((path, ""));
        let address = parse_function_name(name).ok_or(SchemeError::NotFound)?;
        if !self.functions.contains_key(&address) {
            return Err(SchemeError::NotFound);
        }
        match rest.trim_matches('/') {
            "" => Ok(Node::Function(address)),
            CHANNEL => Ok(Node::Channel(address)),
            BARS => Ok(Node::Bars(address)),
            _ => Err(SchemeError::NotFound),
        }
    }

    /// Opens `path` (relative to the scheme root). Returns the handle id and
    /// the event the relay must see, if any.
    pub fn open(
        &mut self,
        path: &str,
        caller: Caller,
    ) -> Result<(usize, Option<Event>), SchemeError> {
        let node = self.resolve(path)?;
        let id = self.next_handle;
        let (node, stream, event) = match node {
            Node::Channel(address) => {
                if caller.uid != 0 {
                    return Err(SchemeError::PermissionDenied);
                }
                if self.channels.contains_key(&address) {
                    return Err(SchemeError::InUse);
                }
                self.channels.insert(address, id);
                (
                    node,
                    Some(Stream::default()),
                    Some(Event::ChannelOpened {
                        address,
                        handle: id,
                    }),
                )
            }
            Node::Control(_) => {
                if caller.uid != 0 {
                    return Err(SchemeError::PermissionDenied);
                }
                let client = self.next_client;
                self.next_client += 1;
                self.clients.insert(client, id);
                (
                    Node::Control(client),
                    Some(Stream::default()),
                    Some(Event::ClientOpened { client }),
                )
            }
            other => (other, None, None),
        };
        self.next_handle += 1;
        self.handles.insert(id, Handle { node, stream });
        Ok((id, event))
    }

    /// Opens `path` relative to the directory handle `dir`.
    pub fn openat(
        &mut self,
        dir: usize,
        path: &str,
        caller: Caller,
    ) -> Result<(usize, Option<Event>), SchemeError> {
        let base = match self.node(dir)? {
            Node::Root => String::new(),
            Node::Function(a) => dir_name(a),
            _ => return Err(SchemeError::NotDirectory),
        };
        self.open(&format!("{base}/{path}"), caller)
    }

    /// What a handle refers to.
    pub fn node(&self, id: usize) -> Result<Node, SchemeError> {
        self.handles
            .get(&id)
            .map(|h| h.node)
            .ok_or(SchemeError::BadHandle)
    }

    /// Entries of a directory handle.
    pub fn entries(&self, id: usize) -> Result<Vec<String>, SchemeError> {
        match self.node(id)? {
            Node::Root => Ok(self
                .functions
                .keys()
                .map(|a| dir_name(*a))
                .chain(std::iter::once(CONTROL.to_string()))
                .collect()),
            Node::Function(_) => Ok(vec![CHANNEL.to_string(), BARS.to_string()]),
            _ => Err(SchemeError::NotDirectory),
        }
    }

    /// The full path of a handle (`fpath`).
    pub fn path(&self, id: usize) -> Result<String, SchemeError> {
        Ok(match self.node(id)? {
            Node::Root => "/scheme/pci/".to_string(),
            Node::Function(a) => format!("/scheme/pci/{}/", dir_name(a)),
            Node::Bars(a) => format!("/scheme/pci/{}/{BARS}", dir_name(a)),
            Node::Channel(a) => format!("/scheme/pci/{}/{CHANNEL}", dir_name(a)),
            Node::Control(_) => format!("/scheme/pci/{CONTROL}"),
        })
    }

    /// Size reported by `fstat`: the BAR listing's length, 0 otherwise.
    pub fn size(&self, id: usize) -> Result<u64, SchemeError> {
        Ok(match self.node(id)? {
            Node::Bars(a) => self.functions.get(&a).map_or(0, |f| f.bars.len() as u64),
            Node::Root => self.functions.len() as u64 + 1,
            Node::Function(_) => 2,
            Node::Channel(_) | Node::Control(_) => 0,
        })
    }

    /// Reads from a handle (`offset` applies to the BAR listing only).
    pub fn read(&mut self, id: usize, buf: &mut [u8], offset: u64) -> Result<usize, SchemeError> {
        let handle = self.handles.get_mut(&id).ok_or(SchemeError::BadHandle)?;
        match handle.node {
            Node::Root | Node::Function(_) => Err(SchemeError::IsDirectory),
            Node::Bars(a) => {
                let text = self.functions.get(&a).map_or("", |f| f.bars.as_str());
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(text.len());
                let n = buf.len().min(text.len() - start);
                buf[..n].copy_from_slice(&text.as_bytes()[start..start + n]);
                Ok(n)
            }
            Node::Channel(_) | Node::Control(_) => handle
                .stream
                .as_mut()
                .ok_or(SchemeError::Invalid)?
                .read(buf),
        }
    }

    /// Writes frames to a channel or control handle; returns the bytes taken
    /// (always all of `buf`) and the events decoded from them.
    pub fn write(&mut self, id: usize, buf: &[u8]) -> Result<(usize, Vec<Event>), SchemeError> {
        let handle = self.handles.get_mut(&id).ok_or(SchemeError::BadHandle)?;
        let node = handle.node;
        let stream = match node {
            Node::Root | Node::Function(_) => return Err(SchemeError::IsDirectory),
            Node::Bars(_) => return Err(SchemeError::Invalid),
            Node::Channel(_) | Node::Control(_) => {
                handle.stream.as_mut().ok_or(SchemeError::Invalid)?
            }
        };
        if stream.closed {
            return Err(SchemeError::Closed);
        }
        if stream.rx_broken {
            // Frame boundaries are lost; pcid is about to close the handle.
            return Ok((buf.len(), Vec::new()));
        }
        stream.rx.extend_from_slice(buf);
        let events = match node {
            Node::Channel(address) => stream
                .take_frames::<DriverMessage>()
                .into_iter()
                .map(|f| match f {
                    Frame::Message(message) => Event::DriverMessage { address, message },
                    Frame::Bad { error, .. } => Event::DriverBadFrame { address, error },
                })
                .collect(),
            Node::Control(client) => stream
                .take_frames::<ControlMessage>()
                .into_iter()
                .map(|f| match f {
                    Frame::Message(message) => Event::ClientMessage { client, message },
                    Frame::Bad { error, fatal } => Event::ClientBadFrame {
                        client,
                        error,
                        fatal,
                    },
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((buf.len(), events))
    }

    /// Whether reading the handle would not fail with `WouldBlock` (what
    /// `fevent` reports as `EVENT_READ`).
    pub fn readable(&self, id: usize) -> Result<bool, SchemeError> {
        let handle = self.handles.get(&id).ok_or(SchemeError::BadHandle)?;
        Ok(match &handle.stream {
            Some(s) => s.readable(),
            None => !handle.node.is_dir(),
        })
    }

    /// The last descriptor of a handle was closed.
    pub fn close(&mut self, id: usize) -> Option<Event> {
        let handle = self.handles.remove(&id)?;
        match handle.node {
            Node::Channel(address) => {
                if self.channels.get(&address) == Some(&id) {
                    self.channels.remove(&address);
                }
                Some(Event::ChannelClosed { address })
            }
            Node::Control(client) => {
                self.clients.remove(&client);
                Some(Event::ClientClosed { client })
            }
            _ => None,
        }
    }

    fn stream_of(&mut self, id: Option<usize>) -> Result<(usize, &mut Stream), SendError> {
        let id = id.ok_or(SendError::NotOpen)?;
        let stream = self
            .handles
            .get_mut(&id)
            .and_then(|h| h.stream.as_mut())
            .ok_or(SendError::NotOpen)?;
        Ok((id, stream))
    }

    /// Queues a message on the channel of `address`; returns the handle to
    /// notify (`EVENT_READ`).
    pub fn send_to_driver(
        &mut self,
        address: PciAddress,
        message: &DriverMessage,
    ) -> Result<usize, SendError> {
        let frame = message
            .encode()
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let id = self.channels.get(&address).copied();
        let (id, stream) = self.stream_of(id)?;
        stream.queue(&frame)?;
        Ok(id)
    }

    /// Queues a message for a control client; returns the handle to notify.
    pub fn send_to_client(
        &mut self,
        client: ClientId,
        message: &ControlMessage,
    ) -> Result<usize, SendError> {
        let frame = message
            .encode()
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let id = self.clients.get(&client).copied();
        let (id, stream) = self.stream_of(id)?;
        stream.queue(&frame)?;
        Ok(id)
    }

    /// Closes a driver's channel from pcid's side: queued bytes stay readable,
    /// then the driver reads end of file and its writes fail. Returns the
    /// handle to notify.
    pub fn close_driver(&mut self, address: PciAddress) -> Option<usize> {
        let id = self.channels.get(&address).copied();
        let (id, stream) = self.stream_of(id).ok()?;
        stream.closed = true;
        Some(id)
    }

    /// Closes a control connection from pcid's side; returns the handle to notify.
    pub fn close_client(&mut self, client: ClientId) -> Option<usize> {
        let id = self.clients.get(&client).copied();
        let (id, stream) = self.stream_of(id).ok()?;
        stream.closed = true;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pcid_interface::protocol::{ShutdownKind, ShutdownSupport};

    use super::*;

    const ROOT: Caller = Caller { uid: 0, pid: 10 };
    const USER: Caller = Caller { uid: 1000, pid: 11 };

    fn a(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn state() -> SchemeState {
        SchemeState::new([
            (a("0000:00:04.0"), "0 mem64 0xfebf0000 0x4000\n".to_string()),
            (a("0000:01:00.0"), String::new()),
        ])
    }

    fn hello() -> DriverMessage {
        DriverMessage::Hello {
            version: 1,
            driver: "nvmed".into(),
            support: ShutdownSupport::TwoPhase,
        }
    }

    #[test]
    fn directories_list_functions_control_and_files() {
        let mut s = state();
        let (root, ev) = s.open("", USER).unwrap();
        assert_eq!(ev, None);
        assert_eq!(
            s.entries(root).unwrap(),
            ["0000-00--04.0", "0000-01--00.0", "control"]
        );
        let (dir, _) = s.open("0000-00--04.0/", USER).unwrap();
        assert_eq!(s.entries(dir).unwrap(), ["channel", "bars"]);
        assert_eq!(s.path(dir).unwrap(), "/scheme/pci/0000-00--04.0/");
        assert_eq!(s.read(dir, &mut [0; 4], 0), Err(SchemeError::IsDirectory));
        assert_eq!(s.open("0000-00--05.0", USER), Err(SchemeError::NotFound));
        assert_eq!(
            s.open("0000-00--04.0/nope", USER),
            Err(SchemeError::NotFound)
        );
        assert_eq!(s.open("junk", USER), Err(SchemeError::NotFound));
    }

    #[test]
    fn bars_are_readable_at_offsets() {
        let mut s = state();
        let (id, _) = s.open("0000-00--04.0/bars", USER).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(id, &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"0 mem64 0xfebf0000 0x4000\n");
        assert_eq!(s.read(id, &mut buf, n as u64).unwrap(), 0);
        assert_eq!(s.read(id, &mut buf[..3], 2).unwrap(), 3);
        assert_eq!(&buf[..3], b"mem");
        assert_eq!(s.size(id).unwrap(), n as u64);
        assert_eq!(s.write(id, b"x"), Err(SchemeError::Invalid));
    }

    #[test]
    fn channel_is_root_only_and_exclusive_until_closed() {
        let mut s = state();
        assert_eq!(
            s.open("0000-00--04.0/channel", USER),
            Err(SchemeError::PermissionDenied)
        );
        let (id, ev) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        assert_eq!(
            ev,
            Some(Event::ChannelOpened {
                address: a("0000:00:04.0"),
                handle: id
            })
        );
        assert_eq!(
            s.open("/0000-00--04.0/channel", ROOT),
            Err(SchemeError::InUse)
        );
        assert_eq!(
            s.close(id),
            Some(Event::ChannelClosed {
                address: a("0000:00:04.0")
            })
        );
        assert!(s.open("0000-00--04.0/channel", ROOT).is_ok());
        assert_eq!(s.close(id), None, "closing twice is harmless");
    }

    #[test]
    fn frames_split_across_writes_are_reassembled() {
        let mut s = state();
        let (id, _) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        let frame = hello().encode().unwrap();
        let (n, ev) = s.write(id, &frame[..5]).unwrap();
        assert_eq!((n, ev), (5, vec![]));
        let (_, ev) = s.write(id, &frame[5..]).unwrap();
        assert_eq!(
            ev,
            vec![Event::DriverMessage {
                address: a("0000:00:04.0"),
                message: hello()
            }]
        );
        // Two frames in one write.
        let mut two = DriverMessage::Ready.encode().unwrap();
        two.extend(DriverMessage::Ready.encode().unwrap());
        let (_, ev) = s.write(id, &two).unwrap();
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn garbage_is_reported_once_and_then_dropped() {
        let mut s = state();
        let (id, _) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        let (_, ev) = s.write(id, &[0xAB; 32]).unwrap();
        assert!(matches!(&ev[..], [Event::DriverBadFrame { .. }]), "{ev:?}");
        let (n, ev) = s.write(id, &hello().encode().unwrap()).unwrap();
        assert!(n > 0 && ev.is_empty());
    }

    #[test]
    fn pcid_to_driver_messages_queue_and_make_the_handle_readable() {
        let mut s = state();
        let addr = a("0000:00:04.0");
        assert_eq!(
            s.send_to_driver(addr, &DriverMessage::Ready),
            Err(SendError::NotOpen)
        );
        let (id, _) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(s.read(id, &mut buf, 0), Err(SchemeError::WouldBlock));
        assert!(!s.readable(id).unwrap());
        let begin = DriverMessage::Begin {
            seq: 7,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(5),
        };
        assert_eq!(s.send_to_driver(addr, &begin), Ok(id));
        assert!(s.readable(id).unwrap());
        // A reader may take the frame in pieces.
        let frame = begin.encode().unwrap();
        let n1 = s.read(id, &mut buf[..10], 0).unwrap();
        let n2 = s.read(id, &mut buf[10..], 0).unwrap();
        assert_eq!(&buf[..n1 + n2], &frame[..]);
        assert!(!s.readable(id).unwrap());
        assert_eq!(DriverMessage::decode(&buf[..n1 + n2]).unwrap(), begin);
    }

    #[test]
    fn closing_from_pcid_drains_then_reads_eof_and_refuses_writes() {
        let mut s = state();
        let addr = a("0000:00:04.0");
        let (id, _) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        s.send_to_driver(addr, &DriverMessage::Ready).unwrap();
        assert_eq!(s.close_driver(addr), Some(id));
        assert!(s.readable(id).unwrap());
        let mut buf = [0u8; 256];
        assert!(s.read(id, &mut buf, 0).unwrap() > 0);
        assert_eq!(s.read(id, &mut buf, 0), Ok(0));
        assert!(s.readable(id).unwrap(), "EOF is readable");
        assert_eq!(s.write(id, b"x"), Err(SchemeError::Closed));
        assert_eq!(
            s.send_to_driver(addr, &DriverMessage::Ready),
            Err(SendError::Closed)
        );
    }

    #[test]
    fn a_peer_that_never_reads_hits_the_queue_limit() {
        let mut s = state();
        let addr = a("0000:00:04.0");
        s.open("0000-00--04.0/channel", ROOT).unwrap();
        let msg = DriverMessage::Error {
            seq: 1,
            message: "x".repeat(1000),
        };
        let mut sent = 0;
        let err = loop {
            match s.send_to_driver(addr, &msg) {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, SendError::QueueFull);
        assert!(sent > 100);
    }

    #[test]
    fn control_clients_are_root_only_and_numbered() {
        let mut s = state();
        assert_eq!(s.open("control", USER), Err(SchemeError::PermissionDenied));
        let (h1, e1) = s.open("control", ROOT).unwrap();
        let (h2, e2) = s.open("/control", ROOT).unwrap();
        assert_eq!(e1, Some(Event::ClientOpened { client: 1 }));
        assert_eq!(e2, Some(Event::ClientOpened { client: 2 }));
        let list = ControlMessage::ListDevices { id: 3 };
        let (_, ev) = s.write(h2, &list.encode().unwrap()).unwrap();
        assert_eq!(
            ev,
            vec![Event::ClientMessage {
                client: 2,
                message: list
            }]
        );
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
        let mut s = state();
        let (root, _) = s.open("", USER).unwrap();
        let (dir, _) = s.openat(root, "0000-01--00.0", USER).unwrap();
        let (bars, _) = s.openat(dir, "bars", USER).unwrap();
        assert_eq!(s.node(bars).unwrap(), Node::Bars(a("0000:01:00.0")));
        assert_eq!(s.openat(bars, "x", USER), Err(SchemeError::NotDirectory));
        assert_eq!(s.node(999), Err(SchemeError::BadHandle));
    }

    #[test]
    fn arbitrary_writes_never_panic() {
        let mut s = state();
        let (ch, _) = s.open("0000-00--04.0/channel", ROOT).unwrap();
        let (ctl, _) = s.open("control", ROOT).unwrap();
        let mut seed = 0x9E37_79B9_u32;
        for round in 0..500 {
            let len = (round % 70) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if round % 3 == 0 && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(b"PCID");
                bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
            }
            let _ = s.write(ch, &bytes);
            let _ = s.write(ctl, &bytes);
        }
    }
}
