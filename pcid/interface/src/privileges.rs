//! Dropping privileges, and opening nothing afterwards.
//!
//! A Redox driver calls `setrens(0, 0)` once its hardware is mapped: the
//! process enters the null namespace, where only the `memory` and `pipe`
//! schemes can still be opened and every other open answers `ENODEV`. So a
//! driver must open everything it will ever need — its channel, the event
//! queue and timer it waits with, hardware handles — before that call.
//!
//! [`drop_privileges`] makes the call on Redox and records it on every OS.
//! The resources this crate opens for a process (the waiting primitives of a
//! channel, see [`crate::transport`]) are opened through [`before_open`],
//! which fails with `ENODEV` once the drop is recorded — on Redox with a
//! message naming what was opened too late, elsewhere as a stand-in for
//! Redox's null namespace. On Linux nothing is dropped, but a driver that
//! calls [`drop_privileges`] at the point where it would on Redox has the
//! Redox start-up order checked by its Linux tests.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static DROPPED: AtomicBool = AtomicBool::new(false);

/// `ENODEV`: what Redox answers an open in the null namespace.
const ENODEV: i32 = libc::ENODEV;

/// Error of [`drop_privileges`].
#[derive(Debug, thiserror::Error)]
#[error("setrens(0, 0): {0}")]
pub struct PrivilegeError(#[source] pub io::Error);

/// Drops the privilege to open resources: `setrens(0, 0)` on Redox; on other
/// systems only recorded (see the module documentation). Afterwards
/// [`before_open`] refuses.
pub fn drop_privileges() -> Result<(), PrivilegeError> {
    #[cfg(target_os = "redox")]
    libredox::call::setrens(0, 0).map_err(|e| PrivilegeError(e.into()))?;
    DROPPED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`drop_privileges`] was called in this process.
pub fn dropped() -> bool {
    DROPPED.load(Ordering::SeqCst)
}

/// Called before this crate opens a resource named `what`: fails with
/// `ENODEV` (as Redox does) once privileges were dropped.
pub fn before_open(what: &str) -> io::Result<()> {
    if dropped() {
        let errno = io::Error::from_raw_os_error(ENODEV);
        return Err(io::Error::new(
            errno.kind(),
            format!("opening {what} after the privilege drop (setrens): {errno}"),
        ));
    }
    Ok(())
}
