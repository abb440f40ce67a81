//! Participants across real processes on the simulated machine: pcid (with
//! its participant socket), the test build of nvmed serving each
//! controller's disk interface (`NVMED_DISK_DIR`), the test file system
//! daemon `testfsd` holding dirty data for a disk, and shutdownd.
//!
//! * A file system with dirty data is flushed before its disk's Begin: its
//!   data is in the controller's backing file, its row comes first and
//!   `clean`, the disk's Begin comes after its outcome, an unrelated disk
//!   does not wait, and the critical path runs through both.
//! * Negative control: the same file system registered without its disk as
//!   a provider writes back after the disk began its own shutdown (it waits
//!   for that), gets `ESHUTDOWN`, and its data never reaches the file — so
//!   the positive test can fail, and the order is what makes the data safe.
//! * A participant that hangs is cut off at its deadline and the disks
//!   still shut down clean; one that died before shutdown is reported and
//!   holds nothing back; a cycle between participants is reported and
//!   breaks no shutdown.
//!
//! Needs the release binaries (`cargo build --release --workspace`).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shutdown_tests::nvme::disk_socket::{socket_path, DISK_DIR_ENV};
use shutdown_tests::participant::{dirty_pattern, Testfsd};
use shutdown_tests::sim::machine::{device_address, DeviceSpec, MachineSpec};
use shutdown_tests::sim::stack::{Binaries, Report, ShutdowndRun, Stack, StackOptions};

/// Deadline for any wait in these tests.
const WAIT: Duration = Duration::from_secs(60);
/// Where testfsd writes its dirty data (inside the 4 MiB namespaces).
const OFFSET: u64 = 1 << 20;
const DIRTY_KIB: usize = 64;
const NAMESPACE_BLOCKS: u64 = 8192;

struct Rig {
    dir: tempfile::TempDir,
    stack: Stack,
    disks: PathBuf,
}

impl Rig {
    fn start(devices: usize, latency_ms: u64) -> Self {
        let bins = Binaries::beside_current_exe().expect("locate binaries");
        bins.check()
            .unwrap_or_else(|e| panic!("{e} (the tests use the real binaries)"));
        let dir = tempfile::tempdir().expect("temp dir");
        let disks = dir.path().join("disks");
        let mut machine = MachineSpec::nvme(devices, latency_ms, Some(dir.path()));
        for d in &mut machine.devices {
            if let DeviceSpec::Nvme(n) = d {
                n.namespace_blocks = NAMESPACE_BLOCKS;
            }
        }
        let path = dir.path().join("machine.toml");
        machine.write(&path).expect("write machine");
        let opts = StackOptions {
            machine: path,
            work_dir: dir.path().to_path_buf(),
            ready_timeout: Duration::from_secs(30),
            env: vec![("RUST_LOG".into(), "warn".into())],
            driver_env: vec![(DISK_DIR_ENV.into(), disks.to_string_lossy().into_owned())],
            pcid_args: Vec::new(),
            inherit_stderr: false,
        };
        let stack = Stack::start(&bins, &opts).unwrap_or_else(|e| panic!("start pcid: {e}"));
        Self { dir, stack, disks }
    }

    fn disk(&self, device: usize) -> PathBuf {
        socket_path(&self.disks, &device_address(device))
    }

    /// Starts a testfsd named `name` on `device`'s disk with `extra` options.
    fn fs(&self, name: &str, device: usize, extra: &[&str]) -> Testfsd {
        let mut args: Vec<String> = vec![
            "--participants".into(),
            self.stack.participants().to_string_lossy().into_owned(),
            "--disk".into(),
            self.disk(device).to_string_lossy().into_owned(),
            "--name".into(),
            name.into(),
            "--dirty-kib".into(),
            DIRTY_KIB.to_string(),
            "--offset".into(),
            OFFSET.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.dir.path().join(format!("{name}.log"));
        Testfsd::start(&self.stack.binaries().path("testfsd"), &args, &log, WAIT)
            .unwrap_or_else(|e| panic!("{e}; pcid log: {:?}", self.stack.log()))
    }

    fn shutdown(&self) -> (ShutdowndRun, Report) {
        let json = self.dir.path().join("report.json");
        let run = self
            .stack
            .run_shutdownd(&["--deadline-ms", "20000"], &json, WAIT)
            .unwrap_or_else(|e| panic!("shutdownd: {e}"));
        let report = run
            .report
            .clone()
            .unwrap_or_else(|| panic!("no report: {}\n{}", run.stdout, run.stderr));
        (run, report)
    }

    fn image(&self, device: usize) -> PathBuf {
        self.dir.path().join(format!("nvme-{device:02}.img"))
    }

    fn explain(&self, run: &ShutdowndRun) -> String {
        format!(
            "shutdownd stdout:\n{}\nstderr:\n{}\npcid log: {:?}",
            run.stdout,
            run.stderr,
            self.stack.log()
        )
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    buf
}

fn row<'a>(report: &'a Report, label: &str) -> &'a shutdown_tests::sim::stack::DeviceReport {
    report
        .devices
        .iter()
        .find(|d| d.label() == label)
        .unwrap_or_else(|| panic!("{label} not in the report: {report:?}"))
}

#[test]
fn a_file_system_with_dirty_data_is_flushed_before_its_disk_begins() {
    let rig = Rig::start(2, 200);
    let disk0 = device_address(0);
    let fs = rig.fs("fs0", 0, &["--provider", &disk0, "--write-delay-ms", "50"]);
    let (run, report) = rig.shutdown();
    let why = rig.explain(&run);
    assert!(run.status.success(), "{why}");
    // The participant's row comes first, clean, and says what it did.
    let first = &report.devices[0];
    assert_eq!(
        (
            first.kind.as_str(),
            first.driver.as_str(),
            first.outcome.as_str()
        ),
        ("participant", "fs0", "clean"),
        "{why}"
    );
    assert!(first.detail.contains("synced"), "{}", first.detail);
    let fs_done = first.done_ms.expect("done");
    // Its disk began only after it was done; the other disk did not wait.
    let d0 = row(&report, &disk0);
    assert_eq!(d0.waits_for, vec!["participant fs0".to_string()]);
    assert!(d0.begin_sent_ms.unwrap() >= fs_done, "{why}");
    let d1 = row(&report, &device_address(1));
    assert!(d1.waits_for.is_empty());
    assert!(d1.begin_sent_ms.unwrap() < fs_done, "{why}");
    assert_eq!(report.count("clean"), 3, "{why}");
    assert_eq!(
        report.critical_path,
        vec!["participant fs0".to_string(), disk0.clone()],
        "{why}"
    );
    // The dirty data reached the controller's backing file.
    let expected = dirty_pattern("fs0", DIRTY_KIB * 1024);
    assert!(
        read_at(&rig.image(0), OFFSET, expected.len()) == expected,
        "the file system's data is not in the backing file"
    );
    let log = fs.log_lines();
    assert!(log.iter().all(|l| !l.contains("err=")), "{log:?}");
    assert!(log.iter().any(|l| l == "fsync ok"), "{log:?}");
    assert!(fs.wait(WAIT).is_some_and(|s| s.success()));
    // The table shows the order and the critical path.
    assert!(
        run.stdout
            .contains(&format!("order: {disk0} after participant fs0")),
        "{why}"
    );
    assert!(
        run.stdout
            .contains(&format!("critical path: participant fs0 -> {disk0}")),
        "{why}"
    );
}

#[test]
fn negative_control_without_the_order_the_disk_shuts_down_first_and_the_data_is_lost() {
    let rig = Rig::start(1, 200);
    // No provider: nothing orders the file system before its disk, and it
    // writes back only once the disk has begun its own shutdown.
    let fs = rig.fs("fs0", 0, &["--write-after-disk-shutdown"]);
    let (run, report) = rig.shutdown();
    let why = rig.explain(&run);
    assert_eq!(run.status.code(), Some(1), "a failed participant: {why}");
    let first = &report.devices[0];
    assert_eq!(first.kind, "participant");
    assert_eq!(first.outcome, "failed", "{why}");
    assert!(first.detail.contains("ESHUTDOWN"), "{}", first.detail);
    assert!(first.detail.contains("lost"), "{}", first.detail);
    assert_eq!(row(&report, &device_address(0)).outcome, "clean", "{why}");
    assert!(
        read_at(&rig.image(0), OFFSET, DIRTY_KIB * 1024)
            .iter()
            .all(|&b| b == 0),
        "data written after the disk's Begin must not be in the file"
    );
    let log = fs.log_lines();
    assert!(
        log.iter().any(|l| l.contains("err=errno 108")),
        "the disk refused with ESHUTDOWN: {log:?}"
    );
}

#[test]
fn a_participant_that_hangs_is_cut_off_at_its_deadline_and_the_disks_still_shut_down_clean() {
    let rig = Rig::start(2, 100);
    let _fs = rig.fs("stuck", 0, &["--provider", "all", "--hang", "finish"]);
    let (run, report) = rig.shutdown();
    let why = rig.explain(&run);
    assert_eq!(run.status.code(), Some(1), "{why}");
    let first = &report.devices[0];
    assert_eq!(
        (first.driver.as_str(), first.outcome.as_str()),
        ("stuck", "no-response"),
        "{why}"
    );
    assert!(first.detail.contains("FinishAck"), "{}", first.detail);
    // Cut off at its Finish deadline (plus shutdownd's grace), never later
    // than the report's deadline rules allow.
    let finish_deadline = first.finish_sent_ms.unwrap() + 1000.0 + 250.0;
    assert!(first.done_ms.unwrap() >= finish_deadline - 1.0, "{why}");
    assert!(report.kept_deadline().is_ok(), "{why}");
    for i in 0..2 {
        let d = row(&report, &device_address(i));
        assert_eq!(d.outcome, "clean", "{why}");
        assert!(d.begin_sent_ms.unwrap() >= first.done_ms.unwrap(), "{why}");
    }
}

#[test]
fn a_participant_that_died_before_shutdown_is_reported_and_holds_nothing_back() {
    let rig = Rig::start(1, 100);
    let fs = rig.fs("gone", 0, &["--provider", "all"]);
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(fs.pid() as i32).expect("pid"),
        rustix::process::Signal::KILL,
    );
    let status = fs.wait(WAIT);
    assert!(status.is_some_and(|s| !s.success()), "killed: {status:?}");
    let (run, report) = rig.shutdown();
    let why = rig.explain(&run);
    let first = &report.devices[0];
    assert_eq!(
        (first.driver.as_str(), first.outcome.as_str()),
        ("gone", "driver-died"),
        "{why}"
    );
    assert!(first.detail.contains("participant"), "{}", first.detail);
    assert_eq!(row(&report, &device_address(0)).outcome, "clean", "{why}");
}

#[test]
fn a_cycle_between_participants_is_reported_and_breaks_no_shutdown() {
    let rig = Rig::start(2, 100);
    let _a = rig.fs(
        "a",
        0,
        &[
            "--provider",
            "participant:b",
            "--provider",
            &device_address(0),
        ],
    );
    let _b = rig.fs(
        "b",
        1,
        &[
            "--provider",
            "participant:a",
            "--provider",
            &device_address(1),
        ],
    );
    let (run, report) = rig.shutdown();
    let why = rig.explain(&run);
    assert!(run.status.success(), "{why}");
    assert_eq!(
        report.cycles,
        vec![vec![
            "participant a".to_string(),
            "participant b".to_string(),
            "participant a".to_string()
        ]],
        "{why}"
    );
    assert!(run
        .stdout
        .contains("error: dependency cycle participant a -> participant b"));
    assert_eq!(report.count("clean"), 4, "{why}");
    // The edges out of the cycle are kept: each disk waits for its file system.
    for (name, device) in [("a", 0), ("b", 1)] {
        let disk = row(&report, &device_address(device));
        let fs = row(&report, &format!("participant {name}"));
        assert!(disk.begin_sent_ms.unwrap() >= fs.done_ms.unwrap(), "{why}");
    }
}

/// pcid's participant socket refuses a peer running under another uid, as
/// its control socket does: by the socket's 0600 mode, and with the mode
/// opened up by its own peer-uid check. Needs root to start that peer;
/// without root it fails saying so, unless `SHUTDOWN_TESTS_UNPRIVILEGED=1`
/// is set, in which case it prints that it was skipped.
#[test]
fn the_participant_endpoint_refuses_another_uid() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    if !rustix::process::geteuid().is_root() {
        let why = "not root: cannot start a participant under another uid";
        if std::env::var_os("SHUTDOWN_TESTS_UNPRIVILEGED").is_some_and(|v| v == "1") {
            eprintln!("SKIPPED the_participant_endpoint_refuses_another_uid: {why}");
            return;
        }
        panic!("{why}; run as root, or set SHUTDOWN_TESTS_UNPRIVILEGED=1 to skip this test");
    }
    const NOBODY: u32 = 65534;
    let rig = Rig::start(1, 100);
    let sock = rig.stack.participants().to_path_buf();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "participant socket mode {mode:o}");
    // Let nobody reach the binary and the disk, so that only pcid can refuse.
    let exe = rig.dir.path().join("testfsd");
    std::fs::copy(rig.stack.binaries().path("testfsd"), &exe).unwrap();
    let open = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    open(&exe, 0o755).unwrap();
    open(rig.dir.path(), 0o755).unwrap();
    open(&rig.disks, 0o755).unwrap();
    open(&rig.disk(0), 0o666).unwrap();
    let as_nobody = || {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("--participants")
            .arg(&sock)
            .arg("--disk")
            .arg(rig.disk(0))
            .arg("--name")
            .arg("intruder")
            .uid(NOBODY)
            .gid(NOBODY);
        shutdown_tests::sim::stack::run_captured(cmd, "testfsd as nobody", WAIT, None)
            .expect("run testfsd")
    };
    let run = as_nobody();
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("registering with pcid"),
        "{}",
        run.stderr
    );
    open(&sock, 0o666).unwrap();
    let run = as_nobody();
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("registering with pcid"),
        "{}",
        run.stderr
    );
    let log = std::fs::read_to_string(rig.stack.log().expect("pcid log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("participant endpoint: refused connection")
                && l.contains(&format!("uid {NOBODY}"))),
        "{log}"
    );
    // Nothing registered: the owner's shutdown lists no participant.
    let (run, report) = rig.shutdown();
    assert!(run.status.success(), "{}", rig.explain(&run));
    assert!(report.devices.iter().all(|d| d.kind != "participant"));
}
