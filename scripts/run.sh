#!/usr/bin/env bash
# Starts the whole system locally: Postgres (if down), the development Kafka
# broker (unless KAFKA_BROKERS names one), then `fulcrum serve` with every
# role (api, relay, projectors, saga, sealer) in one process.
# Without JWT_SECRET (or JWT_PUBLIC_KEY_PEM) it runs with --dev, which signs
# and accepts tokens with a public development secret; mint one with
#   cargo run -q -p api --bin fulcrum -- token --dev --sub alice --role customer
# Extra arguments go to `fulcrum serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka.sh start
fi
dev=()
if [ -z "${JWT_SECRET:-}" ] && [ -z "${JWT_PUBLIC_KEY_PEM:-}" ]; then
  dev=(--dev)
fi
cargo build --release --locked -p api --bin fulcrum
# Seals are signed with FULCRUM_SEAL_KEY; without one, a key made once and
# kept in .run/seal-key.pem (so seals stay checkable across restarts).
if [ -z "${FULCRUM_SEAL_KEY:-}" ]; then
  mkdir -p .run
  if [ ! -s .run/seal-key.pem ]; then
    (umask 077 && target/release/fulcrum audit keygen > .run/seal-key.pem)
  fi
  export FULCRUM_SEAL_KEY="$PWD/.run/seal-key.pem"
fi
exec target/release/fulcrum serve "${dev[@]}" "$@"
