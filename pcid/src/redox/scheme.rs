//! The `redox_scheme` adaptor: each scheme request becomes a call on
//! [`SchemeState`] with pcid's configuration space; the events those calls
//! produce are collected for the engine.

use redox_scheme::scheme::SchemeSync;
use redox_scheme::{CallerCtx, OpenResult};
use syscall::dirent::{DirEntry, DirentBuf, DirentKind};
use syscall::error::{
    Error, Result, EACCES, EAGAIN, EBADF, EINVAL, EISDIR, ENOENT, ENOLCK, ENOTDIR, EPIPE,
};
use syscall::flag::{EventFlags, MODE_CHR, MODE_DIR, O_DIRECTORY, O_STAT};
use syscall::schemev2::NewFdFlags;

use super::config_space::ConfigAccess;
use super::state::{self, Caller, Event, Node, OpenFlags, SchemeError, SchemeState};

// The portable state answers the kernel's fcntl commands by number.
const _: () = assert!(state::F_GETFL == syscall::flag::F_GETFL);
const _: () = assert!(state::F_SETFL == syscall::flag::F_SETFL);

fn errno(e: SchemeError) -> Error {
    Error::new(match e {
        SchemeError::NotFound => ENOENT,
        SchemeError::PermissionDenied => EACCES,
        SchemeError::InUse => ENOLCK,
        SchemeError::BadHandle => EBADF,
        SchemeError::IsDirectory => EISDIR,
        SchemeError::NotDirectory => ENOTDIR,
        SchemeError::WouldBlock => EAGAIN,
        SchemeError::Closed => EPIPE,
        SchemeError::Invalid => EINVAL,
    })
}

/// The scheme as `redox_scheme` sees it, borrowing pcid's state for one request.
pub struct PciScheme<'a> {
    /// The scheme state.
    pub state: &'a mut SchemeState,
    /// Configuration space.
    pub cfg: &'a dyn ConfigAccess,
    /// Events produced while handling requests, in order.
    pub events: Vec<Event>,
}

fn caller(ctx: &CallerCtx) -> Caller {
    Caller {
        uid: ctx.uid,
        pid: ctx.pid,
    }
}

fn open_flags(flags: usize) -> OpenFlags {
    OpenFlags {
        directory: flags & O_DIRECTORY != 0,
        stat: flags & O_STAT != 0,
    }
}

impl PciScheme<'_> {
    fn opened(
        &mut self,
        result: std::result::Result<(usize, Option<Event>), SchemeError>,
    ) -> Result<OpenResult> {
        let (id, event) = result.map_err(errno)?;
        self.events.extend(event);
        // Every file here is a stream: offsets do not apply.
        Ok(OpenResult::ThisScheme {
            number: id,
            flags: NewFdFlags::empty(),
        })
    }
}

impl SchemeSync for PciScheme<'_> {
    fn open(&mut self, path: &str, flags: usize, ctx: &CallerCtx) -> Result<OpenResult> {
        let result = self
            .state
            .open(path, open_flags(flags), caller(ctx), self.cfg);
        self.opened(result)
    }

    fn openat(
        &mut self,
        fd: usize,
        path: &str,
        flags: usize,
        _fcntl_flags: u32,
        ctx: &CallerCtx,
    ) -> Result<OpenResult> {
        let result = self
            .state
            .openat(fd, path, open_flags(flags), caller(ctx), self.cfg);
        self.opened(result)
    }

    fn read(
        &mut self,
        id: usize,
        buf: &mut [u8],
        _offset: u64,
        _fcntl_flags: u32,
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        self.state.read(id, buf).map_err(errno)
    }

    fn write(
        &mut self,
        id: usize,
        buf: &[u8],
        _offset: u64,
        _fcntl_flags: u32,
        ctx: &CallerCtx,
    ) -> Result<usize> {
        let (n, events) = self
            .state
            .write(id, buf, caller(ctx), self.cfg)
            .map_err(errno)?;
        self.events.extend(events);
        Ok(n)
    }

    fn call(
        &mut self,
        id: usize,
        payload: &mut [u8],
        metadata: &[u64],
        _ctx: &CallerCtx,
    ) -> Result<usize> {
        self.state
            .call(id, payload, metadata, self.cfg)
            .map_err(errno)
    }

    fn fcntl(&mut self, id: usize, cmd: usize, _arg: usize, _ctx: &CallerCtx) -> Result<usize> {
        self.state.fcntl(id, cmd).map_err(errno)
    }

    fn fsize(&mut self, id: usize, _ctx: &CallerCtx) -> Result<u64> {
        self.state.size(id).map_err(errno)
    }

    fn fevent(&mut self, id: usize, flags: EventFlags, _ctx: &CallerCtx) -> Result<EventFlags> {
        // Report the readiness that already holds, so a subscriber that
        // arrives after pcid queued a message is woken at once.
        let mut ready = EventFlags::empty();
        if flags.contains(EventFlags::EVENT_READ) && self.state.readable(id).map_err(errno)? {
            ready |= EventFlags::EVENT_READ;
        }
        if flags.contains(EventFlags::EVENT_WRITE) && !self.state.node(id).map_err(errno)?.is_dir()
        {
            ready |= EventFlags::EVENT_WRITE;
        }
        Ok(ready)
    }

    fn fpath(&mut self, id: usize, buf: &mut [u8], _ctx: &CallerCtx) -> Result<usize> {
        let path = self.state.path(id).map_err(errno)?;
        let n = buf.len().min(path.len());
        buf[..n].copy_from_slice(&path.as_bytes()[..n]);
        Ok(n)
    }

    fn fstat(&mut self, id: usize, stat: &mut syscall::Stat, _ctx: &CallerCtx) -> Result<()> {
        let node = self.state.node(id).map_err(errno)?;
        stat.st_mode = match node {
            Node::Root | Node::Function(_) => MODE_DIR | 0o755,
            Node::Channel(_) | Node::Access | Node::Control(_) => MODE_CHR | 0o600,
        };
        stat.st_size = self.state.size(id).map_err(errno)?;
        Ok(())
    }

    fn getdents<'buf>(
        &mut self,
        id: usize,
        mut buf: DirentBuf<&'buf mut [u8]>,
        opaque_offset: u64,
    ) -> Result<DirentBuf<&'buf mut [u8]>> {
        let entries = self.state.entries(id).map_err(errno)?;
        let node = self.state.node(id).map_err(errno)?;
        let Ok(skip) = usize::try_from(opaque_offset) else {
            return Ok(buf);
        };
        for (i, name) in entries.iter().enumerate().skip(skip) {
            let kind = match (node, name.as_str()) {
                (Node::Root, _) => DirentKind::Directory,
                (_, state::CHANNEL) => DirentKind::CharDev,
                _ => DirentKind::Regular,
            };
            buf.entry(DirEntry {
                inode: 0,
                next_opaque_id: i as u64 + 1,
                name,
                kind,
            })?;
        }
        Ok(buf)
    }

    fn on_close(&mut self, id: usize) {
        if let Some(event) = self.state.close(id) {
            self.events.push(event);
        }
    }
}
