#!/usr/bin/env bash
# What hostile or awkward input costs, with the release build:
#
#   scripts/bench-hostile.sh [EVENTS]        (default 1000000)
#
# 1. Separate files: EVENTS generated events (seed 42) replayed as one file,
#    and split into predictions.jsonl and labels.jsonl (each in the stream's
#    order) replayed as two files merged by event time; three runs each, in
#    turn, wall time and peak RSS.
# 2. Many models: 200,000 predictions of 20,000 models (10 each, one event
#    every 100 ms) replayed with the default [limits] and with room for every
#    model; peak RSS, refusals by reason, and the number of history files.
# Needs GNU time (/usr/bin/time, Debian package `time`) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-1000000}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench}"
mkdir -p "$WORK"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/driftwatch"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

FILE="$WORK/events-$EVENTS.jsonl"
[ -f "$FILE" ] || "$BIN" gen --events "$EVENTS" --out "$FILE"
PRED="$WORK/predictions-$EVENTS.jsonl"
LABELS="$WORK/labels-$EVENTS.jsonl"
if [ ! -f "$PRED" ] || [ ! -f "$LABELS" ]; then
  grep '"prediction"' "$FILE" >"$PRED"
  grep -v '"prediction"' "$FILE" >"$LABELS"
fi
export DRIFTWATCH__DATA_DIR="$WORK/data" DRIFTWATCH__SQL__RULES_DIR="$WORK/no-rules"
run() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" \
    "$BIN" replay "$@" -q --replace --out "$WORK/out-$name" >/dev/null 2>&1
  read -r wall rss <"$WORK/time.txt"
  awk -v n="$name" -v w="$wall" -v r="$rss" 'BEGIN { printf "  %-9s wall %6.2fs  peak RSS %6.1f MiB\n", n, w, r / 1024 }'
}
echo "one file ($(wc -l <"$FILE") records) against predictions and labels in two files merged by event time:"
for _ in 1 2 3; do
  run merged "$FILE"
  run split "$PRED" "$LABELS"
done
if cmp -s <(grep -v dead_letter "$WORK/out-merged/run-summary.json") \
  <(grep -v dead_letter "$WORK/out-split/run-summary.json") &&
  cmp -s "$WORK/out-merged/window_summary.jsonl" "$WORK/out-split/window_summary.jsonl"; then
  echo "  same run summary and windows"
else
  echo "  the results differ"
fi

MODELS="$WORK/models-20000.jsonl"
[ -f "$MODELS" ] || python3 - "$MODELS" <<'PY'
import json, sys
start = 1793491200000  # 2026-11-01T00:00:00Z
with open(sys.argv[1], "w") as out:
    for i in range(200_000):
        m = i % 20_000
        out.write(json.dumps({
            "event_id": f"e{i}", "model_id": f"model-{m:05d}",
            "timestamp": start + i * 100,
            "features": {"a": i % 97, "b": (i * 7) % 13, "c": ["x", "y", "z"][i % 3]},
            "prediction": {"score": (i % 100) / 100},
        }) + "\n")
PY
models() {
  local name=$1
  shift
  rm -rf "$WORK/data"
  env "$@" /usr/bin/time -f "%e %M" -o "$WORK/time.txt" \
    "$BIN" replay "$MODELS" -q --replace --out "$WORK/out-models" >/dev/null 2>&1
  read -r wall rss <"$WORK/time.txt"
  local files
  files=$(find "$WORK/data/history" -name '*.parquet' | wc -l)
  local refused
  refused=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["accepted"], "accepted,", s["rejected_by_reason"] or "none refused")' "$WORK/out-models/run-summary.json")
  awk -v n="$name" -v w="$wall" -v r="$rss" -v f="$files" -v s="$refused" \
    'BEGIN { printf "  %-28s wall %6.2fs  peak RSS %6.1f MiB  history files %5d  %s\n", n, w, r / 1024, f, s }'
}
echo "200,000 predictions of 20,000 models:"
models "default limits (1000 models)"
models "limits.max_models = 10000" DRIFTWATCH__LIMITS__MAX_MODELS=10000 DRIFTWATCH__LIMITS__MAX_OPEN_WINDOWS=20000
models "limits.max_models = 20000" DRIFTWATCH__LIMITS__MAX_MODELS=20000 DRIFTWATCH__LIMITS__MAX_OPEN_WINDOWS=20000
