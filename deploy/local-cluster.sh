#!/usr/bin/env bash
# A local chorus cluster on one machine, without containers: one Redis, three
# nodes, nginx in front of them (the load balancer of deploy/nginx/) and
# Prometheus scraping every node with the alert rules of deploy/prometheus/.
# With --redis-cluster the Redis is a Redis Cluster instead (3 primaries,
# 3 replicas, formed by scripts/redis-cluster.sh) and the nodes get
# REDIS_CLUSTER_URLS instead of REDIS_URL.
# With --archive the nodes also get DATABASE_URL, the message archive: the
# caller's DATABASE_URL if exported (its database created if missing), else a
# private Postgres (initdb into RUN_DIR, on a free port) stopped with the rest.
# Without --archive no node gets DATABASE_URL (nor a DynamoDB archive).
# Runs in the foreground; Ctrl-C (or SIGTERM) stops everything in order:
# nginx and Prometheus, then the nodes (they drain), then Redis and Postgres.
#
#   deploy/local-cluster.sh                  # http://127.0.0.1:8080/ through nginx
#   deploy/local-cluster.sh --redis-cluster  # the same over a Redis Cluster
#   deploy/local-cluster.sh --archive        # with a Postgres archive (both flags combine)
#   LB_PORT=9080 PROM_PORT=9190 BASE_PORT=9001 REDIS_PORT=6390 deploy/local-cluster.sh
#
# Settings (environment):
#   LB_PORT=8080      nginx, the public entry point (LB_HOST=127.0.0.1)
#   BASE_PORT=8081    the nodes, on BASE_PORT .. BASE_PORT+NODES-1 (NODES=3)
#   REDIS_PORT=6380   Redis (never 6379, to leave a system Redis alone)
#   REDIS_CLUSTER_PORT  with --redis-cluster: its nodes on REDIS_CLUSTER_PORT
#                     .. +5 (cluster bus +10000); unset: free ports at random
#   PROM_PORT=9090    Prometheus, on 127.0.0.1
#   PG_PORT           with --archive and no DATABASE_URL: the private
#                     Postgres, on 127.0.0.1 (unset: the first free port
#                     from 5433 on; never 5432, to leave a system one alone)
#   DATABASE_URL      with --archive: use this Postgres instead of starting
#                     one (postgres://user:password@host:port/database; the
#                     user needs CREATE rights there, or on the server to
#                     create a missing database)
#   RUN_DIR           configs, logs, pid files and data (default: a new temp dir)
#   CHORUS_BIN        the chorus binary to run (default: build
#                     target/release/chorus with cargo)
#
# It installs nothing: a missing tool stops it with the Debian package to install.
# (Postgres: initdb and pg_ctl are looked for on PATH, then in
# /usr/lib/postgresql/*/bin, where Debian's `postgresql` package puts them.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Debian installs nginx in /usr/sbin, which is not on a normal user's PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

usage() {
  echo "usage: deploy/local-cluster.sh [--redis-cluster] [--archive]   (settings: see the top of the script)" >&2
  exit 2
}
REDIS_CLUSTER=0
ARCHIVE=0
for arg in "$@"; do
  case $arg in
    --redis-cluster) REDIS_CLUSTER=1 ;;
    --archive) ARCHIVE=1 ;;
    *) usage ;;
  esac
done

REDIS_PORT=${REDIS_PORT:-6380}
BASE_PORT=${BASE_PORT:-8081}
NODES=${NODES:-3}
LB_HOST=${LB_HOST:-127.0.0.1}
LB_PORT=${LB_PORT:-8080}
PROM_PORT=${PROM_PORT:-9090}
REDIS_CLUSTER_PORT=${REDIS_CLUSTER_PORT:-}
PG_PORT=${PG_PORT:-}
# --archive with an exported DATABASE_URL: that Postgres; otherwise our own.
EXTERNAL_DATABASE_URL=""
[ "$ARCHIVE" -eq 0 ] || EXTERNAL_DATABASE_URL=${DATABASE_URL:-}
PRIVATE_PG=0
[ "$ARCHIVE" -eq 0 ] || [ -n "$EXTERNAL_DATABASE_URL" ] || PRIVATE_PG=1

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need redis-server "apt-get install redis-server"
# scripts/redis-cluster.sh forms the cluster with redis-cli.
[ "$REDIS_CLUSTER" -eq 0 ] || need redis-cli "apt-get install redis-tools"
need nginx "apt-get install nginx"
need prometheus "apt-get install prometheus"
need curl "apt-get install curl"
[ -n "${CHORUS_BIN:-}" ] || need cargo "the Rust toolchain: https://rustup.rs"
# --archive: psql creates the database (and checks an external one).
[ "$ARCHIVE" -eq 0 ] || need psql "apt-get install postgresql-client"
PG_BIN=""
if [ "$PRIVATE_PG" -eq 1 ]; then
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN=$(dirname "$(command -v initdb)")
  else
    # Debian keeps the server binaries off PATH; the newest version wins.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
      if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then PG_BIN=$dir; break; fi
    done
  fi
  [ -n "$PG_BIN" ] || missing+=("initdb and postgres (apt-get install postgresql; or export DATABASE_URL of a Postgres of yours)")
  # initdb and postgres refuse to run as root: as root they run as the
  # `postgres` user the Debian package creates.
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    missing+=("a postgres user to run Postgres as (root may not; apt-get install postgresql creates it)")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "local-cluster.sh: missing tools:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

# Something already answering on a port we need: most likely an earlier run
# that is still up (its pid files are in its RUN_DIR).
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=("$LB_PORT" "$PROM_PORT")
if [ "$REDIS_CLUSTER" -eq 0 ]; then
  ports+=("$REDIS_PORT")
elif [ -n "$REDIS_CLUSTER_PORT" ]; then
  # (Unset, scripts/redis-cluster.sh picks free ports itself.)
  for i in $(seq 0 5); do ports+=($((REDIS_CLUSTER_PORT + i)) $((REDIS_CLUSTER_PORT + i + 10000))); done
fi
for i in $(seq 1 "$NODES"); do ports+=($((BASE_PORT + i - 1))); done
if [ "$PRIVATE_PG" -eq 1 ]; then
  if [ -z "$PG_PORT" ]; then
    PG_PORT=5433
    while busy "$PG_PORT" || [[ " ${ports[*]} " == *" $PG_PORT "* ]]; do
      PG_PORT=$((PG_PORT + 1))
      [ "$PG_PORT" -lt 5533 ] || { echo "local-cluster.sh: no free port for Postgres in 5433..5532; set PG_PORT" >&2; exit 1; }
    done
  fi
  ports+=("$PG_PORT")
fi
for port in "${ports[@]}"; do
  if busy "$port"; then
    echo "local-cluster.sh: port $port is already in use (another run still up?); set REDIS_PORT, REDIS_CLUSTER_PORT, BASE_PORT, LB_PORT, PROM_PORT or PG_PORT" >&2
    exit 1
  fi
done

RUN_DIR=${RUN_DIR:-$(mktemp -d -t chorus-cluster.XXXXXX)}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
# nginx's workers run as `nobody` when started by root; they must reach the
# prefix (proxy_temp) inside the run directory.
chmod 755 "$RUN_DIR"

if [ -n "${CHORUS_BIN:-}" ]; then
  BIN=$CHORUS_BIN
  [ -x "$BIN" ] || { echo "local-cluster.sh: CHORUS_BIN=$BIN is not an executable" >&2; exit 1; }
else
  cargo build --release --quiet
  BIN=$ROOT/target/release/chorus
fi

# Children run in their own sessions (setsid), so a Ctrl-C on the terminal
# reaches only this script, which then stops them in order.
declare -A pid_of=()
started=()
spawn() { # spawn NAME LOG COMMAND...
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid_of[$name]=$!
  started+=("$name")
  echo "$!" >"$RUN_DIR/$name.pid"
}

# SIGTERM to NAME (once).
signal_one() {
  local pid=${pid_of[$1]:-}
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
}

# Waits up to LIMIT seconds for NAME to exit after its SIGTERM, then SIGKILL.
reap_one() { # reap_one NAME LIMIT
  local name=$1 limit=$2 pid=${pid_of[$1]:-} i
  [ -n "$pid" ] || return 0
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name did not stop within ${limit}s: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  rm -f "$RUN_DIR/$name.pid"
  unset "pid_of[$name]"
}

# --redis-cluster: the Redis Cluster's own directory (nodes.conf and a log
# per node), owned by scripts/redis-cluster.sh.
CLUSTER_DIR=$RUN_DIR/redis-cluster

# Stops the Redis Cluster, if one was started: `redis-cluster.sh stop` stops
# every node (5 s, then SIGKILL) and removes its directory, so the nodes'
# logs are copied out first.
stop_redis_cluster() {
  [ -d "$CLUSTER_DIR" ] || return 0
  local log
  mkdir -p "$RUN_DIR/redis-cluster-logs"
  for log in "$CLUSTER_DIR"/*/redis.log; do
    if [ -f "$log" ]; then cp "$log" "$RUN_DIR/redis-cluster-logs/$(basename "$(dirname "$log")").log"; fi
  done
  "$ROOT/scripts/redis-cluster.sh" stop "$CLUSTER_DIR" ||
    echo "the Redis Cluster did not stop cleanly; its directory: $CLUSTER_DIR" >&2
}

# --archive without DATABASE_URL: the private Postgres's data directory. As
# root it cannot live below RUN_DIR (the postgres user may not reach it), so
# it gets a temporary folder of its own, removed when it stops.
PG_DATA=$RUN_DIR/postgres
pg_as=()
if [ "$PRIVATE_PG" -eq 1 ] && [ "$(id -u)" -eq 0 ]; then
  PG_DATA=$(mktemp -d -t chorus-postgres.XXXXXX)
  chown postgres: "$PG_DATA"
  echo "$PG_DATA" >"$RUN_DIR/postgres-data-dir"
  pg_as=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi

stop_postgres() {
  [ "$PRIVATE_PG" -eq 1 ] || return 0
  # SIGTERM: a smart shutdown, immediate once the nodes are gone.
  signal_one postgres
  reap_one postgres 15
  if [ -f "$RUN_DIR/postgres-data-dir" ]; then
    rm -rf "$PG_DATA" "$RUN_DIR/postgres-data-dir"
  fi
}

stopped=0
stop() {
  [ "$stopped" -eq 0 ] || return 0
  stopped=1
  trap - INT TERM
  echo "stopping…"
  # The public entry point and the scraper first, then the nodes: they drain
  # (close sockets with 1001, remove their presence) while Redis still
  # answers; a drain takes at most 10 s. Redis and Postgres last.
  signal_one nginx
  signal_one prometheus
  reap_one nginx 5
  reap_one prometheus 10
  local i
  for i in $(seq 1 "$NODES"); do signal_one "node$i"; done
  for i in $(seq 1 "$NODES"); do reap_one "node$i" 15; done
  if [ "$REDIS_CLUSTER" -eq 1 ]; then
    stop_redis_cluster
  else
    signal_one redis
    reap_one redis 5
  fi
  stop_postgres
  echo "stopped; logs in $RUN_DIR"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# Waits until URL answers 2xx, at most LIMIT seconds; fails at once if NAME died.
wait_ready() { # wait_ready NAME URL LIMIT LOG
  local name=$1 url=$2 limit=$3 log=$4 i
  for ((i = 0; i < limit * 10; i++)); do
    if curl -fs -o /dev/null --max-time 1 "$url"; then return 0; fi
    if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
      echo "$name exited during start-up; its log ($log):" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name did not answer $url within ${limit}s; see $log" >&2
  exit 1
}

if [ "$REDIS_CLUSTER" -eq 1 ]; then
  # scripts/redis-cluster.sh starts six daemonized nodes, forms the cluster
  # and prints the seed URLs once every node is healthy (or stops what it
  # started and fails). It runs in its own session like the other children:
  # a Ctrl-C meanwhile reaches only this script, which stops the cluster
  # once the start has returned. Its BASE_PORT is not the nodes' BASE_PORT.
  cluster_env=(env -u BASE_PORT)
  [ -z "$REDIS_CLUSTER_PORT" ] || cluster_env+=(BASE_PORT="$REDIS_CLUSTER_PORT")
  echo "forming a Redis Cluster in $CLUSTER_DIR"
  if ! REDIS_CLUSTER_URLS=$(setsid -w "${cluster_env[@]}" "$ROOT/scripts/redis-cluster.sh" start "$CLUSTER_DIR" \
    </dev/null 2>"$RUN_DIR/redis-cluster.log"); then
    echo "the Redis Cluster did not start; $RUN_DIR/redis-cluster.log:" >&2
    tail -n 20 "$RUN_DIR/redis-cluster.log" >&2
    exit 1
  fi
  redis_setting=(REDIS_CLUSTER_URLS="$REDIS_CLUSTER_URLS")
else
  spawn redis "$RUN_DIR/redis.log" \
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN_DIR"
  for _ in $(seq 1 50); do busy "$REDIS_PORT" && break; sleep 0.1; done
  busy "$REDIS_PORT" || { echo "redis did not start; see $RUN_DIR/redis.log" >&2; exit 1; }
  redis_setting=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0")
fi

# The archive: DATABASE_URL for the nodes, its database created if missing.
archive_setting=()
pg_sql() { # pg_sql URL SQL: one statement, errors on stderr
  psql "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
if [ "$PRIVATE_PG" -eq 1 ]; then
  echo "starting Postgres ($PG_BIN) on 127.0.0.1:$PG_PORT, data in $PG_DATA"
  # Superuser `chorus`, trust on loopback only: a throwaway local instance.
  if ! (cd / && "${pg_as[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U chorus -A trust -E UTF8 --no-sync) \
    >"$RUN_DIR/initdb.log" 2>&1; then
    echo "initdb failed; $RUN_DIR/initdb.log:" >&2
    tail -n 20 "$RUN_DIR/initdb.log" >&2
    exit 1
  fi
  spawn postgres "$RUN_DIR/postgres.log" "${pg_as[@]}" "$PG_BIN/postgres" -D "$PG_DATA" \
    -c listen_addresses=127.0.0.1 -p "$PG_PORT" -c unix_socket_directories="$PG_DATA" -c fsync=off
  server_url="postgres://chorus@127.0.0.1:$PG_PORT"
  for ((i = 0; i < 300; i++)); do
    pg_sql "$server_url/postgres" 'SELECT 1' >/dev/null 2>&1 && break
    if ! kill -0 "${pid_of[postgres]}" 2>/dev/null; then
      echo "postgres exited during start-up; its log ($RUN_DIR/postgres.log):" >&2
      tail -n 20 "$RUN_DIR/postgres.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  pg_sql "$server_url/postgres" 'SELECT 1' >/dev/null ||
    { echo "postgres did not answer within 30s; see $RUN_DIR/postgres.log" >&2; exit 1; }
  pg_sql "$server_url/postgres" 'CREATE DATABASE chorus' ||
    { echo "could not create the database chorus" >&2; exit 1; }
  archive_setting=(DATABASE_URL="$server_url/chorus")
elif [ "$ARCHIVE" -eq 1 ]; then
  url=$EXTERNAL_DATABASE_URL
  base=${url%%\?*}
  query=""
  [ "$base" = "$url" ] || query="?${url#*\?}"
  if ! [[ $base =~ ^postgres(ql)?://[^/]+/[^/]+$ ]]; then
    echo "local-cluster.sh: DATABASE_URL must be postgres://user[:password]@host[:port]/database[?options]" >&2
    exit 1
  fi
  db=${base##*/}
  if ! error=$(pg_sql "$url" 'SELECT 1' 2>&1 >/dev/null); then
    if [[ $error == *"database \"$db\" does not exist"* ]]; then
      echo "creating the database $db"
      pg_sql "${base%/*}/postgres$query" "CREATE DATABASE \"$db\"" ||
        { echo "could not create the database $db (the user needs CREATEDB, or create it yourself)" >&2; exit 1; }
    else
      echo "local-cluster.sh: the DATABASE_URL Postgres does not answer: $error" >&2
      exit 1
    fi
  fi
  archive_setting=(DATABASE_URL="$url")
fi

nodes=()
for i in $(seq 1 "$NODES"); do
  port=$((BASE_PORT + i - 1))
  nodes+=("127.0.0.1:$port")
  # `env -u`: a REDIS_URL or REDIS_CLUSTER_URLS of the caller's shell never
  # reaches a node beside the one set here (chorus refuses both at once), nor
  # an archive setting unless --archive gave one (DATABASE_URL and the
  # DynamoDB table are refused together too).
  spawn "node$i" "$RUN_DIR/node$i.log" \
    env -u REDIS_URL -u REDIS_CLUSTER_URLS -u DATABASE_URL -u CHORUS_ARCHIVE_DYNAMODB_TABLE \
    PORT="$port" HOST=127.0.0.1 CHORUS_NODE_ID="node$i" "${redis_setting[@]}" "${archive_setting[@]}" "$BIN"
done
for i in $(seq 1 "$NODES"); do
  wait_ready "node$i" "http://127.0.0.1:$((BASE_PORT + i - 1))/ready" 10 "$RUN_DIR/node$i.log"
done

# The load balancer: deploy/nginx/chorus.conf rendered for these nodes.
"$ROOT/deploy/nginx/render.sh" "$RUN_DIR/nginx" "$LB_HOST:$LB_PORT" "${nodes[@]}"
# Its stdout is the access log (chorus.conf), without query strings.
spawn nginx "$RUN_DIR/nginx/access.log" \
  nginx -p "$RUN_DIR/nginx" -c "$RUN_DIR/nginx/nginx.conf" -e "$RUN_DIR/nginx/error.log" -g 'daemon off;'
wait_ready nginx "http://127.0.0.1:$LB_PORT/health" 10 "$RUN_DIR/nginx/error.log"

# Prometheus: every node scraped directly, with the project's alert rules.
{
  echo "# generated by deploy/local-cluster.sh"
  echo "global:"
  echo "  scrape_interval: 5s"
  echo "  evaluation_interval: 5s"
  echo "rule_files:"
  echo "  - $ROOT/deploy/prometheus/alerts.yml"
  echo "scrape_configs:"
  echo "  - job_name: chorus"
  echo "    static_configs:"
  echo "      - targets:"
  for node in "${nodes[@]}"; do echo "          - $node"; done
} >"$RUN_DIR/prometheus.yml"
spawn prometheus "$RUN_DIR/prometheus.log" \
  prometheus --config.file="$RUN_DIR/prometheus.yml" \
  --storage.tsdb.path="$RUN_DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT"
wait_ready prometheus "http://127.0.0.1:$PROM_PORT/-/ready" 30 "$RUN_DIR/prometheus.log"

for i in $(seq 1 "$NODES"); do
  echo "node$i       http://127.0.0.1:$((BASE_PORT + i - 1))/   (direct; /metrics here)"
done
if [ "$REDIS_CLUSTER" -eq 1 ]; then
  echo "redis       REDIS_CLUSTER_URLS=$REDIS_CLUSTER_URLS   (3 primaries, 3 replicas)"
else
  echo "redis       redis://127.0.0.1:$REDIS_PORT/0"
fi
if [ "$PRIVATE_PG" -eq 1 ]; then
  echo "archive     DATABASE_URL=${archive_setting[0]#DATABASE_URL=}   (a private Postgres, stopped with the cluster)"
elif [ "$ARCHIVE" -eq 1 ]; then
  # Without the password, if the URL has one.
  echo "archive     DATABASE_URL=$(sed -E 's#^([a-z]+://[^:@/]*):[^@/]*@#\1:***@#' <<<"$EXTERNAL_DATABASE_URL")   (yours)"
fi
echo "prometheus  http://127.0.0.1:$PROM_PORT/   (targets: /targets, alerts: /alerts)"
echo "chorus      http://$LB_HOST:$LB_PORT/   ws://$LB_HOST:$LB_PORT/ws?username=…   (nginx, sticky)"
echo "logs and configs in $RUN_DIR. Ctrl-C to stop."

# Runs until a signal, or until one of the processes ends by itself.
set +e
wait -n -p ended "${pid_of[@]}"
status=$?
set -e
for name in "${started[@]}"; do
  if [ "${pid_of[$name]:-}" = "${ended:-}" ]; then
    echo "$name exited on its own (status $status); see $RUN_DIR" >&2
    unset "pid_of[$name]"
  fi
done
exit 1
