#!/usr/bin/env bash
# HTTP ingest benchmark: events posted to `driftwatch run` as JSON Lines in
# batches of 1,000, the whole pipeline on (drift, label join and metrics,
# the bundled rules, the SQL history and events table: the defaults).
#
#   scripts/bench-http.sh [EVENTS]        (default 1000000)
#
# One curl process posts the batches one after another over one keep-alive
# connection (PARALLEL=n: n at a time; batches may then arrive out of
# order and a few events be refused as late). Prints events/s from the
# first post to the last answer, what the service accepted and refused
# (from /metrics), and the service's peak RSS. Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-1000000}"
PARALLEL="${PARALLEL:-1}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench}"
mkdir -p "$WORK"
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }

. scripts/release-bin.sh
BIN=$(release_bin)

FILE="$WORK/events-$EVENTS.jsonl"
[ -f "$FILE" ] || "$BIN" gen --events "$EVENTS" --out "$FILE"
BATCHES="$WORK/http-batches-$EVENTS"
if [ ! -d "$BATCHES" ]; then
  mkdir -p "$BATCHES"
  split -l 1000 -d -a 6 "$FILE" "$BATCHES/b-"
fi
RUN=$(mktemp -d "$WORK/http-run.XXXXXX")
PID=""
trap '[ -n "$PID" ] && { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }; rm -rf "$RUN"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
SEP=""
for b in "$BATCHES"/b-*; do
  printf '%surl = "%s/v1/events"\ndata-binary = "@%s"\nheader = "content-type: application/x-ndjson"\noutput = "/dev/null"\n' "$SEP" "$URL" "$b"
  SEP=$'next\n'
done > "$RUN/curl.cfg"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $FILE, $(ls "$BATCHES" | wc -l) batches of 1,000; parallel posts: $PARALLEL"
# the bundled rules (no rules directory in the run's directory)
(cd "$RUN" && DRIFTWATCH__API__LISTEN="127.0.0.1:$PORT" DRIFTWATCH__DATA_DIR="$RUN/data" \
  DRIFTWATCH__LOG__LEVEL=warn exec "$BIN" run 2>"$RUN/run.log" >/dev/null) &
PID=$!
for _ in $(seq 600); do
  curl -sf "$URL/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf "$URL/readyz" >/dev/null || { cat "$RUN/run.log"; exit 1; }
START=$(date +%s.%N)
if [ "$PARALLEL" -gt 1 ]; then
  curl -s -K "$RUN/curl.cfg" --parallel --parallel-max "$PARALLEL"
else
  curl -s -K "$RUN/curl.cfg"
fi
END=$(date +%s.%N)
METRICS=$(curl -s "$URL/metrics")
accepted=$(echo "$METRICS" | awk '/^driftwatch_events_total\{source="http",outcome="accepted"\}/ {print $2}')
rejected=$(echo "$METRICS" | awk '/^driftwatch_events_total\{source="http",outcome="rejected"\}/ {print $2}')
RSS=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$PID/status")
kill -TERM "$PID"
wait "$PID" || true
PID=""
awk -v s="$START" -v e="$END" -v n="$EVENTS" -v a="$accepted" -v r="$rejected" -v rss="$RSS" \
  'BEGIN { printf "posted %d events in %.2f s: %.0f events/s; accepted %d, refused %d; peak RSS %s\n", n, e - s, n / (e - s), a, r, rss }'
