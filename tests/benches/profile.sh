#!/usr/bin/env bash
# Profiles one shutdown of the whole stack on a simulated machine: starts pcid
# with N simulated NVMe controllers (the test build of nvmed), waits for its
# readiness line, then records every CPU while shutdownd runs — from its
# start to its exit, nothing of the start-up — and prints where the time went
# per process and per symbol. Needs `perf` (Debian: linux-perf); the
# software event cpu-clock works in VMs without hardware counters.
#
#   tests/benches/profile.sh [N] [LATENCY_MS] [OUT_DIR] [-- perf record options]
#   tests/benches/profile.sh 256 0 /tmp/profile-256
#   tests/benches/profile.sh 256 0 /tmp/sched-256 -- sched record   # scheduler trace
#
# OUT_DIR gets perf.data, shutdownd's report (report.json, report.txt) and
# pcid's log. The release
# binaries must be built (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-256}
latency=${2:-0}
out=${3:-/tmp/pcid-shutdown-profile-$n-$latency}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
if [ $# -gt 0 ]; then record=("$@"); else record=(record -e cpu-clock -F 10000 -a -g); fi
bin="${CARGO_TARGET_DIR:-target}/release"
for b in simulate pcid shutdownd nvmed-test; do
    [ -x "$bin/$b" ] || { echo "profile: $bin/$b missing; run cargo build --release --workspace"; exit 2; }
done
command -v perf >/dev/null || { echo "profile: perf is not installed (Debian: apt-get install linux-perf)"; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill "${sleeper:-}" "${pcid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
# simulate writes the machine description (and runs one shutdown on it,
# which warms the caches); --keep leaves it behind.
kept=$("$bin/simulate" --no-build --devices "$n" --latency-ms "$latency" --keep 2>&1 \
    | sed -n 's/^simulate: kept \([^ ]*\) .*/\1/p')
[ -n "$kept" ] && [ -f "$kept/machine.toml" ] || { echo "profile: simulate kept no machine"; exit 1; }
# In-memory namespaces, as in the benchmark (simulate's backing files would
# add the host's fdatasync to every controller's shutdown).
sed -i '/^backing_file/d' "$kept/machine.toml"
mkdir -p "$work/drivers"
ln -s "$PWD/$bin/nvmed-test" "$work/drivers/nvmed"
mkfifo "$work/stdin"
sleep 3600 >"$work/stdin" &
sleeper=$!
RUST_LOG=warn "$bin/pcid" --bus sim --machine "$kept/machine.toml" --match-dir tests/pcid.d \
    --driver-path "$work/drivers" --driver-path "$bin" --control "$work/pcid.sock" \
    --exit-on-stdin-eof <"$work/stdin" >"$work/ready" 2>"$out/pcid.log" &
pcid=$!
for _ in $(seq 1 600); do grep -q ready "$work/ready" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$work/ready" || { echo "profile: pcid not ready; see $out/pcid.log"; exit 1; }
perf "${record[@]}" -o "$out/perf.data" -- \
    "$bin/shutdownd" --control "$work/pcid.sock" --quiet --json "$out/report.json" >"$out/report.txt"
kill "$sleeper"
wait "$pcid" 2>/dev/null || true
rm -rf "$kept"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('profile: total', r['total_ms'], 'ms')" "$out/report.json"
if [ "${record[0]}" = record ]; then
    echo "== CPU by process (all CPUs, while shutdownd ran)"
    perf report -i "$out/perf.data" --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
    echo "== pcid, by symbol (self)"
    perf report -i "$out/perf.data" --comm pcid --no-children --sort sym --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -15
    echo "== nvmed, by symbol (with children)"
    perf report -i "$out/perf.data" --comm nvmed --children --sort sym --stdio -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -25
else
    echo "profile: $out/perf.data (perf sched timehist -i $out/perf.data)"
fi
