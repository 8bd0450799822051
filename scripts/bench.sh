#!/usr/bin/env bash
# Runs the benchmarks of BENCHMARKS.md on this machine and renders its tables
# and plots: builds release binaries, starts its own redis-server on a free
# port and fresh chorus nodes for every run (so each run's memory and CPU are
# its own), drives them with chorus-bench, and stops everything it started.
#
#   scripts/bench.sh            every scenario (about 10 minutes)
#   scripts/bench.sh --quick    one small run of each, to try the pipeline
#
# Results are appended to bench/results/latest.jsonl (runs with the same
# label replace older ones in the tables).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true

command -v redis-server >/dev/null 2>&1 || {
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

cargo build --release --bins -p chorus -p chorus-bench
bin=target/release
out=bench/results/latest.jsonl
mkdir -p bench/results
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
trap 'stop_all; [ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT

# Each node and the load generator may hold up to this many sockets.
ulimit -n "$(ulimit -Hn)"

redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" </dev/null >/dev/null 2>&1 &
redis_pid=$!
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

node_args=()
node_pids=()
# Starts $1 fresh nodes on an empty Redis, with any VAR=value after it as
# extra settings; fills node_args and node_pids.
start_nodes() {
  local count=$1
  shift
  stop_all
  redis-cli -p "$redis_port" flushall >/dev/null
  node_args=()
  node_pids=()
  for i in $(seq 1 "$count"); do
    port=$(free_port)
    REDIS_URL="redis://127.0.0.1:$redis_port" PORT=$port HOST=127.0.0.1 \
      CHORUS_NODE_ID="bench-$i" CHORUS_RATE_LIMIT=0 CHORUS_MAX_CONNECTIONS_PER_IP=0 RUST_LOG=warn \
      env "$@" "$bin/chorus" >"$work/node-$i.log" 2>&1 &
    pids+=($!)
    node_pids+=(--pid $!)
    node_args+=(--node "http://127.0.0.1:$port")
    wait_http "http://127.0.0.1:$port/ready"
  done
}

bench() {
  "$bin/chorus-bench" "${node_args[@]}" "${node_pids[@]}" --redis-pid "$redis_pid" --out "$out" "$@"
}

if $quick; then
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
.venv-bench/bin/python bench/render.py "$out" --markdown BENCHMARKS.md --plots docs/bench
echo "results: $out; tables and plots: BENCHMARKS.md, docs/bench/"
