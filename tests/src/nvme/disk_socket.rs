//! The disk interface of the test build on Linux: `nvmed`'s
//! [`nvmed::disk::DiskService`] (what Redox's consumers reach as the
//! `disk.*` scheme) served over a Unix socket, so that separate processes —
//! the test file system daemon `testfsd` — read and write the simulated or
//! QEMU controller through the driver, and see what Redox's consumers see:
//! byte offsets, `fsync` as NVMe Flush, `ESHUTDOWN` once the controller's
//! shutdown has begun.
//!
//! With `NVMED_DISK_DIR=<dir>` (through pcid's `--driver-env`) `nvmed-test`
//! listens on `<dir>/<PCI address>.sock` (e.g. `0000:01:00.0.sock`).
//! Test-only: the shipped `nvmed` serves the disk only as Redox's scheme.
//!
//! Each request is one frame, each answer one frame (little-endian):
//!
//! ```text
//! request  u8 op · u32 handle · u64 offset · u32 length · length bytes
//!          op: 1 open (bytes: the entry, e.g. "1"), 2 read (length: bytes
//!          wanted, no bytes follow), 3 write (bytes: the data), 4 fsync,
//!          5 size, 6 close
//! answer   i32 status (0, or the errno) · u64 value (open: the handle;
//!          write: bytes written; size: bytes) · u32 length · length bytes
//!          (read: the data)
//! ```
//!
//! Requests from every connection are served one at a time, as the Redox
//! scheme serves them.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nvmed::disk::{DiskService, OpenFlags};
use pcid_hw::{Clock, DmaAllocator, RegisterIo};

/// Environment variable naming the directory of the disk sockets.
pub const DISK_DIR_ENV: &str = "NVMED_DISK_DIR";

/// Largest read or write one request may carry.
pub const MAX_TRANSFER: u32 = 1 << 20;

const OPEN: u8 = 1;
const READ: u8 = 2;
const WRITE: u8 = 3;
const FSYNC: u8 = 4;
const SIZE: u8 = 5;
const CLOSE: u8 = 6;

/// Where the socket of the controller at `address` is.
pub fn socket_path(dir: &Path, address: &str) -> PathBuf {
    dir.join(format!("{address}.sock"))
}

/// Starts serving `service` on `<dir>/<address>.sock` in background threads.
pub fn serve<R, D, C>(
    service: DiskService<R, D, C>,
    dir: &Path,
    address: &str,
) -> io::Result<PathBuf>
where
    R: RegisterIo + 'static,
    D: DmaAllocator + 'static,
    C: Clock + 'static,
{
    std::fs::create_dir_all(dir)?;
    let path = socket_path(dir, address);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let service = Arc::new(Mutex::new(service));
    let label = address.to_string();
    std::thread::Builder::new()
        .name("disk-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let service = Arc::clone(&service);
                let label = label.clone();
                let _ = std::thread::Builder::new()
                    .name("disk-client".into())
                    .spawn(move || {
                        if let Err(e) = serve_client(stream, &service) {
                            log::debug!("{label}: disk client: {e}");
                        }
                    });
            }
        })?;
    Ok(path)
}

fn serve_client<R: RegisterIo, D: DmaAllocator, C: Clock>(
    mut stream: UnixStream,
    service: &Mutex<DiskService<R, D, C>>,
) -> io::Result<()> {
    let mut opened = Vec::new();
    let result = loop {
        let mut head = [0u8; 17];
        match stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let op = head[0];
        let handle = u32::from_le_bytes(head[1..5].try_into().unwrap_or_default()) as usize;
        let offset = u64::from_le_bytes(head[5..13].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[13..17].try_into().unwrap_or_default());
        if len > MAX_TRANSFER {
            break answer(&mut stream, Err(nvmed::disk::errno::EINVAL), &[]);
        }
        let mut bytes = vec![0u8; if op == READ { 0 } else { len as usize }];
        stream.read_exact(&mut bytes)?;
        let mut svc = service.lock().unwrap_or_else(|e| e.into_inner());
        let mut data = Vec::new();
        let result: Result<u64, i32> = match op {
            OPEN => match std::str::from_utf8(&bytes) {
                Ok(path) => svc
                    .open(path, OpenFlags::default(), 0)
                    .map(|h| {
                        opened.push(h);
                        h as u64
                    })
                    .map_err(|e| e.errno()),
                Err(_) => Err(nvmed::disk::errno::EINVAL),
            },
            READ => {
                data = vec![0u8; len as usize];
                match svc.read(handle, offset, &mut data) {
                    Ok(n) => {
                        data.truncate(n);
                        Ok(n as u64)
                    }
                    Err(e) => {
                        data.clear();
                        Err(e.errno())
                    }
                }
            }
            WRITE => svc
                .write(handle, offset, &bytes)
                .map(|n| n as u64)
                .map_err(|e| e.errno()),
            FSYNC => svc.fsync(handle).map(|()| 0).map_err(|e| e.errno()),
            SIZE => svc.size(handle).map_err(|e| e.errno()),
            CLOSE => {
                svc.close(handle);
                opened.retain(|&h| h != handle);
                Ok(0)
            }
            _ => Err(nvmed::disk::errno::EINVAL),
        };
        drop(svc);
        answer(&mut stream, result, &data)?;
    };
    // A client that goes away closes what it opened, as a process exiting on
    // Redox closes its handles.
    let mut svc = service.lock().unwrap_or_else(|e| e.into_inner());
    for h in opened {
        svc.close(h);
    }
    result
}

fn answer(stream: &mut UnixStream, result: Result<u64, i32>, data: &[u8]) -> io::Result<()> {
    let (status, value) = match result {
        Ok(v) => (0i32, v),
        Err(errno) => (errno, 0),
    };
    let mut frame = Vec::with_capacity(16 + data.len());
    frame.extend_from_slice(&status.to_le_bytes());
    frame.extend_from_slice(&value.to_le_bytes());
    frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
    frame.extend_from_slice(data);
    stream.write_all(&frame)
}

/// A disk request failed: the errno the driver answered, or the socket.
#[derive(Debug, thiserror::Error)]
pub enum DiskClientError {
    /// The driver answered with an error number.
    #[error("errno {errno}{}", errno_name(*errno))]
    Errno {
        /// The error number.
        errno: i32,
    },
    /// The socket failed (the driver is gone).
    #[error("disk socket: {0}")]
    Io(#[from] io::Error),
}

fn errno_name(e: i32) -> &'static str {
    match e {
        nvmed::disk::errno::ESHUTDOWN => " (ESHUTDOWN: the controller is shutting down)",
        nvmed::disk::errno::EIO => " (EIO)",
        nvmed::disk::errno::ENOSPC => " (ENOSPC)",
        nvmed::disk::errno::ENOENT => " (ENOENT)",
        nvmed::disk::errno::ENOLCK => " (ENOLCK)",
        _ => "",
    }
}

/// One open entry of a disk, through the socket.
#[derive(Debug)]
pub struct DiskClient {
    stream: UnixStream,
    handle: u32,
}

impl DiskClient {
    /// Connects to the socket at `path` and opens `entry` (e.g. `1`).
    pub fn open(
        path: &Path,
        entry: &str,
        timeout: std::time::Duration,
    ) -> Result<Self, DiskClientError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut c = Self { stream, handle: 0 };
        let h = c.call(OPEN, 0, entry.as_bytes(), 0)?.0;
        c.handle = u32::try_from(h).map_err(|_| DiskClientError::Errno {
            errno: nvmed::disk::errno::EINVAL,
        })?;
        Ok(c)
    }

    fn call(
        &mut self,
        op: u8,
        offset: u64,
        bytes: &[u8],
        read_len: u32,
    ) -> Result<(u64, Vec<u8>), DiskClientError> {
        let len = if op == READ {
            read_len
        } else {
            bytes.len() as u32
        };
        let mut frame = Vec::with_capacity(17 + bytes.len());
        frame.push(op);
        frame.extend_from_slice(&self.handle.to_le_bytes());
        frame.extend_from_slice(&offset.to_le_bytes());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(bytes);
        self.stream.write_all(&frame)?;
        let mut head = [0u8; 16];
        self.stream.read_exact(&mut head)?;
        let status = i32::from_le_bytes(head[..4].try_into().unwrap_or_default());
        let value = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
        let n = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default());
        if n > MAX_TRANSFER {
            return Err(DiskClientError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answer of {n} bytes"),
            )));
        }
        let mut data = vec![0u8; n as usize];
        self.stream.read_exact(&mut data)?;
        if status != 0 {
            return Err(DiskClientError::Errno { errno: status });
        }
        Ok((value, data))
    }

    /// Writes `data` at `offset`; the bytes written.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<usize, DiskClientError> {
        Ok(self.call(WRITE, offset, data, 0)?.0 as usize)
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, DiskClientError> {
        Ok(self.call(READ, offset, &[], len)?.1)
    }

    /// `fsync`: an NVMe Flush.
    pub fn fsync(&mut self) -> Result<(), DiskClientError> {
        self.call(FSYNC, 0, &[], 0).map(|_| ())
    }

    /// The entry's size in bytes.
    pub fn size(&mut self) -> Result<u64, DiskClientError> {
        Ok(self.call(SIZE, 0, &[], 0)?.0)
    }
}
