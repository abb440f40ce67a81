//! The test file system daemon `testfsd` (a participant, PROTOCOL.md §14)
//! as the tests start and check it.
//!
//! `testfsd` holds dirty data — [`dirty_pattern`] of its name — and writes
//! it back to its disk when asked to shut down. The tests start it with
//! [`Testfsd::start`], which waits (bounded) for its `testfsd: ready <id>`
//! line, and read its log ([`Testfsd::log_lines`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The dirty data `testfsd` named `name` holds: `len` bytes, unique to the name.
pub fn dirty_pattern(name: &str, len: usize) -> Vec<u8> {
    let seed = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (0..len as u32)
        .map(|i| (i.wrapping_mul(0x9E37_79B1) ^ seed).to_le_bytes()[2])
        .collect()
}

/// A running `testfsd`.
#[derive(Debug)]
pub struct Testfsd {
    child: Child,
    /// Its participant id, from its ready line.
    pub id: u32,
    /// Its log file.
    pub log: PathBuf,
}

/// `testfsd` did not come up.
#[derive(Debug, thiserror::Error)]
pub enum TestfsdError {
    /// It could not be started.
    #[error("cannot start testfsd: {0}")]
    Spawn(#[from] std::io::Error),
    /// It printed no ready line in time (or exited first).
    #[error("testfsd printed no ready line within {timeout:?} (first line: {line:?})")]
    NotReady {
        /// The wait.
        timeout: Duration,
        /// What it printed instead, if anything.
        line: Option<String>,
    },
}

impl Testfsd {
    /// Starts `bin` with `args` plus `--log <log>` and waits at most
    /// `timeout` for its ready line.
    pub fn start(
        bin: &Path,
        args: &[String],
        log: &Path,
        timeout: Duration,
    ) -> Result<Self, TestfsdError> {
        let mut child = Command::new(bin)
            .args(args)
            .arg("--log")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                let _ = tx.send(lines.next().and_then(Result::ok));
                for _ in lines {}
            });
        }
        let line = rx.recv_timeout(timeout).ok().flatten();
        let id = line
            .as_deref()
            .and_then(|l| l.strip_prefix("testfsd: ready "))
            .and_then(|n| n.trim().parse().ok());
        match id {
            Some(id) => Ok(Self {
                child,
                id,
                log: log.to_path_buf(),
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(TestfsdError::NotReady { timeout, line })
            }
        }
    }

    /// The lines of its log so far.
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `timeout` for it to exit (it does after its FinishAck);
    /// kills it otherwise. Its exit status, if it exited by itself.
    pub fn wait(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = crate::sim::stack::wait_deadline(&mut self.child, timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }
}

impl Drop for Testfsd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_data_differs_by_name_and_is_not_blank() {
        let a = dirty_pattern("file", 4096);
        assert_eq!(a.len(), 4096);
        assert_ne!(a, dirty_pattern("other", 4096));
        assert!(a.iter().filter(|&&b| b == 0).count() < 64);
        assert_eq!(a, dirty_pattern("file", 4096));
    }
}
