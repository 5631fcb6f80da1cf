#!/usr/bin/env bash
# Fulcrum beside its peer, in one command: each round runs Fulcrum's raw
# appends (append_bench, with pgbench's one-INSERT ceiling on Fulcrum's
# table), Fulcrum's commands in-process and over HTTP (command_bench) and
# cqrs-es + postgres-es (../shared/peer-cqrs-es/run.sh, with pgbench on the
# peer's table), at 1, 8 and 32 writers; rounds alternate the systems. Then
# prints the medians (and the spread) of every figure and of the ratios
# taken within each round.
#
#   scripts/bench-compare.sh [ROUNDS] [SECONDS]     # default 3 rounds, 5 s per cell
#
# Needs pgbench and psql on the PATH, Postgres on DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432, TLS off) and the peer harness in
# PEER_DIR (default ../shared/peer-cqrs-es). Each round's raw output stays
# in BENCH_OUT (default a temporary directory, removed at the end).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
rounds=${1:-3}
secs=${2:-5}
peer=${PEER_DIR:-../shared/peer-cqrs-es}
[ -x "$peer/run.sh" ] || { echo "no peer harness at $peer (set PEER_DIR)" >&2; exit 1; }

cargo build --release --locked -q -p eventstore -p api --example append_bench --example command_bench
if [ -n "${BENCH_OUT:-}" ]; then
  out=$BENCH_OUT
  mkdir -p "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
for r in $(seq "$rounds"); do
  echo "round $r of $rounds: Fulcrum raw appends" >&2
  ./target/release/examples/append_bench "$secs" > "$out/append.$r"
  echo "round $r of $rounds: Fulcrum commands" >&2
  ./target/release/examples/command_bench "$secs" > "$out/command.$r"
  echo "round $r of $rounds: cqrs-es + postgres-es" >&2
  PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432} LEVELS=1,8,32 SECS=$secs \
    "$peer/run.sh" > "$out/peer.$r" 2>/dev/null
done
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $rounds rounds, ${secs} s per cell"
echo
python3 scripts/bench_summary.py "$out" "$rounds"
