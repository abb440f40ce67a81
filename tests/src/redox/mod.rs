//! The Redox end-to-end test (binary `redox-e2e`): Redox itself, built from
//! pinned sources, booted under QEMU with this project's pcid, nvmed and
//! shutdownd.
//!
//! 1. **Build** ([`steps`]): the pinned sources (`tests/redox/pins.toml`) are
//!    taken from `REDOX_SRC` (default `../shared/redox-src` beside the
//!    checkout) or downloaded, patched for an offline build
//!    (`tests/redox/patches/`), and built with the pinned toolchains: kernel,
//!    BIOS bootloader, relibc, bootstrap, base's daemons and drivers, redoxfs,
//!    and a host image tool. Results are cached outside the checkout, keyed
//!    by their inputs (`REDOX_E2E_CACHE`, default
//!    `~/.cache/pcid-shutdown/redox-e2e`); a warm run rebuilds only this
//!    project's binaries, which cargo builds for `x86_64-unknown-redox`.
//! 2. **Image** ([`image`]): an initfs with Redox's init, its daemons, its
//!    pcid-spawner and match table, and this project's binaries put in by
//!    `initfs/integrate.sh`; a RedoxFS with the kernel and the initfs; a
//!    disk with the BIOS bootloader.
//! 3. **Boot** ([`boot`]): QEMU (q35, TCG) with N NVMe controllers, each
//!    with its own image file, the serial console captured and QEMU's trace
//!    of its NVMe model written to a file.
//! 4. **Check** ([`check`]): the report on the console (every controller
//!    `clean`, Begin sent to all before any FinishAck, Redox's own drivers
//!    `not-supported`), the probe's readings, each image holding its
//!    controller's pattern (written by the test build of nvmed) and the
//!    canary's untouched (the shipped nvmed, [`boot::canary`]), QEMU's trace
//!    showing every controller got the shutdown notification, acpid handling
//!    the power-off, and QEMU having exited by itself.
//!
//! With `--redoxfs` the run is [`filesystem`]'s instead: RedoxFS on NVMe
//! served by this project's nvmed, a file written just before shutdown, and
//! the same image powered off Redox's way for comparison.
//!
//! Failures are one line naming the stage: `build step <name>`, `boot`,
//! `init`, `pcid ready`, `shutdown`, `power-off`, or the check that failed.

pub mod boot;
pub mod check;
pub mod console;
pub mod filesystem;
pub mod image;
pub mod pins;
pub mod run;
pub mod steps;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use self::run::{output, progress, run_logged};
use self::steps::{Builder, REDOX_TARGET};

/// Why a run failed or did not run.
#[derive(Debug, thiserror::Error)]
pub enum RedoxError {
    /// Bad command-line settings.
    #[error("{0}")]
    Usage(String),
    /// Sources, toolchains or host tools cannot be obtained: the test did
    /// not run (not a failure of the project).
    #[error("{0}")]
    Unavailable(String),
    /// Something on the host is wrong (a file, a tool's output).
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
    /// A build step failed.
    #[error("build step {step} failed: {detail}\n(full log: {})", log.display())]
    Build {
        /// The step.
        step: String,
        /// What failed, with the end of the log.
        detail: String,
        /// The step's log.
        log: PathBuf,
    },
    /// The booted system did not get through a stage.
    #[error("{stage}: {detail}")]
    Stage {
        /// `boot`, `init`, `pcid ready`, `shutdown` or `power-off`.
        stage: &'static str,
        /// What was seen.
        detail: String,
    },
    /// A host check of the result failed.
    #[error("check: {0}")]
    Check(String),
}

impl RedoxError {
    /// A setup error.
    pub fn setup(msg: impl Into<String>) -> Self {
        Self::Setup(msg.into())
    }

    /// Maps an io::Error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Most NVMe controllers one run attaches: the QEMU runner's limit (slots
/// on q35's root bus), the same machine.
pub use crate::qemu::host::MAX_CONTROLLERS;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// NVMe controllers.
    pub controllers: usize,
    /// Run shutdownd with `--sequential`.
    pub sequential: bool,
    /// Where to write the report (JSON) with the run's figures.
    pub json: Option<PathBuf>,
    /// Where to draw the report (SVG timeline).
    pub svg: Option<PathBuf>,
    /// Keep the image and print how to boot it again.
    pub keep: bool,
    /// QEMU's outer deadline.
    pub timeout: Duration,
    /// Echo every console line.
    pub verbose: bool,
    /// `RUST_LOG` in the guest.
    pub log: String,
    /// Checkout root.
    pub repo: PathBuf,
    /// Cache root (build results, logs, the last run's files).
    pub cache: PathBuf,
    /// Local source archives.
    pub redox_src: Option<PathBuf>,
    /// Parallel build jobs.
    pub jobs: usize,
    /// Run the RedoxFS scenario ([`filesystem`]) instead of the default boot.
    pub redoxfs: bool,
}

impl Options {
    /// Defaults for a checkout at `repo`, from the environment.
    pub fn new(repo: PathBuf) -> Self {
        let cache = std::env::var_os("REDOX_E2E_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(default_cache);
        let redox_src = match std::env::var_os("REDOX_SRC") {
            Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
            _ => repo
                .parent()
                .map(|p| p.join("shared").join("redox-src"))
                .filter(|d| d.is_dir()),
        };
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            controllers: 16,
            sequential: false,
            json: None,
            svg: None,
            keep: false,
            timeout: Duration::from_secs(240),
            verbose: false,
            log: "info".to_string(),
            repo,
            cache,
            redox_src,
            jobs,
            redoxfs: false,
        }
    }
}

fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("pcid-shutdown").join("redox-e2e")
}

/// What a passing run produced.
#[derive(Debug)]
pub struct RunResult {
    /// The checks' findings (the default boot).
    pub outcome: Option<check::Outcome>,
    /// Each way's findings (the RedoxFS scenario).
    pub fs: Vec<filesystem::WayResult>,
    /// Boot to power-off, QEMU wall time.
    pub qemu_ms: f64,
    /// Where the run's files are.
    pub work: PathBuf,
}

/// Takes an exclusive lock on the cache (two runs would rebuild and remove
/// each other's files); released when dropped.
fn lock_cache(cache: &Path) -> Result<nix::fcntl::Flock<fs::File>, RedoxError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = cache.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(RedoxError::io(format!("open {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        RedoxError::setup(format!(
            "another redox-e2e run holds {} ({errno}); wait for it to finish",
            path.display()
        ))
    })
}

/// Makes sure the host tools are there, running `tests/setup.sh --redox`
/// as root when they are not.
fn ensure_host_tools(repo: &Path) -> Result<(), RedoxError> {
    let missing = Builder::missing_host_tools();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(cmd, pkg)| format!("{cmd} ({pkg})"))
        .collect();
    let setup = repo.join("tests").join("setup.sh");
    if !nix::unistd::geteuid().is_root() {
        return Err(RedoxError::Unavailable(format!(
            "missing host tools: {}; run {} --redox as root",
            names.join(", "),
            setup.display()
        )));
    }
    progress(format!(
        "missing host tools {}: running {} --redox",
        names.join(", "),
        setup.display()
    ));
    let status = Command::new(&setup)
        .arg("--redox")
        .status()
        .map_err(RedoxError::io(format!("run {}", setup.display())))?;
    let still: Vec<&str> = Builder::missing_host_tools()
        .iter()
        .map(|(c, _)| *c)
        .collect();
    if !status.success() || !still.is_empty() {
        return Err(RedoxError::Unavailable(format!(
            "{} --redox failed ({status}); still missing: {}",
            setup.display(),
            still.join(", ")
        )));
    }
    Ok(())
}

/// Builds this project's pcid, nvmed and shutdownd for Redox (cargo's own
/// incremental build, in `<target>/redox-e2e`); returns their directory.
pub fn build_project(
    builder: &Builder,
    art: &steps::Artifacts,
    repo: &Path,
) -> Result<PathBuf, RedoxError> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
        .join("redox-e2e");
    let log = builder.cache.join("logs").join("project.log");
    progress(format!(
        "project: building pcid, nvmed, shutdownd, the test build nvmed-test and the probe for {REDOX_TARGET} (log: {})",
        log.display()
    ));
    let started = std::time::Instant::now();
    run_logged(
        builder
            .redox_cargo(&art.sysroot)
            .args(["--locked", "-p", "pcid", "-p", "nvmed", "-p", "shutdownd"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(repo),
        "project",
        &log,
    )?;
    // The test build of nvmed (the data check; separate command: with
    // `-p nvmed` in the same one, cargo would build only one of the two).
    run_logged(
        builder
            .redox_cargo(&art.sysroot)
            .args(["--locked", "-p", "shutdown_tests", "--bin", "nvmed-test"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(repo),
        "project",
        &log,
    )?;
    // The test-only probe (its own workspace, never in the recipe).
    run_logged(
        builder
            .redox_cargo(&art.sysroot)
            .arg("--locked")
            .arg("--manifest-path")
            .arg(repo.join("tests/redox/probe/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target),
        "project",
        &log,
    )?;
    let out = target.join("stripped");
    for b in [
        "pcid",
        "nvmed",
        "shutdownd",
        "nvmed-test",
        "redox-e2e-probe",
    ] {
        let built = target.join(REDOX_TARGET).join("release").join(b);
        run::copy(&built, &out.join(b))?;
        output(
            Command::new("llvm-objcopy")
                .arg("--strip-debug")
                .arg(out.join(b)),
        )
        .map_err(RedoxError::Setup)?;
    }
    progress(format!(
        "project: done in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// Runs the whole test once.
pub fn run(opts: &Options) -> Result<RunResult, RedoxError> {
    if opts.controllers == 0 || opts.controllers > MAX_CONTROLLERS {
        return Err(RedoxError::Usage(format!(
            "--controllers must be 1..={MAX_CONTROLLERS}, got {}",
            opts.controllers
        )));
    }
    fs::create_dir_all(&opts.cache)
        .map_err(RedoxError::io(format!("create {}", opts.cache.display())))?;
    let _lock = lock_cache(&opts.cache)?;
    let redox_dir = opts.repo.join("tests").join("redox");
    let pins = pins::Pins::load(&redox_dir)?;
    let sources_key = pins.sources_key()?;
    let builder = Builder {
        pins,
        cache: opts.cache.clone(),
        redox_src: opts.redox_src.clone(),
        jobs: opts.jobs,
        image_tool_src: redox_dir.join("image-tool"),
        sources_key,
    };
    let archives = builder.locate_sources()?;
    ensure_host_tools(&opts.repo)?;
    let art = builder.build_all(&archives)?;
    let project_bin = build_project(&builder, &art, &opts.repo)?;

    let work = opts.cache.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(RedoxError::io(format!("create {}", work.display())))?;
    if opts.redoxfs {
        let started = std::time::Instant::now();
        let results = filesystem::run(opts, &art, &project_bin, &work)?;
        return Ok(RunResult {
            outcome: None,
            fs: results,
            qemu_ms: started.elapsed().as_secs_f64() * 1000.0,
            work,
        });
    }
    let log = opts.cache.join("logs").join("image.log");
    let guest = boot::guest(opts, &project_bin);
    image::initfs_tree(&opts.repo, &art, &guest, &work.join("initfs"), &log)?;
    let disk = image::boot_disk(&art, &work.join("initfs"), &work, &log)?;
    progress(format!("image: {}", disk.display()));

    let booted = boot::boot(opts, &disk, &work)?;
    let outcome = check::all(opts, &booted, &work)?;
    if let Some(path) = &opts.json {
        check::write_json(path, opts, &booted, &outcome)?;
    }
    if let Some(path) = &opts.svg {
        crate::picture::write_svg(&outcome.report, path).map_err(RedoxError::setup)?;
    }
    if opts.keep {
        progress(format!(
            "kept the image: boot it again with\n  {}",
            boot::replay_command(opts, &disk, &work)
        ));
    }
    Ok(RunResult {
        outcome: Some(outcome),
        fs: Vec::new(),
        qemu_ms: booted.elapsed.as_secs_f64() * 1000.0,
        work,
    })
}
