//! The load-and-leak check (`soak`, see `tests/src/bin/soak.rs`) in a small
//! size: 32 simulated NVMe controllers through 3 start → shutdown → exit
//! cycles must leave no process, zombie or fd behind — and the checker must
//! notice a leak when the launcher commits one on purpose, so a passing run
//! means something.
//!
//! The full run is a separate command:
//! `cargo run --release --bin soak -- --devices 256 --cycles 20`.
//!
//! Needs the release binaries (`cargo build --release --workspace`).

use std::process::Command;

fn soak(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_soak"))
        .arg("--no-build")
        .args(args)
        .output()
        .expect("run soak");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn thirty_two_devices_three_cycles_leave_nothing_behind() {
    let (code, out) = soak(&["--devices", "32", "--cycles", "3", "--latency-ms", "50"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("soak: no leaks: 3 cycles × 32 devices"),
        "{out}"
    );
}

#[test]
fn an_injected_fd_leak_is_reported() {
    let (code, out) = soak(&["--devices", "1", "--cycles", "2", "--inject-leak", "fd"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("fds"), "{out}");
}

#[test]
fn an_injected_unreaped_process_is_reported() {
    let (code, out) = soak(&[
        "--devices",
        "1",
        "--cycles",
        "2",
        "--inject-leak",
        "process",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("zombies"), "{out}");
}
