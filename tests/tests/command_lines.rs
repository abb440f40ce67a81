//! Every binary of the workspace parses its command line the same way
//! (lexopt): `--help` and `--version` answer on standard output with status
//! 0, and an option it does not know is one line on standard error naming
//! it, with status 2. Needs `cargo build --release --workspace` first.

use std::process::Command;

use shutdown_tests::sim::stack::Binaries;

const BINARIES: [&str; 13] = [
    "pcid",
    "pcid-test-driver",
    "pcid-conformance",
    "nvmed",
    "shutdownd",
    "simulate",
    "qemu-e2e",
    "redox-e2e",
    "soak",
    "legacyd",
    "plaind",
    "faultyd",
    "nvmed-test",
];

#[test]
fn every_binary_has_help_version_and_refuses_unknown_flags_in_one_line() {
    let bins = Binaries::beside_current_exe().unwrap();
    for name in BINARIES {
        let path = bins.path(name);
        assert!(
            path.is_file(),
            "{} missing: build the workspace first",
            path.display()
        );
        for flag in ["--help", "-h"] {
            let out = Command::new(&path).arg(flag).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            assert!(!out.stdout.is_empty(), "{name} {flag} prints help");
        }
        for flag in ["--version", "-V"] {
            let out = Command::new(&path).arg(flag).output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.trim(),
                format!("{name} {}", env!("CARGO_PKG_VERSION")),
                "{name} {flag}"
            );
        }
        let out = Command::new(&path).arg("--no-such-flag").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} --no-such-flag");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: one line, not:\n{err}");
        assert!(
            err.starts_with(&format!("{name}: ")) && err.contains("--no-such-flag"),
            "{name}: {err}"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    }
}
