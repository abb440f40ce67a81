#!/usr/bin/env bash
# Type-checks every crate that builds for Redox against the real target,
# x86_64-unknown-redox, with the real Redox crates (redox_syscall, libredox,
# redox-scheme, redox_event).
#
# What it proves: the `cfg(target_os = "redox")` code compiles and the
# Linux-only code is gated away from Redox. What it does not prove: linking
# (needs relibc) or running (needs a Redox image); the Redox boot test
# (`redox-e2e`, tests/redox/) does both.
#
# Toolchain: the active rustup toolchain (stable here) with rust-std for the
# Redox target, which rustup distributes for stable. No unstable features are
# needed: the Redox crate set is the one Redox base 6091b4662 (January 2026)
# locks for its own drivers (redox_syscall 0.6.0, libredox 0.1.11,
# redox-scheme 0.8.3, redox_event 0.4.2), and daemon start-up is the
# project's own (pcid_interface::redox::daemon), not the nightly-only
# redox-daemon crate. Set REDOX_CHECK_TOOLCHAIN=nightly to use a nightly
# toolchain instead (its Redox rust-std must exist on the dist server for
# that nightly's date).
# Outcome lines (exactly one of them is printed last):
#   redox-check: OK (<crates>)                 -> exit 0
#   redox-check: FAILED ...                    -> exit 1 (the project's code,
#       manifests or lock file)
#   REDOX CHECK DID NOT RUN: <reason>          -> exit 0, or 2 when
#       REDOX_CHECK_REQUIRED=1. Only used when the cause lies outside the
#       project: no rustup, the Redox target or the crates cannot be
#       downloaded (no network, dist server without the component).
set -uo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-redox
# Every workspace crate except `shutdown_tests` (the Linux test harness:
# QEMU guests, process-level tests on Unix sockets, benchmarks), all targets
# of each...
CRATES=(pcid_hw pcid_interface nvme_spec nvme_sim nvmed pcid shutdownd)
# ...and of `shutdown_tests` what runs on Redox: its library (the `nvme`
# module; the rest is gated to Linux) and the test build of the NVMe driver,
# which the Redox boot test runs. Its other binaries are Linux tools.
TEST_BUILD=(-p shutdown_tests --lib --bin nvmed-test)

did_not_run() {
    echo "REDOX CHECK DID NOT RUN: $1"
    if [ "${REDOX_CHECK_REQUIRED:-0}" = "1" ]; then
        exit 2
    fi
    exit 0
}

if ! command -v rustup >/dev/null 2>&1; then
    did_not_run "rustup is not installed, so the $TARGET standard library cannot be added"
fi

TOOLCHAIN="${REDOX_CHECK_TOOLCHAIN:-}"
if [ -z "$TOOLCHAIN" ]; then
    TOOLCHAIN="$(rustup show active-toolchain 2>/dev/null | awk 'NR==1 {print $1}')"
fi
if [ -z "$TOOLCHAIN" ]; then
    did_not_run "no active rustup toolchain"
fi

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "redox-check: installing toolchain $TOOLCHAIN" >&2
    if ! out="$(rustup toolchain install "$TOOLCHAIN" --profile minimal 2>&1)"; then
        did_not_run "cannot install toolchain $TOOLCHAIN: $(printf '%s\n' "$out" | grep -m1 -i 'error' || printf '%s\n' "$out" | tail -n1)"
    fi
fi

sysroot="$(rustup run "$TOOLCHAIN" rustc --print sysroot)"
if [ ! -d "$sysroot/lib/rustlib/$TARGET/lib" ]; then
    echo "redox-check: adding target $TARGET to $TOOLCHAIN" >&2
    if ! out="$(rustup target add --toolchain "$TOOLCHAIN" "$TARGET" 2>&1)"; then
        did_not_run "rustup target add $TARGET ($TOOLCHAIN) failed: $(printf '%s\n' "$out" | grep -m1 -i 'error' || printf '%s\n' "$out" | tail -n1)"
    fi
fi

pkg_args=()
for crate in "${CRATES[@]}"; do
    pkg_args+=(-p "$crate")
done

# Download what the Redox target needs first, so a network failure is told
# apart from a compile error.
if ! out="$(cargo "+$TOOLCHAIN" fetch --target "$TARGET" 2>&1)"; then
    first_error="$(printf '%s\n' "$out" | grep -m1 -i 'error' || printf '%s\n' "$out" | tail -n1)"
    # Only a failure to reach the registry is outside the project; a broken
    # manifest or lock file is the project's to fix.
    if printf '%s\n' "$out" | grep -qiE 'failed to (download|get|fetch|query|update)|resolve host|network|timed out|connection|SSL|HTTP|spurious'; then
        did_not_run "cannot download crates for $TARGET: $first_error"
    fi
    echo "redox-check: FAILED: cargo fetch --target $TARGET: $first_error"
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for args in "${pkg_args[*]}" "${TEST_BUILD[*]}"; do
    # shellcheck disable=SC2086 # the lists hold plain words
    echo "redox-check: cargo +$TOOLCHAIN check --target $TARGET $args" >&2
    # shellcheck disable=SC2086
    cargo "+$TOOLCHAIN" check --offline --target "$TARGET" $args 2>&1 | tee -a "$log" >&2
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "redox-check: FAILED: cargo check --target $TARGET $args exited with $status (errors above)"
        exit 1
    fi
done

warnings="$(grep -c '^warning' "$log" || true)"
# The cookbook recipe builds with `cargo build --locked`.
if ! cargo "+$TOOLCHAIN" tree --locked --offline --target "$TARGET" "${pkg_args[@]}" --depth 0 >/dev/null 2>&1; then
    echo "redox-check: note: Cargo.lock is not up to date; the cookbook recipe builds with --locked" >&2
fi
if [ "$warnings" -gt 0 ]; then
    echo "redox-check: note: $warnings warning lines for $TARGET (above)" >&2
fi
echo "redox-check: OK (${CRATES[*]}; shutdown_tests lib + nvmed-test)"
