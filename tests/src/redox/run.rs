//! Running the build's commands: one log file per step, a progress line every
//! minute while a long command runs, and failures that name the step and
//! show the end of its log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RedoxError;

/// How often a still-running command is reported.
const HEARTBEAT: Duration = Duration::from_secs(60);
/// Log lines shown when a command fails.
const TAIL_LINES: usize = 25;

/// Prints one progress line (stderr, so stdout stays for results).
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("redox-e2e: {}", msg.as_ref());
}

/// The last `n` lines of a file (empty if unreadable).
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` for build step `step`, appending its output to `log`. A
/// command still running after a minute is reported every minute, so a
/// long cold build never looks hung.
pub fn run_logged(cmd: &mut Command, step: &str, log: &Path) -> Result<(), RedoxError> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(RedoxError::io(format!("create {}", dir.display())))?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(RedoxError::io(format!("open {}", log.display())))?;
    {
        use std::io::Write as _;
        let _ = writeln!(file, "\n$ {}", describe(cmd));
    }
    let err_file = file
        .try_clone()
        .map_err(RedoxError::io(format!("open {}", log.display())))?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|e| RedoxError::Build {
            step: step.to_string(),
            detail: format!("cannot run {:?}: {e}", cmd.get_program()),
            log: log.to_path_buf(),
        })?;
    let done = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let done = done.clone();
        let step = step.to_string();
        let log = log.to_path_buf();
        std::thread::spawn(move || {
            let mut next = HEARTBEAT;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                if started.elapsed() >= next {
                    let last = tail_of(&log, 1);
                    progress(format!(
                        "  … {step} still running ({} s): {}",
                        started.elapsed().as_secs(),
                        last.trim().chars().take(100).collect::<String>()
                    ));
                    next += HEARTBEAT;
                }
            }
        })
    };
    let status = child.wait();
    done.store(true, Ordering::Relaxed);
    let _ = heartbeat.join();
    let status = status.map_err(RedoxError::io(format!("wait for {:?}", cmd.get_program())))?;
    if status.success() {
        return Ok(());
    }
    Err(RedoxError::Build {
        step: step.to_string(),
        detail: format!(
            "{} exited with {status}; last lines:\n{}",
            describe(cmd),
            tail_of(log, TAIL_LINES)
        ),
        log: log.to_path_buf(),
    })
}

/// Runs a short command and returns its standard output, or why it failed
/// (one line: the command, its status and its last error line).
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "{} exited with {}: {}",
            describe(cmd),
            out.status,
            last.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program arg arg …` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether a command is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(program);
            p.is_file()
                && fs::metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt as _;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

/// Copies a file, creating the destination's directory.
pub fn copy(from: &Path, to: &Path) -> Result<(), RedoxError> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(RedoxError::io(format!("create {}", dir.display())))?;
    }
    fs::copy(from, to)
        .map(|_| ())
        .map_err(RedoxError::io(format!(
            "copy {} to {}",
            from.display(),
            to.display()
        )))
}

/// A directory built under a temporary name and renamed into place once
/// complete, so an interrupted build never leaves a half-made result that
/// a later run would take as done.
pub struct Staged {
    /// Where the result ends up.
    pub dest: PathBuf,
    /// Where it is being built.
    pub tmp: PathBuf,
}

impl Staged {
    /// Starts a fresh staging directory for `dest`.
    pub fn new(dest: &Path) -> Result<Self, RedoxError> {
        let tmp = dest.with_extension("partial");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(RedoxError::io(format!("create {}", tmp.display())))?;
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
        })
    }

    /// Moves the finished directory into place.
    pub fn commit(self) -> Result<PathBuf, RedoxError> {
        let _ = fs::remove_dir_all(&self.dest);
        fs::rename(&self.tmp, &self.dest).map_err(RedoxError::io(format!(
            "rename {} to {}",
            self.tmp.display(),
            self.dest.display()
        )))?;
        Ok(self.dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_names_the_step_and_shows_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/step.log");
        let err = run_logged(
            Command::new("sh").args(["-c", "echo compiling; echo 'error: broken' >&2; exit 3"]),
            "kernel",
            &log,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("build step kernel failed"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("error: broken"), "{text}");
        assert!(fs::read_to_string(&log).unwrap().contains("compiling"));
        run_logged(Command::new("true").arg("x"), "kernel", &log).unwrap();
    }

    #[test]
    fn staged_directories_appear_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let staged = Staged::new(&dest).unwrap();
        fs::write(staged.tmp.join("f"), b"x").unwrap();
        assert!(!dest.exists());
        let done = staged.commit().unwrap();
        assert_eq!(fs::read(done.join("f")).unwrap(), b"x");
        // A second build replaces the first.
        let staged = Staged::new(&dest).unwrap();
        staged.commit().unwrap();
        assert!(!dest.join("f").exists());
    }
}
