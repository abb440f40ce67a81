//! shutdownd on Redox: where pcid is, and how the machine goes down afterwards.
//!
//! Redox's `shutdown` (and `shutdown --reboot`) writes `shutdown` (or `reset`)
//! to `/scheme/sys/kstop`; the kernel then asks acpid to enter ACPI S5 and
//! falls back to other methods after a second. No driver hears about it.
//! shutdownd is run the same way, as root, in place of `shutdown`: it runs the
//! two-phase protocol through pcid's control endpoint (`/scheme/pci/control`
//! unless `--control` says otherwise), prints its report, and then makes the
//! same kstop request. The machine goes down even when pcid cannot be
//! reached or a device failed: a shutdown must never hang on one bad driver.

use std::path::PathBuf;

use pcid_interface::protocol::ShutdownKind;

/// The kernel's stop request file.
pub const KSTOP: &str = "/scheme/sys/kstop";

/// pcid's control endpoint on Redox.
pub fn default_control() -> PathBuf {
    PathBuf::from(pcid_interface::transport::CONTROL_PATH)
}

/// What to write to [`KSTOP`] for `kind` (the kernel accepts `shutdown`,
/// `reset` and `emergency_reset`).
pub fn kstop_request(kind: ShutdownKind) -> &'static str {
    match kind {
        ShutdownKind::Poweroff => "shutdown",
        ShutdownKind::Reboot => "reset",
    }
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
