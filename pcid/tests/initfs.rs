//! The init files in `initfs/` start pcid with arguments pcid accepts.

use std::path::{Path, PathBuf};

use pcid::cli::{self, Command};

fn initfs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../initfs")
}

/// Parse pcid arguments as pcid on Redox would.
fn parse_pcid_args(args: &[String]) -> cli::Args {
    match cli::parse_on(args.to_vec(), true) {
        Ok(Command::Run(a)) => *a,
        other => panic!("pcid rejects {args:?}: {other:?}"),
    }
}

fn rc_pcid_args() -> Vec<String> {
    let text = std::fs::read_to_string(initfs().join("etc/init_pcid.rc")).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a command line");
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    // Redox init scripts know `requires_weak`, `nowait` and bare commands; a
    // bare command runs and waits for the (daemonizing) foreground process.
    assert_eq!(words[0], "pcid", "{line}");
    words[1..].to_vec()
}

#[test]
fn init_script_starts_pcid_with_the_initfs_table() {
    let args = parse_pcid_args(&rc_pcid_args());
    assert_eq!(args.bus, cli::BusChoice::Redox);
    assert_eq!(
        args.match_dir,
        Some(PathBuf::from("/scheme/initfs/lib/pcid.d"))
    );
    assert_eq!(
        args.driver_path,
        [PathBuf::from("/scheme/initfs/lib/drivers")]
    );
    // The table it names is the repository's.
    let table = initfs().join("lib/pcid.d/initfs.toml");
    assert!(table.is_file());
}

#[test]
fn init_unit_matches_the_init_script() {
    let text = std::fs::read_to_string(initfs().join("lib/init.d/10_pcid.service")).unwrap();
    let unit: toml::Table = text.parse().unwrap();
    assert!(unit["unit"]["description"].as_str().is_some());
    let service = &unit["service"];
    assert_eq!(service["cmd"].as_str(), Some("pcid"));
    assert_eq!(service["type"].as_str(), Some("notify"));
    let args: Vec<String> = service["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, rc_pcid_args());
    parse_pcid_args(&args);
}

#[test]
fn shutdown_script_runs_shutdownd_against_pcids_control_endpoint() {
    let text = std::fs::read_to_string(initfs().join("etc/shutdown.rc")).unwrap();
    let line = text
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "shutdownd");
    let control = words
        .iter()
        .position(|w| *w == "--control")
        .map(|i| words[i + 1]);
    assert_eq!(control, Some("/scheme/pci/control"));
    // Every option it passes is one shutdownd's argument parser knows (a
    // text check: shutdownd is another package's binary).
    let parser = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shutdownd/src/cli.rs"),
    )
    .unwrap();
    for w in words.iter().filter(|w| w.starts_with("--")) {
        assert!(
            parser.contains(&format!("\"{w}\"")),
            "shutdownd does not parse {w}"
        );
    }
}
