#!/usr/bin/env bash
# This stack against the kernel's own nvme driver in the same Linux guest
# (QEMU, TCG, 1 vCPU), for 1 and 16 controllers: `qemu-e2e --compare RUNS`
# boots the guest RUNS times with the kernel's driver bound to the
# controllers (its power-off timed from the kernel log: init's request to
# `reboot: Power down`) and RUNS times with this stack (shutdownd's
# shutdown phase: first Begin to last answer), alternately, and prints the
# medians side by side. Every run is a full qemu-e2e run: its checks must
# pass.
#
#   tests/qemu/compare-kernel.sh [RUNS] [extra qemu-e2e options...]
#
# Results are kept under .cache/qemu-e2e/compare/ (one JSON per count).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
shift || true
out=.cache/qemu-e2e/compare
mkdir -p "$out"
cargo build --release --bin qemu-e2e
exe="${CARGO_TARGET_DIR:-target}/release/qemu-e2e"
for n in 1 16; do
    "$exe" --controllers "$n" --compare "$runs" --quiet --json "$out/n$n.json" "$@" \
        2>"$out/n$n.log" | tee "$out/n$n.txt" \
        || { echo "comparison failed: see $out/n$n.log"; tail -n 3 "$out/n$n.log"; exit 1; }
done
