//! `testfsd`: a small test file system daemon that takes part in shutdown as
//! a participant (PROTOCOL.md §14). Test-only; never shipped.
//!
//! ```text
//! testfsd --participants SOCKET --disk SOCKET [--entry 1] [--name NAME]
//!         [--provider ADDRESS|all|participant:NAME]... [--dirty-kib N]
//!         [--offset BYTES] [--write-delay-ms MS] [--hang begin|finish]
//!         [--write-after-disk-shutdown] [--log FILE]
//! ```
//!
//! Like a file system with a write-back cache, it holds `--dirty-kib` KiB of
//! data that no one has written to the disk yet (a pattern unique to its
//! name, [`shutdown_tests::participant::dirty_pattern`]). It opens its disk
//! through `nvmed-test`'s disk socket (`--disk`, the entry `--entry`),
//! registers with pcid (`--participants`: pcid's participant socket) under
//! `--name` with its `--provider`s, prints `testfsd: ready <id>` on standard
//! output, and serves shutdown:
//!
//! * `Begin`: it stops taking work and announces the time its write-back may
//!   take (`BeginAck`).
//! * `Finish`: after `--write-delay-ms`, it writes the dirty data at
//!   `--offset` in 4 KiB writes and calls `fsync` (an NVMe Flush), then
//!   answers `clean`; if the disk refuses (it has begun its own shutdown:
//!   `ESHUTDOWN`), it answers `failed` naming how much was lost.
//!
//! `--write-after-disk-shutdown` (for a negative control) waits, before
//! writing back, until its disk refuses a one-byte read with `ESHUTDOWN`
//! (looking every 5 ms, at most 10 s): the file system then writes after
//! its disk began its own shutdown, as it would if nothing ordered them.
//!
//! `--hang begin` never answers `Begin`, `--hang finish` never answers
//! `Finish` (each waits at most 120 s, then exits): a participant that must
//! not hold the devices hostage. `--log` records each step, one line each:
//! `begin`, `write offset=O len=L ok|err=E`, `fsync ok|err=E`, `finish ...`.
//! Errors end the process with one line on standard error and status 1.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pcid_interface::driver::{self, Deadline, FinishReport, ShutdownHandler};
use pcid_interface::protocol::{FinishOutcome, Provider, ShutdownKind, ShutdownSupport};
use shutdown_tests::nvme::disk_socket::{DiskClient, DiskClientError};
use shutdown_tests::participant::dirty_pattern;

const USAGE: &str = "usage: testfsd --participants SOCKET --disk SOCKET [--entry 1] [--name NAME] \
[--provider ADDRESS|all|participant:NAME]... [--dirty-kib N] [--offset BYTES] \
[--write-delay-ms MS] [--hang begin|finish] [--write-after-disk-shutdown] [--log FILE]";

/// Size of each write-back write.
const CHUNK: usize = 4096;
/// The longest a `--hang` waits before giving up.
const HANG_LIMIT: Duration = Duration::from_secs(120);
/// Deadline of each request to the disk socket.
const DISK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hang {
    Begin,
    Finish,
}

struct Args {
    participants: PathBuf,
    disk: PathBuf,
    entry: String,
    name: String,
    providers: Vec<Provider>,
    dirty: usize,
    offset: u64,
    write_delay: Duration,
    hang: Option<Hang>,
    after_disk: bool,
    log: Option<PathBuf>,
}

/// `Ok(None)`: `--help` or `--version` was answered.
fn parse() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    use shutdown_tests::cli::{number, path, string, unexpected, version_line};
    let mut p = lexopt::Parser::from_env();
    let mut participants = None;
    let mut disk = None;
    let mut a = Args {
        participants: PathBuf::new(),
        disk: PathBuf::new(),
        entry: "1".into(),
        name: "testfs".into(),
        providers: Vec::new(),
        dirty: 64 * 1024,
        offset: 1 << 20,
        write_delay: Duration::ZERO,
        hang: None,
        after_disk: false,
        log: None,
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("{}", version_line("testfsd"));
                return Ok(None);
            }
            Long("participants") => participants = Some(path(&mut p)?),
            Long("disk") => disk = Some(path(&mut p)?),
            Long("entry") => a.entry = string(&mut p, "--entry")?,
            Long("name") => a.name = string(&mut p, "--name")?,
            Long("provider") => {
                let v = string(&mut p, "--provider")?;
                a.providers.push(match v.as_str() {
                    "all" => Provider::AllDevices,
                    v => match v.strip_prefix("participant:") {
                        Some(n) => Provider::Participant(n.to_string()),
                        None => Provider::Device(
                            v.parse()
                                .map_err(|_| format!("--provider: `{v}` is not an address"))?,
                        ),
                    },
                });
            }
            Long("dirty-kib") => a.dirty = number::<usize>(&mut p, "--dirty-kib")? * 1024,
            Long("offset") => a.offset = number(&mut p, "--offset")?,
            Long("write-delay-ms") => {
                a.write_delay = Duration::from_millis(number(&mut p, "--write-delay-ms")?)
            }
            Long("hang") => {
                a.hang = Some(match string(&mut p, "--hang")?.as_str() {
                    "begin" => Hang::Begin,
                    "finish" => Hang::Finish,
                    other => return Err(format!("--hang: `{other}` is not begin or finish")),
                })
            }
            Long("log") => a.log = Some(path(&mut p)?),
            Long("write-after-disk-shutdown") => a.after_disk = true,
            other => return Err(unexpected(other)),
        }
    }
    a.participants = participants.ok_or("--participants SOCKET is required")?;
    a.disk = disk.ok_or("--disk SOCKET is required")?;
    Ok(Some(a))
}

struct Fs {
    disk: DiskClient,
    dirty: Vec<u8>,
    offset: u64,
    write_delay: Duration,
    hang: Option<Hang>,
    after_disk: bool,
    log: Option<std::fs::File>,
}

impl Fs {
    fn note(&mut self, line: &str) {
        log::info!("testfsd: {line}");
        if let Some(f) = &mut self.log {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
    }

    fn hang(&mut self, phase: &str) {
        self.note(&format!("hang {phase}"));
        std::thread::sleep(HANG_LIMIT);
        std::process::exit(1);
    }

    /// Writes the dirty data back and syncs; how it went.
    fn write_back(&mut self) -> Result<usize, (usize, String)> {
        let mut written = 0;
        let dirty = std::mem::take(&mut self.dirty);
        for (i, chunk) in dirty.chunks(CHUNK).enumerate() {
            let at = self.offset + (i * CHUNK) as u64;
            match self.disk.write(at, chunk) {
                Ok(n) => {
                    self.note(&format!("write offset={at} len={n} ok"));
                    written += n;
                }
                Err(e) => {
                    self.note(&format!("write offset={at} len={} err={e}", chunk.len()));
                    return Err((written, format!("write at byte {at}: {e}")));
                }
            }
        }
        match self.disk.fsync() {
            Ok(()) => {
                self.note("fsync ok");
                Ok(written)
            }
            Err(e) => {
                self.note(&format!("fsync err={e}"));
                Err((written, format!("fsync: {e}")))
            }
        }
    }
}

impl ShutdownHandler for Fs {
    fn support(&self) -> ShutdownSupport {
        ShutdownSupport::TwoPhase
    }

    fn begin(&mut self, kind: ShutdownKind, _deadline: Deadline) -> Result<Duration, String> {
        self.note(&format!("begin {kind:?}"));
        if self.hang == Some(Hang::Begin) {
            self.hang("begin");
        }
        // One 4 KiB write takes well under a millisecond; allow for a slow disk.
        Ok(self.write_delay + Duration::from_millis(100))
    }

    fn finish(&mut self, _deadline: Deadline) -> FinishReport {
        self.note("finish");
        if self.hang == Some(Hang::Finish) {
            self.hang("finish");
        }
        let started = std::time::Instant::now();
        std::thread::sleep(self.write_delay);
        if self.after_disk {
            let limit = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match self.disk.read(0, 1) {
                    Err(DiskClientError::Errno { errno })
                        if errno == nvmed::disk::errno::ESHUTDOWN =>
                    {
                        self.note("the disk refuses reads: it is shutting down");
                        break;
                    }
                    _ if std::time::Instant::now() >= limit => {
                        self.note("the disk did not shut down within 10 s");
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        let total = self.dirty.len();
        let report = match self.write_back() {
            Ok(n) => FinishReport::new(
                FinishOutcome::Clean,
                started.elapsed(),
                format!(
                    "wrote {n} bytes of dirty data at byte {} and synced them (NVMe Flush)",
                    self.offset
                ),
            ),
            Err((n, why)) => FinishReport::new(
                FinishOutcome::Failed,
                started.elapsed(),
                format!("{why}; {} of {total} bytes of dirty data lost", total - n),
            ),
        };
        self.note(&format!("finish {:?} {}", report.outcome, report.detail));
        report
    }
}

fn run(a: Args) -> Result<(), String> {
    let disk =
        DiskClient::open(&a.disk, &a.entry, DISK_TIMEOUT).map_err(|e: DiskClientError| {
            format!("opening entry {} of {}: {e}", a.entry, a.disk.display())
        })?;
    let log = match &a.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let (conn, id) = driver::register(
        &a.participants,
        &a.name,
        ShutdownSupport::TwoPhase,
        a.providers.clone(),
    )
    .map_err(|e| format!("registering with pcid: {e}"))?;
    let fs = Fs {
        disk,
        dirty: dirty_pattern(&a.name, a.dirty),
        offset: a.offset,
        write_delay: a.write_delay,
        hang: a.hang,
        after_disk: a.after_disk,
        log,
    };
    println!("testfsd: ready {id}");
    let _ = std::io::stdout().flush();
    let outcome = conn.serve(fs).map_err(|e| format!("serving: {e}"))?;
    log::info!("testfsd: {outcome:?}");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testfsd: {e} (testfsd --help shows the usage)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testfsd: error: {e}");
            ExitCode::FAILURE
        }
    }
}
