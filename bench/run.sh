#!/usr/bin/env bash
# driftwatch beside the tools users would otherwise pick, on the same data,
# on this machine, in one run:
#
#   bench/run.sh [--no-scaling | --scaling-only] [PREDICTIONS]   (default 1000000)
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
# 6. the memory-scaling run: at each size of BENCH_SCALING_SIZES (default
#    1M, 5M and 20M predictions), driftwatch (`drift` and `all`) and every
#    peer read the same Parquet file once; peak RSS, or the size at which a
#    tool fails. Each run gets BENCH_PEER_TIMEOUT seconds (default 1500);
#    a tool that failed, or whose time extrapolated from the sizes before
#    would pass that limit, is not run at the larger sizes (the table says
#    which and why);
# 7. writes bench/results/results.json, bench/results/table.md,
#    bench/results/throughput.svg, and the tables into docs/BENCHMARKS.md.
#
# --no-scaling leaves out step 6; --scaling-only runs only step 6 and then
# regenerates the tables with the figures of steps 2–5 that the work
# directory holds from an earlier run.
#
# Needs GNU time (/usr/bin/time) and python3 with venv. Work files go to
# BENCH_DIR (default /tmp/driftwatch-bench18); virtual environments to
# BENCH_VENVS (default ~/.cache/driftwatch/bench). DRIFTWATCH_BIN measures
# another build instead of building this checkout. BENCH_RESULTS writes the
# results elsewhere (and leaves docs/BENCHMARKS.md alone).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PARTS="compare scaling"
case "${1:-}" in
  --no-scaling) PARTS=compare; shift ;;
  --scaling-only) PARTS=scaling; shift ;;
  -*) echo "usage: bench/run.sh [--no-scaling | --scaling-only] [PREDICTIONS]" >&2; exit 2 ;;
esac
PREDICTIONS="${1:-1000000}"
SIZES="${BENCH_SCALING_SIZES:-1000000 5000000 20000000}"
PEER_TIMEOUT="${BENCH_PEER_TIMEOUT:-1500}"
PEERS="exact nannyml evidently whylogs river"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench18}"
VENVS="${BENCH_VENVS:-$HOME/.cache/driftwatch/bench}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results}"
DOCS=()
[ -n "${BENCH_RESULTS:-}" ] || DOCS=(--docs "$ROOT/docs/BENCHMARKS.md")
mkdir -p "$WORK" "$VENVS" "$RESULTS"
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time: apt-get install time" >&2; exit 1; }

if [ -n "${DRIFTWATCH_BIN:-}" ]; then
  BIN=$DRIFTWATCH_BIN
else
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/driftwatch"
fi

# workload N FORMAT: the standard workload of N predictions (generated once)
workload() {
  local file="$WORK/workload-$1.$2"
  [ -f "$file" ] || "$BIN" gen --predictions "$1" --model churn --numeric-features 20 \
    --categorical-features 5 --late-fraction 0 --seed 42 --out "$file" 2>/dev/null
  echo "$file"
}

# timed NAME CONFIG OUTFILE CMD...: runs CMD under GNU time and appends a
# line to $TIMES (with SIZE predictions); a command that exits 124 (from
# `timeout`) ran out of time
SIZE=$PREDICTIONS
timed() {
  local name=$1 config=$2 out=$3
  shift 3
  local status=ok code=0
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.txt" "$@" >"$out" 2>"$WORK/stderr.txt" || code=$?
  # a failed command adds a line before the figures
  read -r wall user sys rss < <(tail -n 1 "$WORK/time.txt") || true
  local error=""
  if [ "$code" = 124 ]; then
    status=timeout error="stopped at the limit of $PEER_TIMEOUT s (BENCH_PEER_TIMEOUT)"
  elif [ "$code" = 137 ]; then
    status=failed error="killed by signal 9 (the kernel's out-of-memory kill)"
  elif [ "$code" != 0 ]; then
    status=failed error="exit $code: $(tail -c 600 "$WORK/stderr.txt")"
  fi
  python3 - "$name" "$config" "$status" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$SIZE" "$error" >>"$TIMES" <<'PY'
import json, sys
name, config, status, wall, user, sys_, rss, size, error = sys.argv[1:10]
print(json.dumps({"tool": name, "config": config, "status": status, "wall_s": float(wall),
                  "cpu_s": float(user) + float(sys_), "peak_rss_kib": int(rss),
                  "predictions": int(size), "error": error or None}))
PY
  echo "  $name $config ($SIZE): $status, wall ${wall:-?}s, cpu $(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN{print u+s}')s, rss $(( ${rss:-0} / 1024 )) MiB" >&2
}

# installed PEER: the peer's virtual environment, installed from its
# requirements when they changed; on failure a line in $TIMES and status 1
installed() {
  local peer=$1 venv="$VENVS/venv-$1" req="$ROOT/bench/requirements/$1.txt"
  if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
    echo "installing $peer into $venv" >&2
    if python3 -m venv "$venv" >"$WORK/install-$peer.txt" 2>&1 \
      && "$venv/bin/pip" install -q -r "$req" >>"$WORK/install-$peer.txt" 2>&1; then
      cp "$req" "$venv/.requirements"
    else
      python3 -c 'import json,sys; print(json.dumps({"tool": sys.argv[1], "config": "install", "status": "failed", "predictions": int(sys.argv[3]), "error": open(sys.argv[2]).read()[-600:]}))' \
        "$peer" "$WORK/install-$peer.txt" "$SIZE" >>"$TIMES"
      echo "  $peer: install failed (see $WORK/install-$peer.txt)" >&2
      return 1
    fi
  fi
}

# peer PEER FILE OUT: times the peer on FILE, its output in OUT.jsonl and
# its messages in OUT.stderr.txt
peer() {
  timed "$1" drift "$3.jsonl" timeout -k 10 "$PEER_TIMEOUT" env PYTHONPATH="$ROOT/bench/peers" \
    "$VENVS/venv-$1/bin/python" "$ROOT/bench/peers/$1_peer.py" "$2"
  cp "$WORK/stderr.txt" "$3.stderr.txt"
}

. scripts/replay-configs.sh
replay_unset() {
  unset DRIFTWATCH__DATA_DIR DRIFTWATCH__SQL__RULES_DIR DRIFTWATCH__DRIFT__ENABLED DRIFTWATCH__PERFORMANCE__ENABLED \
    DRIFTWATCH__INGEST__MAX_FUTURE_SKEW
}

if [[ " $PARTS " == *" compare "* ]]; then
JSONL=$(workload "$PREDICTIONS" jsonl)
PARQUET=$(workload "$PREDICTIONS" parquet)
TIMES="$WORK/times.jsonl"
: >"$TIMES"

echo "driftwatch replay ($BIN)" >&2
export DRIFTWATCH__DATA_DIR="$WORK/data"
for i in 1 2 3; do
  for c in summaries drift all rules; do
    replay_config "$c"
    rm -rf "$WORK/data" "$WORK/dw-$c"
    timed driftwatch "$c" "$WORK/dw-$c.txt" "$BIN" replay "$JSONL" -q --replace --out "$WORK/dw-$c"
  done
done
replay_unset

for p in $PEERS; do
  installed "$p" || continue
  echo "$p" >&2
  peer "$p" "$PARQUET" "$WORK/$p"
done

echo "driftwatch from the local broker against a bare rdkafka consumer" >&2
if DRIFTWATCH_BIN="$BIN" KAFKA_EVENTS_FILE="$JSONL" scripts/bench-kafka.sh >"$WORK/kafka.txt" 2>"$WORK/kafka.stderr.txt"; then
  cat "$WORK/kafka.txt" >&2
else
  echo "  the Kafka run failed (see $WORK/kafka.stderr.txt)" >&2
fi
fi

if [[ " $PARTS " == *" scaling "* ]]; then
echo "memory as the workload grows: $SIZES predictions" >&2
TIMES="$WORK/scaling.jsonl"
: >"$TIMES"
SCALE="$WORK/scaling"
# per tool and configuration: the wall times and sizes measured so far, and
# why it is not run any more
declare -A walls=() sizes=() stopped=()

# due KEY: empty when KEY should run at SIZE; otherwise why not. A tool that
# failed is not run again; one whose time, extrapolated from its last two
# sizes (t ∝ size^k, k from those two, at least 1), would pass the limit is
# not started.
due() {
  local key=$1
  if [ -n "${stopped[$key]:-}" ]; then
    echo "${stopped[$key]}"
    return
  fi
  [ -n "${walls[$key]:-}" ] || return 0
  local projected
  projected=$(awk -v w="${walls[$key]}" -v s="${sizes[$key]}" -v n="$SIZE" 'BEGIN{
    c = split(w, t, " "); split(s, z, " "); k = 1
    if (c >= 2 && t[c-1] > 0 && z[c] != z[c-1]) { k = log(t[c]/t[c-1]) / log(z[c]/z[c-1]); if (k < 1) k = 1 }
    printf "%d", t[c] * (n / z[c]) ^ k }')
  [ "$projected" -le "$PEER_TIMEOUT" ] \
    || echo "not run: ${walls[$key]##* } s at ${sizes[$key]##* } predictions projects to $projected s, over the limit of $PEER_TIMEOUT s"
}

# scaled KEY TOOL CONFIG CMD...: times CMD at SIZE when KEY is due (with
# the time limit), or records why it is not run
scaled() {
  local key=$1 tool=$2 config=$3 reason
  shift 3
  reason=$(due "$key")
  if [ -n "$reason" ]; then
    stopped[$key]=$reason
    python3 -c 'import json,sys; print(json.dumps({"tool": sys.argv[1], "config": sys.argv[2], "status": "skipped", "predictions": int(sys.argv[3]), "error": sys.argv[4]}))' \
      "$tool" "$config" "$SIZE" "$reason" >>"$TIMES"
    echo "  $tool $config ($SIZE): $reason" >&2
    return
  fi
  "$@"
  local status wall
  read -r status wall < <(tail -n 1 "$TIMES" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["status"], r["wall_s"])')
  walls[$key]="${walls[$key]:-} $wall"
  sizes[$key]="${sizes[$key]:-} $SIZE"
  [ "$status" = ok ] || stopped[$key]="not run: $status at $SIZE predictions"
}

# measured_or_peer PEER FILE: the comparison's figures of PEER when it ran on
# this same file (the comparison's peers read the Parquet workload of its
# size too), or a run of its own
measured_or_peer() {
  local earlier
  earlier=$(python3 - "$WORK/times.jsonl" "$1" "$SIZE" <<'PY'
import json, sys
path, tool, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    rows = [json.loads(l) for l in open(path) if l.strip()]
except OSError:
    rows = []
ok = [r for r in rows if r["tool"] == tool and r["config"] == "drift"
      and r.get("predictions") == size and r["status"] == "ok"]
if ok:
    print(json.dumps(dict(ok[-1], measured="in the comparison above")))
PY
)
  if [ -n "$earlier" ]; then
    echo "$earlier" >>"$TIMES"
    echo "  $1 drift ($SIZE): the comparison's run of the same file" >&2
  else
    peer "$1" "$2" "$SCALE-$1-$SIZE"
  fi
}

for SIZE in $SIZES; do
  file=$(workload "$SIZE" parquet)
  export DRIFTWATCH__DATA_DIR="$SCALE/data"
  for c in drift all; do
    replay_config "$c"
    rm -rf "$SCALE"
    scaled "dw-$c" driftwatch "$c" timed driftwatch "$c" /dev/null \
      timeout -k 10 "$PEER_TIMEOUT" "$BIN" replay "$file" -q --replace --out "$SCALE/out"
    # a run that refused events did not do the work the peers did
    python3 - "$TIMES" "$SCALE/out/run-summary.json" <<'PY'
import json, sys
times, summary = sys.argv[1], sys.argv[2]
try:
    s = json.load(open(summary))
except OSError:
    sys.exit(0)
if s.get("rejected"):
    rows = open(times).read().splitlines()
    last = json.loads(rows[-1])
    last.update(status="failed", error=f"{s['rejected']} events refused: {s.get('rejected_by_reason')}")
    rows[-1] = json.dumps(last)
    open(times, "w").write("\n".join(rows) + "\n")
PY
  done
  replay_unset
  for p in $PEERS; do
    installed "$p" || continue
    scaled "$p" "$p" drift measured_or_peer "$p" "$file"
  done
  # the large files only for this run
  [ "$SIZE" = "$PREDICTIONS" ] || rm -f "$file"
done
fi

python3 "$ROOT/bench/report.py" --work "$WORK" --predictions "$PREDICTIONS" \
  --binary "$BIN" --venvs "$VENVS" --results "$RESULTS" "${DOCS[@]}"
