//! The QEMU end-to-end test: the project's binaries against QEMU's NVMe
//! controllers in a Linux guest.
//!
//! * [`host`] is the runner behind the `qemu-e2e` binary: it fetches Debian's
//!   cloud kernel, builds the binaries statically, packs an initramfs
//!   ([`cpio`]), boots it under TCG with N NVMe controllers, and checks the
//!   shutdown report and the image files afterwards.
//! * [`guest`] is the guest's `/init` (binary `guest-init`): it mounts the
//!   kernel file systems, starts pcid, waits for it to be ready, runs
//!   shutdownd, prints the report between [`markers`] and powers off.
//!
//! Host and guest talk only through the kernel command line (dotted
//! `e2e.*` arguments, see [`cmdline`]) and the serial console.

pub mod cmdline;
pub mod cpio;
pub mod guest;
pub mod host;
pub mod report;
pub mod trace;

/// Lines the guest prints on the serial console for the host to find.
pub mod markers {
    /// First line printed by the guest's init.
    pub const INIT_START: &str = "===E2E-INIT-START===";
    /// Precedes the shutdown report (JSON, one line).
    pub const REPORT_BEGIN: &str = "===SHUTDOWN-REPORT-BEGIN===";
    /// Follows the shutdown report.
    pub const REPORT_END: &str = "===SHUTDOWN-REPORT-END===";
    /// `===E2E-FAILED=== <message>`: init gave up; the message says why.
    pub const FAILED: &str = "===E2E-FAILED===";
    /// `===E2E-TIMING=== key=value ...`: times measured in the guest (ms).
    pub const TIMING: &str = "===E2E-TIMING===";
    /// `===E2E-PROBE=== key=value ...`: one NVMe controller seen by the probe mode.
    pub const PROBE: &str = "===E2E-PROBE===";
    /// `===E2E-DEVICE=== key=value ...`: one device as pcid lists it (with its parent).
    pub const DEVICE: &str = "===E2E-DEVICE===";
    /// Last line before the guest powers off.
    pub const POWEROFF: &str = "===E2E-POWEROFF===";
}

/// Length of the self-test pattern nvmed writes at LBA 0: 8 blocks of 512 bytes.
pub const SELFTEST_PATTERN_LEN: usize = 8 * 512;

/// The self-test pattern nvmed writes to a controller with serial number
/// `serial` when `NVMED_SELFTEST=1`: the text `nvmed-selftest serial=<SN>`
/// repeated back to back over `len` bytes (the last copy cut short).
pub fn selftest_pattern(serial: &str, len: usize) -> Vec<u8> {
    let unit = format!("nvmed-selftest serial={serial}");
    unit.bytes().cycle().take(len).collect()
}
