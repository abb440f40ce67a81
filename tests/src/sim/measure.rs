//! What the benchmark measures about the stack's processes, from `/proc` and
//! `getrusage` (Linux).
//!
//! CPU time has to be exact even for short runs and for processes that are
//! gone by the end (every nvmed exits after its `FinishAck`), so it is
//! taken from two sources that are both kept in nanoseconds by the kernel:
//!
//! * [`task_cpu`]: the CPU time a live process has used so far, summed over
//!   its threads (`/proc/<pid>/task/*/schedstat`, whose first field is the
//!   scheduler's own runtime count, not the tick-sampled `utime`/`stime`);
//! * [`children_cpu`]: the CPU time of every descendant this process has
//!   waited for, directly or through a child that waited for its own
//!   (`getrusage(RUSAGE_CHILDREN)`): once pcid has reaped its drivers and
//!   the benchmark has reaped pcid, their whole lives are in it.
//!
//! The CPU a shutdown costs is then (children's CPU after pcid was reaped −
//! before it was started) − (pcid's and the drivers' CPU at the moment
//! shutdownd starts): everything the stack did from the first `Begin`
//! until the last driver exited, teardown included. [`run_measured`] runs a
//! program under this executable acting as a wrapper ([`MEASURE_CHILD`]) that
//! reports the program's own CPU time and peak RSS.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// First argument that makes a measuring binary act as the wrapper of
/// [`measure_child_main`].
pub const MEASURE_CHILD: &str = "--measure-child";

/// CPU time (user + system) used so far by the live process `pid`, all its
/// threads; `None` when it is gone.
pub fn task_cpu(pid: u32) -> Option<Duration> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns: u64 = 0;
    for entry in dir.flatten() {
        let text = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// CPU time (user + system) of every descendant waited for so far.
pub fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => timeval(u.user_time()) + timeval(u.system_time()),
        Err(_) => Duration::ZERO,
    }
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmHWM` (peak RSS).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    status_field(pid, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The number of threads of `pid`.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads")?.parse().ok()
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Live children of `pid` (zombies excluded).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            // The command name is in parentheses and may contain anything.
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let ppid = f.next().and_then(|v| v.parse::<u32>().ok());
            ppid == Some(pid) && state != Some("Z")
        })
        .collect()
}

/// What the wrapper reports about the program it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildUsage {
    /// CPU time, user + system.
    pub cpu: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kb: u64,
}

impl ChildUsage {
    fn to_line(self) -> String {
        format!("{} {}\n", self.cpu.as_micros(), self.max_rss_kb)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut f = text.split_whitespace();
        let cpu = Duration::from_micros(f.next()?.parse().ok()?);
        let max_rss_kb = f.next()?.parse().ok()?;
        Some(Self { cpu, max_rss_kb })
    }
}

/// `<binary> --measure-child OUT -- PROGRAM ARGS...`: runs PROGRAM (its
/// standard streams inherited), waits for it, writes its CPU time (µs) and
/// peak RSS (KiB) to OUT, and exits with PROGRAM's exit code. `args` are
/// the arguments after [`MEASURE_CHILD`].
pub fn measure_child_main(args: &[String]) -> ExitCode {
    let (Some(out), Some("--"), Some(program)) =
        (args.first(), args.get(1).map(String::as_str), args.get(2))
    else {
        eprintln!("{MEASURE_CHILD} OUT -- PROGRAM ARGS...");
        return ExitCode::from(2);
    };
    let status = match Command::new(program).args(&args[3..]).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot run {program}: {e}");
            return ExitCode::from(2);
        }
    };
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => ChildUsage {
            cpu: timeval(u.user_time()) + timeval(u.system_time()),
            // Linux reports ru_maxrss in KiB.
            max_rss_kb: u64::try_from(u.max_rss()).unwrap_or(0),
        },
        Err(e) => {
            eprintln!("getrusage: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(out, usage.to_line()) {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(status.code().map_or(2, |c| u8::try_from(c).unwrap_or(2)))
}

/// A command running `program` under the current executable as the
/// measuring wrapper, reporting to `out` (read it with [`read_usage`]). The
/// current executable's `main` must hand [`MEASURE_CHILD`] invocations to
/// [`measure_child_main`].
pub fn measured_command(program: &Path, out: &Path) -> std::io::Result<Command> {
    let me = std::env::current_exe()?;
    let mut cmd = Command::new(me);
    cmd.arg(MEASURE_CHILD).arg(out).arg("--").arg(program);
    Ok(cmd)
}

/// What the wrapper wrote to `out`.
pub fn read_usage(out: &Path) -> Option<ChildUsage> {
    ChildUsage::parse(&std::fs::read_to_string(out).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lines_round_trip() {
        let u = ChildUsage {
            cpu: Duration::from_micros(12_345),
            max_rss_kb: 2_048,
        };
        assert_eq!(ChildUsage::parse(&u.to_line()), Some(u));
        assert_eq!(ChildUsage::parse("x 1"), None);
        assert_eq!(ChildUsage::parse(""), None);
    }

    #[test]
    fn this_process_is_measured() {
        let me = std::process::id();
        // Burn a little CPU so the count moves.
        let before = task_cpu(me).expect("own schedstat");
        let mut x: u64 = 1;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = task_cpu(me).expect("own schedstat");
        assert!(after > before, "{before:?} -> {after:?}");
        assert!(threads(me).is_some_and(|n| n >= 1));
        assert!(status_kb(me, "VmHWM").is_some_and(|kb| kb > 0));
        assert_eq!(task_cpu(u32::MAX), None);
    }

    #[test]
    fn a_waited_child_is_counted() {
        let before = children_cpu();
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh");
        assert!(status.success());
        assert!(children_cpu() > before);
    }
}
