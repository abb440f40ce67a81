//! `soak`: load and leak check — many simulated devices through consecutive
//! start → shutdown → exit cycles of the real stack.
//!
//! ```text
//! cargo run --release --bin soak -- [--devices N] [--cycles N] [--latency-ms MS]
//!     [--json FILE] [--no-build]
//! ```
//!
//! Defaults: 256 NVMe controllers (in-memory namespaces, volatile write
//! cache), 20 cycles, 100 ms shutdown latency. Each cycle starts pcid on the
//! machine (pcid spawns one nvmed per controller), waits for its readiness
//! line, runs shutdownd, then closes pcid's standard input so that it exits.
//!
//! Measured per cycle, from `/proc`:
//!
//! * pcid's open fds once every driver is ready and again after every driver
//!   has exited (by kind: sockets, pipes, ...); the second figure may not
//!   exceed the first, and both must be the same in every cycle;
//! * peak RSS (`VmHWM`) of pcid (read just before it is told to exit), of
//!   every nvmed (sampled until each exits; the maximum and mean over the
//!   devices are reported), and of shutdownd (exact: `getrusage` of a
//!   small wrapper process that is shutdownd's only parent);
//! * processes: nvmed processes that are pcid's children (must equal the
//!   number of devices while ready, and 0 after shutdown, zombies included),
//!   processes of the stack's binaries still present after the cycle, this
//!   process's own children and fds, and (for information, as other users
//!   share the machine) the number of processes on the system.
//!
//! Exits 1 when a leak is found: a stack process or zombie survives a cycle,
//! a device is not `clean`, pcid's fds grow during shutdown or differ
//! between cycles, this process's fds or children change,
//! or a peak RSS in the last cycle exceeds the first cycle's by more than
//! 20 % + 2 MiB. Exits 2 on a usage or start-up error.
//!
//! `--inject-leak fd|process` makes the launcher itself leak one fd, or one
//! unreaped `nvmed` child, per cycle — to show that the checks catch it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shutdown_tests::sim::machine::MachineSpec;
use shutdown_tests::sim::stack::{
    load_report, wait_deadline, Binaries, Stack, StackOptions, NVMED_TEST, STACK_BINARIES,
};

const USAGE: &str =
    "usage: soak [--devices N] [--cycles N] [--latency-ms MS] [--json FILE] [--no-build] \
[--inject-leak fd|process] [-h|--help] [-V|--version]";
/// Hidden mode: `soak --measure-child OUT -- PROGRAM ARGS...`.
const MEASURE: &str = "--measure-child";

struct Args {
    devices: usize,
    cycles: usize,
    latency_ms: u64,
    json: Option<PathBuf>,
    build: bool,
    inject: Option<Leak>,
}

/// A leak the launcher commits on purpose (`--inject-leak`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leak {
    Fd,
    Process,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    use shutdown_tests::cli::{number, path, string, unexpected};
    let mut a = Args {
        devices: 256,
        cycles: 20,
        latency_ms: 100,
        json: None,
        build: true,
        inject: None,
    };
    let mut p = shutdown_tests::cli::lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("soak"));
                std::process::exit(0);
            }
            Long("devices") => a.devices = number(&mut p, "--devices")?,
            Long("cycles") => a.cycles = number(&mut p, "--cycles")?,
            Long("latency-ms") => a.latency_ms = number(&mut p, "--latency-ms")?,
            Long("json") => a.json = Some(path(&mut p)?),
            Long("no-build") => a.build = false,
            Long("inject-leak") => {
                a.inject = match string(&mut p, "--inject-leak")?.as_str() {
                    "fd" => Some(Leak::Fd),
                    "process" => Some(Leak::Process),
                    _ => return Err("--inject-leak needs fd or process".into()),
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    if a.devices == 0 || a.devices > MachineSpec::MAX_DEVICES {
        return Err(format!(
            "--devices must be between 1 and {}",
            MachineSpec::MAX_DEVICES
        ));
    }
    if a.cycles == 0 {
        return Err("--cycles must be at least 1".into());
    }
    Ok(Some(a))
}

// ---- /proc ----------------------------------------------------------------

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some(Proc { pid, ppid, state })
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn all_procs() -> Vec<Proc> {
    all_pids().into_iter().filter_map(read_proc).collect()
}

fn children_of(pid: u32) -> Vec<Proc> {
    all_procs().into_iter().filter(|p| p.ppid == pid).collect()
}

/// The executable of `pid` (not readable for zombies).
fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn fd_count(pid: &str) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Open fds of `pid` by kind (`socket`, `pipe`, `anon_inode`, or `file`).
fn fd_kinds(pid: u32) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for e in dir.flatten() {
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        let kind = match t.split_once(':') {
            Some((k, _)) if !t.starts_with('/') => k.to_string(),
            _ => "file".to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmHWM`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Environment variable marking every process this run starts (its value
/// is this process's id), so that concurrent runs do not see each other's.
const MARK: &str = "SOAK_RUN";

fn mark() -> String {
    std::process::id().to_string()
}

/// Processes (live, not zombies) whose executable is one of the stack's
/// binaries in `dir` and that carry this run's [`MARK`] — wherever they were
/// reparented to.
fn stack_processes(dir: &Path) -> Vec<(u32, PathBuf)> {
    let names = STACK_BINARIES;
    let marker = format!("{MARK}={}", mark());
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let exe = exe_of(pid)?;
            let ours = exe.parent() == Some(dir)
                && exe
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| names.contains(&n));
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let marked = environ.split(|&b| b == 0).any(|v| v == marker.as_bytes());
            (ours && marked).then_some((pid, exe))
        })
        .collect()
}

// ---- measuring shutdownd ----------------------------------------------------

/// `soak --measure-child OUT -- PROGRAM ARGS...`: runs PROGRAM, waits for it,
/// writes the peak RSS of its children (only PROGRAM) in KiB to OUT, and exits
/// with PROGRAM's exit code.
fn measure_child(args: &[String]) -> ExitCode {
    let (Some(out), Some("--"), Some(program)) =
        (args.first(), args.get(1).map(String::as_str), args.get(2))
    else {
        eprintln!("soak: {MEASURE} OUT -- PROGRAM ARGS...");
        return ExitCode::from(2);
    };
    let status = match Command::new(program).args(&args[3..]).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soak: cannot run {program}: {e}");
            return ExitCode::from(2);
        }
    };
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            // Linux reports ru_maxrss in KiB.
            if let Err(e) = std::fs::write(out, format!("{}\n", u.max_rss())) {
                eprintln!("soak: cannot write {out}: {e}");
                return ExitCode::from(2);
            }
        }
        Err(e) => {
            eprintln!("soak: getrusage: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(status.code().map_or(2, |c| u8::try_from(c).unwrap_or(2)))
}

// ---- one cycle --------------------------------------------------------------

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Cycle {
    cycle: usize,
    ready_ms: u64,
    shutdown_ms: u64,
    nvmed_started: usize,
    clean: usize,
    pcid_fds_ready: usize,
    pcid_fds_after_shutdown: usize,
    pcid_fd_kinds_after_shutdown: BTreeMap<String, usize>,
    pcid_hwm_kb: u64,
    nvmed_hwm_max_kb: u64,
    nvmed_hwm_mean_kb: u64,
    shutdownd_maxrss_kb: u64,
    own_fds_after: usize,
    own_children_after: usize,
    stack_processes_after: usize,
    system_processes_before: usize,
    system_processes_after: usize,
    problems: Vec<String>,
}

fn run_cycle(
    n: usize,
    bins: &Binaries,
    machine: &Path,
    work: &Path,
    devices: usize,
    inject: Option<Leak>,
) -> Result<Cycle, String> {
    let mut c = Cycle {
        cycle: n,
        system_processes_before: all_pids().len(),
        ..Cycle::default()
    };
    let dir = work.join(format!("cycle-{n:02}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let opts = StackOptions {
        machine: machine.to_path_buf(),
        work_dir: dir.clone(),
        ready_timeout: Duration::from_secs(300),
        env: vec![("RUST_LOG".into(), "warn".into()), (MARK.into(), mark())],
        // pcid passes drivers a minimal environment: mark them explicitly.
        driver_env: vec![(MARK.into(), mark())],
        pcid_args: Vec::new(),
        inherit_stderr: false,
    };
    match inject {
        Some(Leak::Fd) => {
            let f = std::fs::File::open(machine).map_err(|e| e.to_string())?;
            std::mem::forget(f);
        }
        Some(Leak::Process) => {
            // Exits at once (no pcid channel) and is never waited for.
            let child = Command::new(bins.path(NVMED_TEST))
                .env(MARK, mark())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            std::mem::forget(child);
        }
        None => {}
    }
    let started = Instant::now();
    let stack = Stack::start(bins, &opts).map_err(|e| e.to_string())?;
    c.ready_ms = started.elapsed().as_millis() as u64;
    let pcid = stack.pcid_pid().ok_or("pcid has no pid")?;
    let nvmed_exe = bins.path(NVMED_TEST);
    let nvmeds: Vec<u32> = children_of(pcid)
        .into_iter()
        .filter(|p| exe_of(p.pid).as_deref() == Some(nvmed_exe.as_path()))
        .map(|p| p.pid)
        .collect();
    c.nvmed_started = nvmeds.len();
    if nvmeds.len() != devices {
        c.problems.push(format!(
            "{} nvmed processes running after ready, expected {devices}",
            nvmeds.len()
        ));
    }
    c.pcid_fds_ready = fd_count(&pcid.to_string()).unwrap_or(0);
    let mut hwm: BTreeMap<u32, u64> = BTreeMap::new();
    let sample = |hwm: &mut BTreeMap<u32, u64>| {
        for &pid in &nvmeds {
            if let Some(kb) = status_kb(pid, "VmHWM") {
                let e = hwm.entry(pid).or_default();
                *e = (*e).max(kb);
            }
        }
    };
    sample(&mut hwm);

    // shutdownd under the measuring wrapper.
    let json = dir.join("report.json");
    let rss_file = dir.join("shutdownd.maxrss");
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut cmd = Command::new(me);
    cmd.env(MARK, mark())
        .arg(MEASURE)
        .arg(&rss_file)
        .arg("--")
        .arg(bins.path("shutdownd"))
        .arg("--control")
        .arg(stack.control())
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start shutdownd: {e}"))?;
    let limit = Duration::from_secs(180);
    let status = loop {
        sample(&mut hwm);
        if let Some(s) = wait_deadline(&mut child, Duration::from_millis(20)) {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("shutdownd did not exit within {limit:?}"));
        }
    };
    c.shutdown_ms = t.elapsed().as_millis() as u64;
    if !status.success() {
        c.problems.push(format!("shutdownd: {status}"));
    }
    c.shutdownd_maxrss_kb = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    match load_report(&json) {
        Ok(r) => {
            c.clean = r.count("clean");
            if c.clean != devices || r.devices.len() != devices {
                c.problems
                    .push(format!("{} of {} devices clean", c.clean, r.devices.len()));
            }
        }
        Err(e) => c.problems.push(format!("report: {e}")),
    }

    // Every nvmed exits after its FinishAck and pcid reaps it.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        sample(&mut hwm);
        let left: Vec<Proc> = children_of(pcid)
            .into_iter()
            .filter(|p| nvmeds.contains(&p.pid))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= end {
            let zombies = left.iter().filter(|p| p.state == 'Z').count();
            c.problems.push(format!(
                "{} nvmed processes still pcid's children 30 s after shutdown ({zombies} zombies)",
                left.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c.pcid_fds_after_shutdown = fd_count(&pcid.to_string()).unwrap_or(0);
    c.pcid_fd_kinds_after_shutdown = fd_kinds(pcid);
    c.pcid_hwm_kb = status_kb(pcid, "VmHWM").unwrap_or(0);
    if !hwm.is_empty() {
        c.nvmed_hwm_max_kb = hwm.values().copied().max().unwrap_or(0);
        c.nvmed_hwm_mean_kb = hwm.values().sum::<u64>() / hwm.len() as u64;
    }

    match stack.stop(Duration::from_secs(10)) {
        Ok(s) if s.success() => {}
        Ok(s) => c.problems.push(format!("pcid exited with {s}")),
        Err(e) => c.problems.push(format!("stopping pcid: {e}")),
    }
    let me = std::process::id();
    let kids = children_of(me);
    c.own_children_after = kids.len();
    if !kids.is_empty() {
        c.problems.push(format!("children left: {kids:?}"));
    }
    let left = stack_processes(bins.dir());
    c.stack_processes_after = left.len();
    if !left.is_empty() {
        c.problems
            .push(format!("stack processes alive after the cycle: {left:?}"));
    }
    let zombies: Vec<u32> = all_procs()
        .into_iter()
        .filter(|p| p.state == 'Z' && (p.ppid == me || p.ppid == pcid))
        .map(|p| p.pid)
        .collect();
    if !zombies.is_empty() {
        c.problems.push(format!("zombies: {zombies:?}"));
    }
    c.own_fds_after = fd_count("self").unwrap_or(0);
    c.system_processes_after = all_pids().len();
    // Logs of a clean cycle are not needed.
    if c.problems.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(c)
}

/// Problems across cycles: fd counts that change, memory that grows.
fn compare(cycles: &[Cycle], devices: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let (Some(first), Some(last)) = (cycles.first(), cycles.last()) else {
        return problems;
    };
    for c in cycles {
        if c.pcid_fds_after_shutdown > c.pcid_fds_ready {
            problems.push(format!(
                "cycle {}: pcid holds {} fds after every driver exited, more than the {} it had with {devices} drivers running",
                c.cycle, c.pcid_fds_after_shutdown, c.pcid_fds_ready
            ));
        }
        if c.pcid_fds_after_shutdown != first.pcid_fds_after_shutdown
            || c.pcid_fds_ready != first.pcid_fds_ready
        {
            problems.push(format!(
                "cycle {}: pcid fds {}/{} differ from cycle 1's {}/{}",
                c.cycle,
                c.pcid_fds_ready,
                c.pcid_fds_after_shutdown,
                first.pcid_fds_ready,
                first.pcid_fds_after_shutdown
            ));
        }
        if c.own_fds_after != first.own_fds_after {
            problems.push(format!(
                "cycle {}: this process has {} fds, {} after cycle 1",
                c.cycle, c.own_fds_after, first.own_fds_after
            ));
        }
    }
    let grown = |what: &str, a: u64, b: u64, problems: &mut Vec<String>| {
        if b > a + a / 5 + 2048 {
            problems.push(format!(
                "{what} peak RSS grew from {a} KiB (cycle 1) to {b} KiB (cycle {})",
                last.cycle
            ));
        }
    };
    grown("pcid", first.pcid_hwm_kb, last.pcid_hwm_kb, &mut problems);
    grown(
        "nvmed",
        first.nvmed_hwm_max_kb,
        last.nvmed_hwm_max_kb,
        &mut problems,
    );
    grown(
        "shutdownd",
        first.shutdownd_maxrss_kb,
        last.shutdownd_maxrss_kb,
        &mut problems,
    );
    problems
}

fn run(args: Args) -> Result<bool, String> {
    let bins = Binaries::beside_current_exe().map_err(|e| e.to_string())?;
    if args.build {
        bins.build().map_err(|e| e.to_string())?;
    } else {
        bins.check().map_err(|e| e.to_string())?;
    }
    let work = tempfile::Builder::new()
        .prefix("soak-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let spec = MachineSpec::nvme(args.devices, args.latency_ms, None);
    let machine = work.path().join("machine.toml");
    spec.write(&machine).map_err(|e| e.to_string())?;
    let own_fds_before = fd_count("self").unwrap_or(0);
    let own_rss_before = status_kb(std::process::id(), "VmRSS").unwrap_or(0);
    println!(
        "soak: {} NVMe controllers, {} ms shutdown latency, {} cycles; this process: {own_fds_before} fds",
        args.devices, args.latency_ms, args.cycles
    );
    println!(
        "{:>5} {:>8} {:>9} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8}",
        "cycle",
        "ready_ms",
        "shutdn_ms",
        "nvmed",
        "clean",
        "pcid_fds",
        "fds_after",
        "pcid_kB",
        "nvmed_kB",
        "nvmed_avg",
        "shutdownd",
        "procs",
        "sys_proc"
    );
    let mut cycles = Vec::new();
    for n in 1..=args.cycles {
        let c = run_cycle(n, &bins, &machine, work.path(), args.devices, args.inject)?;
        println!(
            "{:>5} {:>8} {:>9} {:>6} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>4}→{:<4}",
            c.cycle,
            c.ready_ms,
            c.shutdown_ms,
            c.nvmed_started,
            c.clean,
            c.pcid_fds_ready,
            c.pcid_fds_after_shutdown,
            c.pcid_hwm_kb,
            c.nvmed_hwm_max_kb,
            c.nvmed_hwm_mean_kb,
            c.shutdownd_maxrss_kb,
            c.stack_processes_after,
            c.system_processes_before,
            c.system_processes_after
        );
        for p in &c.problems {
            println!("soak: cycle {n}: LEAK/FAILURE: {p}");
        }
        cycles.push(c);
    }
    let mut problems: Vec<String> = cycles
        .iter()
        .flat_map(|c| {
            c.problems
                .iter()
                .map(move |p| format!("cycle {}: {p}", c.cycle))
        })
        .collect();
    problems.extend(compare(&cycles, args.devices));
    let own_fds_after = fd_count("self").unwrap_or(0);
    if own_fds_after != own_fds_before {
        problems.push(format!(
            "this process had {own_fds_before} fds before the first cycle and {own_fds_after} after the last"
        ));
    }
    let own_rss_after = status_kb(std::process::id(), "VmRSS").unwrap_or(0);
    let peak = |f: fn(&Cycle) -> u64| cycles.iter().map(f).max().unwrap_or(0);
    println!(
        "soak: peak RSS over all cycles: pcid {} KiB, nvmed {} KiB (max of {} per cycle), shutdownd {} KiB; \
         this process {own_rss_before} → {own_rss_after} KiB, {own_fds_before} → {own_fds_after} fds",
        peak(|c| c.pcid_hwm_kb),
        peak(|c| c.nvmed_hwm_max_kb),
        args.devices,
        peak(|c| c.shutdownd_maxrss_kb)
    );
    if let Some(c) = cycles.first() {
        println!(
            "soak: pcid's fds after every driver exited (cycle 1): {} {:?}; released when pcid exits",
            c.pcid_fds_after_shutdown, c.pcid_fd_kinds_after_shutdown
        );
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "devices": args.devices,
            "cycles": cycles,
            "latency_ms": args.latency_ms,
            "problems": problems,
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if problems.is_empty() {
        println!(
            "soak: no leaks: {} cycles × {} devices, every device clean, no process, zombie or fd left behind",
            args.cycles, args.devices
        );
        Ok(true)
    } else {
        for p in &problems {
            eprintln!("soak: {p}");
        }
        eprintln!("soak: {} problem(s) found", problems.len());
        if !cycles.iter().all(|c| c.problems.is_empty()) {
            let kept = work.keep();
            eprintln!("soak: logs of failing cycles kept in {}", kept.display());
        }
        Ok(false)
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(MEASURE) {
        return measure_child(&argv[1..]);
    }
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("soak: {e} (soak --help shows the usage)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}
