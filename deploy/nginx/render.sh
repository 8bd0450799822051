#!/usr/bin/env bash
# Renders the load balancer's configuration into a directory that nginx can
# run from as its prefix (no container needed):
#
#   deploy/nginx/render.sh OUT_DIR LISTEN NODE...
#   deploy/nginx/render.sh /tmp/lb 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082
#   nginx -p /tmp/lb -c /tmp/lb/nginx.conf -e /tmp/lb/error.log -g 'daemon off;'
#
# Writes OUT_DIR/nginx.conf (a copy of deploy/nginx/nginx.conf) and
# OUT_DIR/chorus.conf (deploy/nginx/chorus.conf with its two placeholders
# replaced).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR LISTEN NODE_ADDR..." >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
out=$1 listen=$2
shift 2
servers=""
for node in "$@"; do servers+="server $node; "; done

mkdir -p "$out"
template=$(<"$here/chorus.conf")
rendered=${template//'${CHORUS_LISTEN}'/$listen}
rendered=${rendered//'${CHORUS_UPSTREAM_SERVERS}'/$servers}
if [[ $rendered == *'${CHORUS_'* ]]; then
  echo "render.sh: $here/chorus.conf has a placeholder this script does not know" >&2
  exit 1
fi
printf '%s\n' "$rendered" >"$out/chorus.conf"
cp "$here/nginx.conf" "$out/nginx.conf"
