#!/usr/bin/env bash
# A local Kafka-protocol broker (Tansu 0.6.0, SQLite storage) for development
# and tests. Nothing outside the repository is assumed: the broker is built
# from crates.io the first time (ten to fifteen minutes) into a cache.
#
#   scripts/tansu.sh install            install if missing; print the binary's path
#   scripts/tansu.sh start PORT [DIR]   run a broker on 127.0.0.1:PORT, storing in
#                                       DIR (default: a new temporary directory),
#                                       in the foreground
#
# DRIFTWATCH_TOOLS (default ~/.cache/driftwatch/tools) is where it is installed.
# Topics are not created automatically: create them through the admin API
# (the tests do; `python3 scripts/kafka_topics.py` does for development).
set -euo pipefail
VERSION=0.6.0
TOOLS="${DRIFTWATCH_TOOLS:-$HOME/.cache/driftwatch/tools}"

installed() {
  local bin
  for bin in "$TOOLS/bin/tansu" "$(command -v tansu 2>/dev/null || true)"; do
    if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$VERSION"; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

install() {
  if installed >/dev/null; then
    installed
    return
  fi
  echo "installing tansu $VERSION into $TOOLS (once; ten to fifteen minutes)" >&2
  cargo install tansu --version "$VERSION" --locked --features libsql --root "$TOOLS" >&2
  installed
}

case "${1:-}" in
  install)
    install
    ;;
  start)
    PORT="${2:?usage: scripts/tansu.sh start PORT [DIR]}"
    DIR="${3:-$(mktemp -d)}"
    mkdir -p "$DIR"
    BIN="$(install)"
    echo "tansu on 127.0.0.1:$PORT, storage $DIR/tansu.db" >&2
    # the path in a sqlite:// URL is taken relative to the working directory
    cd "$DIR"
    exec "$BIN" broker \
      --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "sqlite://tansu.db"
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
