//! The block interface Redox's disk consumers use, over a [`Controller`].
//!
//! Redox's storage drivers export one `disk.*` scheme per controller (NVMe:
//! `disk.pci-<seg>-<bus>-<dev>.<fn>-nvme`, e.g. `disk.pci-00-00-01.0-nvme`),
//! whose entries are the namespace ids (`1`) and their partitions
//! (`1p0`, `1p1`, …); redoxfs and others open an entry and read and write it
//! at byte offsets. [`DiskService`] is that interface without the operating
//! system: paths, handles, offsets, sizes and errors, checked and unit-tested
//! on any host. The Redox scheme (`crate::redox_disk`) and the test build's
//! block socket on Linux are thin adaptors around it.
//!
//! What it does, as Redox's `driver-block` (base 6091b4662) does it:
//!
//! * The root (empty path) lists the entries, one per line (`1\n1p0\n`), when
//!   opened with `O_DIRECTORY` or `O_STAT`; opened otherwise it is
//!   `EISDIR`. Only uid 0 may open anything (`EACCES`).
//! * A namespace or partition handle excludes conflicting ones (`ENOLCK`):
//!   a whole namespace excludes every handle on it, a partition the same
//!   partition and its namespace.
//! * Partition tables (GPT, then MBR; [`crate::partition`]) are read once,
//!   when the service starts.
//! * `fstat` gives the size in bytes and blocks and the block size.
//!
//! Where it differs (each on purpose):
//!
//! * **Byte offsets.** Reads and writes may start and end anywhere; partial
//!   blocks are read, patched and written back within one request.
//!   (driver-block refuses lengths that are not whole blocks and silently
//!   drops the low bits of an offset.) A read at or past the end returns 0
//!   bytes, one that crosses it is cut short; a write past the end is
//!   `ENOSPC`, one that crosses it is cut short.
//! * **`fsync` is an NVMe Flush** of the namespace (driver-block answers
//!   `fsync` without doing anything, so nothing ever reached a volatile
//!   write cache's media on Redox).
//! * **Shutdown.** Once the controller's shutdown has begun, reads, writes,
//!   `fsync` and new opens of a namespace or partition fail with
//!   `ESHUTDOWN` at once — never a hang; a request accepted before Begin
//!   completes first ([`Controller::io`]).
//! * `O_STAT` opens take no lock and allow only `fstat`/`fsize`/`fpath`.
//! * `fpath` answers `/scheme/<scheme>/<entry>`.
//!
//! One request runs at a time (the caller serialises them); each runs as one
//! [`Controller::io`] request, so a read-modify-write is never cut in half by
//! a shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;

use log::{info, warn};
use pcid_hw::{Clock, DmaAllocator, RegisterIo};

use crate::partition::{self, PartitionTable};
use crate::{Controller, IoSession, Namespace, NvmeError};

/// Error numbers, as Redox (and Linux) number them; the Redox adaptor checks
/// them against `redox_syscall` at compile time.
pub mod errno {
    /// Operation not permitted for this caller.
    pub const EACCES: i32 = 13;
    /// No such entry.
    pub const ENOENT: i32 = 2;
    /// The root is a directory.
    pub const EISDIR: i32 = 21;
    /// An entry is not a directory.
    pub const ENOTDIR: i32 = 20;
    /// A conflicting handle is open.
    pub const ENOLCK: i32 = 37;
    /// Unknown handle, or an operation the handle does not allow.
    pub const EBADF: i32 = 9;
    /// A write starts past the end.
    pub const ENOSPC: i32 = 28;
    /// The controller is shutting down.
    pub const ESHUTDOWN: i32 = 108;
    /// The controller failed the request.
    pub const EIO: i32 = 5;
    /// A malformed request.
    pub const EINVAL: i32 = 22;
}

/// Why a disk request failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Only uid 0 may open the disk.
    #[error("permission denied (uid {0}, only uid 0 may open the disk)")]
    AccessDenied(u32),
    /// No such namespace or partition.
    #[error("no entry {0:?}")]
    NotFound(String),
    /// The root opened without `O_DIRECTORY`/`O_STAT`.
    #[error("the root is a directory")]
    IsDirectory,
    /// A namespace or partition opened as a directory.
    #[error("{0:?} is not a directory")]
    NotDirectory(String),
    /// A conflicting handle is open.
    #[error("{0:?} is in use by another handle")]
    Locked(String),
    /// Unknown handle, or an operation this handle does not allow.
    #[error("bad handle: {0}")]
    BadHandle(&'static str),
    /// A write starts at or past the end.
    #[error("write at byte {offset} is past the end ({size} bytes)")]
    NoSpace {
        /// Where the write starts.
        offset: u64,
        /// The entry's size.
        size: u64,
    },
    /// Shutdown has begun: the controller takes no new request.
    #[error("the controller is shutting down")]
    ShuttingDown,
    /// The controller failed the request.
    #[error("I/O error: {0}")]
    Io(NvmeError),
}

impl DiskError {
    /// The error number a caller sees.
    pub fn errno(&self) -> i32 {
        match self {
            DiskError::AccessDenied(_) => errno::EACCES,
            DiskError::NotFound(_) => errno::ENOENT,
            DiskError::IsDirectory => errno::EISDIR,
            DiskError::NotDirectory(_) => errno::ENOTDIR,
            DiskError::Locked(_) => errno::ENOLCK,
            DiskError::BadHandle(_) => errno::EBADF,
            DiskError::NoSpace { .. } => errno::ENOSPC,
            DiskError::ShuttingDown => errno::ESHUTDOWN,
            DiskError::Io(NvmeError::InvalidRequest { .. }) => errno::EINVAL,
            DiskError::Io(_) => errno::EIO,
        }
    }
}

impl From<NvmeError> for DiskError {
    fn from(e: NvmeError) -> Self {
        match e {
            NvmeError::ShuttingDown => DiskError::ShuttingDown,
            other => DiskError::Io(other),
        }
    }
}

/// How an entry is opened (`O_DIRECTORY`, `O_STAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Opened as a directory.
    pub directory: bool,
    /// Opened for `fstat` only.
    pub stat: bool,
}

/// What `fstat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStat {
    /// The root (a directory) or an entry (a file).
    pub directory: bool,
    /// Size in bytes (the root: the length of its listing).
    pub size: u64,
    /// Size in logical blocks (0 for the root).
    pub blocks: u64,
    /// Logical block size (0 for the root).
    pub block_size: u32,
}

/// A node of the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Root,
    Namespace(u32),
    Partition(u32, usize),
}

#[derive(Debug, Clone, Copy)]
struct Handle {
    node: Node,
    stat_only: bool,
}

/// A namespace and its partition table.
#[derive(Debug, Clone)]
struct Disk {
    ns: Namespace,
    table: Option<PartitionTable>,
}

/// Counters of the requests served, for the log at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Reads served.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Writes served.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// `fsync`s served (each an NVMe Flush).
    pub syncs: u64,
    /// Requests refused because shutdown had begun.
    pub refused: u64,
}

/// See the module documentation.
pub struct DiskService<R: RegisterIo, D: DmaAllocator, C: Clock> {
    ctrl: Arc<Controller<R, D, C>>,
    scheme: String,
    disks: BTreeMap<u32, Disk>,
    handles: BTreeMap<usize, Handle>,
    next_id: usize,
    counters: DiskCounters,
}

/// The scheme name Redox's NVMe driver registers for the function at
/// `address` (`0000:00:01.0` → `disk.pci-00-00-01.0-nvme`: Redox names a
/// function `pci-<seg>-<bus>-<dev>.<fn>`, two hex digits each for segment,
/// bus and device).
pub fn scheme_name(address: pcid_interface::function::PciAddress) -> String {
    format!(
        "disk.pci-{:02x}-{:02x}-{:02x}.{:x}-nvme",
        address.segment, address.bus, address.device, address.function
    )
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> DiskService<R, D, C> {
    /// Serves `ctrl`'s namespaces under the scheme name `scheme` (used in
    /// paths and logs), reading each namespace's partition table now.
    pub fn new(ctrl: Arc<Controller<R, D, C>>, scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        let mut disks = BTreeMap::new();
        for ns in ctrl.namespaces().iter().copied() {
            let table = ctrl.io(|s| {
                partition::read_table(ns.block_size, |offset, buf| {
                    let n = read_bytes(s, &ns, 0, ns.bytes(), offset, buf)?;
                    if n < buf.len() {
                        return Err(NvmeError::InvalidRequest {
                            reason: format!(
                                "the partition table reaches past the end at byte {offset}"
                            ),
                        });
                    }
                    Ok(())
                })
            });
            let table = match table {
                Ok(t) => t,
                Err(e) => {
                    warn!(
                        "{}: namespace {}: cannot read its partition table: {e}",
                        ctrl.name(),
                        ns.nsid
                    );
                    None
                }
            };
            if let Some(t) = &table {
                info!(
                    "{}: namespace {}: {:?} partition table with {} partition(s)",
                    ctrl.name(),
                    ns.nsid,
                    t.kind,
                    t.partitions.len()
                );
            }
            disks.insert(ns.nsid, Disk { ns, table });
        }
        Self {
            ctrl,
            scheme,
            disks,
            handles: BTreeMap::new(),
            next_id: 1,
            counters: DiskCounters::default(),
        }
    }

    /// The scheme name.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The controller served.
    pub fn controller(&self) -> &Arc<Controller<R, D, C>> {
        &self.ctrl
    }

    /// What was served so far.
    pub fn counters(&self) -> DiskCounters {
        self.counters
    }

    /// The entries the root lists, in order.
    pub fn entry_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (nsid, disk) in &self.disks {
            names.push(nsid.to_string());
            if let Some(t) = &disk.table {
                names.extend((0..t.partitions.len()).map(|p| format!("{nsid}p{p}")));
            }
        }
        names
    }

    fn listing(&self) -> Vec<u8> {
        let mut s = String::new();
        for n in self.entry_names() {
            s.push_str(&n);
            s.push('\n');
        }
        s.into_bytes()
    }

    fn parse(&self, path: &str) -> Result<Node, DiskError> {
        let not_found = || DiskError::NotFound(path.to_string());
        let number = |s: &str| -> Result<u64, DiskError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(not_found());
            }
            s.parse().map_err(|_| not_found())
        };
        let (ns, part) = match path.split_once('p') {
            Some((ns, part)) => (ns, Some(part)),
            None => (path, None),
        };
        let nsid = u32::try_from(number(ns)?).map_err(|_| not_found())?;
        let disk = self.disks.get(&nsid).ok_or_else(not_found)?;
        match part {
            None => Ok(Node::Namespace(nsid)),
            Some(p) => {
                let p = usize::try_from(number(p)?).map_err(|_| not_found())?;
                let exists = disk.table.as_ref().is_some_and(|t| p < t.partitions.len());
                if exists {
                    Ok(Node::Partition(nsid, p))
                } else {
                    Err(not_found())
                }
            }
        }
    }

    fn conflicts(&self, node: Node) -> bool {
        self.handles
            .values()
            .filter(|h| !h.stat_only)
            .any(|h| match (h.node, node) {
                (Node::Root, _) | (_, Node::Root) => false,
                (Node::Namespace(a), Node::Namespace(b))
                | (Node::Namespace(a), Node::Partition(b, _))
                | (Node::Partition(a, _), Node::Namespace(b)) => a == b,
                (Node::Partition(a, p), Node::Partition(b, q)) => a == b && p == q,
            })
    }

    /// Opens `path` (relative to the scheme root, slashes around it
    /// ignored) for a caller of `uid`; returns the handle's number.
    pub fn open(&mut self, path: &str, flags: OpenFlags, uid: u32) -> Result<usize, DiskError> {
        if uid != 0 {
            return Err(DiskError::AccessDenied(uid));
        }
        let wants_dir = flags.directory || path.ends_with('/');
        let path = path.trim_matches('/');
        let node = if path.is_empty() {
            if !flags.directory && !flags.stat {
                return Err(DiskError::IsDirectory);
            }
            Node::Root
        } else {
            let node = self.parse(path)?;
            if wants_dir {
                return Err(DiskError::NotDirectory(path.to_string()));
            }
            if !flags.stat {
                if self.ctrl.is_shutting_down() {
                    self.counters.refused += 1;
                    return Err(DiskError::ShuttingDown);
                }
                if self.conflicts(node) {
                    return Err(DiskError::Locked(path.to_string()));
                }
            }
            node
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.handles.insert(
            id,
            Handle {
                node,
                stat_only: flags.stat && node != Node::Root,
            },
        );
        Ok(id)
    }

    fn handle(&self, id: usize) -> Result<Handle, DiskError> {
        self.handles
            .get(&id)
            .copied()
            .ok_or(DiskError::BadHandle("no such handle"))
    }

    /// The namespace and the block range (first block, blocks) of a data node.
    fn extent(&self, node: Node) -> Result<(Namespace, u64, u64), DiskError> {
        let bad = || DiskError::BadHandle("the entry is gone");
        match node {
            Node::Root => Err(DiskError::BadHandle("the root holds no data")),
            Node::Namespace(nsid) => {
                let d = self.disks.get(&nsid).ok_or_else(bad)?;
                Ok((d.ns, 0, d.ns.blocks))
            }
            Node::Partition(nsid, p) => {
                let d = self.disks.get(&nsid).ok_or_else(bad)?;
                let part = d
                    .table
                    .as_ref()
                    .and_then(|t| t.partitions.get(p))
                    .ok_or_else(bad)?;
                Ok((d.ns, part.start, part.blocks))
            }
        }
    }

    fn data_handle(&self, id: usize) -> Result<(Namespace, u64, u64), DiskError> {
        let h = self.handle(id)?;
        if h.stat_only {
            return Err(DiskError::BadHandle("opened with O_STAT"));
        }
        self.extent(h.node)
    }

    fn refuse_after_begin(&mut self) -> Result<(), DiskError> {
        if self.ctrl.is_shutting_down() {
            self.counters.refused += 1;
            return Err(DiskError::ShuttingDown);
        }
        Ok(())
    }

    /// Reads from byte `offset` into `buf`; returns the bytes read (fewer at
    /// the end, 0 at or past it).
    pub fn read(&mut self, id: usize, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
        let h = self.handle(id)?;
        if h.node == Node::Root {
            let list = self.listing();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(list.len());
            let n = buf.len().min(list.len() - start);
            buf[..n].copy_from_slice(&list[start..start + n]);
            return Ok(n);
        }
        let (ns, first, blocks) = self.data_handle(id)?;
        self.refuse_after_begin()?;
        let size = blocks.saturating_mul(u64::from(ns.block_size));
        let n = self
            .ctrl
            .io(|s| read_bytes(s, &ns, first, size, offset, buf))
            .map_err(|e| self.io_error("read", id, e))?;
        self.counters.reads += 1;
        self.counters.bytes_read += n as u64;
        Ok(n)
    }

    /// Writes `data` at byte `offset`; returns the bytes written (fewer when
    /// it crosses the end).
    pub fn write(&mut self, id: usize, offset: u64, data: &[u8]) -> Result<usize, DiskError> {
        let h = self.handle(id)?;
        if h.node == Node::Root {
            return Err(DiskError::BadHandle("the root is not writable"));
        }
        let (ns, first, blocks) = self.data_handle(id)?;
        self.refuse_after_begin()?;
        let size = blocks.saturating_mul(u64::from(ns.block_size));
        if data.is_empty() {
            return Ok(0);
        }
        if offset >= size {
            return Err(DiskError::NoSpace { offset, size });
        }
        let n = self
            .ctrl
            .io(|s| write_bytes(s, &ns, first, size, offset, data))
            .map_err(|e| self.io_error("write", id, e))?;
        self.counters.writes += 1;
        self.counters.bytes_written += n as u64;
        Ok(n)
    }

    /// `fsync`: an NVMe Flush of the handle's namespace (the root: nothing).
    pub fn fsync(&mut self, id: usize) -> Result<(), DiskError> {
        let h = self.handle(id)?;
        if h.node == Node::Root {
            return Ok(());
        }
        let (ns, _, _) = self.data_handle(id)?;
        self.refuse_after_begin()?;
        self.ctrl
            .io(|s| s.flush(ns.nsid))
            .map_err(|e| self.io_error("fsync", id, e))?;
        self.counters.syncs += 1;
        Ok(())
    }

    fn io_error(&self, what: &str, id: usize, e: NvmeError) -> DiskError {
        let e = DiskError::from(e);
        if !matches!(e, DiskError::ShuttingDown) {
            warn!(
                "{}: {} on {}: {e}",
                self.ctrl.name(),
                what,
                self.path(id).unwrap_or_default()
            );
        }
        e
    }

    /// `fstat`.
    pub fn stat(&self, id: usize) -> Result<DiskStat, DiskError> {
        let h = self.handle(id)?;
        if h.node == Node::Root {
            return Ok(DiskStat {
                directory: true,
                size: self.listing().len() as u64,
                blocks: 0,
                block_size: 0,
            });
        }
        let (ns, _, blocks) = self.extent(h.node)?;
        Ok(DiskStat {
            directory: false,
            size: blocks.saturating_mul(u64::from(ns.block_size)),
            blocks,
            block_size: ns.block_size,
        })
    }

    /// `fsize`: the size in bytes.
    pub fn size(&self, id: usize) -> Result<u64, DiskError> {
        self.stat(id).map(|s| s.size)
    }

    /// `fpath`: `/scheme/<scheme>/<entry>`.
    pub fn path(&self, id: usize) -> Result<String, DiskError> {
        let h = self.handle(id)?;
        Ok(match h.node {
            Node::Root => format!("/scheme/{}/", self.scheme),
            Node::Namespace(n) => format!("/scheme/{}/{n}", self.scheme),
            Node::Partition(n, p) => format!("/scheme/{}/{n}p{p}", self.scheme),
        })
    }

    /// The names a directory handle lists (`getdents`).
    pub fn entries(&self, id: usize) -> Result<Vec<String>, DiskError> {
        match self.handle(id)?.node {
            Node::Root => Ok(self.entry_names()),
            _ => Err(DiskError::NotDirectory(
                self.path(id).unwrap_or_default().to_string(),
            )),
        }
    }

    /// Whether `id` is the root.
    pub fn is_root(&self, id: usize) -> Result<bool, DiskError> {
        Ok(self.handle(id)?.node == Node::Root)
    }

    /// Closes a handle (unknown handles are ignored).
    pub fn close(&mut self, id: usize) {
        self.handles.remove(&id);
    }

    /// Handles open now.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }
}

/// Bytes `offset..offset + buf.len()` of an extent of `size` bytes starting
/// at block `first` of `ns`, cut at the end. Whole blocks go straight
/// through; a partial first or last block is read whole.
fn read_bytes<R: RegisterIo, D: DmaAllocator, C: Clock>(
    s: &mut IoSession<'_, R, D, C>,
    ns: &Namespace,
    first: u64,
    size: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, NvmeError> {
    if offset >= size || buf.is_empty() {
        return Ok(0);
    }
    let len = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
    let buf = &mut buf[..len];
    let bs = u64::from(ns.block_size);
    let mut done = 0usize;
    while done < len {
        let pos = offset + done as u64;
        let lba = first + pos / bs;
        let in_block = (pos % bs) as usize;
        let left = len - done;
        if in_block == 0 && left as u64 >= bs {
            let whole = left - left % bs as usize;
            s.read(ns.nsid, lba, &mut buf[done..done + whole])?;
            done += whole;
        } else {
            let mut block = vec![0u8; bs as usize];
            s.read(ns.nsid, lba, &mut block)?;
            let n = (bs as usize - in_block).min(left);
            buf[done..done + n].copy_from_slice(&block[in_block..in_block + n]);
            done += n;
        }
    }
    Ok(len)
}

/// Writes `data` at `offset` of an extent like [`read_bytes`], reading a
/// partial first or last block and writing it back patched.
fn write_bytes<R: RegisterIo, D: DmaAllocator, C: Clock>(
    s: &mut IoSession<'_, R, D, C>,
    ns: &Namespace,
    first: u64,
    size: u64,
    offset: u64,
    data: &[u8],
) -> Result<usize, NvmeError> {
    let len = usize::try_from((size - offset).min(data.len() as u64)).unwrap_or(data.len());
    let data = &data[..len];
    let bs = u64::from(ns.block_size);
    let mut done = 0usize;
    while done < len {
        let pos = offset + done as u64;
        let lba = first + pos / bs;
        let in_block = (pos % bs) as usize;
        let left = len - done;
        if in_block == 0 && left as u64 >= bs {
            let whole = left - left % bs as usize;
            s.write(ns.nsid, lba, &data[done..done + whole])?;
            done += whole;
        } else {
            let mut block = vec![0u8; bs as usize];
            s.read(ns.nsid, lba, &mut block)?;
            let n = (bs as usize - in_block).min(left);
            block[in_block..in_block + n].copy_from_slice(&data[done..done + n]);
            s.write(ns.nsid, lba, &block)?;
            done += n;
        }
    }
    Ok(len)
}
