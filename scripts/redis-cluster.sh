#!/usr/bin/env bash
# A local Redis Cluster on one machine: 3 primaries and 3 replicas
# (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster
# create --cluster-replicas 1`), on free ports, keeping nothing on disk but
# their cluster config and logs. It waits until every node says
# cluster_state:ok, all 16384 slots are served and every replica has synced,
# then prints the seed URLs in the format of REDIS_CLUSTER_URLS.
#
#   scripts/redis-cluster.sh              # in the foreground; Ctrl-C stops it
#   scripts/redis-cluster.sh start [DIR]  # in the background; prints the URLs
#   scripts/redis-cluster.sh stop DIR     # stops that one and removes DIR
#
#   urls=$(scripts/redis-cluster.sh start /tmp/rc)   # redis://127.0.0.1:P,…
#   REDIS_CLUSTER_URLS=$urls cargo run
#   scripts/redis-cluster.sh stop /tmp/rc
#
# Only the URLs go to stdout; progress and the directory go to stderr.
#
# Settings (environment):
#   BASE_PORT         fixed client ports BASE_PORT .. BASE_PORT+5 (cluster bus
#                     ports +10000); unset: free ports, picked at random
#   NODE_TIMEOUT_MS   cluster-node-timeout (default 2000: a killed primary's
#                     replica takes over within seconds, and a busy machine
#                     does not trigger failovers by itself)
#
# deploy/local-cluster.sh --redis-cluster starts and stops its cluster with
# this script, and so does scripts/test.sh: one cluster for the whole test
# run (CHORUS_TEST_REDIS_CLUSTER_URLS), shared by every test that leaves its
# shape alone. A test that SIGKILLs and restarts nodes one by one starts its
# own (tests/e2e/support/redis_cluster.rs).
set -euo pipefail

NODES=6
NODE_TIMEOUT_MS=${NODE_TIMEOUT_MS:-2000}
# How long the cluster may take to form (seconds); it takes 1–2 s.
READY_LIMIT=30
# A directory holding this marker is one this script created; `stop` removes
# nothing else.
MARKER=.chorus-redis-cluster

usage() {
  sed -n '9,11p' "$0" | sed 's/^# *//' >&2
  exit 2
}

die() {
  echo "redis-cluster.sh: $*" >&2
  exit 1
}

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing: apt-get install redis-server (redis-cli comes with it, in redis-tools)"
done

# Something already answers on the port.
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in FILE if it is a live redis-server; nothing otherwise.
live_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && echo "$pid"
}

stop_dir() { # stop_dir DIR
  local dir=$1 pidfile pid pids=() i
  [ -f "$dir/$MARKER" ] || die "$dir is not a directory made by redis-cluster.sh"
  for pidfile in "$dir"/*/redis.pid; do
    pid=$(live_pid "$pidfile") || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  # Nothing to save, so a SIGTERM ends a node at once; 5 s, then SIGKILL.
  for ((i = 0; i < 50; i++)); do
    local alive=()
    for pid in "${pids[@]}"; do
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] && alive+=("$pid")
    done
    pids=("${alive[@]}")
    [ ${#pids[@]} -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}

# Sets `picked` to a port nobody answers on and this run has not taken yet
# (a variable, not stdout: a $(…) subshell would forget `taken`).
taken=()
picked=
pick_port() {
  local port i
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 10000))
    [[ " ${taken[*]} " == *" $port "* ]] && continue
    busy "$port" && continue
    taken+=("$port")
    picked=$port
    return 0
  done
  die "found no free port"
}

# Starts one node on PORT (bus on BUS) in DIR/PORT; false if it did not come
# up (the port was taken after all).
launch() { # launch DIR PORT BUS
  local dir=$1 port=$2 bus=$3 i
  mkdir -p "$dir/$port"
  redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
    --cluster-node-timeout "$NODE_TIMEOUT_MS" \
    --cluster-replica-validity-factor 0 --repl-diskless-sync-delay 0 \
    --save '' --appendonly no --dir "$dir/$port" \
    --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
  for ((i = 0; i < 50; i++)); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
    # A daemonized node writes its pid file only once it listens.
    if [ ! -s "$dir/$port/redis.pid" ] && grep -q 'Address already in use' "$dir/$port/redis.log" 2>/dev/null; then
      rm -rf "${dir:?}/$port"
      return 1
    fi
    sleep 0.1
  done
  die "redis-server on $port did not answer; its log: $dir/$port/redis.log"
}

# True when NODE sees the whole cluster healthy: state ok, all slots served,
# all nodes known, and (for a replica) its link to its primary up.
healthy() { # healthy PORT
  local info
  info=$(redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r') || return 1
  grep -qx 'cluster_state:ok' <<<"$info" &&
    grep -qx 'cluster_slots_ok:16384' <<<"$info" &&
    grep -qx "cluster_known_nodes:$NODES" <<<"$info" || return 1
  info=$(redis-cli -p "$1" info replication 2>/dev/null | tr -d '\r') || return 1
  grep -qx 'role:master' <<<"$info" || grep -qx 'master_link_status:up' <<<"$info"
}

start() { # start DIR → the URLs on stdout
  local dir=$1 ports=() port bus i
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -z "$(ls -A "$dir")" ] || [ -f "$dir/$MARKER" ] || die "$dir is not empty"
  touch "$dir/$MARKER"
  for ((i = 0; i < NODES; i++)); do
    if [ -n "${BASE_PORT:-}" ]; then
      port=$((BASE_PORT + i))
      busy "$port" && die "port $port is already in use"
      launch "$dir" "$port" $((port + 10000)) || die "port $port or $((port + 10000)) is taken"
    else
      while :; do
        pick_port
        port=$picked
        pick_port
        launch "$dir" "$port" "$picked" && break
      done
    fi
    ports+=("$port")
  done
  echo "forming the cluster in $dir" >&2
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes \
    >"$dir/create.log" 2>&1 || {
    tail -n 20 "$dir/create.log" >&2
    die "redis-cli --cluster create failed (log: $dir/create.log)"
  }
  local deadline=$((SECONDS + READY_LIMIT)) ready
  while :; do
    ready=0
    for port in "${ports[@]}"; do healthy "$port" && ready=$((ready + 1)); done
    [ "$ready" -eq "$NODES" ] && break
    [ "$SECONDS" -lt "$deadline" ] ||
      die "the cluster was not healthy within ${READY_LIMIT}s; logs in $dir"
    sleep 0.1
  done
  local urls
  urls=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")
  echo "${urls%,}"
}

case ${1:-} in
  start)
    [ $# -le 2 ] || usage
    dir=${2:-$(mktemp -d -t chorus-redis-cluster.XXXXXX)}
    # A start that fails half-way stops what it started.
    trap '[ -f "$dir/$MARKER" ] && stop_dir "$dir"' EXIT
    start "$dir"
    trap - EXIT
    echo "Redis Cluster up; stop it with: $0 stop $(cd "$dir" && pwd)" >&2
    ;;
  stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || die "no such directory: $2"
    stop_dir "$2"
    ;;
  "")
    dir=$(mktemp -d -t chorus-redis-cluster.XXXXXX)
    trap 'stop_dir "$dir"; echo "stopped" >&2' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start "$dir"
    echo "Redis Cluster up (logs in $dir); Ctrl-C to stop" >&2
    # Runs until a signal; `wait` on a sleeping child lets the trap run at once.
    while :; do
      sleep 3600 &
      wait $! || true
    done
    ;;
  *) usage ;;
esac
