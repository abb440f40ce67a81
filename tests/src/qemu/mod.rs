//! The QEMU end-to-end test: the project's binaries against QEMU's NVMe
//! controllers in a Linux guest.
//!
//! * [`host`] is the runner behind the `qemu-e2e` binary: it fetches Debian's
//!   cloud kernel, builds the binaries statically, packs an initramfs
//!   ([`cpio`]), boots it under TCG with N NVMe controllers, and checks the
//!   shutdown report and the image files afterwards.
//! * [`guest`] is the guest's `/init` (binary `guest-init`): it mounts the
//!   kernel file systems, runs the shipped `nvmed` on the [`canary`]
//!   controller, starts pcid (which runs the test build of nvmed,
//!   `nvmed-test`, packed as `/bin/nvmed`, on every other controller), waits
//!   for it to be ready, runs shutdownd, prints the report between [`markers`]
//!   and powers off. In kernel mode (`qemu-e2e --kernel-driver`, and
//!   `--compare`) no stack runs: the kernel's own nvme driver drives the same
//!   controllers and shuts them down at power-off, timed from the kernel log.
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
    /// Written into the kernel log (`/dev/kmsg`) right before init asks the
    /// kernel to power off; the console shows it with the kernel's
    /// timestamp, like the kernel's own `reboot: Power down` at the end.
    pub const KMSG_POWEROFF: &str = "===E2E-KMSG-POWEROFF===";
    /// `===E2E-KNVME=== key=value ...`: a controller bound to the kernel's
    /// nvme driver (kernel mode).
    pub const KERNEL_NVME: &str = "===E2E-KNVME===";
    /// `===E2E-CANARY=== key=value ...`: how the shipped nvmed fared on the
    /// canary controller.
    pub const CANARY: &str = "===E2E-CANARY===";
    /// `===E2E-PARTICIPANT=== key=value ...`: the test file system daemon
    /// the guest started (name, disk address, offset, KiB of dirty data).
    pub const PARTICIPANT: &str = "===E2E-PARTICIPANT===";
}

/// The canary: one more QEMU NVMe controller, driven not by the test build
/// but by the shipped `nvmed` binary (packed as `/bin/nvmed-shipped`), which
/// the guest's init starts itself — playing pcid's part of the protocol — with
/// `NVMED_SELFTEST=1` and `NVMED_WORKLOAD=<dir>` in its environment. The
/// shipped driver must bring the controller up, shut it down `clean`, and
/// write nothing: the host checks that the canary's image is still all zeros
/// and that no workload log appeared. Init then removes the function from
/// Linux's view (`remove` in sysfs) so pcid does not enumerate it.
pub mod canary {
    /// Slot on the root bus the host gives the canary (`addr=` of its device).
    pub const SLOT: u8 = 0x1e;
    /// Its PCI address in the guest.
    pub const ADDRESS: &str = "0000:00:1e.0";
    /// Its serial number.
    pub const SERIAL: &str = "E2E-CANARY";
    /// Name of the shipped nvmed in the initramfs's `/bin`.
    pub const SHIPPED_NVMED: &str = "nvmed-shipped";
    /// Directory the guest names in `NVMED_WORKLOAD` for the canary.
    pub const WORKLOAD_DIR: &str = "/run/canary-workload";
}

/// Length of the self-test pattern the test build of nvmed writes at LBA 0:
/// 8 blocks of 512 bytes.
pub const SELFTEST_PATTERN_LEN: usize = crate::nvme::selftest::SELFTEST_BLOCKS * 512;

/// The self-test pattern written to a controller with serial number `serial`
/// ([`crate::nvme::selftest::pattern`]).
pub fn selftest_pattern(serial: &str, len: usize) -> Vec<u8> {
    crate::nvme::selftest::pattern(serial, len)
}
