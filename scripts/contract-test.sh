#!/usr/bin/env bash
# Fuzzes a live server against its own contract: schemathesis (PyPI,
# installed on first use into .run/schemathesis-venv) runs every operation
# of /openapi.json with a valid token for each role and fails on any 5xx,
# any answer that does not match its schema and any undocumented status
# code. Bounded: at most ST_MAX_TIME seconds (default 50) per role.
#
# Starts `fulcrum serve` (every role) on a free port over a fresh database
# (dropped afterwards) and the broker in KAFKA_BROKERS (default the dev
# Tansu on 127.0.0.1:9092, which scripts/test.sh starts).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv=.run/schemathesis-venv
mkdir -p .run
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "contract-test: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked -q -p api --bin fulcrum
# Absolute: tokens are minted from .run/ too (a relative path there made
# every token empty, so each role's run fuzzed only the 401 answers).
bin="$PWD/target/debug/fulcrum"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db="fulcrum_contract_$$"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
export JWT_SECRET="contract-test-secret-of-at-least-32-bytes"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export FULCRUM_TOPIC_PREFIX="contract$$"
export FULCRUM_ADDR="127.0.0.1:$port"
export RUST_LOG="${RUST_LOG:-warn}"
base="http://127.0.0.1:$port"
log=".run/contract-test-$$.log"

# The sealer role signs seals: a key of this run only.
export FULCRUM_SEAL_KEY=".run/contract-seal-$$.pem"
"$bin" audit keygen >"$FULCRUM_SEAL_KEY" 2>/dev/null
"$bin" serve >"$log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -f "$log" "$FULCRUM_SEAL_KEY"
}
trap cleanup EXIT

deadline=$((SECONDS + 60))
until curl -sf "$base/readyz" >/dev/null; do
  if ! kill -0 "$server" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "contract-test: the server did not become ready" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done

token() { "$bin" token --sub "$1" --role "$2" --ttl 1h; }
# A product with stock, so that generated orders can succeed too.
operator=$(token olga operator)
curl -sf "$base/api/v1/products" -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' \
  -d '{"sku":"SKU-1","name":"Widget","unit_price":1250,"currency":"EUR"}' >/dev/null
curl -sf "$base/api/v1/inventory/SKU-1/receipts" -H "Authorization: Bearer $operator" -H 'Content-Type: application/json' \
  -d '{"quantity":1000}' >/dev/null

status=0
for role in customer operator admin; do
  echo "contract-test: schemathesis as $role" >&2
  bearer=$(token "$role-1" "$role")
  [ -n "$bearer" ] || { echo "contract-test: could not mint a $role token" >&2; exit 1; }
  # From .run/, where schemathesis and hypothesis keep their caches.
  (cd .run && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=../scripts "../$venv/bin/st" run "$base/openapi.json" \
    -H "Authorization: Bearer $bearer" \
    --checks no_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${ST_MAX_EXAMPLES:-30}" \
    --max-time "${ST_MAX_TIME:-50}" \
    --request-timeout 10 \
    --workers 1 \
    --no-color) || status=1
done
if [ "$status" -ne 0 ]; then
  echo "contract-test: schemathesis found failures (server log follows)" >&2
  tail -50 "$log" >&2
fi
exit "$status"
