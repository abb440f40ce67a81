//! shutdownd on Redox: where pcid is, and how the machine goes down afterwards.
//!
//! Redox's `shutdown` (coreutils 5559e20) only writes `shutdown` (or, with
//! `-r`, `reset`) to `/scheme/sys/kstop`. In the kernel (a919d262,
//! `arch/x86_shared/stop.rs`) `shutdown` gives an ACPI daemon (acpid) up to
//! one second to enter S5 and then tries QEMU's and Bochs' power-off ports;
//! `reset` goes straight to the kernel's reset (8042 pulse, then a triple
//! fault) — acpid is not involved. No driver hears about either.
//!
//! shutdownd (or the same binary run as `shutdown`) first runs the two-phase
//! protocol through pcid's control endpoint (`/scheme/pci/control` unless
//! `--control` says otherwise), prints its report, and then makes the same
//! kstop request. The machine goes down even when pcid cannot be reached,
//! does not answer or a device failed: a shutdown must never hang on one
//! bad driver.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use pcid_interface::protocol::ShutdownKind;
use shutdownd::cli::kstop_request;
use shutdownd::local::SchemeRegistry;

/// The kernel's stop request file.
pub const KSTOP: &str = "/scheme/sys/kstop";

/// pcid's control endpoint on Redox.
pub fn default_control() -> PathBuf {
    PathBuf::from(pcid_interface::transport::CONTROL_PATH)
}

/// Asks the kernel to power off or reboot. Returns only if the request failed.
pub fn power_off(kind: ShutdownKind) -> std::io::Error {
    let request = kstop_request(kind);
    match std::fs::write(KSTOP, request) {
        // The kernel does not return from a successful request; if it does,
        // the machine is on its way down anyway.
        Ok(()) => std::io::Error::other(format!("{KSTOP} accepted `{request}` and returned")),
        Err(e) => e,
    }
}

/// The kernel's scheme registry: the `/scheme` listing, and the kernel's
/// unmount (`unlinkat` with a handle of `/scheme` and the scheme's name;
/// only such a handle is accepted — a plain `unlink("/scheme/NAME")` is
/// `EPERM` — and relibc ffce2c2 has no `unlinkat`, so the system call is
/// made directly).
pub struct RedoxRegistry;

impl SchemeRegistry for RedoxRegistry {
    fn unmount(&mut self, name: &str) -> io::Result<bool> {
        if !self.is_registered(name)? {
            return Ok(false);
        }
        let root = std::fs::File::open("/scheme")?;
        match syscall::unlinkat(root.as_raw_fd() as usize, name, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == syscall::ENODEV => Ok(false),
            Err(e) => Err(io::Error::from_raw_os_error(e.errno)),
        }
    }

    fn is_registered(&mut self, name: &str) -> io::Result<bool> {
        for entry in std::fs::read_dir("/scheme")? {
            if entry?.file_name() == name {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
