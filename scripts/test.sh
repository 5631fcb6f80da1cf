#!/usr/bin/env bash
# Runs every test: unit, integration (real Postgres) and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
cargo test --workspace --locked "$@"
