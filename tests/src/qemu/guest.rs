//! The guest's `/init`: set up the kernel file systems, run the stack,
//! print the report on the console and power off.
//!
//! Whatever happens, init ends by powering the guest off; a failure is
//! printed first as one `===E2E-FAILED=== <message>` line so the host can
//! tell what went wrong.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pcid_hw::linux::{enable_device, SysfsBar};
use pcid_hw::RegisterIo;
use pcid_interface::function::{FunctionBackend, PciFunction};
use pcid_interface::protocol::{
    ControlMessage, DeviceInfo, DriverMessage, FinishOutcome, ShutdownKind, PROTOCOL_VERSION,
};
use pcid_interface::transport::{spawn_with_channel, Channel, DriverChannel};

use super::cmdline::{CmdlineError, GuestConfig, Mode, READY_MARGIN, SHUTDOWN_GRACE};
use super::{canary, markers};

/// Where the match tables are in the initramfs.
pub const MATCH_DIR: &str = "/lib/pcid.d";
/// pcid's control socket.
pub const CONTROL_SOCKET: &str = "/run/pcid.sock";
/// pcid's participant socket.
pub const PARTICIPANT_SOCKET: &str = "/run/participants.sock";
/// Where the test build of nvmed serves each controller's disk interface.
pub const DISK_DIR: &str = "/run/disks";
/// The test file system daemon (a participant on the first controller).
pub mod testfs {
    /// Its name.
    pub const NAME: &str = "guestfs";
    /// Where on its disk it writes its dirty data.
    pub const OFFSET: u64 = 1 << 20;
    /// How much dirty data it holds.
    pub const KIB: usize = 64;
}
/// Where shutdownd writes its JSON report.
pub const REPORT_PATH: &str = "/run/report.json";
/// Directory holding pcid, nvmed (the test build), the shipped nvmed and
/// shutdownd in the initramfs.
pub const BIN_DIR: &str = "/bin";

/// PCI class code of an NVMe controller: mass storage (01h), NVM (08h), NVMe (02h).
const NVME_CLASS: u32 = 0x01_08_02;

/// Why the guest's init failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Mounting a kernel file system failed.
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        /// File system type.
        fstype: &'static str,
        /// Mount point.
        target: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel command line holds a bad `e2e.*` word.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// Register or config-space access failed.
    #[error("{address}: {source}")]
    Hw {
        /// PCI address.
        address: String,
        /// The error.
        #[source]
        source: pcid_hw::HwError,
    },
    /// pcid did not signal readiness in time, or exited first.
    #[error("pcid not ready: {0}")]
    NotReady(String),
    /// pcid's control endpoint did not answer as expected.
    #[error("pcid control endpoint: {0}")]
    Control(String),
    /// shutdownd misbehaved.
    #[error("shutdownd: {0}")]
    Shutdownd(String),
    /// The probe did not find what the host attached.
    #[error("probe: {0}")]
    Probe(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuestError {
    let what = what.into();
    move |source| GuestError::Io { what, source }
}

/// Seconds since boot, from `/proc/uptime` (0 when unreadable).
fn uptime_ms() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |s| s * 1000.0)
}

/// Runs init and powers off. Never returns.
///
/// Refuses to do anything unless it is process 1: run by mistake on a host,
/// it would mount over `/proc`, `/sys`, `/dev` and `/run` and power the host off.
pub fn main() -> ! {
    if std::process::id() != 1 {
        eprintln!(
            "guest-init: refusing to run as pid {}: this is the QEMU guest's /init \
             (it mounts file systems and powers the machine off)",
            std::process::id()
        );
        std::process::exit(2);
    }
    println!("{}", markers::INIT_START);
    if let Err(e) = run() {
        println!("{} {e}", markers::FAILED);
    }
    power_off()
}

fn power_off() -> ! {
    println!("{} uptime_ms={:.0}", markers::POWEROFF, uptime_ms());
    nix::unistd::sync();
    // Into the kernel log, stamped by the kernel's clock like its own
    // "reboot: Power down": the host times the kernel's power-off from here.
    // Critical level, so that `quiet` still shows it on the console.
    let _ = fs::write("/dev/kmsg", format!("<2>{}\n", markers::KMSG_POWEROFF));
    // reboot(2) returns only on failure; then the kernel panics when init
    // exits, and `panic=-1` with QEMU's `-no-reboot` still ends the guest.
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    println!("{} reboot(RB_POWER_OFF): {err:?}", markers::FAILED);
    std::process::exit(1)
}

fn mount_kernel_filesystems() -> Result<(), GuestError> {
    use nix::mount::{mount, MsFlags};
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/run"),
    ] {
        fs::create_dir_all(target).map_err(io_err(format!("mkdir {target}")))?;
        mount(
            Some(fstype),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(|source| GuestError::Mount {
            fstype,
            target,
            source,
        })?;
    }
    Ok(())
}

fn run() -> Result<(), GuestError> {
    let start = Instant::now();
    mount_kernel_filesystems()?;
    let boot_ms = uptime_ms();
    // Locked DMA pages must not be migrated by compaction while a device uses them.
    fs::write("/proc/sys/vm/compact_unevictable_allowed", "0")
        .map_err(io_err("write /proc/sys/vm/compact_unevictable_allowed"))?;
    let cmdline = fs::read_to_string("/proc/cmdline").map_err(io_err("read /proc/cmdline"))?;
    let config = GuestConfig::parse(&cmdline)?;
    println!("e2e: init started {boot_ms:.0} ms after boot; {config:?}");
    println!("{} kernel_to_init_ms={boot_ms:.0}", markers::TIMING);
    match config.mode {
        Mode::Probe => probe(&config),
        Mode::Full => full(&config, start),
        Mode::Kernel => kernel_driver(&config, start),
    }
}

/// One PCI function as sysfs shows it.
#[derive(Debug)]
struct SysfsFunction {
    address: String,
    dir: PathBuf,
    class: u32,
    vendor: u16,
    device: u16,
    /// The upstream bridge's address, from the function's path under /sys/devices.
    parent: Option<String>,
}

fn read_hex(path: &Path) -> Result<u32, GuestError> {
    let text = fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    let t = text.trim();
    u32::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| GuestError::Io {
        what: format!("parse {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{t:?} is not hex")),
    })
}

fn looks_like_pci_address(s: &str) -> bool {
    s.parse::<pcid_interface::function::PciAddress>().is_ok()
}

fn list_functions() -> Result<Vec<SysfsFunction>, GuestError> {
    let root = Path::new("/sys/bus/pci/devices");
    let mut out = Vec::new();
    let entries = fs::read_dir(root).map_err(io_err(format!("list {}", root.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", root.display())))?;
        let address = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let real = fs::canonicalize(&dir).map_err(io_err(format!("resolve {}", dir.display())))?;
        let parent = real
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| looks_like_pci_address(n));
        out.push(SysfsFunction {
            class: read_hex(&dir.join("class"))?,
            vendor: read_hex(&dir.join("vendor"))? as u16,
            device: read_hex(&dir.join("device"))? as u16,
            address,
            dir,
            parent,
        });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// Maps BAR0 of every NVMe controller and prints its registers.
fn probe(config: &GuestConfig) -> Result<(), GuestError> {
    let functions = list_functions()?;
    let mut nvme = 0;
    print_functions(&functions);
    for f in &functions {
        if f.class != NVME_CLASS {
            continue;
        }
        nvme += 1;
        let hw = |source| GuestError::Hw {
            address: f.address.clone(),
            source,
        };
        let command = enable_device(&f.dir).map_err(hw)?;
        let bar = SysfsBar::open(&f.dir, 0).map_err(hw)?;
        // NVMe Base Specification 2.0, §3.1.4: CAP 00h, VS 08h, CC 14h, CSTS 1Ch.
        println!(
            "{} address={} parent={} bar0_bytes={} command={command:#06x} cap={:#018x} vs={:#010x} cc={:#010x} csts={:#010x}",
            markers::PROBE,
            f.address,
            f.parent.as_deref().unwrap_or("-"),
            bar.size(),
            bar.read64(0x00),
            bar.read32(0x08),
            bar.read32(0x14),
            bar.read32(0x1c),
        );
    }
    if nvme != config.controllers {
        return Err(GuestError::Probe(format!(
            "found {nvme} NVMe controllers, the host attached {}",
            config.controllers
        )));
    }
    Ok(())
}

/// One controller bound to the kernel's nvme driver, from `/sys/class/nvme`.
#[derive(Debug)]
struct KernelController {
    /// `nvme0`, …
    name: String,
    /// The PCI address (its `device` link).
    address: String,
    serial: String,
    state: String,
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_controllers() -> Vec<KernelController> {
    let Ok(dir) = fs::read_dir("/sys/class/nvme") else {
        return Vec::new();
    };
    let mut v: Vec<KernelController> = dir
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            KernelController {
                name: e.file_name().to_string_lossy().into_owned(),
                address: fs::canonicalize(path.join("device"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_default(),
                serial: read_trimmed(&path.join("serial")),
                state: read_trimmed(&path.join("state")),
            }
        })
        .collect();
    v.sort_by(|a, b| a.address.cmp(&b.address));
    v
}

/// The kernel's nvme driver drives the controllers: wait until every one is
/// live with its namespace's block device in /dev, write the self-test
/// pattern through it (write, then fsync: the kernel sends a Flush), print
/// one `===E2E-KNVME===` line per controller; then power off, which is
/// where the kernel shuts them down.
fn kernel_driver(config: &GuestConfig, start: Instant) -> Result<(), GuestError> {
    print_functions(&list_functions()?);
    let deadline = Instant::now() + config.ready_timeout;
    let controllers = loop {
        let found = kernel_controllers();
        let live = found.iter().filter(|c| c.state == "live").count();
        let disks = found
            .iter()
            .filter(|c| Path::new(&format!("/dev/{}n1", c.name)).exists())
            .count();
        if live == config.controllers && disks == config.controllers {
            break found;
        }
        if Instant::now() >= deadline {
            return Err(GuestError::Probe(format!(
                "the kernel's nvme driver has {live} controllers live and {disks} namespaces                  in /dev, the host attached {}",
                config.controllers
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
    for c in &controllers {
        let dev = format!("/dev/{}n1", c.name);
        let pattern = crate::qemu::selftest_pattern(&c.serial, crate::qemu::SELFTEST_PATTERN_LEN);
        let written = (|| -> std::io::Result<usize> {
            let mut f = fs::OpenOptions::new().write(true).open(&dev)?;
            f.write_all(&pattern)?;
            f.sync_all()?;
            Ok(pattern.len())
        })()
        .map_err(io_err(format!("write the self-test pattern to {dev}")))?;
        println!(
            "{} name={} address={} serial={} state={} written={written}",
            markers::KERNEL_NVME,
            c.name,
            c.address,
            c.serial,
            c.state
        );
    }
    println!(
        "{} kernel_ready_ms={ready_ms:.1} init_elapsed_ms={:.1}",
        markers::TIMING,
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Kills and reaps a child when dropped (used for pcid if init bails out).
struct Reaper(Option<Child>, &'static str);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(None) = child.try_wait() {
                println!("e2e: stopping {}", self.1);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn(
    program: &str,
    args: &[&str],
    config: &GuestConfig,
    stdout: Stdio,
) -> Result<Child, GuestError> {
    let path = Path::new(BIN_DIR).join(program);
    println!("e2e: starting {} {}", path.display(), args.join(" "));
    Command::new(&path)
        .args(args)
        .env_clear()
        .env("PATH", BIN_DIR)
        .env("RUST_LOG", &config.log)
        .stdin(Stdio::null())
        .stdout(stdout)
        .spawn()
        .map_err(io_err(format!("start {}", path.display())))
}

fn print_functions(functions: &[SysfsFunction]) {
    for f in functions {
        println!(
            "e2e: pci {} {:04x}:{:04x} class {:06x} parent {}",
            f.address,
            f.vendor,
            f.device,
            f.class,
            f.parent.as_deref().unwrap_or("-")
        );
    }
}

/// Drives the canary controller with the shipped nvmed, playing pcid's part,
/// with the test builds' variables set; prints the `===E2E-CANARY===` line
/// and removes the function from Linux's view so that pcid does not see it.
fn run_canary(config: &GuestConfig, address: &str) -> Result<(), GuestError> {
    let functions = list_functions()?;
    let f = functions
        .iter()
        .find(|f| f.address == address)
        .ok_or_else(|| GuestError::Probe(format!("no canary function at {address}")))?;
    fs::create_dir_all(canary::WORKLOAD_DIR)
        .map_err(io_err(format!("mkdir {}", canary::WORKLOAD_DIR)))?;
    let function = PciFunction {
        address: address
            .parse()
            .map_err(|e| GuestError::Probe(format!("canary address {address}: {e}")))?,
        vendor: f.vendor,
        device: f.device,
        class: (f.class >> 16) as u8,
        subclass: (f.class >> 8) as u8,
        interface: f.class as u8,
        revision: 0,
        parent: None,
        backend: FunctionBackend::LinuxSysfs {
            sysfs_path: f.dir.display().to_string(),
        },
    };
    let (mut pcid, theirs) =
        DriverChannel::pair().map_err(io_err("create the canary's channel"))?;
    let path = Path::new(BIN_DIR).join(canary::SHIPPED_NVMED);
    println!(
        "e2e: canary {address}: starting {} with NVMED_SELFTEST=1 NVMED_WORKLOAD={}",
        path.display(),
        canary::WORKLOAD_DIR
    );
    let mut cmd = Command::new(&path);
    cmd.env_clear()
        .env("RUST_LOG", &config.log)
        .env("NVMED_SELFTEST", "1")
        .env("NVMED_WORKLOAD", canary::WORKLOAD_DIR)
        .stdin(Stdio::null());
    let child = spawn_with_channel(&mut cmd, theirs)
        .map_err(io_err(format!("start {}", path.display())))?;
    let mut driver = Reaper(Some(child), "the shipped nvmed");
    let t = |s| Some(Duration::from_secs(s));
    // Each step bounded; the first failure is what the host is told.
    let conversation = (|| -> Result<FinishOutcome, String> {
        let step = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        match pcid.recv(t(10)).map_err(|e| step("Hello", &e))? {
            DriverMessage::Hello { .. } => {}
            other => return Err(format!("expected Hello, got {}", other.name())),
        }
        pcid.send(&DriverMessage::Welcome {
            version: PROTOCOL_VERSION,
            function,
        })
        .map_err(|e| step("Welcome", &e))?;
        match pcid.recv(t(30)).map_err(|e| step("Ready", &e))? {
            DriverMessage::Ready => {}
            other => return Err(format!("expected Ready, got {}", other.name())),
        }
        pcid.send(&DriverMessage::Begin {
            seq: 1,
            kind: ShutdownKind::Poweroff,
            deadline: Duration::from_secs(5),
        })
        .map_err(|e| step("Begin", &e))?;
        match pcid.recv(t(10)).map_err(|e| step("BeginAck", &e))? {
            DriverMessage::BeginAck { seq: 1, .. } => {}
            other => return Err(format!("expected BeginAck 1, got {other:?}")),
        }
        pcid.send(&DriverMessage::Finish {
            seq: 2,
            deadline: Duration::from_secs(10),
        })
        .map_err(|e| step("Finish", &e))?;
        match pcid.recv(t(15)).map_err(|e| step("FinishAck", &e))? {
            DriverMessage::FinishAck {
                seq: 2, outcome, ..
            } => Ok(outcome),
            other => Err(format!("expected FinishAck 2, got {other:?}")),
        }
    })();
    let outcome = match &conversation {
        Ok(FinishOutcome::Clean) => "clean".to_string(),
        Ok(other) => format!("{other:?}").to_lowercase(),
        Err(e) => {
            println!("e2e: canary {address}: {e}");
            "error".to_string()
        }
    };
    drop(pcid);
    let exit = match wait_child(&mut driver, Instant::now() + Duration::from_secs(10)) {
        Ok(Some(status)) => status
            .code()
            .map_or_else(|| status.to_string().replace(' ', "_"), |c| c.to_string()),
        Ok(None) => "killed".to_string(),
        Err(e) => format!("error:{e}").replace(' ', "_"),
    };
    let workload_files = fs::read_dir(canary::WORKLOAD_DIR)
        .map_err(io_err(format!("list {}", canary::WORKLOAD_DIR)))?
        .count();
    println!(
        "{} address={address} outcome={outcome} exit={exit} workload_files={workload_files}",
        markers::CANARY
    );
    // Out of pcid's sight: Linux forgets the function until the next rescan.
    fs::write(f.dir.join("remove"), "1")
        .map_err(io_err(format!("remove {} from sysfs", f.dir.display())))?;
    Ok(())
}

fn full(config: &GuestConfig, start: Instant) -> Result<(), GuestError> {
    if let Some(address) = &config.canary {
        run_canary(config, address)?;
    }
    // The topology pcid's sysfs bus will see, for the record.
    print_functions(&list_functions()?);
    let ready_at = Instant::now() + config.ready_timeout;
    let pcid_started = Instant::now();
    let pcid_ready_ms = config
        .ready_timeout
        .saturating_sub(READY_MARGIN)
        .max(Duration::from_secs(1))
        .as_millis()
        .to_string();
    let mut child = spawn(
        "pcid",
        &[
            "--bus",
            "linux",
            "--match-dir",
            MATCH_DIR,
            "--driver-path",
            BIN_DIR,
            "--control",
            CONTROL_SOCKET,
            "--participants",
            PARTICIPANT_SOCKET,
            "--ready-timeout-ms",
            &pcid_ready_ms,
            // For the test build of nvmed, which pcid runs as `nvmed`: write,
            // flush and read back a pattern before Ready, and serve the disk
            // interface to the test file system daemon.
            "--driver-env",
            "NVMED_SELFTEST=1",
            "--driver-env",
            &format!("NVMED_DISK_DIR={DISK_DIR}"),
        ],
        config,
        Stdio::piped(),
    )?;
    let lines = forward_stdout(&mut child);
    let pcid = Reaper(Some(child), "pcid");
    let ready = wait_ready(&lines, ready_at)?;
    drop(lines);
    let ready_ms = pcid_started.elapsed().as_secs_f64() * 1000.0;
    println!("e2e: pcid ready after {ready_ms:.0} ms with {ready} drivers");
    if ready != config.controllers {
        println!(
            "e2e: warning: {ready} drivers ready, {} controllers attached; shutting down anyway",
            config.controllers
        );
    }

    // pcid's own view of the devices, parents included (the report has no parents).
    let devices = list_pcid_devices(Duration::from_secs(5))?;
    for d in &devices {
        println!(
            "{} address={} parent={} driver={} support={:?} state={:?}",
            markers::DEVICE,
            d.address,
            d.parent.map_or("-".to_string(), |p| p.to_string()),
            d.driver,
            d.support,
            d.state
        );
    }

    // A file system daemon with dirty data on the first controller, which
    // must be flushed before that controller's Begin.
    let fs_disk = devices
        .iter()
        .filter(|d| d.driver == "nvmed")
        .map(|d| d.address)
        .min()
        .ok_or_else(|| GuestError::Control("pcid lists no nvmed".to_string()))?;
    let testfsd = start_testfsd(config, &fs_disk.to_string())?;

    let deadline_ms = config.shutdown_timeout.as_millis().to_string();
    let mut args = vec![
        "--control",
        CONTROL_SOCKET,
        "--json",
        REPORT_PATH,
        "--deadline-ms",
        &deadline_ms,
    ];
    if config.sequential {
        args.push("--sequential");
    }
    let shutdown_start = Instant::now();
    let mut shutdownd = Reaper(
        Some(spawn("shutdownd", &args, config, Stdio::inherit())?),
        "shutdownd",
    );
    let kill_at = shutdown_start + config.shutdown_timeout + SHUTDOWN_GRACE;
    let status =
        wait_child(&mut shutdownd, kill_at).map_err(|e| GuestError::Shutdownd(e.to_string()))?;
    let shutdown_ms = shutdown_start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{} pcid_ready_ms={ready_ms:.1} shutdownd_ms={shutdown_ms:.1} init_elapsed_ms={:.1}",
        markers::TIMING,
        start.elapsed().as_secs_f64() * 1000.0
    );
    let Some(status) = status else {
        return Err(GuestError::Shutdownd(format!(
            "still running {} ms after its {} ms global deadline; killed",
            SHUTDOWN_GRACE.as_millis(),
            config.shutdown_timeout.as_millis()
        )));
    };
    // Stop pcid first so no log line lands inside the report.
    drop(pcid);
    drop(testfsd);
    let report = fs::read_to_string(REPORT_PATH).map_err(io_err(format!("read {REPORT_PATH}")));
    if !status.success() {
        println!("e2e: shutdownd exited with {status}");
    }
    print_report(&report?)?;
    Ok(())
}

/// Starts the test file system daemon on `address`'s disk and waits for
/// its ready line; prints `===E2E-PARTICIPANT===` with what it holds.
fn start_testfsd(config: &GuestConfig, address: &str) -> Result<Reaper, GuestError> {
    let disk = format!("{DISK_DIR}/{address}.sock");
    let offset = testfs::OFFSET.to_string();
    let kib = testfs::KIB.to_string();
    let mut child = spawn(
        "testfsd",
        &[
            "--participants",
            PARTICIPANT_SOCKET,
            "--disk",
            &disk,
            "--name",
            testfs::NAME,
            "--provider",
            address,
            "--dirty-kib",
            &kib,
            "--offset",
            &offset,
        ],
        config,
        Stdio::piped(),
    )?;
    let lines = forward_stdout(&mut child);
    let reaper = Reaper(Some(child), "testfsd");
    match lines.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.starts_with("testfsd: ready") => {
            println!(
                "{} name={} address={address} offset={offset} kib={kib}",
                markers::PARTICIPANT,
                testfs::NAME
            );
            Ok(reaper)
        }
        other => Err(GuestError::Control(format!(
            "testfsd did not come up: {other:?}"
        ))),
    }
}

/// Asks pcid for its device list over the control endpoint.
fn list_pcid_devices(timeout: Duration) -> Result<Vec<DeviceInfo>, GuestError> {
    const LIST_ID: u32 = 1;
    let err = |e: &dyn std::fmt::Display| GuestError::Control(e.to_string());
    let deadline = Instant::now() + timeout;
    let stream = UnixStream::connect(CONTROL_SOCKET).map_err(|e| err(&e))?;
    let mut channel = Channel::<ControlMessage>::from_stream(stream);
    channel
        .send(&ControlMessage::ListDevices { id: LIST_ID })
        .map_err(|e| err(&e))?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err(&"no device list before the deadline"));
        }
        match channel.recv(Some(left)).map_err(|e| err(&e))? {
            ControlMessage::Devices { id, devices } if id == LIST_ID => return Ok(devices),
            other => println!("e2e: ignoring control message {other:?}"),
        }
    }
}

/// Prints the report as one compact JSON line between the markers, in a
/// single write so that other writers to the console cannot split it.
fn print_report(text: &str) -> Result<(), GuestError> {
    let line = shutdownd::Report::from_json(text)
        .and_then(|r| r.to_json_line())
        .map_err(|e| {
            GuestError::Shutdownd(format!("{REPORT_PATH} is not a shutdownd report: {e}"))
        })?;
    let block = format!(
        "{}\n{line}\n{}\n",
        markers::REPORT_BEGIN,
        markers::REPORT_END
    );
    let mut out = std::io::stdout().lock();
    out.write_all(block.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io_err("print the report"))
}

/// Waits for a child to exit until `deadline`; `None` if it was killed at the deadline.
fn wait_child(
    child: &mut Reaper,
    deadline: Instant,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let Some(c) = child.0.as_mut() else {
        return Ok(None);
    };
    loop {
        if let Some(status) = c.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = c.kill();
            let _ = c.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Prefix of the line pcid prints on stdout once every driver has sent Ready,
/// exited, or passed its start deadline: `pcid: ready: N drivers`.
pub const PCID_READY_PREFIX: &str = "pcid: ready: ";

/// Parses pcid's readiness line into the number of drivers that sent Ready.
pub fn parse_ready_line(line: &str) -> Option<usize> {
    line.trim()
        .strip_prefix(PCID_READY_PREFIX)?
        .strip_suffix(" drivers")?
        .parse()
        .ok()
}

/// Copies pcid's stdout to the console, handing each line to `tx` too.
fn forward_stdout(pcid: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = pcid.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                println!("{line}");
                // The receiver goes away once readiness is seen; keep draining.
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// Waits for pcid's readiness line; returns how many drivers are ready.
fn wait_ready(lines: &mpsc::Receiver<String>, deadline: Instant) -> Result<usize, GuestError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(GuestError::NotReady(
                "no readiness line before the deadline".to_string(),
            ));
        }
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(n) = parse_ready_line(&line) {
                    return Ok(n);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(GuestError::NotReady(
                    "pcid closed its output (exited) before announcing readiness".to_string(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_line() {
        assert_eq!(parse_ready_line("pcid: ready: 16 drivers\n"), Some(16));
        assert_eq!(parse_ready_line("pcid: ready: x drivers"), None);
        assert_eq!(parse_ready_line("pcid: starting"), None);
    }
}
