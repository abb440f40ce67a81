//! Harness for process-level tests: runs the real `pcid` binary on a small
//! simulated machine whose drivers are `pcid-test-driver` in chosen modes, and
//! talks to its control socket. Every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::ControlMessage;
use pcid_interface::transport::{ControlChannel, ControlClient};
use shutdown_tests::sim::machine::{FunctionEntry, MachineFile};
use shutdown_tests::sim::models::{write_model, TestDriverModel};
use shutdown_tests::sim::stack::Binaries;

pub const TEST_DRIVER: &str = env!("CARGO_BIN_EXE_pcid-test-driver");

/// The `pcid` binary (another package's: beside this crate's binaries,
/// built by `cargo build --workspace` / `cargo test --workspace`).
pub fn pcid_exe() -> PathBuf {
    let p = Binaries::beside_current_exe()
        .expect("locate binaries")
        .path("pcid");
    assert!(
        p.is_file(),
        "{} missing: build the workspace first",
        p.display()
    );
    p
}

/// Generous bound for anything to happen; never reached when things work.
pub const WAIT: Duration = Duration::from_secs(20);

/// Vendor id of the test functions; the device id selects the driver mode.
pub const TEST_VENDOR: u16 = 0xfff0;

/// Every mode of `pcid-test-driver`, in device-id order (device id = 0x100 + index).
pub const MODES: &[&str] = &[
    "two-phase",
    "one-phase",
    "none",
    "no-hello",
    "exit-before-ready",
    "ignore-begin",
    "ignore-finish",
    "exit-in-begin",
    "exit-in-finish",
    "garbage",
    "truncated",
    "oversize",
    "bad-version",
    "unknown-type",
    "wrong-seq",
    "duplicate-ack",
    "out-of-phase-ack",
    "borrow-seq",
    "second-hello",
    "chatty",
    "show-env",
];

pub fn device_id(mode: &str) -> u16 {
    let i = MODES
        .iter()
        .position(|m| *m == mode)
        .unwrap_or_else(|| panic!("unknown mode {mode}"));
    0x100 + i as u16
}

/// One `[[drivers]]` entry of a match table (Redox's `pcid.d` format).
#[derive(serde::Serialize)]
pub struct DriverEntry {
    pub name: String,
    pub vendor: u16,
    pub device: u16,
    pub command: Vec<String>,
}

/// A match table of `drivers`, as TOML written by `toml`.
pub fn match_table_text(drivers: Vec<DriverEntry>) -> String {
    #[derive(serde::Serialize)]
    struct Table {
        drivers: Vec<DriverEntry>,
    }
    toml::to_string(&Table { drivers }).expect("match table as TOML")
}

/// Match table mapping each test device id to `pcid-test-driver MODE`.
pub fn match_table() -> String {
    match_table_text(
        MODES
            .iter()
            .map(|m| DriverEntry {
                name: format!("test {m}"),
                vendor: TEST_VENDOR,
                device: device_id(m),
                command: vec!["pcid-test-driver".into(), m.to_string()],
            })
            .collect(),
    )
}

/// One function of a test machine.
pub struct Func {
    pub address: String,
    pub mode: &'static str,
    pub model: Option<TestDriverModel>,
}

pub fn f(address: &str, mode: &'static str) -> Func {
    Func {
        address: address.into(),
        mode,
        model: None,
    }
}

/// A function whose driver gets `model` as its device model.
pub fn f_model(address: &str, mode: &'static str, model: TestDriverModel) -> Func {
    Func {
        address: address.into(),
        mode,
        model: Some(model),
    }
}

/// A function of the test vendor with device id `device`, without a model.
pub fn entry(address: &str, device: u16) -> FunctionEntry {
    FunctionEntry {
        address: address.into(),
        vendor: TEST_VENDOR,
        device,
        class: 0xff,
        subclass: 0,
        interface: 0,
        parent: None,
        model: None,
    }
}

/// The machine description of `functions` (TOML written by `toml`) and
/// their device models, by file name relative to the machine file.
pub fn machine(functions: &[Func]) -> (String, Vec<(PathBuf, TestDriverModel)>) {
    let mut models = Vec::new();
    let function = functions
        .iter()
        .map(|f| {
            let mut e = entry(&f.address, device_id(f.mode));
            if let Some(m) = &f.model {
                let rel = PathBuf::from(format!("models/{}.toml", f.address.replace(':', "-")));
                models.push((rel.clone(), m.clone()));
                e.model = Some(rel);
            }
            e
        })
        .collect();
    (machine_text(function), models)
}

/// A machine description of `function` as TOML.
pub fn machine_text(function: Vec<FunctionEntry>) -> String {
    toml::to_string(&MachineFile {
        name: "pcid process test".into(),
        function,
    })
    .expect("machine as TOML")
}

/// 1-based line of `text` on which `needle` first occurs.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"))
        + 1
}

pub fn addr(s: &str) -> PciAddress {
    s.parse().expect("test address")
}

/// Lines a child writes on a pipe, collected by a thread.
pub struct Lines {
    all: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(r: impl std::io::Read + Send + 'static, echo: bool) -> Self {
        let all = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let all2 = Arc::clone(&all);
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("  | {line}");
                }
                all2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self { all, rx }
    }

    /// Wait for a line containing `needle` (seen before or arriving within `WAIT`).
    pub fn wait_for(&self, needle: &str) -> String {
        if let Some(l) = self.all.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?} within {WAIT:?}; got:\n{}",
                    self.text()
                ),
            }
        }
    }

    pub fn text(&self) -> String {
        self.all.lock().unwrap().join("\n")
    }
}

/// A running pcid.
pub struct Pcid {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub control: PathBuf,
    pub stdout: Lines,
    pub stderr: Lines,
    pub ready_line: String,
}

pub struct Setup {
    pub machine: String,
    /// Device model files to write, relative to the machine file.
    pub models: Vec<(PathBuf, TestDriverModel)>,
    pub table: String,
    pub args: Vec<String>,
    /// Extra environment of pcid.
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub fn new(functions: &[Func]) -> Self {
        let (machine, models) = machine(functions);
        Self {
            machine,
            models,
            table: match_table(),
            args: vec!["--hello-timeout-ms".into(), "3000".into()],
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// Directory holding the test driver, for `--driver-path`.
pub fn driver_dir() -> PathBuf {
    Path::new(TEST_DRIVER)
        .parent()
        .expect("test driver directory")
        .to_path_buf()
}

pub fn pcid_command(dir: &Path, args: &[String]) -> Command {
    let machine = dir.join("machine.toml");
    let bus = [
        "--bus".into(),
        "sim".into(),
        "--machine".into(),
        machine.display().to_string(),
    ];
    pcid_command_on(&bus, dir, args)
}

/// pcid with the given bus arguments, match tables and control socket in `dir`.
pub fn pcid_command_on(bus: &[String], dir: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(pcid_exe());
    cmd.args(bus)
        .arg("--match-dir")
        .arg(dir.join("pcid.d"))
        .arg("--driver-path")
        .arg(driver_dir())
        .arg("--control")
        .arg(dir.join("pcid.sock"))
        .arg("-vv")
        .args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub fn write_setup(dir: &Path, setup: &Setup) {
    std::fs::create_dir_all(dir.join("pcid.d")).unwrap();
    std::fs::write(dir.join("machine.toml"), &setup.machine).unwrap();
    for (rel, model) in &setup.models {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_model(&path, model).unwrap();
    }
    std::fs::write(dir.join("pcid.d").join("test.toml"), &setup.table).unwrap();
}

impl Pcid {
    /// Start pcid and wait for its readiness line.
    pub fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_setup(dir.path(), &setup);
        let mut child = pcid_command(dir.path(), &setup.args)
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("spawn pcid");
        let stdout = Lines::spawn(child.stdout.take().unwrap(), false);
        let stderr = Lines::spawn(child.stderr.take().unwrap(), true);
        let mut p = Self {
            child: Some(child),
            control: dir.path().join("pcid.sock"),
            dir,
            stdout,
            stderr,
            ready_line: String::new(),
        };
        p.ready_line = p.stdout.wait_for("pcid: ready:");
        p
    }

    pub fn connect(&self) -> Client {
        Client {
            ch: ControlClient::connect(&self.control).expect("connect to pcid"),
            next_id: 1,
            backlog: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send a signal to pcid.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Wait for pcid to exit, at most `WAIT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("pcid running");
        wait_child(&mut child, WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pcid did not exit within {WAIT:?}")
        })
    }
}

/// Wait for a child with a deadline (a thread blocks in `wait`).
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let pid = rustix::process::Pid::from_raw(child.id() as i32)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // waitid with WNOWAIT leaves the child for `Child::wait` to reap.
        let r = rustix::process::waitid(
            rustix::process::WaitId::Pid(pid),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
        );
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(timeout) {
        Ok(_) => child.wait().ok(),
        Err(_) => None,
    }
}

impl Drop for Pcid {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            if wait_child(&mut child, WAIT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::test_kill_process(p).is_ok(),
        None => false,
    }
}

/// A control connection.
pub struct Client {
    pub ch: ControlChannel,
    next_id: u32,
    backlog: Vec<ControlMessage>,
}

impl From<ControlChannel> for Client {
    fn from(ch: ControlChannel) -> Self {
        Self {
            ch,
            next_id: 1,
            backlog: Vec::new(),
        }
    }
}

impl Client {
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn send(&mut self, m: &ControlMessage) {
        self.ch.send(m).expect("send to pcid");
    }

    /// Next message, at most `WAIT`.
    pub fn recv(&mut self) -> ControlMessage {
        if !self.backlog.is_empty() {
            return self.backlog.remove(0);
        }
        self.ch.recv(Some(WAIT)).expect("message from pcid")
    }

    /// Wait for the message `pred` accepts; others are kept for later.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&ControlMessage) -> bool) -> ControlMessage {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ch.recv(Some(left)) {
                Ok(m) if pred(&m) => return m,
                Ok(m) => self.backlog.push(m),
                Err(e) => panic!(
                    "waiting for {what}: {e}; received so far: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// The reply to request `id` (any message carrying that id).
    pub fn reply(&mut self, id: u32) -> ControlMessage {
        self.expect(&format!("reply to request {id}"), |m| {
            reply_id(m) == Some(id)
        })
    }

    pub fn list(&mut self) -> Vec<pcid_interface::protocol::DeviceInfo> {
        let id = self.id();
        self.send(&ControlMessage::ListDevices { id });
        match self.reply(id) {
            ControlMessage::Devices { devices, .. } => devices,
            other => panic!("expected Devices, got {other:?}"),
        }
    }

    pub fn backlog(&self) -> &[ControlMessage] {
        &self.backlog
    }
}

pub fn reply_id(m: &ControlMessage) -> Option<u32> {
    match m {
        ControlMessage::Devices { id, .. }
        | ControlMessage::BeginAck { id, .. }
        | ControlMessage::FinishAck { id, .. }
        | ControlMessage::DeviceError { id, .. }
        | ControlMessage::Error { id, .. } => Some(*id),
        _ => None,
    }
}

/// Compiles the C driver written from PROTOCOL.md alone
/// (`pcid/interface/tests/c_driver.c`) into `dir`.
pub fn compile_c_driver(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcid/interface/tests/c_driver.c");
    let out = dir.join("c-driver");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Werror",
            "-O1",
        ])
        .arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcid/interface/include"))
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} (set CC): {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    out
}
