#!/usr/bin/env bash
# Starts the whole system locally: Postgres (if down), the development Kafka
# broker (unless KAFKA_BROKERS names one), then `fulcrum serve` with every
# role (api, relay, projectors) in one process.
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
exec cargo run --release --locked -p api --bin fulcrum -- serve "${dev[@]}" "$@"
