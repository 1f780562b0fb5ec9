#!/usr/bin/env bash
# driftwatch beside the tools users would otherwise pick, on the same data,
# on this machine, in one run:
#
#   bench/run.sh [PREDICTIONS]      (default 1000000)
#
# 1. generates the standard workload with driftwatch's generator: PREDICTIONS
#    predictions of one binary classifier (churn) with 20 numeric and 5
#    categorical features, labels delayed minutes to days (80 % labelled),
#    drift injected half-way; as JSON Lines (what driftwatch replays) and as
#    Parquet (what the Python peers read: the easier format for them);
# 2. times driftwatch `replay` in the configurations of
#    scripts/bench-replay.sh, three times each in turn;
# 3. installs each Python peer into its own virtual environment from PyPI
#    (versions pinned in bench/requirements/) and times it as a whole process:
#    numpy/scipy/scikit-learn by hand (the exact statistics), NannyML,
#    Evidently, whylogs, River. A peer that fails to install or run is
#    reported with its error;
# 4. compares driftwatch's per-window statistics with the exact ones;
# 5. times `driftwatch run` consuming the same events from a local broker
#    (Tansu, scripts/bench-kafka.sh) against a bare rdkafka consumer;
# 6. writes bench/results/results.json, bench/results/table.md,
#    bench/results/throughput.svg, and the table into docs/BENCHMARKS.md.
#
# Needs GNU time (/usr/bin/time) and python3 with venv. Work files go to
# BENCH_DIR (default /tmp/driftwatch-bench18); virtual environments to
# BENCH_VENVS (default ~/.cache/driftwatch/bench). DRIFTWATCH_BIN measures
# another build instead of building this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PREDICTIONS="${1:-1000000}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench18}"
VENVS="${BENCH_VENVS:-$HOME/.cache/driftwatch/bench}"
RESULTS="$ROOT/bench/results"
mkdir -p "$WORK" "$VENVS" "$RESULTS"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }

if [ -n "${DRIFTWATCH_BIN:-}" ]; then
  BIN=$DRIFTWATCH_BIN
else
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/driftwatch"
fi

GEN=(--predictions "$PREDICTIONS" --model churn --numeric-features 20 --categorical-features 5 --late-fraction 0 --seed 42)
JSONL="$WORK/workload-$PREDICTIONS.jsonl"
PARQUET="$WORK/workload-$PREDICTIONS.parquet"
[ -f "$JSONL" ] || "$BIN" gen "${GEN[@]}" --out "$JSONL" 2>/dev/null
[ -f "$PARQUET" ] || "$BIN" gen "${GEN[@]}" --out "$PARQUET" 2>/dev/null

TIMES="$WORK/times.jsonl"
: >"$TIMES"
# timed NAME CONFIG OUTFILE CMD...: runs CMD under GNU time, appends a line to times.jsonl
timed() {
  local name=$1 config=$2 out=$3
  shift 3
  local status=ok
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" "$@" >"$out" 2>"$WORK/stderr.txt" || status=failed
  # a failed command adds a line before the figures
  read -r wall user sys rss < <(tail -n 1 "$WORK/time.txt") || true
  local error=""
  [ "$status" = ok ] || error=$(tail -c 600 "$WORK/stderr.txt")
  python3 - "$name" "$config" "$status" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$error" >>"$TIMES" <<'PY'
import json, sys
name, config, status, wall, user, sys_, rss, error = sys.argv[1:9]
print(json.dumps({"tool": name, "config": config, "status": status, "wall_s": float(wall),
                  "cpu_s": float(user) + float(sys_), "peak_rss_kib": int(rss), "error": error or None}))
PY
  echo "  $name $config: $status, wall ${wall:-?}s, cpu $(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN{print u+s}')s, rss $(( ${rss:-0} / 1024 )) MiB" >&2
}

echo "driftwatch replay ($BIN)" >&2
export DRIFTWATCH__DATA_DIR="$WORK/data"
. scripts/replay-configs.sh
for i in 1 2 3; do
  for c in summaries drift all rules; do
    replay_config "$c"
    rm -rf "$WORK/data" "$WORK/dw-$c"
    timed driftwatch "$c" "$WORK/dw-$c.txt" "$BIN" replay "$JSONL" -q --out "$WORK/dw-$c"
  done
done
unset DRIFTWATCH__DATA_DIR DRIFTWATCH__SQL__RULES_DIR DRIFTWATCH__DRIFT__ENABLED DRIFTWATCH__PERFORMANCE__ENABLED

for peer in exact nannyml evidently whylogs river; do
  venv="$VENVS/venv-$peer"
  req="$ROOT/bench/requirements/$peer.txt"
  stamp="$venv/.requirements"
  if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    echo "installing $peer into $venv" >&2
    if python3 -m venv "$venv" >"$WORK/install-$peer.txt" 2>&1 \
      && "$venv/bin/pip" install -q -r "$req" >>"$WORK/install-$peer.txt" 2>&1; then
      cp "$req" "$stamp"
    else
      python3 -c 'import json,sys; print(json.dumps({"tool": sys.argv[1], "config": "install", "status": "failed", "error": open(sys.argv[2]).read()[-600:]}))' \
        "$peer" "$WORK/install-$peer.txt" >>"$TIMES"
      echo "  $peer: install failed (see $WORK/install-$peer.txt)" >&2
      continue
    fi
  fi
  echo "$peer" >&2
  timed "$peer" drift "$WORK/$peer.jsonl" env PYTHONPATH="$ROOT/bench/peers" \
    "$venv/bin/python" "$ROOT/bench/peers/${peer}_peer.py" "$PARQUET"
  cp "$WORK/stderr.txt" "$WORK/$peer.stderr.txt"
done

echo "driftwatch from the local broker against a bare rdkafka consumer" >&2
if KAFKA_EVENTS_FILE="$JSONL" scripts/bench-kafka.sh >"$WORK/kafka.txt" 2>"$WORK/kafka.stderr.txt"; then
  cat "$WORK/kafka.txt" >&2
else
  echo "  the Kafka run failed (see $WORK/kafka.stderr.txt)" >&2
fi

python3 "$ROOT/bench/report.py" --work "$WORK" --predictions "$PREDICTIONS" \
  --binary "$BIN" --venvs "$VENVS" --results "$RESULTS" --docs "$ROOT/docs/BENCHMARKS.md"
