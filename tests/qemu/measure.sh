#!/usr/bin/env bash
# Measures the QEMU end-to-end run: boot to power-off (QEMU wall time), the
# kernel's boot until /init runs, pcid start until its readiness line (driver
# bring-up and self-test), the guest's shutdownd run (process start to exit)
# and the report's total (first Begin to last answer), for 1 and 16
# controllers, two-phase and --sequential.
#
#   tests/qemu/measure.sh [REPEATS] [extra qemu-e2e options...]
#
# Each run is a full qemu-e2e run (its checks must pass). The binary is built
# once up front; results are printed as a table and kept under
# .cache/qemu-e2e/measure/.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats=${1:-3}
shift || true
out=.cache/qemu-e2e/measure
mkdir -p "$out"
cargo build --release --bin qemu-e2e
exe="${CARGO_TARGET_DIR:-target}/release/qemu-e2e"
printf '%-4s %-10s %3s %10s %10s %10s %12s %10s\n' N mode run boot_ms kernel_ms ready_ms shutdownd_ms total_ms
for n in 1 16; do
    for mode in two-phase sequential; do
        flag=""
        [ "$mode" = sequential ] && flag="--sequential"
        for r in $(seq 1 "$repeats"); do
            json="$out/n$n-$mode-$r.json"
            "$exe" --controllers "$n" $flag --quiet --json "$json" "$@" >"$out/n$n-$mode-$r.log" 2>&1 \
                || { echo "run failed: see $out/n$n-$mode-$r.log"; tail -n 3 "$out/n$n-$mode-$r.log"; exit 1; }
            python3 - "$json" "$n" "$mode" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
q = d["qemu"]
nan = float("nan")
print(f'{sys.argv[2]:<4} {sys.argv[3]:<10} {sys.argv[4]:>3} {q["boot_to_poweroff_ms"]:>10.0f} '
      f'{q.get("guest_kernel_to_init_ms", nan):>10.0f} {q.get("guest_pcid_ready_ms", nan):>10.0f} '
      f'{q.get("guest_shutdownd_ms", nan):>12.0f} {d["total_ms"]:>10.1f}')
PY
        done
    done
done
