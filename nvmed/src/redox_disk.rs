//! The `disk.*` scheme on Redox: [`DiskService`] served through
//! `redox_scheme`, the way Redox's NVMe driver serves its namespaces (the
//! semantics, and where they differ from Redox's `driver-block`, are in
//! [`crate::disk`]).
//!
//! [`register`] creates the scheme (before the driver drops privileges:
//! creating a scheme needs the root namespace); [`serve`] answers requests
//! one at a time until the scheme is unmounted. Requests are served in the
//! order the kernel queues them; each runs to its end before the next is
//! read, and once the controller's shutdown has begun every data request is
//! answered `ESHUTDOWN` at once, so no caller is ever left waiting.

use std::io;

use redox_scheme::scheme::SchemeSync;
use redox_scheme::{CallerCtx, OpenResult, RequestKind, Response, SignalBehavior, Socket};
use syscall::dirent::{DirEntry, DirentBuf, DirentKind};
use syscall::error::{Error, Result};
use syscall::flag::{MODE_DIR, MODE_FILE, O_DIRECTORY, O_STAT};
use syscall::schemev2::NewFdFlags;

use pcid_hw::{Clock, DmaAllocator, RegisterIo};

use crate::disk::{errno, DiskError, DiskService, OpenFlags};

// The portable service numbers its errors as Redox does.
const _: () = assert!(errno::EACCES == syscall::EACCES);
const _: () = assert!(errno::ENOENT == syscall::ENOENT);
const _: () = assert!(errno::EISDIR == syscall::EISDIR);
const _: () = assert!(errno::ENOTDIR == syscall::ENOTDIR);
const _: () = assert!(errno::ENOLCK == syscall::ENOLCK);
const _: () = assert!(errno::EBADF == syscall::EBADF);
const _: () = assert!(errno::ENOSPC == syscall::ENOSPC);
const _: () = assert!(errno::ESHUTDOWN == syscall::ESHUTDOWN);
const _: () = assert!(errno::EIO == syscall::EIO);
const _: () = assert!(errno::EINVAL == syscall::EINVAL);

fn err(e: DiskError) -> Error {
    Error::new(e.errno())
}

/// The service as `redox_scheme` sees it.
struct DiskScheme<'a, R: RegisterIo, D: DmaAllocator, C: Clock> {
    service: &'a mut DiskService<R, D, C>,
}

impl<R: RegisterIo, D: DmaAllocator, C: Clock> SchemeSync for DiskScheme<'_, R, D, C> {
    fn open(&mut self, path: &str, flags: usize, ctx: &CallerCtx) -> Result<OpenResult> {
        let flags = OpenFlags {
            directory: flags & O_DIRECTORY == O_DIRECTORY,
            stat: flags & O_STAT == O_STAT,
        };
        let id = self.service.open(path, flags, ctx.uid).map_err(err)?;
        Ok(OpenResult::ThisScheme {
            number: id,
            flags: NewFdFlags::POSITIONED,
        })
    }

    fn read(
        &mut self,
        id: usize,
        buf: &mut [u8],
        offset: u64,
        _fcntl_flags: u32,
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        self.service.read(id, offset, buf).map_err(err)
    }

    fn write(
        &mut self,
        id: usize,
        buf: &[u8],
        offset: u64,
        _fcntl_flags: u32,
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        self.service.write(id, offset, buf).map_err(err)
    }

    fn fsync(&mut self, id: usize, _ctx: &CallerCtx) -> Result<()> {
        self.service.fsync(id).map_err(err)
    }

    fn fsize(&mut self, id: usize, _ctx: &CallerCtx) -> Result<u64> {
        self.service.size(id).map_err(err)
    }

    fn fstat(&mut self, id: usize, stat: &mut syscall::Stat, _ctx: &CallerCtx) -> Result<()> {
        let st = self.service.stat(id).map_err(err)?;
        stat.st_mode = if st.directory { MODE_DIR } else { MODE_FILE };
        stat.st_size = st.size;
        stat.st_blocks = st.blocks;
        stat.st_blksize = st.block_size;
        Ok(())
    }

    fn fpath(&mut self, id: usize, buf: &mut [u8], _ctx: &CallerCtx) -> Result<usize> {
        let path = self.service.path(id).map_err(err)?;
        let n = buf.len().min(path.len());
        buf[..n].copy_from_slice(&path.as_bytes()[..n]);
        Ok(n)
    }

    fn getdents<'buf>(
        &mut self,
        id: usize,
        mut buf: DirentBuf<&'buf mut [u8]>,
        opaque_offset: u64,
    ) -> Result<DirentBuf<&'buf mut [u8]>> {
        let entries = self.service.entries(id).map_err(err)?;
        let Ok(skip) = usize::try_from(opaque_offset) else {
            return Ok(buf);
        };
        for (i, name) in entries.iter().enumerate().skip(skip) {
            buf.entry(DirEntry {
                inode: 0,
                next_opaque_id: i as u64 + 1,
                name,
                kind: DirentKind::Regular,
            })?;
        }
        Ok(buf)
    }

    fn on_close(&mut self, id: usize) {
        self.service.close(id);
    }
}

/// Creates the scheme `name` (blocking reads of requests).
pub fn register(name: &str) -> io::Result<Socket> {
    Socket::create(name).map_err(|e| io::Error::from_raw_os_error(e.errno))
}

/// Answers the scheme's requests until it is unmounted (the kernel ends
/// the socket). Errors are those of the socket itself.
pub fn serve<R: RegisterIo, D: DmaAllocator, C: Clock>(
    socket: &Socket,
    service: &mut DiskService<R, D, C>,
) -> io::Result<()> {
    let os = |e: syscall::Error| io::Error::from_raw_os_error(e.errno);
    loop {
        let Some(request) = socket.next_request(SignalBehavior::Restart).map_err(os)? else {
            return Ok(());
        };
        let response = match request.kind() {
            RequestKind::Call(call) => call.handle_sync(&mut DiskScheme {
                service: &mut *service,
            }),
            RequestKind::OnClose { id } => {
                service.close(id);
                continue;
            }
            RequestKind::SendFd(r) => Response::err(syscall::EOPNOTSUPP, r),
            RequestKind::RecvFd(r) => Response::err(syscall::EOPNOTSUPP, r),
            // Nothing in flight can be cancelled: requests run one at a time.
            RequestKind::Cancellation(_) => continue,
            RequestKind::MsyncMsg | RequestKind::MunmapMsg | RequestKind::MmapMsg => continue,
        };
        if !socket
            .write_response(response, SignalBehavior::Restart)
            .map_err(os)?
        {
            return Ok(());
        }
    }
}
