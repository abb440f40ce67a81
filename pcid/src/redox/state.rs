//! The state behind pcid's `pci` scheme on Redox, without any OS calls.
//!
//! The Redox-only `scheme` module translates each scheme request into a call
//! here; configuration space is passed in as a [`ConfigAccess`], so every
//! rule below is unit-tested on any host against a model.
//!
//! ```text
//! /scheme/pci/                       listing: one entry per function, nothing else
//! /scheme/pci/00-00--04.0/           a function: `channel` (as in Redox's pcid)
//! /scheme/pci/00-00--04.0/channel    the driver's channel (root, one opener at a time)
//! /scheme/pci/access                 configuration space for acpid (root; `call`)
//! /scheme/pci/control                shutdownd's control endpoint (root)
//! /scheme/pci/participant            a participant's channel (root; each open a new one)
//! ```
//!
//! # Names
//!
//! A function's entry is named as Redox's pcid names it: pci_types 0.10's
//! `PciAddress` display (`{segment:02x}-{bus:02x}:{device:02x}.{function}`)
//! with `:` replaced by `--`, e.g. `00-00--04.0` ([`function_name`]). Paths
//! are parsed as Redox parses them: hexadecimal fields of any width
//! (`0000-00--04.0` works too). `access` and `control` are openable but not
//! listed, because Redox's pcid-spawner opens the `channel` of every entry
//! it lists.
//!
//! # Opening (Redox's rules)
//!
//! A path ending in `/` or opened with `O_DIRECTORY` must be a directory
//! (`ENOTDIR`), any other must not (`EISDIR`). `channel`, `access` and
//! `control` need uid 0 (`EACCES`). An `O_STAT` open only allows `fstat`,
//! `fpath` and `fcntl`, needs no uid and has no side effect. A `channel` has
//! one opener at a time (`ENOLCK`); opening it enables the function as
//! Redox's pcid does (bus master, memory and I/O decoding, MSI and MSI-X off,
//! interrupt line 0xFF defaulted to 9, legacy interrupt worked out); the last
//! close of the handle (the kernel's close notification) frees it again.
//!
//! # A channel carries two protocols
//!
//! Every `write` on a channel is one of:
//!
//! * **Redox's driver interface**: one encoded request
//!   ([`super::driver_interface`]), answered at once by queuing `u64` length +
//!   encoded response for the next reads, as Redox's pcid does. A request
//!   that does not decode fails the write with `EINVAL`.
//! * **This project's shutdown protocol** ([`pcid_interface::wire`] frames,
//!   which start with the magic `PCID`): the bytes are appended to the
//!   handle's receive buffer and every complete frame becomes an [`Event`]
//!   for the relay. A frame may arrive split over several writes.
//!
//! A write that continues an incomplete frame, or whose first byte is the
//! magic's first byte (`P`, 0x50), is protocol data; any other is a request
//! (a request starts with its variant index, 0–8). Requests stay answerable
//! after a driver said `Hello`.
//!
//! # Reading, readiness, closing
//!
//! * **read** takes bytes queued for the handle (responses, frames pcid
//!   sends); with nothing queued it fails with `EAGAIN` (Redox's pcid answers
//!   `EINVAL` there), and once pcid closed the handle and the queue is
//!   drained it returns 0.
//! * **readiness** ([`SchemeState::readable`], what `fevent` reports): bytes
//!   queued or the handle closed by pcid. [`Event::Readable`] tells the
//!   runtime to post `EVENT_READ` whenever bytes are queued.
//! * **fcntl** `F_GETFL`/`F_SETFL` is accepted on every handle (the kernel
//!   asks the scheme before changing the flags it keeps itself).
//! * pcid closes a channel after a protocol violation: queued bytes stay
//!   readable, then reads return 0 and writes fail with `EPIPE`.

use std::collections::{BTreeMap, VecDeque};

use pcid_interface::function::{PciAddress, PciFunction};
use pcid_interface::protocol::{ControlMessage, DriverMessage};
use pcid_interface::wire::{FrameHeader, WireMessage, HEADER_LEN, MAGIC};

use super::access;
use super::config_space::ConfigAccess;
use super::driver_interface::{handler, Request};
use super::enumerate::Found;
use crate::relay::ClientId;

/// Name of the control endpoint in the scheme root.
pub const CONTROL: &str = "control";
/// Name of the participant endpoint in the scheme root (PROTOCOL.md §14).
pub const PARTICIPANT: &str = "participant";
/// Name of the configuration-space node acpid uses.
pub const ACCESS: &str = "access";
/// Name of a function's channel.
pub const CHANNEL: &str = "channel";
/// Bytes pcid may queue for one peer before the peer counts as not reading.
pub const MAX_QUEUED: usize = 1 << 20;
/// `fcntl` commands the kernel forwards to schemes (Redox's `F_GETFL`, `F_SETFL`).
pub const F_GETFL: usize = 3;
/// See [`F_GETFL`].
pub const F_SETFL: usize = 4;

/// A function's scheme entry name (`00-00--04.0`) and its parser, shared with drivers.
pub use pcid_interface::redox::{function_name, parse_function_name};

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
    /// Unknown handle, or an operation the handle does not offer (`EBADF`).
    #[error("bad handle")]
    BadHandle,
    /// A directory where a file was asked for (`EISDIR`).
    #[error("is a directory")]
    IsDirectory,
    /// A file where a directory was asked for (`ENOTDIR`).
    #[error("not a directory")]
    NotDirectory,
    /// Nothing to read yet (`EAGAIN`); wait for `EVENT_READ`.
    #[error("nothing queued")]
    WouldBlock,
    /// pcid closed this channel (`EPIPE`).
    #[error("closed by pcid")]
    Closed,
    /// A malformed request (`EINVAL`).
    #[error("invalid request")]
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

/// How a path is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenFlags {
    /// `O_DIRECTORY`.
    pub directory: bool,
    /// `O_STAT`.
    pub stat: bool,
}

/// What a handle refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The scheme root directory.
    Root,
    /// A function's directory.
    Function(PciAddress),
    /// A driver's channel.
    Channel(PciAddress),
    /// Configuration-space access.
    Access,
    /// A control connection (0 for `O_STAT` handles).
    Control(ClientId),
    /// A participant channel, named by its handle (0 for `O_STAT` handles).
    Participant(usize),
}

impl Node {
    /// Whether the node is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Root | Node::Function(_))
    }
}

/// Something the relay or the runtime must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A channel was opened and its function enabled.
    ChannelOpened {
        /// The function.
        function: PciFunction,
        /// The handle.
        handle: usize,
        /// The process that opened it.
        pid: usize,
    },
    /// A decoded protocol message from a driver.
    DriverMessage {
        /// The function whose channel it arrived on.
        address: PciAddress,
        /// The writing process.
        pid: usize,
        /// The message.
        message: DriverMessage,
    },
    /// Undecodable protocol bytes from a driver.
    DriverBadFrame {
        /// The function.
        address: PciAddress,
        /// What was wrong.
        error: String,
    },
    /// A request of Redox's driver interface was answered.
    DriverRequest {
        /// The function.
        address: PciAddress,
        /// The writing process.
        pid: usize,
        /// The request.
        request: Request,
    },
    /// The last descriptor of a channel was closed.
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
    /// A participant channel was opened.
    ParticipantOpened {
        /// Its handle.
        handle: usize,
        /// The process that opened it.
        pid: usize,
    },
    /// A decoded protocol message on a participant channel.
    ParticipantMessage {
        /// Its handle.
        handle: usize,
        /// The writing process.
        pid: usize,
        /// The message.
        message: DriverMessage,
    },
    /// Undecodable bytes on a participant channel.
    ParticipantBadFrame {
        /// Its handle.
        handle: usize,
        /// What was wrong.
        error: String,
    },
    /// A participant channel's last descriptor was closed.
    ParticipantClosed {
        /// Its handle.
        handle: usize,
    },
    /// Bytes were queued on a handle: post `EVENT_READ` on it.
    Readable {
        /// The handle.
        handle: usize,
    },
}

/// A byte stream between pcid and one peer.
#[derive(Debug, Default)]
struct Stream {
    /// Protocol bytes from the peer not yet forming a whole frame.
    rx: Vec<u8>,
    /// Frame boundaries were lost; further protocol bytes are dropped.
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

    /// Whether a write is protocol data (see the module documentation).
    fn is_protocol_data(&self, buf: &[u8]) -> bool {
        !self.rx.is_empty() || self.rx_broken || buf.first() == Some(&MAGIC[0])
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if self.tx.len() + bytes.len() > MAX_QUEUED {
            return Err(SendError::QueueFull);
        }
        self.tx.extend(bytes);
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
    stat: bool,
    stream: Option<Stream>,
}

/// The scheme's state. See the module documentation.
#[derive(Debug, Default)]
pub struct SchemeState {
    functions: BTreeMap<PciAddress, Found>,
    handles: BTreeMap<usize, Handle>,
    channels: BTreeMap<PciAddress, usize>,
    clients: BTreeMap<ClientId, usize>,
    next_handle: usize,
    next_client: ClientId,
}

impl SchemeState {
    /// A scheme serving the enumerated functions.
    pub fn new(found: impl IntoIterator<Item = Found>) -> Self {
        Self {
            functions: found.into_iter().map(|f| (f.address(), f)).collect(),
            next_handle: 1,
            next_client: 1,
            ..Self::default()
        }
    }

    /// The enumerated functions.
    pub fn functions(&self) -> impl Iterator<Item = &Found> {
        self.functions.values()
    }

    fn resolve(&self, path: &str) -> Result<Node, SchemeError> {
        let path = path.trim_matches('/');
        match path {
            "" => return Ok(Node::Root),
            ACCESS => return Ok(Node::Access),
            CONTROL => return Ok(Node::Control(0)),
            PARTICIPANT => return Ok(Node::Participant(0)),
            _ => {}
        }
        let (name, rest) = path.split_once('/').unwrap_or((path, ""));
        let address = parse_function_name(name).ok_or(SchemeError::NotFound)?;
        if !self.functions.contains_key(&address) {
            return Err(SchemeError::NotFound);
        }
        match rest {
            "" => Ok(Node::Function(address)),
            CHANNEL => Ok(Node::Channel(address)),
            _ => Err(SchemeError::NotFound),
        }
    }

    /// Opens `path` (relative to the scheme root); returns the handle and the
    /// event the relay must see, if any. `cfg` is used to enable a function
    /// whose channel is opened.
    pub fn open(
        &mut self,
        path: &str,
        flags: OpenFlags,
        caller: Caller,
        cfg: &dyn ConfigAccess,
    ) -> Result<(usize, Option<Event>), SchemeError> {
        let node = self.resolve(path)?;
        let expects_dir = path.ends_with('/') || flags.directory;
        if !flags.stat {
            if expects_dir && !node.is_dir() {
                return Err(SchemeError::NotDirectory);
            }
            if !expects_dir && node.is_dir() {
                return Err(SchemeError::IsDirectory);
            }
            let needs_root = matches!(
                node,
                Node::Channel(_) | Node::Access | Node::Control(_) | Node::Participant(_)
            );
            if needs_root && caller.uid != 0 {
                return Err(SchemeError::PermissionDenied);
            }
        }
        let id = self.next_handle;
        let (node, stream, event) = match node {
            _ if flags.stat => (node, None, None),
            Node::Channel(address) => {
                if self.channels.contains_key(&address) {
                    return Err(SchemeError::InUse);
                }
                let entry = self
                    .functions
                    .get_mut(&address)
                    .ok_or(SchemeError::NotFound)?;
                let line = handler::enable(cfg, &mut entry.function);
                log::info!(
                    "{}: enabled for pid {} (legacy interrupt {})",
                    function_name(address),
                    caller.pid,
                    line.map_or("none".to_string(), |l| l.irq.to_string())
                );
                self.channels.insert(address, id);
                (
                    node,
                    Some(Stream::default()),
                    Some(Event::ChannelOpened {
                        function: entry.pci_function(),
                        handle: id,
                        pid: caller.pid,
                    }),
                )
            }
            Node::Control(_) => {
                let client = self.next_client;
                self.next_client += 1;
                self.clients.insert(client, id);
                (
                    Node::Control(client),
                    Some(Stream::default()),
                    Some(Event::ClientOpened { client }),
                )
            }
            Node::Participant(_) => (
                Node::Participant(id),
                Some(Stream::default()),
                Some(Event::ParticipantOpened {
                    handle: id,
                    pid: caller.pid,
                }),
            ),
            Node::Access => {
                // acpid opens it when its AML interpreter starts; the line
                // shows it reached this pcid.
                log::info!("pcid: /scheme/pci/{ACCESS} opened by pid {}", caller.pid);
                (Node::Access, None, None)
            }
            other => (other, None, None),
        };
        self.next_handle += 1;
        self.handles.insert(
            id,
            Handle {
                node,
                stat: flags.stat,
                stream,
            },
        );
        Ok((id, event))
    }

    /// Opens `path` relative to the directory handle `dir`.
    pub fn openat(
        &mut self,
        dir: usize,
        path: &str,
        flags: OpenFlags,
        caller: Caller,
        cfg: &dyn ConfigAccess,
    ) -> Result<(usize, Option<Event>), SchemeError> {
        let base = match self.node(dir)? {
            Node::Root => String::new(),
            Node::Function(a) => function_name(a),
            _ => return Err(SchemeError::NotDirectory),
        };
        self.open(&format!("{base}/{path}"), flags, caller, cfg)
    }

    /// What a handle refers to.
    pub fn node(&self, id: usize) -> Result<Node, SchemeError> {
        self.handles
            .get(&id)
            .map(|h| h.node)
            .ok_or(SchemeError::BadHandle)
    }

    fn usable(&self, id: usize) -> Result<&Handle, SchemeError> {
        match self.handles.get(&id) {
            Some(h) if !h.stat => Ok(h),
            _ => Err(SchemeError::BadHandle),
        }
    }

    /// Entries of a directory handle.
    pub fn entries(&self, id: usize) -> Result<Vec<String>, SchemeError> {
        match self.usable(id)?.node {
            Node::Root => Ok(self.functions.keys().map(|a| function_name(*a)).collect()),
            Node::Function(_) => Ok(vec![CHANNEL.to_string()]),
            _ => Err(SchemeError::NotDirectory),
        }
    }

    /// The full path of a handle (`fpath`).
    pub fn path(&self, id: usize) -> Result<String, SchemeError> {
        Ok(match self.node(id)? {
            Node::Root => "/scheme/pci/".to_string(),
            Node::Function(a) => format!("/scheme/pci/{}/", function_name(a)),
            Node::Channel(a) => format!("/scheme/pci/{}/{CHANNEL}", function_name(a)),
            Node::Access => format!("/scheme/pci/{ACCESS}"),
            Node::Control(_) => format!("/scheme/pci/{CONTROL}"),
            Node::Participant(_) => format!("/scheme/pci/{PARTICIPANT}"),
        })
    }

    /// Size reported by `fstat`: entries of a directory, else 0.
    pub fn size(&self, id: usize) -> Result<u64, SchemeError> {
        Ok(match self.node(id)? {
            Node::Root => self.functions.len() as u64,
            Node::Function(_) => 1,
            Node::Channel(_) | Node::Access | Node::Control(_) | Node::Participant(_) => 0,
        })
    }

    /// `fcntl`: `F_GETFL`/`F_SETFL` are accepted (the kernel keeps the flags).
    pub fn fcntl(&self, id: usize, cmd: usize) -> Result<usize, SchemeError> {
        self.node(id)?;
        match cmd {
            F_GETFL | F_SETFL => Ok(0),
            _ => Err(SchemeError::Invalid),
        }
    }

    /// Reads from a channel or control handle (streams: no offsets).
    pub fn read(&mut self, id: usize, buf: &mut [u8]) -> Result<usize, SchemeError> {
        let node = self.usable(id)?.node;
        match node {
            Node::Root | Node::Function(_) => Err(SchemeError::IsDirectory),
            Node::Access => Err(SchemeError::BadHandle),
            Node::Channel(_) | Node::Control(_) | Node::Participant(_) => self
                .handles
                .get_mut(&id)
                .and_then(|h| h.stream.as_mut())
                .ok_or(SchemeError::BadHandle)?
                .read(buf),
        }
    }

    /// Writes to a channel or control handle; returns the bytes taken
    /// (always all of `buf`) and what the relay and runtime must hear.
    pub fn write(
        &mut self,
        id: usize,
        buf: &[u8],
        caller: Caller,
        cfg: &dyn ConfigAccess,
    ) -> Result<(usize, Vec<Event>), SchemeError> {
        let node = self.usable(id)?.node;
        if !matches!(
            node,
            Node::Channel(_) | Node::Control(_) | Node::Participant(_)
        ) {
            return Err(SchemeError::BadHandle);
        }
        let stream = self
            .handles
            .get_mut(&id)
            .and_then(|h| h.stream.as_mut())
            .ok_or(SchemeError::BadHandle)?;
        if stream.closed {
            return Err(SchemeError::Closed);
        }
        let events = match node {
            Node::Channel(address) if !stream.is_protocol_data(buf) => {
                let request = Request::decode(buf).map_err(|e| {
                    log::warn!(
                        "{}: undecodable request from pid {}: {e}",
                        function_name(address),
                        caller.pid
                    );
                    SchemeError::Invalid
                })?;
                let entry = self
                    .functions
                    .get_mut(&address)
                    .ok_or(SchemeError::BadHandle)?;
                let response = handler::respond(cfg, &mut entry.function, request);
                stream.queue(&response.frame()).map_err(|e| {
                    log::warn!("{}: cannot queue a response: {e}", function_name(address));
                    SchemeError::Invalid
                })?;
                vec![
                    Event::DriverRequest {
                        address,
                        pid: caller.pid,
                        request,
                    },
                    Event::Readable { handle: id },
                ]
            }
            _ if stream.rx_broken => {
                // Frame boundaries are lost; pcid is about to close the handle.
                Vec::new()
            }
            Node::Channel(address) => {
                stream.rx.extend_from_slice(buf);
                stream
                    .take_frames::<DriverMessage>()
                    .into_iter()
                    .map(|f| match f {
                        Frame::Message(message) => Event::DriverMessage {
                            address,
                            pid: caller.pid,
                            message,
                        },
                        Frame::Bad { error, .. } => Event::DriverBadFrame { address, error },
                    })
                    .collect()
            }
            Node::Participant(handle) => {
                stream.rx.extend_from_slice(buf);
                stream
                    .take_frames::<DriverMessage>()
                    .into_iter()
                    .map(|f| match f {
                        Frame::Message(message) => Event::ParticipantMessage {
                            handle,
                            pid: caller.pid,
                            message,
                        },
                        Frame::Bad { error, .. } => Event::ParticipantBadFrame { handle, error },
                    })
                    .collect()
            }
            Node::Control(client) => {
                stream.rx.extend_from_slice(buf);
                stream
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
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok((buf.len(), events))
    }

    /// `call` on a handle: configuration-space access on `access`.
    pub fn call(
        &mut self,
        id: usize,
        payload: &mut [u8],
        metadata: &[u64],
        cfg: &dyn ConfigAccess,
    ) -> Result<usize, SchemeError> {
        match self.usable(id)?.node {
            Node::Access => {
                log::debug!(
                    "pcid: access request {metadata:x?}, {} bytes",
                    payload.len()
                );
                access::call(cfg, payload, metadata).map_err(|e| {
                    log::debug!("pcid: access request refused: {e}");
                    SchemeError::Invalid
                })
            }
            _ => Err(SchemeError::BadHandle),
        }
    }

    /// Whether reading the handle would not fail with `WouldBlock` (what
    /// `fevent` reports as `EVENT_READ`).
    pub fn readable(&self, id: usize) -> Result<bool, SchemeError> {
        let handle = self.handles.get(&id).ok_or(SchemeError::BadHandle)?;
        Ok(match &handle.stream {
            Some(s) => s.readable(),
            None => false,
        })
    }

    /// The last descriptor of a handle was closed.
    pub fn close(&mut self, id: usize) -> Option<Event> {
        let handle = self.handles.remove(&id)?;
        if handle.stat {
            return None;
        }
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
            Node::Participant(handle) => Some(Event::ParticipantClosed { handle }),
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

    /// Queues a message on the participant channel `handle`; returns the
    /// handle to notify.
    pub fn send_to_participant(
        &mut self,
        handle: usize,
        message: &DriverMessage,
    ) -> Result<usize, SendError> {
        let frame = message
            .encode()
            .map_err(|e| SendError::Encode(e.to_string()))?;
        let is_participant = self
            .handles
            .get(&handle)
            .is_some_and(|h| matches!(h.node, Node::Participant(_)) && !h.stat);
        let (id, stream) = self.stream_of(is_participant.then_some(handle))?;
        stream.queue(&frame)?;
        Ok(id)
    }

    /// Closes a participant channel from pcid's side; returns the handle to notify.
    pub fn close_participant(&mut self, handle: usize) -> Option<usize> {
        let is_participant = self
            .handles
            .get(&handle)
            .is_some_and(|h| matches!(h.node, Node::Participant(_)) && !h.stat);
        let (id, stream) = self.stream_of(is_participant.then_some(handle)).ok()?;
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
mod tests;
