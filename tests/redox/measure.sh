#!/usr/bin/env bash
# Measures the Redox end-to-end run: boot to power-off (QEMU wall time) and
# the report's total (first Begin to last answer, in the guest), for 1 and 16
# NVMe controllers, two-phase and --sequential.
#
#   tests/redox/measure.sh [REPEATS] [extra redox-e2e options...]
#
# Each run is a full redox-e2e run (its checks must pass); the Redox build is
# cached, so after the first run only the boot repeats. Results are printed
# as a table and kept under .cache/redox-e2e/measure/. tests/qemu/measure.sh
# measures the Linux guest the same way.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats=${1:-3}
shift || true
out=.cache/redox-e2e/measure
mkdir -p "$out"
cargo build --release --bin redox-e2e
exe="${CARGO_TARGET_DIR:-target}/release/redox-e2e"
printf '%-4s %-10s %3s %10s %10s\n' N mode run boot_ms total_ms
for n in 1 16; do
    for mode in two-phase sequential; do
        flag=""
        [ "$mode" = sequential ] && flag="--sequential"
        for r in $(seq 1 "$repeats"); do
            json="$out/n$n-$mode-$r.json"
            "$exe" --controllers "$n" $flag --json "$json" "$@" >"$out/n$n-$mode-$r.log" 2>&1 \
                || { echo "run failed: see $out/n$n-$mode-$r.log"; tail -n 3 "$out/n$n-$mode-$r.log"; exit 1; }
            python3 - "$json" "$n" "$mode" "$r" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f'{sys.argv[2]:<4} {sys.argv[3]:<10} {sys.argv[4]:>3} '
      f'{d["redox"]["boot_to_poweroff_ms"]:>10.0f} {d["total_ms"]:>10.1f}')
PY
        done
    done
done
