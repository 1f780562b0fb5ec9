#!/usr/bin/env bash
# Label join benchmark: joins per second and memory with many predictions
# awaiting their labels.
#
#   scripts/bench-labels.sh [PENDING]        (default 5000000)
#
# 1. criterion bench `label_join` (100,000 labels joined to pending
#    predictions, every prediction in memory / nearly all spilled to disk);
# 2. the `pending_labels` example with PENDING predictions awaiting labels,
#    with memory budgets of 256 MiB and 64 MiB (spilling to disk), and with
#    no spill file (everything in memory), printing peak RSS and rates.
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
PENDING="${1:-5000000}"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

cargo bench -p driftwatch-detectors --bench label_join -- --noplot 2>&1 | grep -E "^label_join|thrpt|time:"

cargo build --release --quiet -p driftwatch-detectors --example pending_labels
BIN="${CARGO_TARGET_DIR:-target}/release/examples/pending_labels"
for budget in 256 64; do
    echo "== budget $budget MiB"
    /usr/bin/time -f "wall %e s, max RSS %M KiB" "$BIN" --pending "$PENDING" --budget-mib "$budget"
done
echo "== no spill"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$BIN" --pending "$PENDING" --no-spill
