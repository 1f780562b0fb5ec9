#!/usr/bin/env bash
# The test command: everything the tests need is installed or built from here,
# so that a fresh machine with only the Rust toolchain, gcc and Python passes it.
#
# - a Kafka-protocol broker (Tansu 0.6.0, built once from crates.io into
#   DRIFTWATCH_TOOLS, default ~/.cache/driftwatch/tools): scripts/tansu.sh
# - Python's confluent-kafka (the third-party producer in the Kafka tests),
#   aiosmtpd (the SMTP server the email tests send to), prometheus_client
#   (the exposition parser of the API test) and playwright (which drives the
#   browser of the report test), in a virtual environment under
#   DRIFTWATCH_TOOLS
# - Debian's Chromium (the browser of the report test; Playwright's own
#   browser download is not used), installed with apt-get when missing, and
#   Debian's docker-compose (validates compose/) when no Compose client is here
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${DRIFTWATCH_TOOLS:-$HOME/.cache/driftwatch/tools}"
mkdir -p "$TOOLS"

TANSU_BIN="$(scripts/tansu.sh install)"
export TANSU_BIN

VENV="$TOOLS/venv"
if ! "$VENV/bin/python" -c 'import confluent_kafka, aiosmtpd, prometheus_client, playwright' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
export DRIFTWATCH_PYTHON="$VENV/bin/python"

CHROMIUM="${DRIFTWATCH_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium (the report test's browser)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
  else
    echo "the report test needs Chromium: sudo apt-get install chromium (or set DRIFTWATCH_CHROMIUM)" >&2
  fi
fi
export DRIFTWATCH_CHROMIUM="$CHROMIUM"

# a Compose client validates compose/ (tests/compose.rs skips, saying so, without one)
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 || true
fi

cargo test --workspace --locked "$@"
