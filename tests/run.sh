#!/usr/bin/env bash
# The project's test command (README, .ci/run): build everything, then run every test.
#
# The process-level tests in tests/tests/ start the real pcid, nvmed, shutdownd and
# example driver binaries, so the whole workspace is built first (cargo test only
# builds the binaries of the package under test).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build --release --workspace"
cargo build --release --workspace

echo "== cargo test --release --workspace"
cargo test --release --workspace

# == Redox type-check (tests/redox-check.sh) goes here.

# == QEMU end-to-end run (qemu-e2e) goes here.

echo "== all tests passed"
