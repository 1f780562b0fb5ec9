#!/usr/bin/env bash
# The report of a long-watched model: size and opening time in a browser.
#
#   scripts/bench-report.sh [DAYS] [FEATURES]     (default 30 days, 25 features)
#
# Generates one binary model's stream over DAYS days (hourly windows, about
# 170 predictions each, FEATURES features: all but 6 numeric), replays it
# with the release build (history on, bundled rules), writes the model's
# report with `driftwatch report`, and opens it three times in headless
# Chromium through tests/browser/check_report.py, printing the page's size
# and the time to its load event (each run a new browser). Needs the test
# tools scripts/test.sh installs (Chromium, the virtual environment).
set -euo pipefail
cd "$(dirname "$0")/.."
DAYS="${1:-30}"
FEATURES="${2:-25}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/driftwatch-bench-report}"
PYTHON="${DRIFTWATCH_PYTHON:-$HOME/.cache/driftwatch/tools/venv/bin/python}"
rm -rf "$WORK" && mkdir -p "$WORK"

. scripts/release-bin.sh
BIN=$(release_bin)

PREDICTIONS=$((DAYS * 24 * 170))
INTERVAL=$((DAYS * 86400000 / PREDICTIONS))
CATEGORICAL=6
NUMERIC=$((FEATURES - CATEGORICAL))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(chromium --version 2>/dev/null | head -1)"
cd "$WORK"
"$BIN" gen --model churn --predictions "$PREDICTIONS" --interval-ms "$INTERVAL" \
  --numeric-features "$NUMERIC" --categorical-features "$CATEGORICAL" --out events.jsonl >/dev/null
DRIFTWATCH__SQL__RULES_DIR="$OLDPWD/rules" "$BIN" replay events.jsonl --replace >/dev/null
"$BIN" sql "SELECT count(*) AS windows, min(window_start) AS first, max(window_end) AS last FROM window_summary" | head -4
start=$(date +%s%N)
"$BIN" report --model churn --out report.html >/dev/null
echo "driftwatch report: $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "report.html: $(stat -c %s report.html) bytes"
SUMMARY='
import json, sys
r = json.load(sys.stdin)
marks = ", ".join(k + " " + str(v["marks"]) for k, v in r["charts"].items())
print("open", r["load_ms"], "ms; console errors", len(r["console_errors"]),
      "; failed requests", len(r["failed_requests"]), "; marks:", marks)
'
for i in 1 2 3; do
  "$PYTHON" "$OLDPWD/tests/browser/check_report.py" report.html "shot-$i.png" \
    | "$PYTHON" -c "$SUMMARY"
done
echo "screenshot: $WORK/shot-1.png"
