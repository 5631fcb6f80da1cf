#!/usr/bin/env bash
# Runs every test: the contract fuzzing (scripts/contract-test.sh:
# schemathesis against a live server, a few minutes), then unit,
# integration (real Postgres, real Kafka-protocol broker) and end-to-end.
# Starts Postgres if it is down and, unless
# KAFKA_BROKERS names a broker of yours, the development broker
# (scripts/kafka.sh: Tansu on 127.0.0.1:9092; it keeps running afterwards,
# `scripts/kafka.sh stop` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
# The console tests drive a real browser (Debian chromium + chromedriver).
scripts/ensure-browser.sh
# The relay tests start private brokers of their own, so Tansu is installed
# even when KAFKA_BROKERS names another broker.
scripts/kafka.sh install >/dev/null
if [ -z "${KAFKA_BROKERS:-}" ]; then
  scripts/kafka.sh start
fi
KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}" scripts/contract-test.sh
cargo test --workspace --locked "$@"
