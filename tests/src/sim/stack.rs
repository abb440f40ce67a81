//! Running the real binaries: pcid on a simulated machine, then shutdownd.
//!
//! Used by `simulate`, the process-level tests in `tests/tests/` and the
//! benchmark. Every wait has a deadline; pcid runs in its own process group so
//! that it and the drivers it spawned can be stopped together.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

/// Binaries the stack needs, all built by `cargo build --release --workspace`.
/// The NVMe controllers are driven by the test build of nvmed
/// ([`NVMED_TEST`]), run under the name `nvmed` (see [`driver_dir`]).
pub const STACK_BINARIES: [&str; 7] = [
    "pcid",
    NVMED_TEST,
    "shutdownd",
    "legacyd",
    "plaind",
    "faultyd",
    "testfsd",
];

/// The test build of the NVMe driver (`crate::nvme`): `nvmed` with the
/// simulated controller and the data checks.
pub const NVMED_TEST: &str = "nvmed-test";

/// Errors running the stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A binary is not where the build puts it.
    #[error("{0} not found; build the workspace first: cargo build --release --workspace")]
    Missing(PathBuf),
    /// The current executable's directory is unknown.
    #[error("cannot find the directory of the current executable: {0}")]
    NoExeDir(#[source] std::io::Error),
    /// A process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which process.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// pcid exited before it was ready.
    #[error("pcid exited before it was ready ({0})")]
    PcidExited(String),
    /// pcid was not ready in time.
    #[error("pcid was not ready within {0:?}")]
    NotReady(Duration),
    /// A process did not exit in time and was killed.
    #[error("{what} did not exit within {timeout:?} and was killed")]
    Timeout {
        /// Which process.
        what: String,
        /// The deadline.
        timeout: Duration,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON report does not have the documented shape.
    #[error("{path}: bad report: {source}")]
    BadReport {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Building the binaries failed.
    #[error("building the binaries failed: {0}")]
    Build(String),
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The directory cargo put the current executable in (`target/<profile>`;
    /// integration tests and benches live one level down in `deps/`).
    pub fn beside_current_exe() -> Result<Self, StackError> {
        let exe = std::env::current_exe().map_err(StackError::NoExeDir)?;
        let mut dir = exe
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| StackError::NoExeDir(std::io::Error::other("no parent directory")))?;
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        Ok(Self { dir })
    }

    /// Binaries in `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of binary `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Checks that every stack binary exists.
    pub fn check(&self) -> Result<(), StackError> {
        for name in STACK_BINARIES {
            let p = self.path(name);
            if !p.is_file() {
                return Err(StackError::Missing(p));
            }
        }
        Ok(())
    }

    /// Runs `cargo build` for every stack binary in the profile these binaries
    /// belong to (`release` when the directory is named so), using the cargo
    /// that launched us (`$CARGO`) or `cargo` from `PATH`. Cargo's output goes
    /// to standard error. A no-op build takes well under a second.
    pub fn build(&self) -> Result<(), StackError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"));
        if self.dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        for p in ["pcid", "shutdownd", "shutdown_tests"] {
            cmd.args(["-p", p]);
        }
        cmd.arg("--bins").stdout(Stdio::null());
        let status = cmd
            .status()
            .map_err(|e| StackError::Build(format!("cannot run cargo: {e}")))?;
        if !status.success() {
            return Err(StackError::Build(format!("cargo build {status}")));
        }
        self.check()
    }
}

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The repository's pcid match table directory, `initfs/lib/pcid.d`.
pub fn match_dir() -> PathBuf {
    repo_root().join("tests").join("pcid.d")
}

/// Creates `<work_dir>/drivers/` holding `nvmed`, a symbolic link to the test
/// build [`NVMED_TEST`], and returns it. Put first on pcid's `--driver-path`,
/// it makes pcid run the test build where the match table says `nvmed`:
/// neither pcid nor the shipped driver knows about tests.
pub fn driver_dir(bins: &Binaries, work_dir: &Path) -> Result<PathBuf, StackError> {
    let dir = work_dir.join("drivers");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StackError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let link = dir.join("nvmed");
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&link)(e)),
    }
    std::os::unix::fs::symlink(bins.path(NVMED_TEST), &link).map_err(io(&link))?;
    Ok(dir)
}

/// How to start the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Machine description file.
    pub machine: PathBuf,
    /// Where the control socket and logs go.
    pub work_dir: PathBuf,
    /// Deadline for pcid to report that every driver is settled.
    pub ready_timeout: Duration,
    /// Extra environment for pcid (e.g. `RUST_LOG`, which pcid passes on to
    /// its drivers; nothing else is passed on).
    pub env: Vec<(String, String)>,
    /// Extra environment for the drivers (pcid's `--driver-env`), e.g.
    /// `NVMED_WORKLOAD`.
    pub driver_env: Vec<(String, String)>,
    /// Extra pcid arguments (e.g. `--hello-timeout-ms 500`).
    pub pcid_args: Vec<String>,
    /// Let pcid's (and the drivers') standard error through instead of
    /// writing it to `pcid.log` in `work_dir`.
    pub inherit_stderr: bool,
}

/// A running pcid with its drivers.
#[derive(Debug)]
pub struct Stack {
    bins: Binaries,
    pcid: Option<Child>,
    control: PathBuf,
    participants: PathBuf,
    log: Option<PathBuf>,
    ready_after: Duration,
    ready_line: String,
    /// The thread draining pcid's standard output, and word of its end: it
    /// holds the pipe until pcid and its group are gone, so stopping waits
    /// for it and no fd of the stack outlives [`Stack::stop`].
    drainer: Option<(std::thread::JoinHandle<()>, mpsc::Receiver<()>)>,
}

impl Stack {
    /// Starts pcid on `opts.machine` and waits until it reports ready.
    pub fn start(bins: &Binaries, opts: &StackOptions) -> Result<Self, StackError> {
        bins.check()?;
        let control = opts.work_dir.join("pcid.sock");
        let participants = opts.work_dir.join("participants.sock");
        let drivers = driver_dir(bins, &opts.work_dir)?;
        let mut cmd = Command::new(bins.path("pcid"));
        cmd.args(["--bus", "sim", "--machine"])
            .arg(&opts.machine)
            .arg("--match-dir")
            .arg(match_dir())
            .arg("--driver-path")
            .arg(&drivers)
            .arg("--driver-path")
            .arg(bins.dir());
        for (k, v) in &opts.driver_env {
            cmd.arg("--driver-env").arg(format!("{k}={v}"));
        }
        cmd.arg("--control")
            .arg(&control)
            .arg("--participants")
            .arg(&participants)
            // pcid exits (stopping its drivers) when this process goes away.
            .arg("--exit-on-stdin-eof")
            .args(&opts.pcid_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0);
        let log = if opts.inherit_stderr {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let path = opts.work_dir.join("pcid.log");
            let file = std::fs::File::create(&path).map_err(|source| StackError::Io {
                path: path.clone(),
                source,
            })?;
            cmd.stderr(file);
            Some(path)
        };
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| StackError::Spawn {
            what: "pcid".into(),
            source,
        })?;
        let stdout = child.stdout.take();
        let mut stack = Self {
            bins: bins.clone(),
            pcid: Some(child),
            control,
            participants,
            log,
            ready_after: Duration::ZERO,
            ready_line: String::new(),
            drainer: None,
        };
        // pcid prints `pcid: ready: N drivers` on standard output once every
        // driver has sent Ready, exited, or passed its start deadline.
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            let (done_tx, done_rx) = mpsc::channel();
            let handle = std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                let first = lines.next();
                let _ = tx.send(first);
                // Keep draining so pcid never blocks on a full pipe.
                for _ in lines.by_ref() {}
                drop(lines);
                let _ = done_tx.send(());
            });
            stack.drainer = Some((handle, done_rx));
        }
        match rx.recv_timeout(opts.ready_timeout) {
            Ok(Some(Ok(line))) if line.starts_with("pcid: ready") => {
                stack.ready_after = started.elapsed();
                stack.ready_line = line;
                Ok(stack)
            }
            Ok(Some(Ok(line))) => Err(StackError::PcidExited(format!(
                "unexpected first line on pcid's standard output: {line:?}"
            ))),
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = stack.wait_pcid(Duration::from_secs(2));
                Err(StackError::PcidExited(format!(
                    "{}{}",
                    status.map_or_else(|| "still running".to_string(), |s| s.to_string()),
                    stack.log_hint()
                )))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StackError::NotReady(opts.ready_timeout)),
        }
    }

    /// pcid's process id, while it runs.
    pub fn pcid_pid(&self) -> Option<u32> {
        self.pcid.as_ref().map(Child::id)
    }

    /// pcid's control socket.
    pub fn control(&self) -> &Path {
        &self.control
    }

    /// pcid's participant socket (PROTOCOL.md §14).
    pub fn participants(&self) -> &Path {
        &self.participants
    }

    /// The directory of the stack's binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// Time from starting pcid to its readiness line.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// pcid's readiness line.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// pcid's log file, when standard error was not inherited.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    fn log_hint(&self) -> String {
        self.log
            .as_ref()
            .map(|p| format!("; see {}", p.display()))
            .unwrap_or_default()
    }

    /// A `shutdownd --control <socket>` command (standard streams untouched).
    pub fn shutdownd_command(&self) -> Command {
        let mut cmd = Command::new(self.bins.path("shutdownd"));
        cmd.arg("--control").arg(&self.control);
        cmd
    }

    /// Runs shutdownd with `args` plus `--json <json>`, capturing its output,
    /// killing it if it runs longer than `timeout`.
    pub fn run_shutdownd(
        &self,
        args: &[&str],
        json: &Path,
        timeout: Duration,
    ) -> Result<ShutdowndRun, StackError> {
        let mut cmd = self.shutdownd_command();
        cmd.args(args).arg("--json").arg(json);
        run_captured(cmd, "shutdownd", timeout, Some(json))
    }

    fn wait_pcid(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.pcid.as_mut()?;
        wait_deadline(child, timeout)
    }

    /// Stops pcid: closes its standard input (pcid then stops its drivers and
    /// exits), sends SIGTERM if it is still running after `grace`, and finally
    /// SIGKILLs its process group so that no driver outlives the stack.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, StackError> {
        self.stop_inner(grace)
    }

    fn stop_inner(&mut self, grace: Duration) -> Result<ExitStatus, StackError> {
        let Some(mut child) = self.pcid.take() else {
            return Err(StackError::PcidExited("already stopped".into()));
        };
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        drop(child.stdin.take());
        let mut status = wait_deadline(&mut child, grace);
        if status.is_none() {
            if let Some(pid) = pid {
                let _ = kill_process(pid, Signal::TERM);
            }
            status = wait_deadline(&mut child, grace);
        }
        // Whatever pcid did, nothing of its group may outlive the stack.
        if let Some(pid) = pid {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        // With pcid and its group gone the drainer reads end-of-file and
        // closes the pipe; one still reading after `grace` is left running.
        if let Some((handle, done)) = self.drainer.take() {
            match done.recv_timeout(grace) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = handle.join();
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        match status {
            Some(s) => Ok(s),
            None => {
                let _ = child.wait();
                Err(StackError::Timeout {
                    what: "pcid".into(),
                    timeout: grace * 2,
                })
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.pcid.is_some() {
            let _ = self.stop_inner(Duration::from_secs(2));
        }
    }
}

/// Waits for `child` at most `timeout`; `None` if it is still running.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        std::thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The result of one shutdownd run.
#[derive(Debug)]
pub struct ShutdowndRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (progress and table).
    pub stdout: String,
    /// Standard error (logs, error line).
    pub stderr: String,
    /// Wall time from spawn to exit, measured outside the process.
    pub wall: Duration,
    /// The JSON report, when one was written.
    pub report: Option<Report>,
}

/// Runs `cmd` with captured output, killing it after `timeout`; parses the
/// JSON report at `json` if the file exists afterwards.
pub fn run_captured(
    mut cmd: Command,
    what: &str,
    timeout: Duration,
    json: Option<&Path>,
) -> Result<ShutdowndRun, StackError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| StackError::Spawn {
        what: what.to_string(),
        source,
    })?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let status = match wait_deadline(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StackError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
    };
    let wall = start.elapsed();
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let stdout = join(out);
    let stderr = join(err);
    let report = match json {
        Some(p) if p.exists() => Some(load_report(p)?),
        _ => None,
    };
    Ok(ShutdowndRun {
        status,
        stdout,
        stderr,
        wall,
        report,
    })
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// shutdownd's JSON report, read with shutdownd's own type (the schema is
/// defined once, in shutdownd's `report` module; its tests check the field
/// names against the documented form).
pub use shutdownd::{DeviceReport, Report};

/// Reads and parses a report file.
pub fn load_report(path: &Path) -> Result<Report, StackError> {
    let text = std::fs::read_to_string(path).map_err(|source| StackError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Report::from_json(&text).map_err(|source| StackError::BadReport {
        path: path.to_path_buf(),
        source,
    })
}
