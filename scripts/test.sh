#!/usr/bin/env bash
# The test command: everything the tests need is installed or built from here,
# so that a fresh machine with only the Rust toolchain, gcc and Python passes it.
#
# - a Kafka-protocol broker (Tansu 0.6.0, built once from crates.io into
#   DRIFTWATCH_TOOLS, default ~/.cache/driftwatch/tools): scripts/tansu.sh
# - Python's confluent-kafka (the third-party producer in the Kafka tests),
#   aiosmtpd (the SMTP server the email tests send to) and prometheus_client
#   (the exposition parser of the API test), in a virtual
#   environment under DRIFTWATCH_TOOLS
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${DRIFTWATCH_TOOLS:-$HOME/.cache/driftwatch/tools}"
mkdir -p "$TOOLS"

TANSU_BIN="$(scripts/tansu.sh install)"
export TANSU_BIN

VENV="$TOOLS/venv"
if ! "$VENV/bin/python" -c 'import confluent_kafka, aiosmtpd, prometheus_client' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
export DRIFTWATCH_PYTHON="$VENV/bin/python"

cargo test --workspace --locked "$@"
