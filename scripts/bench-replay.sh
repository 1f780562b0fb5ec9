#!/usr/bin/env bash
# End-to-end replay benchmark: decode + windowing throughput and peak RSS.
#
#   scripts/bench-replay.sh [EVENTS]        (default 1000000)
#
# Generates EVENTS synthetic events (seed 42) once, then replays them with
# the release build in five configurations, three times each in turn:
# summaries only (decode and windowing: the foundation's figure), with the
# drift detector, with the drift detector and label-free references of the
# three models (estimated performance and multivariate drift), with
# everything (drift, label join, performance metrics), and everything plus
# the bundled alert rules of rules/, printing events/s and peak RSS of each
# run. All but the last run without rules; all
# write the SQL history and the events table (the defaults). It also
# replays a tenth of the file to show that memory does not grow with the
# number of events. Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-1000000}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench}"
mkdir -p "$WORK"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }

# DRIFTWATCH_BIN: measure another build (a copy of an earlier commit's, for
# a before/after pair) instead of building this checkout
. scripts/release-bin.sh
BIN=$(release_bin)

FILE="$WORK/events-$EVENTS.jsonl"
[ -f "$FILE" ] || "$BIN" gen --events "$EVENTS" --out "$FILE"
SMALL="$WORK/events-$((EVENTS / 10)).jsonl"
[ -f "$SMALL" ] || "$BIN" gen --events "$((EVENTS / 10))" --out "$SMALL"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $FILE ($(du -h "$FILE" | cut -f1))"
run() {
  local file=$1
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" \
    "$BIN" replay "$file" -q --replace --dead-letter "$WORK/dead-letter.jsonl" >"$WORK/out.txt" 2>/dev/null
  read -r wall user sys rss <"$WORK/time.txt"
  local records
  records=$(grep -oE '^read [0-9]+' "$WORK/out.txt" | cut -d' ' -f2)
  awk -v n="$records" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" 'BEGIN {
    printf "  %9d events  wall %6.2fs  %9.0f events/s (wall)  %9.0f events/s per CPU-second  peak RSS %6.1f MiB\n",
      n, w, n / w, n / (u + s), r / 1024 }'
}
# label-free references (calibration, principal components) of the
# stream's three model versions, from a labelled training stream of another
# seed (its first 20,000 predictions of each, before its drift), in a data
# directory of their own: the `labelfree` configuration replays with them
LABELFREE="$WORK/data-labelfree"
TRAIN="$WORK/training-300000.jsonl"
[ -f "$TRAIN" ] || "$BIN" gen --events 300000 --seed 7 --out "$TRAIN"
# (built again every time: a few seconds, and never a stale format)
for mv in churn:v12 fraud:v3 eta:v7; do
  DRIFTWATCH__DATA_DIR="$LABELFREE" "$BIN" reference build "$TRAIN" \
    --model "${mv%%:*}" --version "${mv##*:}" --first 20000 >/dev/null
done
# the configurations, each run three times in turn (the machine's noise
# then hits each about alike)
ROOT=$PWD
. scripts/replay-configs.sh
declare -A results
for i in 1 2 3; do
  for c in summaries drift labelfree all rules; do
    export DRIFTWATCH__DATA_DIR="$WORK/data"
    if [ "$c" = labelfree ]; then
      replay_config drift
      export DRIFTWATCH__DATA_DIR="$LABELFREE"
    else
      replay_config "$c"
    fi
    results[$c]+="$(run "$FILE")"$'\n'
  done
done
export DRIFTWATCH__DATA_DIR="$WORK/data"
echo "decode + windowing + summaries (drift and performance off):"
printf "%s" "${results[summaries]}"
echo "with the drift detector (performance off):"
printf "%s" "${results[drift]}"
echo "with the drift detector and label-free references (estimated performance, multivariate drift):"
printf "%s" "${results[labelfree]}"
echo "everything on (drift, label join and performance metrics: the default):"
printf "%s" "${results[all]}"
echo "everything on and the bundled alert rules (rules/):"
printf "%s" "${results[rules]}"
echo "everything on, a tenth of the events:"
replay_config all
run "$SMALL"
