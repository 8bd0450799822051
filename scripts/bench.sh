#!/usr/bin/env bash
# Runs the benchmarks of BENCHMARKS.md on this machine and renders its tables
# and plots: builds release binaries, starts its own redis-server on a free
# port and fresh nodes for every run (so each run's memory and CPU are its
# own), drives them with chorus-bench, and stops everything it started.
#
#   scripts/bench.sh                  every scenario (about 10 minutes)
#   scripts/bench.sh --quick          one small run of each, to try the pipeline
#                                     (results in bench/results/tmp/ only)
#   scripts/bench.sh --peers          chorus, socketioxide and Socket.IO side by
#                                     side: the same scenarios on each, two
#                                     nodes over one Redis (about 20 minutes)
#   scripts/bench.sh --peers --quick  one small run of each per server
#   scripts/bench.sh --redis-cluster  the rooms scenario on one Redis, then on a
#                                     Redis Cluster of 3 primaries and 3 replicas
#                                     (scripts/redis-cluster.sh), with the CPU of
#                                     every redis-server and the keys per primary
#                                     (about 3 minutes, plus any wait for a quiet
#                                     machine)
#   scripts/bench.sh --redis-cluster --quick  the same, small
#   scripts/bench.sh --archive        the archive (DATABASE_URL, a private
#                                     Postgres from scripts/postgres.sh): the
#                                     rooms scenario without and with it (send
#                                     latency), the archive's lag meanwhile,
#                                     and its drain rate: a backlog built while
#                                     Postgres is stopped, timed as it drains
#                                     (about 3 minutes)
#   scripts/bench.sh --archive --quick  the same, small
#
# --peers builds the socketioxide peer (bench/peers/socketioxide, cargo) and
# installs the Node one (bench/peers/socketio, npm ci) first.
#
# A full --redis-cluster run waits before each of its runs until the 1-minute
# load average is at most BENCH_LOAD_LIMIT (default 1.5), checking every
# minute for up to BENCH_QUIET_MINUTES (default 20), then runs anyway; every
# run records the load averages it started and ended under.
#
# Results are appended to bench/results/latest.jsonl (runs with the same
# label replace older ones in the tables).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
peers=false
redis_cluster=false
archive=false
usage() { echo "usage: scripts/bench.sh [--peers | --redis-cluster | --archive] [--quick]" >&2; exit 2; }
for arg in "$@"; do
  case $arg in
    --quick) quick=true ;;
    --peers) peers=true ;;
    --redis-cluster) redis_cluster=true ;;
    --archive) archive=true ;;
    *) usage ;;
  esac
done
[ $(($($peers && echo 1 || echo 0) + $($redis_cluster && echo 1 || echo 0) + $($archive && echo 1 || echo 0))) -le 1 ] || usage
load_limit=${BENCH_LOAD_LIMIT:-1.5}
quiet_minutes=${BENCH_QUIET_MINUTES:-20}

command -v redis-server >/dev/null 2>&1 || {
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

cargo build --release --bins -p chorus -p chorus-bench
bin=target/release
socketioxide_peer=bench/peers/socketioxide/target/release/chorus-peer-socketioxide
if $peers; then
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "--peers needs node and npm for the Socket.IO peer" >&2
    exit 1
  }
  cargo build --release --manifest-path bench/peers/socketioxide/Cargo.toml
  (cd bench/peers/socketio && npm ci --no-audit --no-fund --loglevel=error)
fi
out=bench/results/latest.jsonl
# A quick run checks the pipeline; its figures stay out of BENCHMARKS.md.
$quick && out=bench/results/tmp/quick.jsonl
mkdir -p "$(dirname "$out")"
rm -f bench/results/tmp/quick.jsonl
work=$(mktemp -d)
pids=()

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2
  return 1
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
redis_pid=""
cluster_dir=""
pg_dir=""
# Redis is waited for before its directory goes: it writes its log as it stops.
trap 'stop_all; [ -z "$redis_pid" ] || { kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; }
  [ -z "$cluster_dir" ] || scripts/redis-cluster.sh stop "$cluster_dir" || true
  [ -z "$pg_dir" ] || scripts/postgres.sh remove "$pg_dir"; rm -rf "$work"' EXIT

# Each node and the load generator may hold up to this many sockets.
ulimit -n "$(ulimit -Hn)"

redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" </dev/null >/dev/null 2>&1 &
redis_pid=$!
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

# How chorus nodes reach Redis, which primaries start_nodes flushes, and how
# chorus-bench reads Redis: the one Redis above until use_redis_cluster.
redis_env=(REDIS_URL="redis://127.0.0.1:$redis_port")
flush_ports=("$redis_port")
bench_redis=(--redis-pid "$redis_pid")

# Starts a Redis Cluster (3 primaries, 3 replicas) and points the nodes
# started next at it; chorus-bench then reads every one of its processes.
use_redis_cluster() {
  cluster_dir=$work/cluster
  local urls port
  urls=$(scripts/redis-cluster.sh start "$cluster_dir")
  redis_env=(REDIS_CLUSTER_URLS="$urls")
  flush_ports=()
  bench_redis=()
  for port in $(tr ',' '\n' <<<"$urls" | sed 's/.*://'); do
    bench_redis+=(--redis-port "$port")
    if [ "$(redis-cli -p "$port" role | head -n 1)" = master ]; then flush_ports+=("$port"); fi
  done
}

# Waits until the 1-minute load average is at most $load_limit, checking
# every minute for up to $quiet_minutes; then goes on whatever it is.
wait_for_quiet() {
  local load i
  for ((i = 0; i < quiet_minutes; i++)); do
    load=$(cut -d ' ' -f 1 /proc/loadavg)
    awk -v now="$load" -v limit="$load_limit" 'BEGIN { exit !(now <= limit) }' && return 0
    echo "load average $load > $load_limit: waiting a minute ($((i + 1)) of $quiet_minutes)" >&2
    sleep 60
  done
  echo "load average still $(cut -d ' ' -f 1 /proc/loadavg) after $quiet_minutes minutes: running anyway" >&2
}

node_args=()
node_pids=()
# The server kind start_nodes starts and bench labels: chorus, socketioxide
# or socketio (the last two only with --peers).
server=chorus
# Starts $1 fresh $server nodes on an empty Redis, with any VAR=value after
# it as extra settings; fills node_args and node_pids.
start_nodes() {
  local count=$1
  shift
  stop_all
  for port in "${flush_ports[@]}"; do redis-cli -p "$port" flushall >/dev/null; done
  node_args=()
  node_pids=()
  for i in $(seq 1 "$count"); do
    port=$(free_port)
    case $server in
      chorus)
        env "${redis_env[@]}" PORT="$port" HOST=127.0.0.1 \
          CHORUS_NODE_ID="bench-$i" CHORUS_RATE_LIMIT=0 CHORUS_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
          "$@" "$bin/chorus" >"$work/node-$i.log" 2>&1 &
        ;;
      socketioxide)
        REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$port \
          env "$@" "$socketioxide_peer" >"$work/node-$i.log" 2>&1 &
        ;;
      socketio)
        REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$port NODE_ENV=production \
          env "$@" node bench/peers/socketio/server.js >"$work/node-$i.log" 2>&1 &
        ;;
    esac
    pids+=($!)
    node_pids+=(--pid $!)
    node_args+=(--node "http://127.0.0.1:$port")
    wait_http "http://127.0.0.1:$port/ready"
  done
}

bench() {
  local peer_args=()
  if $peers; then
    peer_args=(--server "$server")
    [ "$server" = chorus ] || peer_args+=(--protocol socketio)
  fi
  "$bin/chorus-bench" "${node_args[@]}" "${node_pids[@]}" "${bench_redis[@]}" --out "$out" \
    "${peer_args[@]}" "$@"
}

# Every server of a --peers run, in the order of its tables.
servers=(chorus socketioxide socketio)

# Sums a metric over every node of node_args (0 when absent).
node_metric() {
  local total=0 url value
  for url in "${node_args[@]}"; do
    [ "$url" = --node ] && continue
    value=$(curl -fsS "$url/metrics" | awk -v m="$1" '$1 == m { print $2 }')
    total=$(awk -v a="$total" -v b="${value:-0}" 'BEGIN { print a + b }')
  done
  echo "$total"
}

# The largest archive lag over the nodes, sampled every half second into
# $work/lag until killed.
sample_lag() {
  while true; do
    local most=0 url value
    for url in "${node_args[@]}"; do
      [ "$url" = --node ] && continue
      value=$(curl -fsS "$url/metrics" 2>/dev/null | awk '$1 == "chorus_archive_lag_seconds" { print $2 }')
      most=$(awk -v a="$most" -v b="${value:-0}" 'BEGIN { print (b > a) ? b : a }')
    done
    echo "$most" >>"$work/lag"
    sleep 0.5
  done
}

if $archive; then
  # The archive's cost to a send (the rooms case without and with it), its
  # lag under that load, and how fast it drains a backlog.
  if $quick; then
    clients=500 duration=5
  else
    clients=2000 duration=20
  fi
  pg_dir=$(mktemp -d -t chorus-bench-postgres.XXXXXX)
  pg_url=$(scripts/postgres.sh start "$pg_dir")
  database() { # a fresh database for the next nodes
    local name=bench_$RANDOM$RANDOM
    psql -q "$pg_url" -c "CREATE DATABASE $name" >/dev/null
    echo "${pg_url%/*}/$name"
  }
  start_nodes 2
  bench rooms --clients "$clients" --rate 1 --duration "$duration" --label "rooms-${clients}x1mps-no-archive"
  start_nodes 2 DATABASE_URL="$(database)"
  rm -f "$work/lag"
  sample_lag &
  sampler=$!
  bench rooms --clients "$clients" --rate 1 --duration "$duration" --label "rooms-${clients}x1mps-archive"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  sort -g "$work/lag" | awk -v clients="$clients" '{ v[NR] = $1 } END {
    p99 = int(NR * 0.99); if (p99 < 1) p99 = 1
    printf "archive lag under rooms %sx1 msg/s: samples %d, median %.3f s, p99 %.3f s, max %.3f s\n",
      clients, NR, v[int((NR + 1) / 2)], v[p99], v[NR] }'
  # The drain rate: a backlog built while Postgres is down, then timed.
  start_nodes 2 DATABASE_URL="$(database)"
  scripts/postgres.sh stop "$pg_dir"
  # Five times the load for twice as long, so the drain spans many batches.
  bench rooms --clients "$((clients * 5))" --rate 1 --duration "$((duration * 2))" \
    --label "rooms-$((clients * 5))x1mps-archive-down"
  accepted=$(node_metric 'chorus_messages_accepted_total{kind="message"}')
  before=$(node_metric chorus_archive_stored_total)
  scripts/postgres.sh start "$pg_dir" >/dev/null
  # Timed from the first batch stored: the archiver retries a database that
  # was down every few seconds, and that wait is not the drain.
  restarted=$(date +%s)
  started=""
  while true; do
    stored=$(node_metric chorus_archive_stored_total)
    now=$(date +%s.%N)
    if [ -z "$started" ] && [ "$stored" -gt "$before" ]; then started=$now first=$stored; fi
    [ "$stored" -lt "$accepted" ] || break
    [ $(($(date +%s) - restarted)) -lt 300 ] || { echo "the backlog did not drain in 5 minutes" >&2; break; }
    sleep 0.05
  done
  awk -v a="$accepted" -v b="$before" -v f="$first" -v s="$stored" -v t0="$started" -v t1="$now" 'BEGIN {
    printf "archive drain: a backlog of %d messages built while Postgres was down drained at %.0f messages/s (%d in %.2f s after the first batch)\n",
      a - b, (s - f) / (t1 - t0), s - f, t1 - t0 }'
elif $redis_cluster; then
  # One rooms case, first over the one Redis (bench_redis gives chorus-bench
  # its port instead of its pid: the same readings as the cluster's), then
  # over a fresh Redis Cluster started for it.
  if $quick; then
    case_args=(rooms --clients 1000 --rate 1 --duration 3)
    case_label=rooms-1000x1mps
  else
    case_args=(rooms --clients 10000 --rate 0.25 --duration 20)
    case_label=rooms-10000x0.25mps
  fi
  bench_redis=(--redis-port "$redis_port")
  stop_all; $quick || wait_for_quiet
  start_nodes 2; bench "${case_args[@]}" --label "$case_label-one-redis"
  stop_all
  redis-cli -p "$redis_port" flushall >/dev/null
  use_redis_cluster
  $quick || wait_for_quiet
  start_nodes 2; bench "${case_args[@]}" --label "$case_label-redis-cluster"
elif $peers && $quick; then
  for server in "${servers[@]}"; do
    start_nodes 2; bench fanout --subscribers 100 --publishers 2 --rate 50 --duration 3
    start_nodes 2; bench rooms --clients 1000 --rate 1 --duration 3
    start_nodes 2; bench idle --connections 1000 --hold 2
  done
elif $peers; then
  # Scenarios outside, servers inside: the three runs of a case sit close
  # together in time, whatever else the machine does meanwhile.
  for rate in 100 300 1000; do
    for server in "${servers[@]}"; do
      start_nodes 2
      bench fanout --subscribers 1000 --publishers 4 --rate $((rate / 4)) --duration 10
    done
  done
  for clients in 2000 10000; do
    for server in "${servers[@]}"; do
      start_nodes 2; bench rooms --clients $clients --rate 1 --duration 20
    done
  done
  for server in "${servers[@]}"; do
    start_nodes 2; bench idle --connections 10000 --hold 5
  done
elif $quick; then
  start_nodes 2; bench fanout --subscribers 100 --publishers 2 --rate 50 --duration 3
  start_nodes 2; bench rooms --clients 1000 --rate 1 --duration 3
  start_nodes 1; bench idle --connections 1000 --hold 2
else
  for rate in 100 200 300 400 500; do
    start_nodes 2
    bench fanout --subscribers 1000 --publishers 4 --rate $((rate / 4)) --duration 10
  done
  # The same room without the write delay: what batching saves.
  for rate in 100 300; do
    start_nodes 2 CHORUS_WRITE_DELAY_MS=0
    bench fanout --subscribers 1000 --publishers 4 --rate $((rate / 4)) --duration 10 \
      --label "fanout-1x1000-${rate}mps-no-write-delay"
  done
  for rate in 0.25 0.5 1; do
    start_nodes 2; bench rooms --clients 10000 --rate $rate --duration 20
  done
  start_nodes 2; bench rooms --clients 1000 --room-size 10 --rate 10 --duration 20 --label send-10k-mps
  for n in 1000 5000 10000 19000; do
    start_nodes 1; bench idle --connections "$n" --hold 5
  done
fi
stop_all

[ -x .venv-bench/bin/python ] || {
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q -r bench/requirements.txt
}
if $quick; then
  .venv-bench/bin/python bench/render.py "$out" --markdown bench/results/tmp/quick.md --no-plots
  sed -e '/<!-- results:/d' bench/results/tmp/quick.md
  echo "results: $out; tables: bench/results/tmp/quick.md (BENCHMARKS.md is left as it was)"
else
  .venv-bench/bin/python bench/render.py "$out" --markdown BENCHMARKS.md --plots docs/bench
  echo "results: $out; tables and plots: BENCHMARKS.md, docs/bench/"
fi
