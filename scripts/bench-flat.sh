#!/usr/bin/env bash
# Flat with length: does the cost per event stay the same as the stream
# ages? Replays a generated stream of EVENTS events and one ten times as
# long (seed 42 both, so the long one starts as the short one does), with
# everything on (the `all` configuration of scripts/replay-configs.sh),
# ROUNDS times in turn, and prints per round the wall time and peak RSS of
# each and their ratios (target: time at most 10×, peak RSS within 10 %).
#
#   scripts/bench-flat.sh [EVENTS] [ROUNDS]     (default 500000, 3)
#
# Besides the peak, each run's resident memory is sampled every 50 ms: the
# median of the second half of the samples (the plateau a long stream
# settles on) tells growth apart from a short spike.
#
# The generator writes a prediction a second and labels up to two days
# later, so 500k events span about 3 days and 5M about 32: only the long
# stream reaches the steady state of the 7-day label horizon (markers of
# labelled predictions kept, runs of the pending store spilled, a history
# compaction each day). Needs about 2.6 GB of disk for the two streams.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-500000}"
ROUNDS="${2:-3}"
LONG=$((EVENTS * 10))
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench}"
mkdir -p "$WORK"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }

. scripts/release-bin.sh
BIN=$(release_bin)
for n in "$EVENTS" "$LONG"; do
  [ -f "$WORK/events-$n.jsonl" ] || "$BIN" gen --events "$n" --out "$WORK/events-$n.jsonl"
done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "binary: $BIN"

ROOT=$PWD
. scripts/replay-configs.sh
mkdir -p "$WORK/no-rules"
export WORK ROOT
replay_config all

# run N: replays events-N.jsonl into an empty data directory; prints
# "wall_seconds peak_MiB plateau_MiB"
run() {
  local file="$WORK/events-$1.jsonl" samples="$WORK/rss.txt"
  rm -rf "$WORK/data-flat" "$WORK/dead-letter-flat.jsonl"
  export DRIFTWATCH__DATA_DIR="$WORK/data-flat"
  : >"$samples"
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" \
    "$BIN" replay "$file" -q --replace --dead-letter "$WORK/dead-letter-flat.jsonl" >"$WORK/out.txt" 2>/dev/null &
  local timer=$! pid="" k v _
  # sampled with shell builtins and one sleep: the sampler itself must
  # not take a share of the two cores worth measuring
  while kill -0 "$timer" 2>/dev/null; do
    [ -n "$pid" ] || pid=$(pgrep -P "$timer" || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
      while read -r k v _; do
        [ "$k" = VmRSS: ] && echo "$v" >>"$samples"
      done <"/proc/$pid/status" 2>/dev/null || true
    fi
    sleep 0.05
  done
  wait "$timer"
  read -r wall rss <"$WORK/time.txt"
  local n plateau
  n=$(wc -l <"$samples")
  plateau=$(tail -n "$((n - n / 2))" "$samples" | sort -n |
    awk '{a[NR] = $1} END {printf "%.1f", (NR ? a[int((NR + 1) / 2)] : 0) / 1024}')
  awk -v w="$wall" -v r="$rss" -v p="$plateau" 'BEGIN {printf "%s %.1f %s\n", w, r / 1024, p}'
}

printf "%-6s %-26s %-26s %-8s %s\n" round "$EVENTS events: wall, peak" "$LONG events: wall, peak" "time ×" "peak RSS × (plateau ×)"
for r in $(seq 1 "$ROUNDS"); do
  read -r w1 p1 q1 <<<"$(run "$EVENTS")"
  read -r w2 p2 q2 <<<"$(run "$LONG")"
  awk -v r="$r" -v w1="$w1" -v p1="$p1" -v q1="$q1" -v w2="$w2" -v p2="$p2" -v q2="$q2" 'BEGIN {
    printf "%-6d %7.2f s %6.1f MiB        %7.2f s %6.1f MiB        %6.2f   %.3f (%.3f: %.1f and %.1f MiB)\n",
      r, w1, p1, w2, p2, w2 / w1, p2 / p1, q2 / q1, q1, q2 }'
done
rm -rf "$WORK/data-flat" "$WORK/dead-letter-flat.jsonl"
