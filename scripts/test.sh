#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (redis-server for the cluster tests, redis-cli to form the Redis Clusters
# the tests run on, moto_server for the upload and DynamoDB tests, iproute2
# for the partition test, nginx, prometheus and postgresql for the
# deployment and archive tests; tests/browser/run.sh installs
# chromium and its npm packages), checks the deployment artifacts with the
# real tools, then runs every test of the workspace, the JavaScript client's
# tests (clients/js) and the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Debian's redis-server brings redis-tools; a machine may have one without the other.
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Postgres for the archive tests and `local-cluster.sh --archive` (each
# starts private instances with initdb; Debian keeps the server binaries in
# /usr/lib/postgresql/*/bin) and psql, which the script creates its
# database with.
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
# `ip` builds the network namespaces of the partition test (tests/e2e/partition.rs).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
# pip, for moto below.
command -v moto_server >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# moto's server stands in for S3 (the upload tests, tests/e2e/support/moto.rs)
# and DynamoDB (tests/e2e/archive_dynamodb.rs).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server] (pip)"
  # A Debian system Python refuses pip installs unless told (PEP 668).
  python3 -m pip install --quiet 'moto[server]>=5,<6' ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
fi

export PATH="$PATH:/usr/sbin"

# What this script starts for the run, stopped however it ends.
cluster_dir=""
moto_pid=""
pg_dir=""
cleanup() {
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; fi
  if [ -n "$cluster_dir" ]; then
    bash scripts/redis-cluster.sh stop "$cluster_dir" >/dev/null 2>&1 || rm -rf "$cluster_dir"
  fi
  if [ -n "$pg_dir" ]; then bash scripts/postgres.sh remove "$pg_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash deploy/check.sh
bash k8s/check.sh

# One Postgres for the whole run: the archive tests each create a database
# of their own on it (tests/e2e/support/postgres.rs); the fault test that
# stops Postgres starts a server of its own. An exported
# CHORUS_TEST_DATABASE_URL (a server of yours) is used as is.
if [ -z "${CHORUS_TEST_DATABASE_URL:-}" ]; then
  pg_dir=$(mktemp -d -t chorus-test-postgres.XXXXXX)
  CHORUS_TEST_DATABASE_URL=$(bash scripts/postgres.sh start "$pg_dir")
  export CHORUS_TEST_DATABASE_URL
fi

# One Redis Cluster for the whole run: every test process attaches to it
# (SharedRedisCluster in tests/e2e/support/redis_cluster.rs) instead of
# forming its own, six nodes and about 2.5 s per test under nextest, which
# runs each test in a process of its own. Tests keep apart by key prefix;
# the tests that kill or stop a node start a cluster of their own. An
# exported CHORUS_TEST_REDIS_CLUSTER_URLS (a cluster of yours) is used as is.
if [ -z "${CHORUS_TEST_REDIS_CLUSTER_URLS:-}" ]; then
  cluster_dir=$(mktemp -d -t chorus-test-redis-cluster.XXXXXX)
  CHORUS_TEST_REDIS_CLUSTER_URLS=$(bash scripts/redis-cluster.sh start "$cluster_dir")
  export CHORUS_TEST_REDIS_CLUSTER_URLS CHORUS_TEST_REDIS_CLUSTER_DIR=$cluster_dir
fi

# One moto server for the whole run, as with the Redis Cluster: every S3
# upload test and DynamoDB archive test uses it (MotoServer::shared_or_start
# in tests/e2e/support/moto.rs) with a bucket or table of its own, instead
# of starting a Python server of its own (about 2 s each). An exported
# CHORUS_TEST_MOTO_URL is used as is.
if [ -z "${CHORUS_TEST_MOTO_URL:-}" ]; then
  moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$moto_port/" && break
    sleep 0.1
  done
  export CHORUS_TEST_MOTO_URL="http://127.0.0.1:$moto_port"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
else
  cargo test --workspace --all-targets --no-fail-fast
fi

# The JavaScript client library (clients/js) against real nodes on a real
# Redis, with Node's test runner; its only devDependency is `ws`.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
[ -x "$target_dir/debug/chorus" ] || cargo build --bin chorus
(
  cd clients/js
  npm ci --no-audit --no-fund --loglevel=error
  CHORUS_BIN="${CHORUS_BIN:-$target_dir/debug/chorus}" npm test
)

# The web client in a real browser (Debian's chromium, driven by playwright-core).
bash tests/browser/run.sh
