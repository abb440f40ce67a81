//! A verifiable write workload for durability tests across real processes.
//!
//! With `NVMED_WORKLOAD=<directory>` in its environment, the test build of
//! the NVMe driver (`nvmed-test`; the shipped `nvmed` has no workload) starts
//! an I/O thread after bring-up that keeps writing to the first active
//! namespace while the shutdown protocol is served, and records in
//! `<directory>/<PCI address>.log` what happened to every write. After the
//! machine has shut down, a test reads the log and the controller's backing
//! file and checks that every acknowledged write is there.
//!
//! # Blocks
//!
//! Write number `g` (the *generation*, from 1) covers
//! [`BLOCKS_PER_WRITE`] blocks from LBA `FIRST_LBA + (g - 1) ×
//! BLOCKS_PER_WRITE`; no block is written twice (the workload stops when the
//! namespace is full). Every block is self-describing ([`block`]):
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | [`MAGIC`] |
//! | 8..16 | LBA, little-endian |
//! | 16..24 | generation, little-endian |
//! | 24..len−8 | filler derived from LBA and generation |
//! | len−8..len | FNV-1a 64 of bytes 0..len−8, little-endian |
//!
//! # Log
//!
//! UTF-8 text, one event per line, each line appended with a single
//! `write(2)` so a process killed at any point leaves whole lines behind
//! (at most the last one cut short). Times are microseconds since the
//! workload started, on one monotonic clock shared by both threads that
//! write the log. Lines are appended in the order the events were observed.
//!
//! ```text
//! nvmed-workload v1 address=<a> pid=<p> nsid=<n> block_size=<b> namespace_blocks=<n> first_lba=<l> blocks_per_write=<k>
//! ack <generation> <lba> <blocks> <submitted_us> <acknowledged_us>
//! refused <generation> <lba> <blocks> <us> <error text>
//! error <generation> <lba> <blocks> <us> <error text>
//! begin <us>
//! begun <us> ok
//! begun <us> failed: <error text>
//! stop <us> <reason>
//! ```
//!
//! `ack` is written only after the controller completed the Write command
//! successfully; `begin` just before the driver starts the first phase of
//! shutdown (on pcid's Begin) and `begun` when that phase returned. A write
//! refused because shutdown has begun ([`NvmeError::ShuttingDown`]) is a
//! `refused` line; any other failure is an `error` line and stops the
//! workload. After the first refusal the workload makes
//! [`REFUSALS_BEFORE_STOP`] − 1 more attempts (each logged) and stops.
//!
//! The workload never issues Flush: with a volatile write cache, its data
//! reaches the medium only through the shutdown (or is lost without one).

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};
use pcid_hw::{Clock, DmaAllocator, RegisterIo};

use nvmed::{Controller, NvmeError};

/// Environment variable naming the directory for workload logs.
pub const ENV: &str = "NVMED_WORKLOAD";
/// First bytes of every workload block.
pub const MAGIC: [u8; 8] = *b"NVMEDWL1";
/// Blocks per Write command.
pub const BLOCKS_PER_WRITE: u64 = 8;
/// First LBA written (after the self-test's blocks).
pub const FIRST_LBA: u64 = super::selftest::SELFTEST_BLOCKS as u64;
/// Write attempts refused after shutdown began before the workload stops.
pub const REFUSALS_BEFORE_STOP: u32 = 10;
/// Pause between two writes.
pub const INTERVAL: Duration = Duration::from_millis(1);

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The content of block `lba` written by generation `generation`, `len`
/// bytes long (`len` ≥ 32).
pub fn block(lba: u64, generation: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len.max(32)];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&lba.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    let mut x = lba.rotate_left(32) ^ generation ^ 0x9e37_79b9_7f4a_7c15;
    let end = b.len() - 8;
    for chunk in b[24..end].chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a(&b[..end]);
    b[end..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// What a block read back from the medium holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockContent {
    /// All zeroes: never written (or the write was lost).
    Empty,
    /// A complete workload block.
    Written {
        /// LBA recorded in the block.
        lba: u64,
        /// Generation recorded in the block.
        generation: u64,
    },
    /// Anything else: torn, corrupt, or not the workload's.
    Other,
}

/// Classifies a block read from the medium.
pub fn inspect(bytes: &[u8]) -> BlockContent {
    if bytes.iter().all(|&b| b == 0) {
        return BlockContent::Empty;
    }
    if bytes.len() < 32 || bytes[0..8] != MAGIC {
        return BlockContent::Other;
    }
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let (lba, generation) = (word(8), word(16));
    if block(lba, generation, bytes.len()) == bytes {
        BlockContent::Written { lba, generation }
    } else {
        BlockContent::Other
    }
}

/// Errors starting the workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The controller has no active namespace.
    #[error("workload: the controller has no active namespace")]
    NoNamespace,
    /// The log file cannot be created or written.
    #[error("workload log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The log, shared by the I/O thread and the shutdown handler.
struct Log {
    file: Mutex<File>,
    path: PathBuf,
    start: Instant,
    failed: AtomicBool,
    /// Set by [`Workload::note_begin`].
    begin_noted: AtomicBool,
}

impl Log {
    fn us(&self) -> u128 {
        self.start.elapsed().as_micros()
    }

    /// Appends one line with a single write. A failing log is reported once;
    /// the workload keeps going (the test then finds the log short).
    fn line(&self, text: &str) {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            if !self.failed.swap(true, Ordering::SeqCst) {
                warn!("workload log {}: {e}", self.path.display());
            }
        }
    }
}

/// A running workload: the handle the shutdown handler uses to mark the
/// phases, and to stop the I/O thread.
pub struct Workload {
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Workload {
    /// The log directory from [`ENV`], if set (and not empty).
    pub fn dir_from_env() -> Option<PathBuf> {
        std::env::var_os(ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// The log file for the device at `address` in `dir`.
    pub fn log_path(dir: &Path, address: &str) -> PathBuf {
        dir.join(format!("{address}.log"))
    }

    /// Creates the log and starts the I/O thread on `ctrl`.
    pub fn start<R, D, C>(ctrl: Arc<Controller<R, D, C>>, dir: &Path) -> Result<Self, WorkloadError>
    where
        R: RegisterIo + 'static,
        D: DmaAllocator + 'static,
        C: Clock + 'static,
    {
        let ns = *ctrl
            .namespaces()
            .first()
            .ok_or(WorkloadError::NoNamespace)?;
        let path = Self::log_path(dir, ctrl.name());
        let file = File::create(&path).map_err(|source| WorkloadError::Log {
            path: path.clone(),
            source,
        })?;
        let log = Arc::new(Log {
            file: Mutex::new(file),
            path: path.clone(),
            start: Instant::now(),
            failed: AtomicBool::new(false),
            begin_noted: AtomicBool::new(false),
        });
        log.line(&format!(
            "nvmed-workload v1 address={} pid={} nsid={} block_size={} namespace_blocks={} \
             first_lba={FIRST_LBA} blocks_per_write={BLOCKS_PER_WRITE}",
            ctrl.name(),
            std::process::id(),
            ns.nsid,
            ns.block_size,
            ns.blocks
        ));
        if log.failed.load(Ordering::SeqCst) {
            return Err(WorkloadError::Log {
                path,
                source: std::io::Error::other("cannot write the header"),
            });
        }
        info!(
            "{}: write workload started on namespace {}, log {}",
            ctrl.name(),
            ns.nsid,
            path.display()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::Builder::new()
                .name("workload".into())
                .spawn(move || run(&ctrl, ns, &log, &stop))
                .map_err(|source| WorkloadError::Log { path, source })?
        };
        Ok(Self {
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Records that the first phase of shutdown starts now.
    pub fn note_begin(&self) {
        self.log.begin_noted.store(true, Ordering::SeqCst);
        self.log.line(&format!("begin {}", self.log.us()));
    }

    /// Records that the first phase of shutdown returned.
    pub fn note_begun(&self, result: Result<(), &str>) {
        let us = self.log.us();
        match result {
            Ok(()) => self.log.line(&format!("begun {us} ok")),
            Err(e) => self
                .log
                .line(&format!("begun {us} failed: {}", one_line(e))),
        }
    }

    /// Stops the I/O thread and waits for it (one write at most). Once
    /// shutdown has begun, the thread first makes (and logs) at least one
    /// write attempt, so the log always shows how a write after Begin fared.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The I/O thread.
fn run<R: RegisterIo, D: DmaAllocator, C: Clock>(
    ctrl: &Controller<R, D, C>,
    ns: nvmed::Namespace,
    log: &Log,
    stop: &AtomicBool,
) {
    let bs = ns.block_size as usize;
    let mut generation: u64 = 0;
    let mut refusals = 0;
    let reason = loop {
        if stop.load(Ordering::SeqCst) && (refusals > 0 || !log.begin_noted.load(Ordering::SeqCst))
        {
            break "stopped by the driver".to_string();
        }
        generation += 1;
        let lba = FIRST_LBA + (generation - 1) * BLOCKS_PER_WRITE;
        if lba + BLOCKS_PER_WRITE > ns.blocks {
            break "namespace full".to_string();
        }
        let mut data = Vec::with_capacity(bs * BLOCKS_PER_WRITE as usize);
        for i in 0..BLOCKS_PER_WRITE {
            data.extend_from_slice(&block(lba + i, generation, bs));
        }
        let submitted = log.us();
        match ctrl.write(ns.nsid, lba, &data) {
            Ok(()) => log.line(&format!(
                "ack {generation} {lba} {BLOCKS_PER_WRITE} {submitted} {}",
                log.us()
            )),
            Err(e @ NvmeError::ShuttingDown) => {
                log.line(&format!(
                    "refused {generation} {lba} {BLOCKS_PER_WRITE} {submitted} {e}"
                ));
                refusals += 1;
                if refusals >= REFUSALS_BEFORE_STOP {
                    break format!("{refusals} writes refused");
                }
            }
            Err(e) => {
                log.line(&format!(
                    "error {generation} {lba} {BLOCKS_PER_WRITE} {submitted} {}",
                    one_line(&e.to_string())
                ));
                warn!("{}: workload write failed: {e}", ctrl.name());
                break "write failed".to_string();
            }
        }
        std::thread::sleep(INTERVAL);
    };
    log.line(&format!("stop {} {reason}", log.us()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_self_describing() {
        for len in [512, 4096] {
            let b = block(1234, 77, len);
            assert_eq!(b.len(), len);
            assert_eq!(
                inspect(&b),
                BlockContent::Written {
                    lba: 1234,
                    generation: 77
                }
            );
            assert_ne!(block(1234, 78, len), b);
            assert_ne!(block(1235, 77, len), b);
            let mut torn = b.clone();
            torn[len / 2] ^= 1;
            assert_eq!(inspect(&torn), BlockContent::Other);
            assert_eq!(inspect(&vec![0u8; len]), BlockContent::Empty);
        }
    }
}
