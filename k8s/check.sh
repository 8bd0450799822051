#!/usr/bin/env bash
# Verifies the Kubernetes manifests without a cluster:
#   1. `kubectl kustomize` renders k8s/ (the base), overlays/monitoring,
#      overlays/managed-redis, overlays/redis-cluster, overlays/archive-postgres
#      (the base + components/archive-postgres) and overlays/managed-postgres;
#      k8s/ renders exactly like k8s/base/.
#   2. kubernetes-validate (pinned, in a local virtualenv) validates the
#      rendered base and the overlays with objects of their own
#      (redis-cluster: StatefulSet, Job; archive-postgres: Postgres's
#      StatefulSet, Services, NetworkPolicy) strictly (unknown fields are errors)
#      against Kubernetes 1.30, 1.33 and 1.37; any warning (e.g. a kind
#      without a schema) fails.
#   3. check_manifests.py validates all six renders the same way, checks
#      the PodMonitor (a CRD, absent from kubernetes-validate) against a
#      hand-written subset of its CRD schema, the Grafana dashboard ConfigMap
#      (label grafana_dashboard, the committed chorus.json), proves strict mode rejects an
#      unknown field, and checks the wiring: selectors, ports, Secret and
#      ConfigMap references, probes, drain timing, security context, overlays
#      (for redis-cluster: REDIS_CLUSTER_URLS and the cluster create Job; for
#      the archive: DATABASE_URL from the Secret, naming the Postgres).
#   4. overlays/redis-cluster/create-cluster.sh parses as POSIX sh (the Job
#      runs it with busybox sh); tests/e2e/deploy.rs runs it against real
#      redis-servers.
# Needs kubectl (with its built-in kustomize) and python3 with venv; the
# first run installs check-requirements.txt from PyPI, later runs are offline.
#
# Environment: KUBECTL (default: kubectl), CHORUS_K8S_VENV (default:
# <repo>/.venv-k8s), PYTHON (default: python3).
set -euo pipefail

k8s_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$k8s_dir")"
kubectl="${KUBECTL:-kubectl}"
python="${PYTHON:-python3}"
venv="${CHORUS_K8S_VENV:-$repo/.venv-k8s}"
requirements="$k8s_dir/check-requirements.txt"
versions=(1.30 1.33 1.37)
start=$SECONDS

die() {
  echo "k8s/check.sh: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

# --- tools -----------------------------------------------------------------
command -v "$kubectl" >/dev/null 2>&1 ||
  die "kubectl not found (looked for '$kubectl'); install kubectl >= 1.27 (it embeds kustomize) or set KUBECTL"
step "kubectl: $("$kubectl" version --client 2>/dev/null | tr '\n' ' ')"

command -v "$python" >/dev/null 2>&1 || die "python3 not found (set PYTHON)"
stamp="$venv/.chorus-check-requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
  step "virtualenv $venv: installing $(grep -m1 '^kubernetes-validate==' "$requirements") and pinned dependencies"
  if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" ||
      die "'$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$requirements" ||
    die "pip install of $requirements failed (PyPI must be reachable on the first run)"
  cp "$requirements" "$stamp"
else
  step "virtualenv $venv: up to date"
fi
kv_version="$("$venv/bin/kubernetes-validate" --version)"
pinned="$(sed -n 's/^kubernetes-validate==//p' "$requirements")"
[ "$kv_version" = "$pinned" ] || die "kubernetes-validate is $kv_version, pinned $pinned"

# --- render ----------------------------------------------------------------
out="$(mktemp -d "${TMPDIR:-/tmp}/chorus-k8s-check.XXXXXX")"
trap 'rm -rf "$out"' EXIT

render() { # render NAME DIR
  "$kubectl" kustomize "$2" >"$out/$1.yaml" 2>"$out/$1.err" ||
    die "kubectl kustomize $2 failed: $(cat "$out/$1.err")"
  [ -s "$out/$1.yaml" ] || die "kubectl kustomize $2 rendered nothing"
  echo "   rendered $2: $(grep -c '^kind:' "$out/$1.yaml") objects ($(grep '^kind:' "$out/$1.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))"
}
step "kustomize"
render base "$k8s_dir"
render base-dir "$k8s_dir/base"
render monitoring "$k8s_dir/overlays/monitoring"
render managed-redis "$k8s_dir/overlays/managed-redis"
render redis-cluster "$k8s_dir/overlays/redis-cluster"
render archive-postgres "$k8s_dir/overlays/archive-postgres"
render managed-postgres "$k8s_dir/overlays/managed-postgres"
cmp -s "$out/base.yaml" "$out/base-dir.yaml" || die "k8s/ and k8s/base/ render differently"
echo "   k8s/ renders exactly as k8s/base/"

# --- kubernetes-validate on the base and the overlays with objects of their own
kv_args=()
for v in "${versions[@]}"; do kv_args+=(--kubernetes-version "$v"); done
for render_name in base redis-cluster archive-postgres; do
  step "kubernetes-validate $kv_version --strict on the rendered $render_name, Kubernetes ${versions[*]}"
  set +e
  kv_out="$("$venv/bin/kubernetes-validate" --strict --quiet "${kv_args[@]}" "$out/$render_name.yaml" 2>&1)"
  kv_rc=$?
  set -e
  if [ "$kv_rc" -ne 0 ] || [ -n "$kv_out" ]; then
    # --quiet prints only warnings and failures; a WARN (kind without a schema)
    # would otherwise pass with exit 0.
    echo "$kv_out"
    die "kubernetes-validate ($render_name): exit $kv_rc, $(printf '%s' "$kv_out" | grep -c .) warning/error line(s)"
  fi
  echo "   $(grep -c '^kind:' "$out/$render_name.yaml") objects x ${#versions[@]} versions: valid, no warnings"
done

# --- wiring, overlays, CRD --------------------------------------------------
step "check_manifests.py (all renders; PodMonitor against its CRD subset schema)"
CHORUS_K8S_VERSIONS="${versions[*]}" "$venv/bin/python" "$k8s_dir/check_manifests.py" \
  "$out/base.yaml" "$out/monitoring.yaml" "$out/managed-redis.yaml" "$out/redis-cluster.yaml" \
  "$out/archive-postgres.yaml" "$out/managed-postgres.yaml" ||
  die "manifest checks failed (see FAIL lines above)"

# --- the create Job's script ------------------------------------------------
step "overlays/redis-cluster/create-cluster.sh parses as POSIX sh (sh -n)"
sh -n "$k8s_dir/overlays/redis-cluster/create-cluster.sh" || die "create-cluster.sh does not parse"
echo "   ok ($(readlink -f "$(command -v sh)"))"

echo "k8s/check.sh: all checks passed in $((SECONDS - start)) s"
