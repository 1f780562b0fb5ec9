#!/usr/bin/env bash
# Kafka benchmark: end-to-end events/s from the broker through the detectors
# (`driftwatch run --exit-at-end`, every detector on) against a bare rdkafka
# consumer reading the same topic, alternated in one run; the ratio is the
# figure.
#
#   scripts/bench-kafka.sh [EVENTS]     (default 500000)
#   KAFKA_EVENTS_FILE=FILE scripts/bench-kafka.sh   (the events of FILE instead)
#   DRIFTWATCH_BIN=PATH scripts/bench-kafka.sh      (measure that driftwatch build)
#
# Starts a private Tansu broker (scripts/tansu.sh) on a free loopback port,
# creates the topics, publishes EVENTS generated events with
# `driftwatch produce`, then runs each consumer three times from the start of
# the topic (a new consumer group each time). Needs the Python venv that
# scripts/test.sh makes (for the admin client).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-500000}"
TOOLS="${DRIFTWATCH_TOOLS:-$HOME/.cache/driftwatch/tools}"
PY="$TOOLS/venv/bin/python"
[ -x "$PY" ] || { echo "run scripts/test.sh once first (it makes $TOOLS/venv)" >&2; exit 1; }
TARGET="${CARGO_TARGET_DIR:-target}"
# DRIFTWATCH_BIN: measure that build (bench/run.sh passes its own)
if [ -n "${DRIFTWATCH_BIN:-}" ]; then
  cargo build --release --quiet --example bare_consumer
  BIN=$DRIFTWATCH_BIN
else
  cargo build --release --quiet --bin driftwatch --example bare_consumer
  BIN="$TARGET/release/driftwatch"
fi
BARE="$TARGET/release/examples/bare_consumer"

WORK="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
scripts/tansu.sh start "$PORT" "$WORK/broker" >"$WORK/tansu.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
"$PY" - "$PORT" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
for f in admin.create_topics([NewTopic("events", 4, 1), NewTopic("dead-letters", 1, 1)]).values():
    f.result()
PY

config() {
  cat >"$WORK/$1.toml" <<TOML
data_dir = "$WORK/data-$1"
[kafka]
brokers = "127.0.0.1:$PORT"
group_id = "$1"
topics = ["events"]
dead_letter_topic = "dead-letters"
TOML
  echo "$WORK/$1.toml"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
if [ -n "${KAFKA_EVENTS_FILE:-}" ]; then
  EVENTS_FILE=$KAFKA_EVENTS_FILE
  EVENTS=$(wc -l <"$EVENTS_FILE")
else
  EVENTS_FILE="$WORK/events.jsonl"
  "$BIN" gen --events "$EVENTS" --out "$EVENTS_FILE" 2>/dev/null
fi
echo "events: $EVENTS"
"$BIN" --config "$(config producer)" produce "$EVENTS_FILE" --topic events 2>/dev/null
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || { cat "$WORK/err.txt" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { print e - s }'
}
for i in 1 2 3; do
  bare=$(timed "$BARE" "127.0.0.1:$PORT" "bare-$i" events)
  dw=$(timed "$BIN" --config "$(config "dw-$i")" run --exit-at-end)
  read_n=$(grep -oE '^read [0-9]+' "$WORK/out.txt" | cut -d' ' -f2)
  awk -v n="$EVENTS" -v b="$bare" -v d="$dw" -v r="$read_n" 'BEGIN {
    printf "run %d: bare consumer %6.2fs %8.0f records/s | driftwatch run %6.2fs %8.0f events/s (%d read) | ratio %.0f %%\n",
      '"$i"', b, n / b, d, n / d, r, 100 * b / d }'
done
