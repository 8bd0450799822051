#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (redis-server for the cluster tests, redis-cli to form the Redis Clusters
# the tests run on, moto_server for the upload tests, iproute2 for the partition test, nginx
# and prometheus for the deployment tests; tests/browser/run.sh installs
# chromium and its npm packages), checks the deployment artifacts with the
# real tools, then runs every test of the workspace and the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Debian's redis-server brings redis-tools; a machine may have one without the other.
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# `ip` builds the network namespaces of the partition test (tests/e2e/partition.rs).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
# The S3-compatible server the upload tests run against (tests/e2e/support/moto.rs).
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing: moto[server]"
  # A Debian system Python refuses pip installs unless told (PEP 668).
  python3 -m pip install --quiet 'moto[server]' ||
    python3 -m pip install --quiet --break-system-packages 'moto[server]'
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

export PATH="$PATH:/usr/sbin"
bash deploy/check.sh
bash k8s/check.sh

# One Redis Cluster for the whole run: every test process attaches to it
# (SharedRedisCluster in tests/e2e/support/redis_cluster.rs) instead of
# forming its own, six nodes and about 2.5 s per test under nextest, which
# runs each test in a process of its own. Tests keep apart by key prefix;
# the tests that kill or stop a node start a cluster of their own. An
# exported CHORUS_TEST_REDIS_CLUSTER_URLS (a cluster of yours) is used as is.
if [ -z "${CHORUS_TEST_REDIS_CLUSTER_URLS:-}" ]; then
  cluster_dir=$(mktemp -d -t chorus-test-redis-cluster.XXXXXX)
  trap 'bash scripts/redis-cluster.sh stop "$cluster_dir" >/dev/null 2>&1 || rm -rf "$cluster_dir"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  CHORUS_TEST_REDIS_CLUSTER_URLS=$(bash scripts/redis-cluster.sh start "$cluster_dir")
  export CHORUS_TEST_REDIS_CLUSTER_URLS CHORUS_TEST_REDIS_CLUSTER_DIR=$cluster_dir
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast
else
  cargo test --workspace --all-targets --no-fail-fast
fi

# The web client in a real browser (Debian's chromium, driven by playwright-core).
bash tests/browser/run.sh
