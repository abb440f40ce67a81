//! `redox-e2e` as a user runs it, for what needs no Redox build: bad
//! arguments, and sources that cannot be obtained (the run is reported as
//! not run, exit 0, or 2 when it is required). The boot itself runs in the
//! README's test command (`tests/run.sh`).

use std::process::Command;

fn redox_e2e(cache: &std::path::Path, src: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redox-e2e"));
    c.env("REDOX_E2E_CACHE", cache)
        .env("REDOX_SRC", src)
        .env_remove("REDOX_E2E_REQUIRED");
    c
}

#[test]
fn bad_arguments_are_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--controllers", "0"][..],
        &["--controllers", "x"],
        &["--bogus"],
    ] {
        let out = redox_e2e(dir.path(), dir.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().next().unwrap().starts_with("redox-e2e: "),
            "{err}"
        );
    }
}

#[test]
fn sources_that_cannot_be_obtained_mean_the_test_did_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-sources");
    std::fs::create_dir(&empty).unwrap();
    let cache = dir.path().join("cache");
    let out = redox_e2e(&cache, &empty).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let line: Vec<&str> = stdout.lines().collect();
    assert_eq!(line.len(), 1, "{stdout}");
    assert!(
        line[0].starts_with("REDOX E2E DID NOT RUN: source kernel is not in"),
        "{stdout}"
    );
    // Nothing was built: the first missing source stops the run.
    assert!(!cache.join("build").exists());
    let out = redox_e2e(&cache, &empty)
        .env("REDOX_E2E_REQUIRED", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
