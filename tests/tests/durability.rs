//! Data durability across real processes: simulated NVMe controllers with
//! volatile write caches, each nvmed (the test build, `nvmed-test`) running
//! its write workload (`NVMED_WORKLOAD`, given through pcid's `--driver-env`;
//! see `shutdown_tests::nvme::workload`) while shutdownd shuts the machine
//! down.
//!
//! * Positive: after a two-phase shutdown, every write nvmed acknowledged is
//!   in the controller's backing file, block by block; writes attempted after
//!   Begin were refused with the driver's "shutting down" error (logged, never
//!   silently dropped) and none of them reached the file; no write submitted
//!   after the first phase completed was acknowledged.
//! * Negative control: the same workload, then every nvmed is killed with
//!   SIGKILL — a power cut for the controller model living inside it, whose
//!   volatile cache is lost — and the same check finds the acknowledged
//!   writes missing. So the positive check can fail.
//!
//! The workload never flushes, so only the shutdown makes its data durable.
//! The block format and the log format are re-implemented here from their
//! documentation (`tests/src/nvme/workload.rs`) rather than shared, so the test
//! checks the documented formats.
//!
//! Needs the release binaries (`cargo build --release --workspace`).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use shutdown_tests::sim::machine::{device_address, DeviceSpec, MachineSpec};
use shutdown_tests::sim::stack::{Binaries, Stack, StackOptions};

const DEVICES: usize = 4;
/// Namespace size: large enough that the workload (8 blocks per ms) never
/// fills it while a test runs.
const NAMESPACE_BLOCKS: u64 = 1 << 20;
const BLOCK: usize = 512;
/// Acknowledged writes each device must have logged before shutdown starts.
const MIN_ACKS: usize = 200;
/// Deadline for any wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

const MAGIC: &[u8; 8] = b"NVMEDWL1";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a block of the backing file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Empty,
    Written { lba: u64, generation: u64 },
    Other,
}

fn inspect(b: &[u8]) -> Content {
    if b.iter().all(|&x| x == 0) {
        return Content::Empty;
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let end = b.len() - 8;
    if &b[..8] != MAGIC || fnv1a(&b[..end]) != word(end) {
        return Content::Other;
    }
    Content::Written {
        lba: word(8),
        generation: word(16),
    }
}

#[derive(Debug, Clone)]
struct Write {
    generation: u64,
    lba: u64,
    blocks: u64,
    submitted_us: u64,
}

/// A workload log, parsed.
#[derive(Debug, Default)]
struct WorkloadLog {
    pid: i32,
    block_size: usize,
    /// (write, acknowledged_us, index of the line).
    acks: Vec<(Write, u64, usize)>,
    /// (write, line index, error text).
    refused: Vec<(Write, usize, String)>,
    errors: Vec<String>,
    begin: Option<(u64, usize)>,
    begun: Option<(u64, String)>,
    stop: Option<String>,
}

fn parse_log(path: &Path) -> WorkloadLog {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read workload log {}: {e}", path.display()));
    let mut log = WorkloadLog::default();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        // A process killed mid-write may leave its last line cut short.
        let complete = i + 1 < lines.len() || text.ends_with('\n');
        if !complete {
            break;
        }
        let f: Vec<&str> = line.split(' ').collect();
        let num = |k: usize| -> u64 {
            f.get(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{}: line {}: {line:?}", path.display(), i + 1))
        };
        let write = || Write {
            generation: num(1),
            lba: num(2),
            blocks: num(3),
            submitted_us: num(4),
        };
        match f[0] {
            "nvmed-workload" => {
                assert_eq!(f.get(1), Some(&"v1"), "{line}");
                for kv in &f[2..] {
                    match kv.split_once('=') {
                        Some(("pid", v)) => log.pid = v.parse().expect("pid"),
                        Some(("block_size", v)) => log.block_size = v.parse().expect("bs"),
                        _ => {}
                    }
                }
            }
            "ack" => log.acks.push((write(), num(5), i)),
            "refused" => log.refused.push((write(), i, f[5..].join(" "))),
            "error" => log.errors.push(line.to_string()),
            "begin" => log.begin = Some((num(1), i)),
            "begun" => log.begun = Some((num(1), f[2..].join(" "))),
            "stop" => log.stop = Some(f[2..].join(" ")),
            other => panic!("{}: unknown event {other:?}", path.display()),
        }
    }
    assert!(log.pid > 0, "{}: no header", path.display());
    assert_eq!(log.block_size, BLOCK);
    log
}

/// Acknowledged writes whose blocks are not in `image` (each block must carry
/// its own LBA and the write's generation).
fn missing_acks(log: &WorkloadLog, image: &Path) -> Vec<(u64, u64, Content)> {
    let file = std::fs::File::open(image)
        .unwrap_or_else(|e| panic!("open backing file {}: {e}", image.display()));
    let mut missing = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    for (w, _, _) in &log.acks {
        for lba in w.lba..w.lba + w.blocks {
            file.read_exact_at(&mut buf, lba * BLOCK as u64)
                .unwrap_or_else(|e| panic!("read block {lba}: {e}"));
            let c = inspect(&buf);
            if c != (Content::Written {
                lba,
                generation: w.generation,
            }) {
                missing.push((w.generation, lba, c));
                break;
            }
        }
    }
    missing
}

struct Rig {
    dir: tempfile::TempDir,
    logs: PathBuf,
    stack: Stack,
}

impl Rig {
    fn start() -> Self {
        let bins = Binaries::beside_current_exe().expect("locate binaries");
        bins.check()
            .unwrap_or_else(|e| panic!("{e} (the tests use the real binaries)"));
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().join("workload");
        std::fs::create_dir(&logs).expect("log dir");
        let mut machine = MachineSpec::nvme(DEVICES, 300, Some(dir.path()));
        for d in &mut machine.devices {
            if let DeviceSpec::Nvme(n) = d {
                assert!(n.volatile_write_cache);
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
            driver_env: vec![("NVMED_WORKLOAD".into(), logs.to_string_lossy().into_owned())],
            pcid_args: Vec::new(),
            inherit_stderr: false,
        };
        let stack = Stack::start(&bins, &opts).unwrap_or_else(|e| panic!("start pcid: {e}"));
        Self { dir, logs, stack }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.logs.join(format!("{}.log", device_address(i)))
    }

    fn image(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("nvme-{i:02}.img"))
    }

    fn pcid_log(&self) -> String {
        let log = self
            .stack
            .log()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits (bounded) until every device's log holds `MIN_ACKS` acks.
    fn wait_for_acks(&self) {
        let end = Instant::now() + WAIT;
        let mut pause = Duration::from_millis(5);
        for i in 0..DEVICES {
            let path = self.log_path(i);
            loop {
                let acks = std::fs::read_to_string(&path)
                    .map(|t| t.lines().filter(|l| l.starts_with("ack ")).count())
                    .unwrap_or(0);
                if acks >= MIN_ACKS {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "device {i}: only {acks} acknowledged writes after {WAIT:?}\n{}",
                    self.pcid_log()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

fn wait_gone(pid: i32) {
    let end = Instant::now() + WAIT;
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    loop {
        // Gone, or a zombie waiting for pcid to reap it: either way its
        // memory (and the controller model's cache) no longer exists.
        match std::fs::read_to_string(&stat) {
            Err(_) => return,
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return
            }
            Ok(_) => {}
        }
        assert!(
            Instant::now() < end,
            "nvmed {pid} still alive after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn acknowledged_writes_survive_shutdown_and_writes_after_begin_are_refused() {
    let rig = Rig::start();
    rig.wait_for_acks();
    let json = rig.dir.path().join("report.json");
    let run = rig
        .stack
        .run_shutdownd(&[], &json, WAIT)
        .unwrap_or_else(|e| panic!("run shutdownd: {e}"));
    let report = run.report.clone().expect("JSON report");
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}\n{}",
        run.stdout,
        run.stderr,
        rig.pcid_log()
    );
    assert!(report.devices.iter().all(|d| d.outcome == "clean"));

    let logs: Vec<PathBuf> = (0..DEVICES).map(|i| rig.log_path(i)).collect();
    let images: Vec<PathBuf> = (0..DEVICES).map(|i| rig.image(i)).collect();
    let Rig { dir, stack, .. } = rig;
    let status = stack.stop(Duration::from_secs(5)).expect("stop pcid");
    assert!(status.success(), "pcid: {status}");

    let (mut acked, mut before_begin, mut refused) = (0, 0, 0);
    for i in 0..DEVICES {
        let (path, image) = (&logs[i], &images[i]);
        let log = parse_log(path);
        let what = format!("device {i} ({})", path.display());
        assert!(log.errors.is_empty(), "{what}: {:?}", log.errors);
        let (begin_us, begin_line) = log.begin.unwrap_or_else(|| panic!("{what}: no begin"));
        let (begun_us, begun) = log
            .begun
            .clone()
            .unwrap_or_else(|| panic!("{what}: no begun"));
        assert_eq!(begun, "ok", "{what}");
        assert!(begin_us <= begun_us);
        assert!(log.stop.is_some(), "{what}: the workload did not stop");

        // Writes acknowledged before Begin (by log order): the workload ran.
        let early = log.acks.iter().filter(|(_, _, l)| *l < begin_line).count();
        assert!(early >= MIN_ACKS, "{what}: {early} acks before Begin");
        // No write submitted after the first phase completed was acknowledged.
        for (w, acked_us, _) in &log.acks {
            assert!(
                w.submitted_us <= begun_us,
                "{what}: write {} submitted at {} us, after Begin completed at {begun_us} us, \
                 was acknowledged at {acked_us} us",
                w.generation,
                w.submitted_us
            );
        }
        // Writes after Begin were refused with the driver's error, after Begin.
        assert!(!log.refused.is_empty(), "{what}: no write was refused");
        // (A refused write's submission stamp may precede `begin`: it is
        // taken just before the call that found shutdown under way.)
        for (_, line, err) in &log.refused {
            assert!(*line > begin_line, "{what}: refusal before Begin");
            assert!(err.contains("shutting down"), "{what}: {err}");
        }
        // Every acknowledged write is in the backing file...
        let missing = missing_acks(&log, image);
        assert!(
            missing.is_empty(),
            "{what}: {} of {} acknowledged writes missing from the backing file, first: {:?}",
            missing.len(),
            log.acks.len(),
            missing.first()
        );
        // ...and no refused write is.
        let image = std::fs::File::open(image).expect("image");
        let mut buf = vec![0u8; BLOCK];
        for (w, _, _) in &log.refused {
            image
                .read_exact_at(&mut buf, w.lba * BLOCK as u64)
                .expect("read");
            assert_eq!(
                inspect(&buf),
                Content::Empty,
                "{what}: refused write {} reached the medium",
                w.generation
            );
        }
        acked += log.acks.len();
        before_begin += early;
        refused += log.refused.len();
    }
    drop(dir);
    eprintln!(
        "durability: {DEVICES} devices, {acked} acknowledged writes ({before_begin} before Begin), \
         all in the backing files; {refused} writes refused after Begin"
    );
}

#[test]
fn negative_control_killing_nvmed_without_shutdown_loses_acknowledged_writes() {
    let rig = Rig::start();
    rig.wait_for_acks();
    let mut pids = Vec::new();
    for i in 0..DEVICES {
        let log = parse_log(&rig.log_path(i));
        let pid = Pid::from_raw(log.pid).expect("pid");
        kill_process(pid, Signal::KILL).expect("SIGKILL nvmed");
        pids.push(log.pid);
    }
    for pid in pids {
        wait_gone(pid);
    }
    let mut lost = 0;
    let mut acked = 0;
    for i in 0..DEVICES {
        let log = parse_log(&rig.log_path(i));
        assert!(log.begin.is_none(), "no shutdown was started");
        assert!(log.acks.len() >= MIN_ACKS);
        let missing = missing_acks(&log, &rig.image(i));
        // The very check the positive test relies on fails here: without a
        // shutdown (or Flush) the cached data never reached the medium.
        assert!(
            !missing.is_empty(),
            "device {i}: all {} acknowledged writes survived a power cut without shutdown; \
             the durability test could not tell",
            log.acks.len()
        );
        assert!(missing.iter().all(|(_, _, c)| *c == Content::Empty));
        lost += missing.len();
        acked += log.acks.len();
    }
    eprintln!(
        "durability negative control: {lost} of {acked} acknowledged writes lost after SIGKILL \
         of {DEVICES} nvmed processes"
    );
    let Rig { dir, stack, .. } = rig;
    let _ = stack.stop(Duration::from_secs(5));
    drop(dir);
}
