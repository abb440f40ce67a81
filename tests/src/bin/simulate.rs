//! `simulate`: the whole stack on a simulated machine, as init would run it.
//!
//! ```text
//! cargo run --release --bin simulate -- [--machine FILE] [--devices N] [--latency-ms MS]
//!     [--sequential] [--json FILE] [--svg FILE] [--kind poweroff|reboot] [--deadline-ms MS]
//!     [--fault INDEX:KIND]... [--driven-bridges-ms MS] [--filesystem INDEX[:hang]]...
//!     [--keep] [--verbose] [--no-build]
//! ```
//!
//! Writes a machine description (default: 16 NVMe controllers, 4.5 s shutdown
//! latency each, RTD3E matching, volatile write cache on, backing files in a
//! temporary directory) unless `--machine` names one, starts `pcid` on it with
//! the repository's match table (`initfs/lib/pcid.d`), waits for pcid's
//! readiness line, runs `shutdownd` (its progress and report go straight to
//! the terminal), stops pcid and exits with shutdownd's status. `--svg FILE`
//! has shutdownd draw the report as a timeline picture. When that is
//! not 0 it also prints the end of pcid's and the drivers' log; `--keep` keeps
//! the temporary directory (machine, backing files, report, log).
//!
//! `--fault INDEX:KIND` (repeatable) injects a fault into the device at
//! position INDEX of the generated machine: a controller fault
//! (`shutdown-never-completes`, `fatal-status`, `surprise-removal`) of the
//! simulated NVMe controller, or a driver fault (`driver-ignores-begin`,
//! `driver-ignores-finish`, `driver-exits-in-begin`, `driver-exits-in-finish`,
//! `driver-killed-in-begin`, `driver-killed-in-finish`,
//! `driver-exits-before-shutdown`, `driver-killed-before-shutdown`,
//! `driver-panics-in-begin`, `driver-sends-garbage`, `driver-sends-truncated-frame`,
//! `driver-sends-oversize-length`, `driver-sends-unknown-version`,
//! `driver-sends-unknown-type`, `driver-sends-duplicate-ack`,
//! `driver-sends-out-of-phase-ack`, `driver-sends-wrong-seq`,
//! `driver-sends-second-hello`), for which the device is served by the
//! example driver `faultyd` misbehaving that way. `simulate --help` lists them.
//!
//! `--filesystem INDEX` (repeatable) starts the test file system daemon
//! `testfsd` on the disk of the device at INDEX (through the test build of
//! nvmed's disk socket), holding 64 KiB of dirty data, registered with pcid
//! as a participant that depends on that disk: the report shows it first,
//! and its disk's Begin only after it wrote back. `INDEX:hang` makes it
//! never answer Finish, so shutdownd cuts it off at its deadline.
//!
//! `--driven-bridges-ms MS` gives the generated machine's PCIe root ports (one
//! per 32 controllers) a driver (`faultyd`, behaving, shutdown taking MS), so
//! the report shows each bridge beginning only after the controllers behind it
//! finished.
//!
//! The binaries are looked up next to this executable. `cargo run` builds only
//! `simulate`, so unless `--no-build` is given, simulate first runs
//! `cargo build` for pcid, nvmed, shutdownd and the example drivers in the same
//! profile (a no-op when they are up to date).

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use shutdown_tests::sim::fault::{FaultSpec, KINDS};
use shutdown_tests::sim::machine::MachineSpec;
use shutdown_tests::sim::stack::{wait_deadline, Binaries, Stack, StackOptions};

const USAGE: &str =
    "usage: simulate [--machine FILE] [--devices N] [--latency-ms MS] [--sequential] \
[--json FILE] [--svg FILE] [--kind poweroff|reboot] [--deadline-ms MS] [--fault INDEX:KIND]... [--driven-bridges-ms MS] \
[--filesystem INDEX[:hang]]... [--keep] [--verbose] [--no-build] [-h|--help] [-V|--version]";

struct Args {
    machine: Option<PathBuf>,
    devices: usize,
    latency_ms: u64,
    sequential: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    kind: String,
    deadline_ms: Option<u64>,
    faults: Vec<FaultSpec>,
    driven_bridges_ms: Option<u64>,
    filesystems: Vec<(usize, bool)>,
    keep: bool,
    verbose: bool,
    build: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    use shutdown_tests::cli::lexopt::prelude::*;
    use shutdown_tests::cli::{number, path, string, unexpected};
    let mut a = Args {
        machine: None,
        devices: 16,
        latency_ms: 4500,
        sequential: false,
        json: None,
        svg: None,
        kind: "poweroff".into(),
        deadline_ms: None,
        faults: Vec::new(),
        driven_bridges_ms: None,
        filesystems: Vec::new(),
        keep: false,
        verbose: false,
        build: true,
    };
    let mut p = shutdown_tests::cli::lexopt::Parser::from_env();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Short('V') | Long("version") => {
                println!("{}", shutdown_tests::cli::version_line("simulate"));
                std::process::exit(0);
            }
            Long("machine") => a.machine = Some(path(&mut p)?),
            Long("devices") => a.devices = number(&mut p, "--devices")?,
            Long("latency-ms") => a.latency_ms = number(&mut p, "--latency-ms")?,
            Long("sequential") => a.sequential = true,
            Long("json") => a.json = Some(path(&mut p)?),
            Long("svg") => a.svg = Some(path(&mut p)?),
            Long("kind") => {
                a.kind = string(&mut p, "--kind")?;
                if a.kind != "poweroff" && a.kind != "reboot" {
                    return Err(format!("--kind must be poweroff or reboot, not {}", a.kind));
                }
            }
            Long("deadline-ms") => a.deadline_ms = Some(number(&mut p, "--deadline-ms")?),
            Long("fault") => a.faults.push(
                string(&mut p, "--fault")?
                    .parse()
                    .map_err(|e: shutdown_tests::sim::fault::FaultError| e.to_string())?,
            ),
            Long("driven-bridges-ms") => {
                a.driven_bridges_ms = Some(number(&mut p, "--driven-bridges-ms")?)
            }
            Long("filesystem") => {
                let v = string(&mut p, "--filesystem")?;
                let (index, hang) = match v.split_once(':') {
                    Some((i, "hang")) => (i, true),
                    Some(_) => return Err(format!("--filesystem {v}: INDEX or INDEX:hang")),
                    None => (v.as_str(), false),
                };
                let index = index
                    .parse()
                    .map_err(|_| format!("--filesystem {v}: {index:?} is not a device index"))?;
                a.filesystems.push((index, hang));
            }
            Long("keep") => a.keep = true,
            Long("verbose") => a.verbose = true,
            Long("no-build") => a.build = false,
            other => return Err(unexpected(other)),
        }
    }
    if a.machine.is_some() && (!a.faults.is_empty() || a.driven_bridges_ms.is_some()) {
        return Err(
            "--fault and --driven-bridges-ms apply to the generated machine, not to --machine"
                .into(),
        );
    }
    if a.machine.is_some() && !a.filesystems.is_empty() {
        return Err("--filesystem applies to the generated machine, not to --machine".into());
    }
    if let Some((i, _)) = a.filesystems.iter().find(|(i, _)| *i >= a.devices) {
        return Err(format!("--filesystem {i}: there are {} devices", a.devices));
    }
    if a.devices == 0 || a.devices > MachineSpec::MAX_DEVICES {
        return Err(format!(
            "--devices must be between 1 and {}",
            MachineSpec::MAX_DEVICES
        ));
    }
    Ok(Some(a))
}

fn run(args: Args) -> Result<u8, String> {
    let bins = Binaries::beside_current_exe().map_err(|e| e.to_string())?;
    if args.build {
        bins.build().map_err(|e| e.to_string())?;
    } else {
        bins.check().map_err(|e| e.to_string())?;
    }
    let work = tempfile::Builder::new()
        .prefix("simulate-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let machine = match &args.machine {
        Some(m) => {
            println!("simulate: machine {}", m.display());
            m.clone()
        }
        None => {
            let mut spec = MachineSpec::nvme(args.devices, args.latency_ms, Some(work.path()));
            for f in &args.faults {
                f.apply(&mut spec).map_err(|e| e.to_string())?;
            }
            spec.driven_root_ports_ms = args.driven_bridges_ms;
            let path = work.path().join("machine.toml");
            spec.write(&path).map_err(|e| e.to_string())?;
            println!(
                "simulate: {} NVMe controllers, {} ms shutdown latency each (RTD3E {} ms), \
                 volatile write cache on; machine {}",
                args.devices,
                args.latency_ms,
                args.latency_ms,
                path.display()
            );
            for f in &args.faults {
                println!("simulate: fault {f}");
            }
            if let Some(ms) = args.driven_bridges_ms {
                println!("simulate: root ports driven by faultyd, {ms} ms shutdown each");
            }
            path
        }
    };
    let mut env = Vec::new();
    if std::env::var_os("RUST_LOG").is_none() {
        env.push(("RUST_LOG".to_string(), "warn".to_string()));
    }
    let disks = work.path().join("disks");
    let opts = StackOptions {
        machine,
        work_dir: work.path().to_path_buf(),
        ready_timeout: Duration::from_secs(90),
        env,
        driver_env: if args.filesystems.is_empty() {
            Vec::new()
        } else {
            vec![(
                shutdown_tests::nvme::disk_socket::DISK_DIR_ENV.to_string(),
                disks.to_string_lossy().into_owned(),
            )]
        },
        pcid_args: Vec::new(),
        inherit_stderr: args.verbose,
    };
    let stack = Stack::start(&bins, &opts).map_err(|e| e.to_string())?;
    println!(
        "simulate: {} ({} ms after start)",
        stack.ready_line(),
        stack.ready_after().as_millis()
    );

    let mut filesystems = Vec::new();
    for (n, (index, hang)) in args.filesystems.iter().enumerate() {
        let address = shutdown_tests::sim::machine::device_address(*index);
        let name = format!("fs{n}");
        let mut fs_args = vec![
            "--participants".to_string(),
            stack.participants().to_string_lossy().into_owned(),
            "--disk".to_string(),
            shutdown_tests::nvme::disk_socket::socket_path(&disks, &address)
                .to_string_lossy()
                .into_owned(),
            "--name".to_string(),
            name.clone(),
            "--provider".to_string(),
            address.clone(),
            // Inside the generated machine's 1 MiB namespaces.
            "--offset".to_string(),
            "262144".to_string(),
        ];
        if *hang {
            fs_args.extend(["--hang".to_string(), "finish".to_string()]);
        }
        let log = work.path().join(format!("{name}.log"));
        let fs = shutdown_tests::participant::Testfsd::start(
            &bins.path("testfsd"),
            &fs_args,
            &log,
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
        println!(
            "simulate: participant {name} (testfsd, 64 KiB of dirty data) on {address}'s disk{}",
            if *hang {
                ", never answering Finish"
            } else {
                ""
            }
        );
        filesystems.push(fs);
    }
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| work.path().join("report.json"));
    let mut cmd = stack.shutdownd_command();
    cmd.args(["--kind", &args.kind]).arg("--json").arg(&json);
    if args.sequential {
        cmd.arg("--sequential");
    }
    if let Some(svg) = &args.svg {
        cmd.arg("--svg").arg(svg);
    }
    // shutdownd's default global deadline (120 s) is too short for the
    // sequential baseline of a large generated machine: unless told
    // otherwise, allow every device its full finish deadline in turn.
    let deadline_ms = args.deadline_ms.or_else(|| {
        let per_device = args.latency_ms.saturating_mul(3) / 2 + 1_000;
        let needed = per_device.saturating_mul(args.devices as u64) + 10_000;
        (args.sequential && args.machine.is_none() && needed > 120_000).then_some(needed)
    });
    if let Some(d) = deadline_ms {
        cmd.args(["--deadline-ms", &d.to_string()]);
    }
    cmd.stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start shutdownd: {e}"))?;
    // shutdownd bounds itself by its global deadline (default 120 s); this
    // outer bound only guards against a broken shutdownd.
    let limit = Duration::from_millis(deadline_ms.unwrap_or(120_000)) + Duration::from_secs(30);
    let status = match wait_deadline(&mut child, limit) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "shutdownd did not exit within {limit:?} and was killed"
            ));
        }
    };
    drop(filesystems);
    let log = stack.log().map(|p| p.to_path_buf());
    if let Err(e) = stack.stop(Duration::from_secs(5)) {
        eprintln!("simulate: stopping pcid: {e}");
    }
    let code = status.code().map_or(2, |c| u8::try_from(c).unwrap_or(2));
    if args.json.is_some() {
        println!("simulate: report written to {}", json.display());
    }
    if let Some(svg) = args.svg.as_ref().filter(|p| p.is_file()) {
        println!("simulate: picture written to {}", svg.display());
    }
    if code != 0 && !args.verbose {
        // What pcid and the drivers logged explains most failures.
        if let Some(text) = log.as_ref().and_then(|l| std::fs::read_to_string(l).ok()) {
            let lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                eprintln!("simulate: last lines of the pcid and driver log:");
                for l in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("  {l}");
                }
            }
        }
    }
    if args.keep {
        let kept = work.keep();
        println!(
            "simulate: kept {}{}",
            kept.display(),
            log.map(|l| format!(" (pcid and driver log: {})", l.display()))
                .unwrap_or_default()
        );
    }
    Ok(code)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!(
                "{USAGE}\n\nfault kinds (--fault INDEX:KIND, INDEX = device position from 0):"
            );
            for (k, what) in KINDS {
                println!("  {k:<33} {what}");
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("simulate: {e} (simulate --help shows the usage)");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::from(2)
        }
    }
}
