# The replay configurations the benchmarks measure, sourced by
# scripts/bench-replay.sh and bench/run.sh: `replay_config NAME` exports the
# settings of NAME (summaries, drift, all, rules). Needs WORK (an empty rules
# directory goes there) and ROOT (the repository, for the bundled rules/).
replay_config() {
  export DRIFTWATCH__SQL__RULES_DIR="$WORK/no-rules"
  # generated streams start on 2026-11-01 at a prediction a second: past
  # 2.5M predictions they run past today, and the live clock check would
  # refuse those events as future_event (a replay of history is not live)
  export DRIFTWATCH__INGEST__MAX_FUTURE_SKEW=off
  case $1 in
    summaries) export DRIFTWATCH__DRIFT__ENABLED=false DRIFTWATCH__PERFORMANCE__ENABLED=false ;;
    drift) export DRIFTWATCH__DRIFT__ENABLED=true DRIFTWATCH__PERFORMANCE__ENABLED=false ;;
    all) export DRIFTWATCH__DRIFT__ENABLED=true DRIFTWATCH__PERFORMANCE__ENABLED=true ;;
    rules) export DRIFTWATCH__DRIFT__ENABLED=true DRIFTWATCH__PERFORMANCE__ENABLED=true \
      DRIFTWATCH__SQL__RULES_DIR="$ROOT/rules" ;;
    *) echo "unknown replay configuration $1" >&2; return 1 ;;
  esac
}
