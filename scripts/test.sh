#!/usr/bin/env bash
# The test command: everything the tests need is installed or built from here.
# Later issues add their external parts (a Kafka-protocol broker, an SMTP
# server) to this script, so that a fresh machine with only the Rust
# toolchain passes it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
