#!/usr/bin/env bash
# Makes sure the Postgres named by DATABASE_URL (default 127.0.0.1:5432) answers.
# On a machine with a local Debian cluster that is down, starts it.
set -euo pipefail

host=127.0.0.1
port=5432
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if [ -n "${DATABASE_URL:-}" ]; then
  echo "Postgres at DATABASE_URL is not answering; start it and retry." >&2
  exit 1
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting local Postgres cluster $version/main" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do
    pg_isready -q -h "$host" -p "$port" && exit 0
    sleep 0.2
  done
fi
echo "no Postgres on $host:$port; install PostgreSQL (apt-get install postgresql) or set DATABASE_URL" >&2
exit 1
