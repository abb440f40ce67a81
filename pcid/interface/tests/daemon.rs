//! Daemon start-up (`pcid_interface::redox::daemon`) in real processes.
//!
//! This file is its own test harness (`harness = false`): daemon start-up
//! forks, which is only sound in a process without other threads, so every
//! scenario runs in a fresh copy of this executable started with
//! `DAEMON_TEST_ROLE` set. Without it, `main` is the test driver: it runs
//! every scenario, prints `test <name> ... ok|FAILED` and exits non-zero if
//! any failed.
//!
//! What is checked: the started process exits 0 once the daemon is ready
//! while the daemon keeps running; it exits non-zero when the daemon dies
//! first — even when the daemon left a child of its own running (which
//! would hold an inheritable readiness pipe open); it kills the daemon and
//! exits non-zero when the start deadline passes; init's `INIT_NOTIFY` pipe
//! gets the readiness byte, and neither that fd, the variable nor the
//! readiness pipe reach the daemon's children.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pcid_interface::redox::daemon::{self, Readiness, EXIT_DEADLINE, EXIT_NOT_READY, INIT_NOTIFY};

/// A test scenario: `Err` says what went wrong.
type Scenario = fn() -> Result<(), String>;

const ROLE: &str = "DAEMON_TEST_ROLE";
/// Fds the test driver was started with, comma-separated.
const BASELINE_FDS: &str = "DAEMON_TEST_BASELINE_FDS";
/// Start deadline of the `hang` role, in milliseconds.
const DEADLINE_MS: &str = "DAEMON_TEST_DEADLINE_MS";
/// Upper bound on every wait of the driver: reached only if start-up hangs.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        std::process::exit(run_role(&role));
    }
    let baseline: Vec<String> = open_fds().iter().map(|(fd, _)| fd.to_string()).collect();
    std::env::set_var(BASELINE_FDS, baseline.join(","));
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, Scenario); 6] = [
        (
            "ready_parent_exits_0_and_daemon_runs_on",
            ready_parent_exits_0,
        ),
        ("death_before_ready_is_exit_1", death_before_ready),
        (
            "a_child_left_behind_does_not_hold_the_readiness_pipe",
            child_left_behind,
        ),
        ("start_deadline_kills_the_daemon", start_deadline),
        (
            "init_notify_gets_the_byte_and_is_not_inherited",
            init_notify_byte_and_not_inherited,
        ),
        ("init_notify_values_are_checked", init_notify_values),
    ];
    let mut failed = 0;
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n    {e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        ran - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- roles ---

/// Runs in a fresh process; returns its exit status.
fn run_role(role: &str) -> i32 {
    let result = match role {
        "ready" => daemon::run_with("ready", HANG_GUARD, |r| ready_then_report(r, false)),
        "ready-spawn" => {
            daemon::run_with("ready-spawn", HANG_GUARD, |r| ready_then_report(r, true))
        }
        "die" => daemon::run_with("die", HANG_GUARD, |_r| 7),
        "spawn-then-die" => daemon::run_with("spawn-then-die", HANG_GUARD, |_r| {
            // Start a child that outlives this daemon, then fail start-up.
            match spawn_holder(true) {
                Ok(line) => println!("{line}"),
                Err(e) => println!("spawn failed: {e}"),
            }
            5
        }),
        "hang" => {
            let ms = std::env::var(DEADLINE_MS)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(500);
            daemon::run_with("hang", Duration::from_millis(ms), |_r| {
                println!("hang: daemon {}", std::process::id());
                // Never ready; blocks until the test closes stdin.
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                0
            })
        }
        "hold" => {
            println!("{}", holder_report());
            let _ = std::io::stdout().flush();
            // Stays alive until whoever holds the other end of stdin closes it.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            return 0;
        }
        other => {
            eprintln!("unknown role {other}");
            return 100;
        }
    };
    match result {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("daemon start-up failed: {e}");
            101
        }
    }
}

/// The daemon: signal readiness, optionally start a child and report what
/// it sees, then serve (read one line of stdin) and report.
fn ready_then_report(readiness: Readiness, spawn: bool) -> i32 {
    if let Err(e) = readiness.ready() {
        println!("ready failed: {e}");
        return 9;
    }
    if spawn {
        match spawn_holder(false) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("spawn failed: {e}"),
        }
    }
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    println!(
        "daemon {} served {:?}; {INIT_NOTIFY} {}",
        std::process::id(),
        line.trim(),
        if std::env::var_os(INIT_NOTIFY).is_some() {
            "set"
        } else {
            "unset"
        }
    );
    0
}

/// Starts this executable as a `hold` process and returns its report line.
/// With `inherit_stdin` it lives as long as the test keeps its stdin open;
/// otherwise it exits after reporting.
fn spawn_holder(inherit_stdin: bool) -> std::io::Result<String> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .env(ROLE, "hold")
        .stdin(if inherit_stdin {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// Open fds above 2 of this process, with what they refer to.
fn open_fds() -> Vec<(i32, String)> {
    let mut fds = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let target = std::fs::read_link(entry.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            // The directory handle doing the listing closes when it ends.
            if fd > 2 && !target.ends_with("/fd") && !target.is_empty() {
                fds.push((fd, target));
            }
        }
    }
    fds
}

/// `hold pid=<pid> fds=[<open fds above 2 the test driver did not start
/// with>] init_notify=<set|unset>`.
fn holder_report() -> String {
    // Fds the test driver itself was started with (by whatever runs the
    // tests) are inherited by everything; they are not the daemon's doing.
    let baseline = std::env::var(BASELINE_FDS).unwrap_or_default();
    let baseline: Vec<&str> = baseline.split(',').collect();
    let fds: Vec<String> = open_fds()
        .into_iter()
        .filter(|(fd, _)| !baseline.contains(&fd.to_string().as_str()))
        .map(|(fd, target)| format!("{fd}->{target}"))
        .collect();
    format!(
        "hold pid={} fds=[{}] init_notify={}",
        std::process::id(),
        fds.join(","),
        if std::env::var_os(INIT_NOTIFY).is_some() {
            "set"
        } else {
            "unset"
        }
    )
}

// --------------------------------------------------------------- driver ---

/// A started role with its stdout lines arriving on a channel.
struct Started {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn start(role: &str, envs: &[(&str, String)]) -> Result<Started, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(ROLE, role)
        .env_remove(INIT_NOTIFY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn {role}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Started { child, lines })
}

/// Waits for the started process to exit, at most [`HANG_GUARD`].
fn wait_exit(child: &mut Child) -> Result<ExitStatus, String> {
    let end = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            return Err(format!("still running after {HANG_GUARD:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next stdout line (of the process or anything that inherited its
/// stdout), at most [`HANG_GUARD`]; `None` at end of file.
fn next_line(lines: &mpsc::Receiver<String>) -> Result<Option<String>, String> {
    match lines.recv_timeout(HANG_GUARD) {
        Ok(l) => Ok(Some(l)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no output within {HANG_GUARD:?}")),
    }
}

fn expect(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn ready_parent_exits_0() -> Result<(), String> {
    let mut s = start("ready", &[])?;
    let status = wait_exit(&mut s.child)?;
    expect(status.code() == Some(0), || {
        format!("started process exited {status}, want 0 once ready")
    })?;
    // The daemon is still running: it serves a request sent after its
    // parent exited, through the stdin it inherited.
    let mut stdin = s.child.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "ping").map_err(|e| e.to_string())?;
    drop(stdin);
    let line = next_line(&s.lines)?.unwrap_or_default();
    expect(line.contains("served \"ping\""), || {
        format!("daemon did not serve after readiness: {line:?}")
    })?;
    expect(!line.contains(&format!("daemon {} ", s.child.id())), || {
        format!("the daemon must be a different process from the started one: {line:?}")
    })
}

fn death_before_ready() -> Result<(), String> {
    let mut s = start("die", &[])?;
    let status = wait_exit(&mut s.child)?;
    expect(status.code() == Some(EXIT_NOT_READY), || {
        format!("started process exited {status}, want {EXIT_NOT_READY}")
    })
}

fn child_left_behind() -> Result<(), String> {
    let mut s = start("spawn-then-die", &[])?;
    // The daemon's child is alive (it reported) and stays alive while we
    // hold stdin open. The started process must still see the daemon's
    // death at once: were the readiness pipe inherited, the child would hold
    // it open and the started process would wait for its deadline instead.
    let line = next_line(&s.lines)?.unwrap_or_default();
    expect(line.starts_with("hold "), || {
        format!("daemon's child did not start: {line:?}")
    })?;
    let status = wait_exit(&mut s.child)?;
    drop(s.child.stdin.take());
    expect(status.code() == Some(EXIT_NOT_READY), || {
        format!(
            "started process exited {status}, want {EXIT_NOT_READY} (not {EXIT_DEADLINE}: \
             the readiness pipe leaked into the daemon's child)"
        )
    })?;
    expect(line.contains("fds=[]"), || {
        format!("daemon's child inherited file descriptors: {line}")
    })
}

fn start_deadline() -> Result<(), String> {
    let mut s = start("hang", &[(DEADLINE_MS, "300".to_string())])?;
    let first = next_line(&s.lines)?.unwrap_or_default();
    expect(first.starts_with("hang: daemon"), || {
        format!("daemon did not start: {first:?}")
    })?;
    let status = wait_exit(&mut s.child)?;
    expect(status.code() == Some(EXIT_DEADLINE), || {
        format!("started process exited {status}, want {EXIT_DEADLINE}")
    })?;
    // The daemon was killed: nothing holds stdout any more although the
    // test still holds the daemon's stdin open.
    let rest = next_line(&s.lines)?;
    drop(s.child.stdin.take());
    expect(rest.is_none(), || {
        format!("daemon still running after the deadline: {rest:?}")
    })
}

fn init_notify_byte_and_not_inherited() -> Result<(), String> {
    // Init's side: a pipe whose write end the started process inherits.
    let (read_end, write_end): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe().map_err(|e| format!("pipe: {e}"))?;
    // Only the write end is for the started process.
    rustix::io::fcntl_setfd(&read_end, rustix::io::FdFlags::CLOEXEC).map_err(|e| e.to_string())?;
    let fd = write_end.as_raw_fd();
    let mut s = start("ready-spawn", &[(INIT_NOTIFY, fd.to_string())])?;
    drop(write_end);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(read_end);
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let status = wait_exit(&mut s.child)?;
    expect(status.code() == Some(0), || {
        format!("started process exited {status}, want 0")
    })?;
    let holder = next_line(&s.lines)?.unwrap_or_default();
    let mut stdin = s.child.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "bye").map_err(|e| e.to_string())?;
    drop(stdin);
    let served = next_line(&s.lines)?.unwrap_or_default();
    // End of file on init's pipe needs every copy of the write end closed:
    // the daemon closed its copy after writing, and its child has none.
    let bytes = rx
        .recv_timeout(HANG_GUARD)
        .map_err(|_| "init's pipe was not closed by the daemon".to_string())?;
    expect(bytes == [0], || {
        format!("init's pipe got {bytes:?}, want one readiness byte")
    })?;
    expect(
        holder.contains("fds=[]") && holder.contains("init_notify=unset"),
        || format!("daemon's child inherited init's pipe or the variable: {holder}"),
    )?;
    expect(served.contains("INIT_NOTIFY unset"), || {
        format!("the variable is still set in the daemon: {served}")
    })
}

fn init_notify_values() -> Result<(), String> {
    // In this (single-threaded) driver process; each case sets the variable.
    let set = |v: &str| std::env::set_var(INIT_NOTIFY, v);
    std::env::remove_var(INIT_NOTIFY);
    expect(matches!(daemon::take_init_notify(), Ok(None)), || {
        "unset variable must give Ok(None)".to_string()
    })?;
    for bad in ["", "abc", "-1", "1", "2", "999999"] {
        set(bad);
        let r = daemon::take_init_notify();
        expect(r.is_err(), || format!("{INIT_NOTIFY}={bad:?} accepted"))?;
        expect(std::env::var_os(INIT_NOTIFY).is_none(), || {
            format!("{INIT_NOTIFY}={bad:?} left in the environment")
        })?;
    }
    let (_read_end, write_end) = rustix::pipe::pipe().map_err(|e| e.to_string())?;
    let fd = write_end.as_raw_fd();
    // The variable now owns the fd.
    std::mem::forget(write_end);
    set(&fd.to_string());
    let owned = daemon::take_init_notify()
        .map_err(|e| e.to_string())?
        .ok_or("valid fd not taken")?;
    expect(owned.as_raw_fd() == fd, || "wrong fd".to_string())?;
    let flags = rustix::io::fcntl_getfd(&owned).map_err(|e| e.to_string())?;
    expect(flags.contains(rustix::io::FdFlags::CLOEXEC), || {
        "INIT_NOTIFY fd not made close-on-exec".to_string()
    })?;
    expect(std::env::var_os(INIT_NOTIFY).is_none(), || {
        "variable left in the environment".to_string()
    })
}
