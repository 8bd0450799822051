#!/usr/bin/env bash
# Checks the deployment artifacts with the real tools, and says what it
# checked. Exits non-zero on the first failure; a missing tool is a failure,
# never a skip.
#
#   deploy/check.sh
#
# Needs: promtool (Debian package `prometheus`), nginx (`nginx`), python3.
# ./scripts/test.sh installs both.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Debian installs nginx in /usr/sbin, which is not on a normal user's PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

missing=()
command -v promtool >/dev/null 2>&1 || missing+=("promtool (apt-get install prometheus)")
command -v nginx >/dev/null 2>&1 || missing+=("nginx (apt-get install nginx)")
command -v python3 >/dev/null 2>&1 || missing+=("python3 (apt-get install python3)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy/check.sh: FAILED: missing tools (./scripts/test.sh installs them):" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi

tmp=$(mktemp -d -t chorus-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# nginx's workers run as `nobody` when started by root.
chmod 755 "$tmp"

step() { echo "== $*"; }
fail() { echo "deploy/check.sh: FAILED: $*" >&2; exit 1; }

step "promtool check config deploy/prometheus/prometheus.yml (and the rule files it names)"
promtool check config deploy/prometheus/prometheus.yml || fail "prometheus.yml"

step "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml || fail "alerts.yml"

step "promtool test rules deploy/prometheus/alerts.test.yml (each alert fires when it should)"
promtool test rules deploy/prometheus/alerts.test.yml || fail "alerts.test.yml"

step "every chorus_* metric in alerts.yml is declared in src/telemetry.rs"
# Histograms are queried through their _bucket/_sum/_count series.
for name in $(grep -o 'chorus_[a-z_]*' deploy/prometheus/alerts.yml | sort -u); do
  base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
  if grep -q "\"$base\"" src/telemetry.rs || grep -q "\"$name\"" src/telemetry.rs; then
    echo "  $name"
  else
    fail "alerts.yml uses $name, which src/telemetry.rs does not declare"
  fi
done

step "deploy/grafana/chorus.json is the monitoring component's dashboard (one file: a symlink to k8s/components/monitoring/chorus.json)"
# kustomize reads a configMapGenerator's files only below the component's
# directory (a symlink out of it is refused too), so the file lives there.
dashboard=k8s/components/monitoring/chorus.json
[ -f "$dashboard" ] || fail "$dashboard is missing"
[ -L deploy/grafana/chorus.json ] && [ "$(readlink -f deploy/grafana/chorus.json)" = "$ROOT/$dashboard" ] ||
  fail "deploy/grafana/chorus.json is not a symlink to $dashboard"
echo "  deploy/grafana/chorus.json -> $(readlink deploy/grafana/chorus.json)"

step "deploy/grafana/check.py: the dashboard's queries parse (promtool), name only metrics src/telemetry.rs declares (or up), and only their labels (docs/OPERATIONS.md)"
python3 deploy/grafana/check.py deploy/grafana/chorus.json src/telemetry.rs docs/OPERATIONS.md || fail "the Grafana dashboard"

step "Grafana provisioning: the Prometheus datasource and the dashboard provider; the grafana service in compose.yaml mounts both"
ds=deploy/grafana/provisioning/datasources/prometheus.yaml
prov=deploy/grafana/provisioning/dashboards/chorus.yaml
grep -q '^ *type: prometheus$' "$ds" && grep -q '^ *url: http://prometheus:9090$' "$ds" ||
  fail "$ds: no prometheus datasource at http://prometheus:9090"
grep -q '^ *type: file$' "$prov" || fail "$prov: no file provider"
dash_dir=$(sed -n 's/^ *path: *//p' "$prov")
[ -n "$dash_dir" ] || fail "$prov: no path"
# The grafana service's block: from its key to the next top-level key.
gf_block=$(awk '/^  grafana:$/ {on=1; print; next} on && /^(  )?[a-z0-9_-]+:$/ {on=0} on' deploy/compose.yaml)
[ -n "$gf_block" ] || fail "compose.yaml has no grafana service"
grep -Eq 'image: grafana/grafana-oss:[0-9]' <<<"$gf_block" || fail "compose.yaml: grafana is not a pinned grafana/grafana-oss image"
grep -q -- '- ./grafana/provisioning:/etc/grafana/provisioning:ro' <<<"$gf_block" ||
  fail "compose.yaml: grafana does not mount deploy/grafana/provisioning"
grep -q -- "- ../$dashboard:$dash_dir/chorus.json:ro" <<<"$gf_block" ||
  fail "compose.yaml: grafana does not mount the dashboard into $dash_dir (the provider's path)"
grep -q -- '- "127.0.0.1:3000:3000"' <<<"$gf_block" || fail "compose.yaml: grafana is not on 127.0.0.1:3000"
grep -q 'GF_SECURITY_ADMIN_PASSWORD: ${CHORUS_GRAFANA_ADMIN_PASSWORD' <<<"$gf_block" ||
  fail "compose.yaml: grafana's admin password does not come from CHORUS_GRAFANA_ADMIN_PASSWORD"
awk '/^  prometheus:$/ {on=1; next} on && /^(  )?[a-z0-9_-]+:$/ {on=0} on' deploy/compose.yaml | grep -q -- '- frontend' ||
  fail "compose.yaml: prometheus is not on grafana's network (frontend)"
echo "  datasource http://prometheus:9090; dashboards from $dash_dir; $(grep -o 'grafana/grafana-oss:[^ ]*' <<<"$gf_block") on 127.0.0.1:3000"

step "nginx -t on deploy/nginx/chorus.conf rendered with test upstreams (prefix $tmp/lb)"
deploy/nginx/render.sh "$tmp/lb" 127.0.0.1:18080 127.0.0.1:18081 127.0.0.1:18082 127.0.0.1:18083
nginx -t -q -p "$tmp/lb" -c "$tmp/lb/nginx.conf" -e "$tmp/lb/error.log" || fail "nginx -t"
echo "  syntax ok, test successful"

step "the rendered nginx config blocks /metrics, upgrades /ws with a long timeout, hashes on the affinity cookie"
conf=$tmp/lb/chorus.conf
grep -Eq 'location \^~ /metrics \{' "$conf" && grep -A2 'location \^~ /metrics' "$conf" | grep -q 'return 404' ||
  fail "/metrics is not refused in chorus.conf"
grep -A8 'location = /ws' "$conf" | grep -q 'proxy_read_timeout 1h' || fail "/ws has no long read timeout"
grep -q 'proxy_set_header Upgrade \$http_upgrade' "$conf" || fail "no Upgrade header"
grep -q 'proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for' "$conf" || fail "no X-Forwarded-For"
grep -q 'hash \$chorus_affinity consistent' "$conf" || fail "no sticky hash"
echo "  ok"

step "the compose nginx settings render to a valid config too (service names mapped to 127.0.0.1)"
# compose.yaml's CHORUS_UPSTREAM_SERVERS, with chorusN:8080 -> 127.0.0.1 so
# nginx -t can resolve them.
servers=$(sed -n 's/^ *CHORUS_UPSTREAM_SERVERS: *"\(.*\)"$/\1/p' deploy/compose.yaml)
[ -n "$servers" ] || fail "compose.yaml sets no CHORUS_UPSTREAM_SERVERS"
listen=$(sed -n 's/^ *CHORUS_LISTEN: *"\(.*\)"$/\1/p' deploy/compose.yaml)
[ -n "$listen" ] || fail "compose.yaml sets no CHORUS_LISTEN"
mkdir -p "$tmp/compose"
template=$(<deploy/nginx/chorus.conf)
# (nginx -t opens no listening socket, so the port may be in use here.)
rendered=${template//'${CHORUS_LISTEN}'/$listen}
rendered=${rendered//'${CHORUS_UPSTREAM_SERVERS}'/$(sed -E 's/chorus[0-9]+:/127.0.0.1:/g' <<<"$servers")}
printf '%s\n' "$rendered" >"$tmp/compose/chorus.conf"
cp deploy/nginx/nginx.conf "$tmp/compose/nginx.conf"
nginx -t -q -p "$tmp/compose" -c "$tmp/compose/nginx.conf" -e "$tmp/compose/error.log" || fail "nginx -t (compose settings)"
echo "  listen $listen; $servers"

step "shell scripts parse (bash -n)"
for script in deploy/local-cluster.sh deploy/check.sh deploy/nginx/render.sh scripts/redis-cluster.sh; do
  bash -n "$script" || fail "$script"
  echo "  $script"
done

step "local-cluster.sh: refuses an unknown option before starting anything; --redis-cluster reuses scripts/redis-cluster.sh; --archive"
set +e
usage=$(deploy/local-cluster.sh --no-such-option 2>&1 </dev/null)
status=$?
set -e
[ "$status" -eq 2 ] && grep -q -- '--redis-cluster' <<<"$usage" && grep -q -- '--archive' <<<"$usage" ||
  fail "local-cluster.sh --no-such-option: exit $status, $usage"
echo "  exit 2: $usage"
# One way to form a local Redis Cluster (scripts/redis-cluster.sh, tested in
# tests/e2e/redis_cluster.rs), not a copy of it.
grep -q 'scripts/redis-cluster.sh" start' deploy/local-cluster.sh &&
  grep -q 'scripts/redis-cluster.sh" stop' deploy/local-cluster.sh ||
  fail "local-cluster.sh does not start and stop its Redis Cluster with scripts/redis-cluster.sh"
! grep -q -- '--cluster create' deploy/local-cluster.sh ||
  fail "local-cluster.sh forms a Redis Cluster itself instead of through scripts/redis-cluster.sh"
grep -q 'REDIS_CLUSTER_URLS="$REDIS_CLUSTER_URLS"' deploy/local-cluster.sh ||
  fail "local-cluster.sh does not give the nodes REDIS_CLUSTER_URLS"
echo "  start and stop through scripts/redis-cluster.sh; the nodes get REDIS_CLUSTER_URLS"
# --archive: the nodes get DATABASE_URL from the script only (the caller's,
# or that of a private Postgres it starts and stops). tests/e2e/deploy_scripts.rs
# runs it.
grep -q '"${archive_setting\[@\]}"' deploy/local-cluster.sh &&
  grep -q -- '-u DATABASE_URL -u CHORUS_ARCHIVE_DYNAMODB_TABLE' deploy/local-cluster.sh ||
  fail "local-cluster.sh does not give the nodes DATABASE_URL from --archive alone"
grep -q 'stop_postgres' deploy/local-cluster.sh || fail "local-cluster.sh does not stop its Postgres"
echo "  --archive: DATABASE_URL only from the script; its private Postgres stopped with the rest"

step "compose.yaml: the archive is on (a postgres service with a volume and a healthcheck; the nodes' DATABASE_URL names it)"
# The postgres service's block: from its key to the next service's.
pg_block=$(awk '/^  postgres:$/ {on=1; print; next} on && /^  [a-z0-9_-]+:$/ {on=0} on' deploy/compose.yaml)
[ -n "$pg_block" ] || fail "compose.yaml has no postgres service"
grep -Eq 'image: postgres:1[56](-|$)' <<<"$pg_block" || fail "compose.yaml: postgres is not a postgres:15 or :16 image"
grep -q 'postgres-data:/var/lib/postgresql/data' <<<"$pg_block" || fail "compose.yaml: postgres keeps no volume"
grep -q 'pg_isready' <<<"$pg_block" || fail "compose.yaml: postgres has no pg_isready healthcheck"
grep -Eq '^  DATABASE_URL: postgres://[^@]+@postgres:5432/[a-z]+$' deploy/compose.yaml ||
  fail "compose.yaml: the nodes' environment has no DATABASE_URL naming the postgres service"
grep -A6 '^  depends_on:' deploy/compose.yaml | grep -q '^    postgres:' ||
  fail "compose.yaml: the nodes do not wait for postgres"
! grep -q 'CHORUS_ARCHIVE_DYNAMODB_TABLE' deploy/compose.yaml ||
  fail "compose.yaml sets CHORUS_ARCHIVE_DYNAMODB_TABLE beside DATABASE_URL (chorus refuses both)"
echo "  $(grep -E '^  DATABASE_URL:' deploy/compose.yaml | sed 's/^ *//')"

step "deploy/compose.yaml"
if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config -q || fail "docker compose config"
  echo "  docker compose config: ok"
else
  echo "  NOT CHECKED by docker compose (not installed here); the Dockerfile and compose.yaml are not built by this script"
fi

echo "deploy/check.sh: all checks passed"
