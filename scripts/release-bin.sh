# Sourced by the bench scripts: `release_bin` prints the absolute path of
# the driftwatch binary to measure — DRIFTWATCH_BIN when set (a copy of an
# earlier commit's build, for a before/after pair), else this checkout's
# release build, built first.
release_bin() {
  local bin
  if [ -n "${DRIFTWATCH_BIN:-}" ]; then
    bin=$DRIFTWATCH_BIN
  else
    cargo build --release --quiet >&2
    bin="${CARGO_TARGET_DIR:-target}/release/driftwatch"
  fi
  realpath "$bin"
}
