#!/usr/bin/env bash
# Browser tests of the web client (static/): real Redis, real chorus nodes,
# Debian's chromium driven by playwright-core. Installs what is missing
# (chromium, redis-server, the npm package), builds chorus if it is not built,
# then runs every *.test.js with Node's test runner. Exits non-zero on failure.
#
#   tests/browser/run.sh                 # all tests
#   TEST_LOG=1 tests/browser/run.sh      # with the nodes' logs
#   CHORUS_BIN=/path/to/chorus ...       # use this binary (default target/debug/chorus)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
need_apt=()
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/playwright-core/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
bin="${CHORUS_BIN:-$target/debug/chorus}"
if [ ! -x "$bin" ]; then
  echo "building chorus ($bin not found)"
  (cd "$root" && cargo build --bin chorus)
fi
export CHORUS_BIN="$bin"

exec node --test --test-timeout=180000 ./*.test.js
