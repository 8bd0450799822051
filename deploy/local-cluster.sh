#!/usr/bin/env bash
# A local chorus cluster on one machine, without containers: one Redis and
# three nodes on consecutive ports. Runs in the foreground; Ctrl-C (or
# SIGTERM) drains the nodes and stops Redis.
#
#   deploy/local-cluster.sh            # Redis on 6380, nodes on 8081-8083
#   BASE_PORT=9001 REDIS_PORT=6390 deploy/local-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6380}
BASE_PORT=${BASE_PORT:-8081}
NODES=${NODES:-3}
RUN_DIR=${RUN_DIR:-$(mktemp -d -t chorus-cluster.XXXXXX)}

command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/chorus

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs in $RUN_DIR"
}
trap stop INT TERM EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$RUN_DIR" >"$RUN_DIR/redis.log" 2>&1 &
pids+=($!)

for i in $(seq 1 "$NODES"); do
  port=$((BASE_PORT + i - 1))
  PORT=$port HOST=127.0.0.1 CHORUS_NODE_ID="node$i" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
    "$BIN" >"$RUN_DIR/node$i.log" 2>&1 &
  pids+=($!)
done

for i in $(seq 1 "$NODES"); do
  port=$((BASE_PORT + i - 1))
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/ready" >/dev/null || { echo "node$i did not become ready; see $RUN_DIR/node$i.log" >&2; exit 1; }
  echo "node$i  http://127.0.0.1:$port/   (ws://127.0.0.1:$port/ws?username=…)"
done
echo "redis  redis://127.0.0.1:$REDIS_PORT/0   logs: $RUN_DIR"
echo "Ctrl-C to stop."
wait
