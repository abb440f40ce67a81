//! `pcid-conformance [OPTIONS] [--] DRIVER [ARGS…]`: runs DRIVER under a
//! scripted pcid on a simulated function and prints one PASS/FAIL/SKIP line
//! per protocol rule, with what it measured. Exit status 0 when no check
//! failed, 1 when one did, 2 when the tool itself could not run.

use std::process::ExitCode;
use std::time::Duration;

use pcid_conformance::{check, Options, Status, CHECKS};
use pcid_interface::function::PciAddress;

const USAGE: &str = "usage: pcid-conformance [OPTIONS] [--] DRIVER [ARGS...]";

const HELP: &str = "Runs DRIVER as pcid would (its channel fd in PCID_CLIENT_CHANNEL, a minimal
environment, standard output and error captured), on one simulated PCI function,
and checks that it keeps pcid's shutdown protocol (PROTOCOL.md). It is started
three times: the whole conversation; a frame of an unsupported header version;
pcid closing the channel. Each check prints PASS, FAIL or SKIP with what it
measured. Exit status: 0 when no check failed, 1 when one did, 2 when the tool
could not run (bad arguments, the driver cannot be started).

Options:
  --model FILE           the simulated function's device model file, handed
                         to the driver in PCID_SIM_MODEL as pcid's simulated
                         bus does (e.g. an nvme_sim::SimConfig file with
                         'shutdown_latency_ms = 300' for nvmed-test)
  --env NAME=VALUE       add to the driver's environment (repeatable)
  --address SSSS:BB:DD.F the function's address (default 0000:00:04.0)
  --ids VVVV:DDDD        vendor and device id, hex (default 1b36:0010)
  --class CC:SS:PI       class, subclass, interface, hex (default 01:08:02)
  --begin-deadline-ms MS the Begin deadline sent (default 2000, shutdownd's)
  --ready-timeout-ms MS  how long Ready may take (default 30000)
  --verbose              copy the driver's standard error as it comes
  -h, --help             this help
  -V, --version          the version

Checks:";

struct Args {
    opts: Options,
}

fn parse_hex_pair(v: &str, flag: &str) -> Result<(u16, u16), String> {
    let (a, b) = v
        .split_once(':')
        .ok_or_else(|| format!("{flag}: expected VVVV:DDDD, got `{v}`"))?;
    let p = |x: &str| u16::from_str_radix(x, 16).map_err(|_| format!("{flag}: `{x}` is not hex"));
    Ok((p(a)?, p(b)?))
}

fn parse_class(v: &str) -> Result<(u8, u8, u8), String> {
    let parts: Vec<&str> = v.split(':').collect();
    let [a, b, c] = parts[..] else {
        return Err(format!("--class: expected CC:SS:PI, got `{v}`"));
    };
    let p = |x: &str| u8::from_str_radix(x, 16).map_err(|_| format!("--class: `{x}` is not hex"));
    Ok((p(a)?, p(b)?, p(c)?))
}

fn parse() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut opts = Options::new(String::new(), Vec::new());
    let mut program: Option<String> = None;
    let text = |v: std::ffi::OsString, flag: &str| {
        v.into_string()
            .map_err(|_| format!("{flag}: the value is not valid UTF-8"))
    };
    let millis = |v: String, flag: &str| {
        v.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{flag}: `{v}` is not a whole number of milliseconds"))
    };
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => {
                println!("{USAGE}\n\n{HELP}");
                for (name, what) in CHECKS {
                    println!("  {name:<21}  {what}");
                }
                return Ok(None);
            }
            Short('V') | Long("version") => {
                println!("pcid-conformance {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            Long("model") => {
                let path = std::path::PathBuf::from(parser.value().map_err(|e| e.to_string())?);
                if !path.is_file() {
                    return Err(format!("--model {}: not a readable file", path.display()));
                }
                opts.model = Some(path);
            }
            Long("env") => {
                let v = text(parser.value().map_err(|e| e.to_string())?, "--env")?;
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--env: expected NAME=VALUE, got `{v}`"))?;
                opts.env.push((k.to_string(), val.to_string()));
            }
            Long("address") => {
                let v = text(parser.value().map_err(|e| e.to_string())?, "--address")?;
                opts.address = v
                    .parse::<PciAddress>()
                    .map_err(|e| format!("--address: {e}"))?;
            }
            Long("ids") => {
                opts.ids = parse_hex_pair(
                    &text(parser.value().map_err(|e| e.to_string())?, "--ids")?,
                    "--ids",
                )?
            }
            Long("class") => {
                opts.class = parse_class(&text(
                    parser.value().map_err(|e| e.to_string())?,
                    "--class",
                )?)?
            }
            Long("begin-deadline-ms") => {
                let v = text(
                    parser.value().map_err(|e| e.to_string())?,
                    "--begin-deadline-ms",
                )?;
                opts.begin_deadline = millis(v, "--begin-deadline-ms")?;
            }
            Long("ready-timeout-ms") => {
                let v = text(
                    parser.value().map_err(|e| e.to_string())?,
                    "--ready-timeout-ms",
                )?;
                opts.ready_timeout = millis(v, "--ready-timeout-ms")?;
            }
            Long("verbose") => opts.verbose = true,
            Value(v) => {
                program = Some(text(v, "DRIVER")?);
                for a in parser.raw_args().map_err(|e| e.to_string())? {
                    opts.args.push(text(a, "ARGS")?);
                }
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    opts.program = program.ok_or("the driver to run is missing")?;
    Ok(Some(Args { opts }))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcid-conformance: {e} (pcid-conformance --help shows the usage)");
            return ExitCode::from(2);
        }
    };
    let verdict = match check(&args.opts) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("pcid-conformance: {e}");
            return ExitCode::from(2);
        }
    };
    match &verdict.driver {
        Some((name, support)) => println!(
            "pcid-conformance: {} (\"{name}\", {support:?}) on {}",
            args.opts.program, args.opts.address
        ),
        None => println!(
            "pcid-conformance: {} on {}",
            args.opts.program, args.opts.address
        ),
    }
    for r in &verdict.results {
        println!("{}  {:<20} {}", r.status.as_str(), r.name, r.figure);
    }
    let count = |s: Status| verdict.results.iter().filter(|r| r.status == s).count();
    let failed = verdict.failed();
    if failed.is_empty() {
        println!(
            "pcid-conformance: PASS ({} checks passed, {} skipped)",
            count(Status::Pass),
            count(Status::Skip)
        );
        ExitCode::SUCCESS
    } else {
        let tail: Vec<&str> = verdict.stderr.lines().collect();
        if !tail.is_empty() && !args.opts.verbose {
            eprintln!("pcid-conformance: the driver's last lines on standard error:");
            for l in &tail[tail.len().saturating_sub(15)..] {
                eprintln!("  {l}");
            }
        }
        println!(
            "pcid-conformance: FAIL ({} of {} checks failed: {}; {} passed, {} skipped)",
            failed.len(),
            verdict.results.len(),
            failed.join(", "),
            count(Status::Pass),
            count(Status::Skip)
        );
        ExitCode::from(1)
    }
}
