//! The host side of the QEMU end-to-end test (binary `qemu-e2e`).
//!
//! 1. Makes sure QEMU is installed (running `tests/setup.sh` as root if not)
//!    and that Debian's cloud kernel is in the cache
//!    (`apt-get download` + `dpkg-deb -x`, once; later runs are offline).
//! 2. Builds pcid, shutdownd, guest-init, the test build of nvmed
//!    (`nvmed-test`) and the shipped `nvmed` statically
//!    (`-C target-feature=+crt-static`) in a target directory of their own.
//! 3. Packs an initramfs: `/init`; in `/bin` pcid, shutdownd, the test build
//!    as `nvmed` (the name the match table gives, so pcid runs it) and the
//!    shipped driver as `nvmed-shipped`; the repository's
//!    `tests/pcid.d/*.toml` match tables in `/lib/pcid.d`; `/dev/console`.
//! 4. Boots it under TCG (`-M q35 -nodefaults -no-reboot`) with N NVMe
//!    controllers, each backed by a fresh raw image file; the last one sits
//!    behind a PCIe root port unless disabled; plus the canary controller
//!    (`super::canary`). QEMU is killed at a deadline.
//! 5. Reads the console: the report between the markers must list every
//!    controller `clean`, and each image must hold its controller's
//!    self-test pattern at LBA 0; the shipped nvmed must have shut the
//!    canary down `clean` without writing anything (its image all zeros, no
//!    workload log).

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cmdline::{GuestConfig, Mode};
use super::cpio::CpioWriter;
use super::report::{check_mode, with_figures, ConsoleSummary};
use super::{canary, selftest_pattern, SELFTEST_PATTERN_LEN};

/// Rust target the guest binaries are built for.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's metapackage for the cloud kernel flavour (NVMe built in, small).
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";
/// Most controllers one run attaches (slots on q35's root bus, leaving room
/// for the root port and the chipset's own functions).
pub const MAX_CONTROLLERS: usize = 24;
/// Size of each controller's image file (sparse).
const IMAGE_BYTES: u64 = 64 << 20;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of NVMe controllers.
    pub controllers: usize,
    /// Run shutdownd with `--sequential` in the guest.
    pub sequential: bool,
    /// Where to write the guest's report (JSON), if anywhere.
    pub json: Option<PathBuf>,
    /// Where to draw the guest's report (SVG timeline), if anywhere.
    pub svg: Option<PathBuf>,
    /// Put the last controller behind a PCIe root port.
    pub root_port: bool,
    /// What the guest does (probe registers only, or the whole stack).
    pub mode: Mode,
    /// Outer deadline for QEMU.
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// `RUST_LOG` for the guest's daemons.
    pub log: String,
    /// Print every console line as it arrives (otherwise only the
    /// test's own progress lines; the whole console is kept in
    /// `<cache>/run/console.log` either way).
    pub verbose: bool,
    /// Repository root.
    pub repo: PathBuf,
    /// Download cache and per-run files (`<repo>/.cache/qemu-e2e`).
    pub cache: PathBuf,
    /// Target directory for the static build.
    pub target_dir: PathBuf,
}

impl Options {
    /// Defaults for a checkout at `repo`: 16 controllers, root port on, full stack.
    pub fn new(repo: PathBuf) -> Self {
        let target_dir = std::env::var_os("QEMU_E2E_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| repo.join("target"))
                    .join("qemu-e2e-static")
            });
        Self {
            controllers: 16,
            sequential: false,
            json: None,
            svg: None,
            root_port: true,
            mode: Mode::Full,
            timeout: Duration::from_secs(180),
            memory_mib: 1024,
            cpus: 1,
            log: "info".to_string(),
            verbose: true,
            cache: repo.join(".cache").join("qemu-e2e"),
            target_dir,
            repo,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// Bad command-line settings.
    #[error("{0}")]
    Usage(String),
    /// A host tool is missing or failed.
    #[error("{0}")]
    Setup(String),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The static build failed.
    #[error("building the guest binaries failed: {0}")]
    Build(String),
    /// QEMU did not exit by itself.
    #[error("QEMU was killed at the timeout after {secs} s ({detail})")]
    Timeout {
        /// The deadline.
        secs: u64,
        /// How far the guest got.
        detail: String,
    },
    /// QEMU exited with an error status.
    #[error("QEMU exited with {status}: {stderr}")]
    Qemu {
        /// Exit status.
        status: ExitStatus,
        /// Its last error output.
        stderr: String,
    },
    /// The guest's kernel never ran /init.
    #[error("the guest never reached init (last console lines: {0})")]
    NoInit(String),
    /// The guest's init reported a failure.
    #[error("guest init failed: {0}")]
    Guest(String),
    /// The guest's report does not show what is required.
    #[error("{0}")]
    Check(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> E2eError {
    let what = what.into();
    move |source| E2eError::Io { what, source }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunResult {
    /// Everything read from the console.
    pub console: ConsoleSummary,
    /// The guest's report (full mode).
    pub report: Option<shutdownd::Report>,
    /// Wall time from starting QEMU to its exit (boot to power-off), ms.
    pub qemu_ms: f64,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("qemu-e2e: {}", msg.as_ref());
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command to completion, turning failure into a message with its output.
fn run_tool(cmd: &mut Command, what: &str) -> Result<String, E2eError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| E2eError::Setup(format!("{what}: cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(E2eError::Setup(format!(
            "{what}: {:?} exited with {}: {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure `qemu-system-x86_64` runs, installing it with `tests/setup.sh` when root.
pub fn ensure_qemu(repo: &Path) -> Result<String, E2eError> {
    let version = || {
        Command::new("qemu-system-x86_64")
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
    };
    if let Some(v) = version() {
        return Ok(v);
    }
    let setup = repo.join("tests").join("setup.sh");
    if !is_root() {
        return Err(E2eError::Setup(format!(
            "qemu-system-x86_64 is not installed; run {} as root",
            setup.display()
        )));
    }
    progress(format!("QEMU missing: running {}", setup.display()));
    let status = Command::new(&setup)
        .status()
        .map_err(io_err(format!("run {}", setup.display())))?;
    if !status.success() {
        return Err(E2eError::Setup(format!(
            "{} failed: {status}",
            setup.display()
        )));
    }
    version().ok_or_else(|| {
        E2eError::Setup("qemu-system-x86_64 still does not run after setup".to_string())
    })
}

/// Finds the versioned kernel package the metapackage depends on.
fn kernel_package() -> Result<String, E2eError> {
    let out = run_tool(
        Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        "look up the kernel package",
    )?;
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .ok_or_else(|| {
            E2eError::Setup(format!(
                "apt-cache depends {KERNEL_METAPACKAGE} names no linux-image package (run apt-get update?)"
            ))
        })
}

/// Returns the cached guest kernel, downloading Debian's cloud kernel on first use.
pub fn ensure_kernel(cache: &Path) -> Result<PathBuf, E2eError> {
    let vmlinuz = cache.join("vmlinuz");
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(cache).map_err(io_err(format!("create {}", cache.display())))?;
    let package = match kernel_package() {
        Ok(p) => p,
        Err(e) if is_root() => {
            progress(format!("{e}; running apt-get update"));
            run_tool(Command::new("apt-get").arg("update"), "apt-get update")?;
            kernel_package()?
        }
        Err(e) => return Err(e),
    };
    progress(format!(
        "downloading the guest kernel: apt-get download {package}"
    ));
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).map_err(io_err(format!("create {}", download.display())))?;
    run_tool(
        Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&download),
        "apt-get download",
    )?;
    let deb = fs::read_dir(&download)
        .map_err(io_err(format!("list {}", download.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| E2eError::Setup(format!("apt-get download {package} left no .deb")))?;
    let root = download.join("root");
    run_tool(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "unpack the kernel package",
    )?;
    let boot = root.join("boot");
    let image = fs::read_dir(&boot)
        .map_err(io_err(format!("list {}", boot.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| E2eError::Setup(format!("{} holds no boot/vmlinuz-*", deb.display())))?;
    let tmp = cache.join("vmlinuz.tmp");
    fs::copy(&image, &tmp).map_err(io_err(format!("copy {}", image.display())))?;
    fs::rename(&tmp, &vmlinuz).map_err(io_err(format!("create {}", vmlinuz.display())))?;
    fs::write(cache.join("kernel-package.txt"), format!("{package}\n"))
        .map_err(io_err("record the kernel package"))?;
    let _ = fs::remove_dir_all(&download);
    progress(format!("kernel cached at {}", vmlinuz.display()));
    Ok(vmlinuz)
}

/// True when the ELF file at `path` has no program interpreter (is statically linked).
fn is_static_elf(path: &Path) -> Result<bool, E2eError> {
    let bytes = fs::read(path).map_err(io_err(format!("read {}", path.display())))?;
    let bad = || E2eError::Build(format!("{} is not a 64-bit ELF file", path.display()));
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().map_err(|_| bad())?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = bytes
            .get(at..at + 4)
            .ok_or_else(bad)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        if p_type == 3 {
            // PT_INTERP
            return Ok(false);
        }
    }
    Ok(true)
}

/// A binary the guest needs: its package, its name in the build, and its
/// path in the initramfs.
type GuestBinary = (&'static str, &'static str, &'static str);

/// The binaries the guest needs for `mode`.
fn guest_binaries(mode: Mode) -> &'static [GuestBinary] {
    match mode {
        Mode::Probe | Mode::Kernel => &[("shutdown_tests", "guest-init", "init")],
        Mode::Full => &[
            ("shutdown_tests", "guest-init", "init"),
            ("pcid", "pcid", "bin/pcid"),
            // pcid runs the test build where the match table says `nvmed`.
            ("shutdown_tests", "nvmed-test", "bin/nvmed"),
            ("nvmed", "nvmed", "bin/nvmed-shipped"),
            ("shutdownd", "shutdownd", "bin/shutdownd"),
            ("shutdown_tests", "testfsd", "bin/testfsd"),
        ],
    }
}

/// Builds the guest binaries statically; returns the directory holding them.
pub fn build_static(opts: &Options) -> Result<PathBuf, E2eError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&opts.repo)
        .args(["build", "--release", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", &opts.target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    let bins = guest_binaries(opts.mode);
    for (package, bin, _) in bins {
        cmd.args(["-p", package, "--bin", bin]);
    }
    progress(format!(
        "building {} statically for {GUEST_TARGET} in {}",
        bins.iter()
            .map(|(_, b, _)| *b)
            .collect::<Vec<_>>()
            .join(", "),
        opts.target_dir.display()
    ));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| E2eError::Build(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(E2eError::Build(format!("cargo exited with {status}")));
    }
    let dir = opts.target_dir.join(GUEST_TARGET).join("release");
    for (_, bin, _) in bins {
        let path = dir.join(bin);
        if !is_static_elf(&path)? {
            return Err(E2eError::Build(format!(
                "{} is dynamically linked; the initramfs has no libraries",
                path.display()
            )));
        }
    }
    Ok(dir)
}

/// The match tables shipped in the repository's initfs.
fn match_tables(repo: &Path) -> Result<Vec<PathBuf>, E2eError> {
    let dir = repo.join("tests").join("pcid.d");
    let mut tables: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err(format!("list {}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    tables.sort();
    if tables.is_empty() {
        return Err(E2eError::Setup(format!(
            "no *.toml match tables in {}",
            dir.display()
        )));
    }
    Ok(tables)
}

/// Packs the initramfs (uncompressed newc, then `gzip -1`); returns its path.
pub fn pack_initramfs(opts: &Options, bin_dir: &Path, work: &Path) -> Result<PathBuf, E2eError> {
    let mut w = CpioWriter::new();
    let add = |r: Result<(), super::cpio::BadPath>| r.map_err(|e| E2eError::Setup(e.to_string()));
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "lib",
        "lib/pcid.d",
    ] {
        add(w.dir(dir, 0o755))?;
    }
    add(w.char_device("dev/console", 0o600, 5, 1))?;
    let read = |p: &Path| fs::read(p).map_err(io_err(format!("read {}", p.display())));
    for (_, bin, packed) in guest_binaries(opts.mode) {
        let data = read(&bin_dir.join(bin))?;
        add(w.file(packed, 0o755, &data))?;
    }
    if opts.mode == Mode::Full {
        for table in match_tables(&opts.repo)? {
            let name = table
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            add(w.file(&format!("lib/pcid.d/{name}"), 0o644, &read(&table)?))?;
        }
    }
    let cpio = work.join("initramfs.cpio");
    fs::write(&cpio, w.finish()).map_err(io_err(format!("write {}", cpio.display())))?;
    let gz = work.join("initramfs.cpio.gz");
    let _ = fs::remove_file(&gz);
    run_tool(
        Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio),
        "compress the initramfs",
    )?;
    Ok(gz)
}

/// Serial number given to controller `index`.
pub fn serial(index: usize) -> String {
    format!("E2E-NVME-{index:02}")
}

fn image_path(work: &Path, index: usize) -> PathBuf {
    work.join(format!("nvme{index}.img"))
}

fn canary_image_path(work: &Path) -> PathBuf {
    work.join("canary.img")
}

/// Builds QEMU's argument list.
fn qemu_args(opts: &Options, kernel: &Path, initrd: &Path, work: &Path) -> Vec<String> {
    let guest = GuestConfig {
        mode: opts.mode,
        sequential: opts.sequential,
        controllers: opts.controllers,
        log: opts.log.clone(),
        canary: (opts.mode == Mode::Full).then(|| canary::ADDRESS.to_string()),
        ..GuestConfig::default()
    };
    // The kernel's own nvme driver is kept off the controllers, except in
    // kernel mode, where it is what is measured.
    let blacklist = (opts.mode != Mode::Kernel).then_some("initcall_blacklist=nvme_init");
    let append = ["console=ttyS0", "panic=-1"]
        .into_iter()
        .chain(blacklist)
        // Timestamps on the kernel's console lines: the power-off is timed
        // from them.
        .chain(["printk.time=1", "quiet", "rdinit=/init"])
        .map(|s| s.to_string())
        .chain(guest.to_kernel_args())
        .collect::<Vec<_>>()
        .join(" ");
    let mut args: Vec<String> = [
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "-m".to_string(),
        format!("{}M", opts.memory_mib),
        "-smp".to_string(),
        opts.cpus.to_string(),
        "-kernel".to_string(),
        kernel.display().to_string(),
        "-initrd".to_string(),
        initrd.display().to_string(),
        "-append".to_string(),
        append,
    ]);
    if opts.mode == Mode::Full {
        // First, so that its fixed slot is taken before any automatic one.
        args.extend([
            "-drive".to_string(),
            format!(
                "file={},if=none,id=canary,format=raw",
                canary_image_path(work).display()
            ),
            "-device".to_string(),
            format!(
                "nvme,serial={},drive=canary,addr={:#04x}",
                canary::SERIAL,
                canary::SLOT
            ),
        ]);
    }
    if opts.root_port {
        args.extend([
            "-device".to_string(),
            "pcie-root-port,id=rp1,chassis=1,slot=1".to_string(),
        ]);
    }
    for i in 0..opts.controllers {
        let behind_port = opts.root_port && i + 1 == opts.controllers;
        args.extend([
            "-drive".to_string(),
            format!(
                "file={},if=none,id=disk{i},format=raw",
                image_path(work, i).display()
            ),
            "-device".to_string(),
            format!(
                "nvme,serial={},drive=disk{i}{}",
                serial(i),
                if behind_port { ",bus=rp1" } else { "" }
            ),
        ]);
    }
    args
}

/// What one QEMU run gave back.
pub type QemuRun = (Option<ExitStatus>, Vec<String>, String, Duration);

/// Runs QEMU until it exits or `timeout` passes; returns the status (None if
/// killed), console lines, error output and wall time. Console lines for
/// which `show` says yes (all of them with `verbose`) are echoed as they
/// arrive, prefixed with `guest| `.
pub fn run_qemu(
    args: &[String],
    timeout: Duration,
    verbose: bool,
    show: fn(&str) -> bool,
) -> Result<QemuRun, E2eError> {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("start qemu-system-x86_64"))?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        if let Some(out) = stdout {
            let mut r = BufReader::new(out);
            let mut line = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut line) {
                if n == 0 || tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        }
    });
    let mut stderr_pipe = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr_pipe.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = started + timeout;
    let mut lines = Vec::new();
    let mut killed = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(raw) => {
                let line = String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                if verbose || show(&line) {
                    eprintln!("guest| {line}");
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // stdout closed (QEMU exiting) or killed: reap it, bounded.
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_err("wait for QEMU"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(((!killed).then_some(status), lines, stderr, elapsed))
}

/// Console lines shown even without `verbose`: init's own lines, pcid's
/// readiness line and shutdownd's summary.
fn is_progress_line(line: &str) -> bool {
    line.starts_with("e2e:")
        || (line.starts_with("===E2E-") && !line.starts_with(super::markers::PROBE))
        || line.starts_with("pcid: ready")
        || line.contains(" devices: ")
}

fn tail(lines: &[String], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    let t: Vec<&str> = lines[start..].iter().map(String::as_str).collect();
    if t.is_empty() {
        "none".to_string()
    } else {
        t.join(" | ")
    }
}

/// Takes an exclusive lock on the cache so that two runs in one checkout do
/// not remove each other's images; released when the returned value is dropped.
fn lock_cache(cache: &Path) -> Result<nix::fcntl::Flock<fs::File>, E2eError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = cache.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        E2eError::Setup(format!(
            "another qemu-e2e run holds {} ({errno}); wait for it to finish",
            path.display()
        ))
    })
}

/// Runs the whole test once.
pub fn run(opts: &Options) -> Result<RunResult, E2eError> {
    if opts.controllers == 0 || opts.controllers > MAX_CONTROLLERS {
        return Err(E2eError::Usage(format!(
            "--controllers must be 1..={MAX_CONTROLLERS}, got {}",
            opts.controllers
        )));
    }
    fs::create_dir_all(&opts.cache).map_err(io_err(format!("create {}", opts.cache.display())))?;
    let _lock = lock_cache(&opts.cache)?;
    let qemu = ensure_qemu(&opts.repo)?;
    progress(format!("using {qemu}"));
    let kernel = ensure_kernel(&opts.cache)?;
    let bin_dir = build_static(opts)?;

    let work = opts.cache.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(format!("create {}", work.display())))?;
    let initrd = pack_initramfs(opts, &bin_dir, &work)?;
    let images = (0..opts.controllers)
        .map(|i| image_path(&work, i))
        .chain((opts.mode == Mode::Full).then(|| canary_image_path(&work)));
    for path in images {
        let f = fs::File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
        f.set_len(IMAGE_BYTES)
            .map_err(io_err(format!("size {}", path.display())))?;
    }
    let trace_log = work.join("qemu-trace.log");
    let mut args = qemu_args(opts, &kernel, &initrd, &work);
    if opts.mode != Mode::Probe {
        args.extend(super::trace::qemu_args(&trace_log));
    }
    progress(format!(
        "booting: {} NVMe controller(s){}, {} shutdown, timeout {} s",
        opts.controllers,
        if opts.root_port {
            " (the last behind a PCIe root port)"
        } else {
            ""
        },
        match opts.mode {
            Mode::Kernel => "the kernel's nvme driver's",
            _ if opts.sequential => "sequential",
            _ => "two-phase",
        },
        opts.timeout.as_secs()
    ));
    log::debug!("qemu-system-x86_64 {}", args.join(" "));
    let (status, lines, stderr, elapsed) =
        run_qemu(&args, opts.timeout, opts.verbose, is_progress_line)?;
    let console_log = work.join("console.log");
    let mut text = lines.join("\n");
    text.push('\n');
    if !stderr.is_empty() {
        text.push_str("--- QEMU stderr ---\n");
        text.push_str(&stderr);
    }
    fs::write(&console_log, text).map_err(io_err(format!("write {}", console_log.display())))?;
    progress(format!(
        "QEMU ran {:.1} s; console saved in {}",
        elapsed.as_secs_f64(),
        console_log.display()
    ));
    let console = ConsoleSummary::scan(lines.iter().map(String::as_str));
    let qemu_ms = elapsed.as_secs_f64() * 1000.0;

    let Some(status) = status else {
        let detail = if !console.init_started {
            "the guest never reached init".to_string()
        } else {
            format!("last console lines: {}", tail(&lines, 5))
        };
        return Err(E2eError::Timeout {
            secs: opts.timeout.as_secs(),
            detail,
        });
    };
    if !status.success() {
        return Err(E2eError::Qemu {
            status,
            stderr: stderr.trim().to_string(),
        });
    }
    if !console.init_started {
        return Err(E2eError::NoInit(tail(&lines, 5)));
    }
    if let Some(first) = console.failures.first() {
        // Save whatever report there is before failing, for diagnosis.
        write_json(opts, &console, qemu_ms)?;
        return Err(E2eError::Guest(first.clone()));
    }
    let report = match opts.mode {
        Mode::Probe => {
            check_probe(opts, &console)?;
            None
        }
        Mode::Full => {
            write_json(opts, &console, qemu_ms)?;
            let report = check_report(opts, &console)?;
            check_images(opts, &work)?;
            check_participant(opts, &console, &work)?;
            check_canary(&console, &work)?;
            // The canary controller is shut down too (by the shipped nvmed).
            check_trace(opts.controllers + 1, " (the canary included)", &trace_log)?;
            Some(report)
        }
        Mode::Kernel => {
            write_kernel_json(opts, &console, qemu_ms)?;
            check_kernel(opts, &console)?;
            check_images(opts, &work)?;
            check_trace(opts.controllers, "", &trace_log)?;
            None
        }
    };
    Ok(RunResult {
        console,
        report,
        qemu_ms,
    })
}

/// Value of `key` in a marker line's `key=value` pairs ("" if absent).
fn field(pairs: &[(String, String)], key: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn check_probe(opts: &Options, console: &ConsoleSummary) -> Result<(), E2eError> {
    let get = field;
    if console.probes.len() != opts.controllers {
        return Err(E2eError::Check(format!(
            "the guest probed {} NVMe controllers, expected {}",
            console.probes.len(),
            opts.controllers
        )));
    }
    for p in &console.probes {
        let vs = get(p, "vs");
        // QEMU's controller reports NVMe 1.4.0 (VS = 0x00010400).
        if vs != "0x00010400" {
            return Err(E2eError::Check(format!(
                "controller {}: VS reads {vs}, expected 0x00010400",
                get(p, "address")
            )));
        }
    }
    if opts.root_port && !console.probes.iter().any(|p| get(p, "parent") != "-") {
        return Err(E2eError::Check(
            "no controller was found behind the PCIe root port".to_string(),
        ));
    }
    Ok(())
}

fn check_report(opts: &Options, console: &ConsoleSummary) -> Result<shutdownd::Report, E2eError> {
    let report = console
        .report()
        .ok_or_else(|| E2eError::Check("the guest printed no shutdown report".to_string()))?
        .map_err(|e| E2eError::Check(e.to_string()))?;
    let expected_mode = if opts.sequential {
        "sequential"
    } else {
        "two-phase"
    };
    check_mode(&report, expected_mode).map_err(E2eError::Check)?;
    let nvme: Vec<_> = report
        .devices
        .iter()
        .filter(|d| d.driver == "nvmed")
        .collect();
    if nvme.len() != opts.controllers {
        return Err(E2eError::Check(format!(
            "the report lists {} nvmed devices, expected {}",
            nvme.len(),
            opts.controllers
        )));
    }
    for d in &report.devices {
        if d.outcome != "clean" {
            return Err(E2eError::Check(format!(
                "{}: outcome {}",
                match &d.address {
                    Some(a) => format!("controller {a}"),
                    None => d.label(),
                },
                d.outcome
            )));
        }
    }
    if opts.root_port {
        // pcid must list a controller with a parent bridge (the root port), and
        // that controller must be in the report, clean (checked above).
        let behind: Vec<String> = console
            .devices
            .iter()
            .filter(|d| field(d, "driver") == "nvmed" && field(d, "parent") != "-")
            .map(|d| field(d, "address"))
            .collect();
        if behind.is_empty() {
            return Err(E2eError::Check(
                "pcid lists no controller behind the PCIe root port".to_string(),
            ));
        }
        for address in &behind {
            if !nvme
                .iter()
                .any(|d| d.address.as_deref() == Some(address.as_str()))
            {
                return Err(E2eError::Check(format!(
                    "controller {address} behind the root port is missing from the report"
                )));
            }
        }
    }
    Ok(report)
}

/// The test file system daemon: its row first and clean, its disk's Begin
/// after its outcome, and its dirty data in exactly one image (its disk's).
fn check_participant(
    opts: &Options,
    console: &ConsoleSummary,
    work: &Path,
) -> Result<(), E2eError> {
    use super::guest::testfs;
    let report = console
        .report()
        .ok_or_else(|| E2eError::Check("the guest printed no shutdown report".to_string()))?
        .map_err(|e| E2eError::Check(e.to_string()))?;
    let first = report
        .devices
        .first()
        .ok_or_else(|| E2eError::Check("the report lists nothing".to_string()))?;
    if first.kind != "participant" || first.driver != testfs::NAME || first.outcome != "clean" {
        return Err(E2eError::Check(format!(
            "the report's first row is {} {} ({}), expected the participant {} clean",
            first.kind,
            first.driver,
            first.outcome,
            testfs::NAME
        )));
    }
    let done = first.done_ms.unwrap_or(f64::MAX);
    let waiting: Vec<&shutdownd::DeviceReport> = report
        .devices
        .iter()
        .filter(|d| d.waits_for.contains(&first.label()))
        .collect();
    if waiting.len() != 1 {
        return Err(E2eError::Check(format!(
            "{} devices wait for the participant, expected its one disk",
            waiting.len()
        )));
    }
    let begun = waiting[0].begin_sent_ms.unwrap_or(f64::MIN);
    if begun < done {
        return Err(E2eError::Check(format!(
            "its disk {} got Begin at {begun} ms, before the participant was done at {done} ms",
            waiting[0].label()
        )));
    }
    let expected = crate::participant::dirty_pattern(testfs::NAME, testfs::KIB * 1024);
    let mut holding = Vec::new();
    for i in 0..opts.controllers {
        let path = image_path(work, i);
        let mut buf = vec![0u8; expected.len()];
        let f = fs::File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, testfs::OFFSET)
            .map_err(io_err(format!("read {}", path.display())))?;
        if buf == expected {
            holding.push(i);
        }
    }
    if holding.len() != 1 {
        return Err(E2eError::Check(format!(
            "the participant's dirty data is in {} images ({holding:?}), expected its disk's",
            holding.len()
        )));
    }
    Ok(())
}

fn check_images(opts: &Options, work: &Path) -> Result<(), E2eError> {
    for i in 0..opts.controllers {
        let path = image_path(work, i);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut head = vec![0u8; SELFTEST_PATTERN_LEN];
        fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(io_err(format!("read {}", path.display())))?;
        if head != selftest_pattern(&serial(i), SELFTEST_PATTERN_LEN) {
            return Err(E2eError::Check(format!(
                "image {name} does not contain its pattern (serial {}); it starts with {:?}",
                serial(i),
                String::from_utf8_lossy(&head[..64])
            )));
        }
    }
    Ok(())
}

/// QEMU's own trace of its NVMe model must show `expected` controllers
/// getting a normal shutdown notification (see [`super::trace`]).
fn check_trace(expected: usize, which: &str, trace_log: &Path) -> Result<(), E2eError> {
    let text =
        fs::read_to_string(trace_log).map_err(io_err(format!("read {}", trace_log.display())))?;
    let trace = super::trace::NvmeTrace::parse(&text);
    let notified = trace.notified();
    if notified != expected {
        return Err(E2eError::Check(format!(
            "QEMU's trace shows a shutdown notification (CC.SHN=01b answered by \
             pci_nvme_mmio_shutdown_set) for {notified} of {expected} controllers{which}"
        )));
    }
    progress(format!(
        "QEMU's trace: {notified} of {expected} controllers{which} got \
         CC.SHN=01b and started their shutdown"
    ));
    Ok(())
}

/// Kernel mode: the kernel's nvme driver had every controller live and the
/// guest wrote through each, and the kernel log times the power-off.
fn check_kernel(opts: &Options, console: &ConsoleSummary) -> Result<(), E2eError> {
    if console.kernel_nvme.len() != opts.controllers {
        return Err(E2eError::Check(format!(
            "the kernel's nvme driver drove {} controllers, expected {}",
            console.kernel_nvme.len(),
            opts.controllers
        )));
    }
    for c in &console.kernel_nvme {
        if field(c, "state") != "live" || field(c, "written").parse::<usize>().unwrap_or(0) == 0 {
            return Err(E2eError::Check(format!(
                "kernel controller {} ({}): state {:?}, {} bytes written",
                field(c, "name"),
                field(c, "address"),
                field(c, "state"),
                field(c, "written")
            )));
        }
    }
    if console.kernel_poweroff_ms().is_none() {
        return Err(E2eError::Check(format!(
            "the console shows no timed power-off (init's {} and the kernel's \
             `{}`, both with timestamps)",
            super::markers::KMSG_POWEROFF,
            super::report::KERNEL_POWER_DOWN
        )));
    }
    Ok(())
}

/// The shipped nvmed shut the canary down `clean`, exited 0, and wrote
/// nothing: no workload log, and the canary's image is all zeros.
fn check_canary(console: &ConsoleSummary, work: &Path) -> Result<(), E2eError> {
    let c = console.canary.as_ref().ok_or_else(|| {
        E2eError::Check("the guest printed no canary line (shipped nvmed)".to_string())
    })?;
    for (key, want) in [("outcome", "clean"), ("exit", "0"), ("workload_files", "0")] {
        let got = field(c, key);
        if got != want {
            return Err(E2eError::Check(format!(
                "canary (shipped nvmed with NVMED_SELFTEST=1 and NVMED_WORKLOAD set): \
                 {key} is {got:?}, expected {want:?}"
            )));
        }
    }
    let path = canary_image_path(work);
    let image = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    if let Some(at) = image.iter().position(|&b| b != 0) {
        return Err(E2eError::Check(format!(
            "the shipped nvmed wrote to the canary's namespace: {} is not all zeros (byte {at}, block {})",
            path.display(),
            at / 512
        )));
    }
    Ok(())
}

/// Writes the guest's report with the run's figures (`--json`) and its
/// picture (`--svg`), when asked and when the guest printed one.
fn write_json(opts: &Options, console: &ConsoleSummary, qemu_ms: f64) -> Result<(), E2eError> {
    let Some(Ok(report)) = console.report() else {
        return Ok(());
    };
    if let Some(svg) = &opts.svg {
        crate::picture::write_svg(&report, svg).map_err(E2eError::Setup)?;
    }
    let Some(path) = &opts.json else {
        return Ok(());
    };
    let figures = serde_json::Value::Object(run_figures(opts, console, qemu_ms));
    let text = with_figures(&report, "qemu", figures)
        .map_err(|e| E2eError::Setup(format!("encode report: {e}")))?;
    fs::write(path, text + "\n").map_err(io_err(format!("write {}", path.display())))
}

/// The run's figures: controllers, root port, boot to power-off, the
/// kernel's power-off time and the guest's timings.
fn run_figures(
    opts: &Options,
    console: &ConsoleSummary,
    qemu_ms: f64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut q = serde_json::Map::new();
    q.insert("controllers".into(), opts.controllers.into());
    q.insert("root_port".into(), opts.root_port.into());
    q.insert("boot_to_poweroff_ms".into(), qemu_ms.into());
    if let Some(ms) = console.kernel_poweroff_ms() {
        q.insert("kernel_poweroff_ms".into(), ms.into());
    }
    for (k, _) in &console.timings {
        if let Some(v) = console.timing(k) {
            q.insert(format!("guest_{k}"), v.into());
        }
    }
    q
}

/// Kernel mode's JSON: the run and the kernel's power-off time.
fn write_kernel_json(
    opts: &Options,
    console: &ConsoleSummary,
    qemu_ms: f64,
) -> Result<(), E2eError> {
    let Some(path) = &opts.json else {
        return Ok(());
    };
    let mut q = serde_json::Map::new();
    q.insert("mode".into(), "kernel-driver".into());
    q.extend(run_figures(opts, console, qemu_ms));
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(q))
        .map_err(|e| E2eError::Setup(format!("encode report: {e}")))?;
    fs::write(path, text + "\n").map_err(io_err(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_mode_leaves_the_kernels_driver_on_and_has_no_canary() {
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 2;
        opts.mode = Mode::Kernel;
        let args = qemu_args(&opts, Path::new("/k"), Path::new("/i"), Path::new("/w"));
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(!append.contains("initcall_blacklist"), "{append}");
        assert!(append.contains("printk.time=1"));
        assert!(append.contains("e2e.mode=kernel"));
        assert!(!args.iter().any(|a| a.contains("canary")), "{args:?}");
        assert_eq!(args.iter().filter(|a| a.starts_with("nvme,")).count(), 2);
        assert_eq!(guest_binaries(Mode::Kernel).len(), 1);
    }

    #[test]
    fn kernel_mode_checks_every_controller_and_the_timing() {
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 2;
        let line = |name: &str, state: &str| {
            format!(
                "{} name={name} address=0000:00:02.0 serial=S state={state} written=4096",
                super::super::markers::KERNEL_NVME
            )
        };
        let timed = [
            format!("[ 5.0] {}", super::super::markers::KMSG_POWEROFF),
            "[ 5.5] reboot: Power down".to_string(),
        ];
        let scan = |lines: &[String]| ConsoleSummary::scan(lines.iter().map(String::as_str));
        let good: Vec<String> = [line("nvme0", "live"), line("nvme1", "live")]
            .into_iter()
            .chain(timed.clone())
            .collect();
        assert!(check_kernel(&opts, &scan(&good)).is_ok());
        let one: Vec<String> = [line("nvme0", "live")]
            .into_iter()
            .chain(timed.clone())
            .collect();
        assert!(check_kernel(&opts, &scan(&one))
            .unwrap_err()
            .to_string()
            .contains("drove 1 controllers, expected 2"));
        let dead: Vec<String> = [line("nvme0", "live"), line("nvme1", "dead")]
            .into_iter()
            .chain(timed)
            .collect();
        assert!(check_kernel(&opts, &scan(&dead)).is_err());
        let untimed = vec![line("nvme0", "live"), line("nvme1", "live")];
        assert!(check_kernel(&opts, &scan(&untimed))
            .unwrap_err()
            .to_string()
            .contains("no timed power-off"));
    }

    #[test]
    fn qemu_command_places_last_controller_behind_the_root_port() {
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 3;
        let args = qemu_args(&opts, Path::new("/k"), Path::new("/i"), Path::new("/w"));
        let devices: Vec<&String> = args
            .iter()
            .zip(args.iter().skip(1))
            .filter(|(a, _)| *a == "-device")
            .map(|(_, b)| b)
            .collect();
        assert_eq!(devices[0], "nvme,serial=E2E-CANARY,drive=canary,addr=0x1e");
        assert_eq!(devices[1], "pcie-root-port,id=rp1,chassis=1,slot=1");
        assert_eq!(devices[2], "nvme,serial=E2E-NVME-00,drive=disk0");
        assert_eq!(devices[4], "nvme,serial=E2E-NVME-02,drive=disk2,bus=rp1");
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.contains("initcall_blacklist=nvme_init"));
        assert!(append.contains("e2e.controllers=3"));
        assert!(append.contains("e2e.canary=0000:00:1e.0"));
        assert!(args.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg"));
        assert!(args.iter().any(|a| a == "-no-reboot"));
    }

    fn console_with_report(json: &str) -> ConsoleSummary {
        let behind = format!(
            "{} address=0000:01:00.0 parent=0000:00:01.0 driver=nvmed",
            super::super::markers::DEVICE
        );
        ConsoleSummary::scan([
            super::super::markers::INIT_START,
            &behind,
            super::super::markers::REPORT_BEGIN,
            json,
            super::super::markers::REPORT_END,
        ])
    }

    fn device(address: &str, outcome: &str) -> shutdownd::DeviceReport {
        super::super::report::fixture::row(Some(address), "nvmed", outcome)
    }

    #[test]
    fn report_checks_name_the_failing_controller() {
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 2;
        let report = |devices: &[shutdownd::DeviceReport], mode: &str| {
            console_with_report(&super::super::report::fixture::json(mode, devices.to_vec()))
        };
        let good = [
            device("0000:00:02.0", "clean"),
            device("0000:01:00.0", "clean"),
        ];
        assert!(check_report(&opts, &report(&good, "two-phase")).is_ok());

        let err = check_report(
            &opts,
            &report(
                &[
                    device("0000:00:02.0", "clean"),
                    device("0000:01:00.0", "timed-out"),
                ],
                "two-phase",
            ),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "controller 0000:01:00.0: outcome timed-out"
        );

        let err = check_report(&opts, &report(&good, "sequential")).unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");

        let err = check_report(&opts, &report(&good[..1], "two-phase")).unwrap_err();
        assert!(
            err.to_string().contains("1 nvmed devices, expected 2"),
            "{err}"
        );

        // pcid listed 0000:01:00.0 behind the root port, but the report lacks it.
        let flat = [
            device("0000:00:02.0", "clean"),
            device("0000:00:03.0", "clean"),
        ];
        let err = check_report(&opts, &report(&flat, "two-phase")).unwrap_err();
        assert!(
            err.to_string()
                .contains("0000:01:00.0 behind the root port is missing"),
            "{err}"
        );
        // pcid lists no device with a parent at all.
        let empty = super::super::report::fixture::json("two-phase", Vec::new());
        let no_parent = ConsoleSummary::scan([
            super::super::markers::REPORT_BEGIN,
            empty.as_str(),
            super::super::markers::REPORT_END,
        ]);
        let mut none = opts.clone();
        none.controllers = 0;
        let err = check_report(&none, &no_parent).unwrap_err();
        assert!(err.to_string().contains("no controller behind"), "{err}");
        opts.root_port = false;
        assert!(check_report(&opts, &report(&flat, "two-phase")).is_ok());

        let err = check_report(&opts, &ConsoleSummary::scan(["x"])).unwrap_err();
        assert!(err.to_string().contains("no shutdown report"), "{err}");
    }

    #[test]
    fn image_check_requires_each_controllers_own_pattern() {
        let work = std::env::temp_dir().join(format!("qemu-e2e-images-{}", std::process::id()));
        fs::create_dir_all(&work).unwrap();
        let mut opts = Options::new(PathBuf::from("/repo"));
        opts.controllers = 2;
        for i in 0..2 {
            let mut data = selftest_pattern(&serial(i), SELFTEST_PATTERN_LEN);
            data.resize(SELFTEST_PATTERN_LEN + 512, 0);
            fs::write(image_path(&work, i), data).unwrap();
        }
        assert!(check_images(&opts, &work).is_ok());
        // Controller 1's image holds controller 0's pattern: caught.
        fs::copy(image_path(&work, 0), image_path(&work, 1)).unwrap();
        let err = check_images(&opts, &work).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("image nvme1.img does not contain its pattern"),
            "{err}"
        );
        // A blank (never written) image: caught.
        fs::write(image_path(&work, 1), vec![0u8; 8192]).unwrap();
        assert!(check_images(&opts, &work).is_err());
        fs::remove_dir_all(&work).unwrap();
    }

    #[test]
    fn canary_check_requires_a_clean_untouched_controller() {
        let work = std::env::temp_dir().join(format!("qemu-e2e-canary-{}", std::process::id()));
        fs::create_dir_all(&work).unwrap();
        fs::write(canary_image_path(&work), vec![0u8; 4096]).unwrap();
        let line = |rest: &str| {
            ConsoleSummary::scan([format!("{} {rest}", super::super::markers::CANARY).as_str()])
        };
        let good = line("address=0000:00:1e.0 outcome=clean exit=0 workload_files=0");
        assert!(check_canary(&good, &work).is_ok());
        assert!(check_canary(&ConsoleSummary::default(), &work).is_err());
        for bad in [
            "outcome=failed exit=0 workload_files=0",
            "outcome=clean exit=1 workload_files=0",
            "outcome=clean exit=0 workload_files=1",
        ] {
            assert!(check_canary(&line(bad), &work).is_err(), "{bad}");
        }
        // One byte written anywhere in the namespace: caught.
        let mut image = vec![0u8; 4096];
        image[1000] = 1;
        fs::write(canary_image_path(&work), image).unwrap();
        let err = check_canary(&good, &work).unwrap_err().to_string();
        assert!(err.contains("byte 1000, block 1"), "{err}");
        fs::remove_dir_all(&work).unwrap();
    }

    #[test]
    fn serials_fit_the_identify_field() {
        // Identify Controller SN is 20 ASCII bytes (NVMe Base 2.0, Figure 275).
        assert!(serial(MAX_CONTROLLERS).len() <= 20);
        assert!(canary::SERIAL.len() <= 20);
    }

    #[test]
    fn static_elf_detection() {
        let exe = std::env::current_exe().unwrap();
        // The test binary is linked dynamically unless built with crt-static.
        let _ = is_static_elf(&exe).unwrap();
        let not_elf = std::env::temp_dir().join(format!("qemu-e2e-notelf-{}", std::process::id()));
        fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&not_elf).is_err());
        fs::remove_file(&not_elf).unwrap();
    }
}
