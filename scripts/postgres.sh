#!/usr/bin/env bash
# A private Postgres on one machine, on a free port, with its data in DIR
# (trust auth, listening on 127.0.0.1 only, fsync off: for tests and
# benchmarks, never for data you keep). As root it runs as the `postgres`
# user, since initdb and postgres refuse root (so DIR must be reachable by
# that user: a fresh `mktemp -d` as DIR is).
#
#   scripts/postgres.sh start DIR   # initdb (once) and start; prints the URL
#   scripts/postgres.sh stop DIR    # stops it; its data stays in DIR
#   scripts/postgres.sh remove DIR  # stops it and removes DIR
#
#   url=$(scripts/postgres.sh start /tmp/pg)   # postgres://postgres@127.0.0.1:P/postgres
#   DATABASE_URL=$url cargo run
#   scripts/postgres.sh remove /tmp/pg
#
# A second `start` of a stopped DIR starts it again on the same port with
# its data (the archive fault drills stop and start it). The server programs
# are found on PATH, else in /usr/lib/postgresql/*/bin (Debian's
# `postgresql` package).
set -euo pipefail

usage() { echo "usage: scripts/postgres.sh start|stop|remove DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
  bin=$(dirname "$(command -v pg_ctl)")
else
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -n "$bin" ] && [ -x "$bin/pg_ctl" ] || {
  echo "scripts/postgres.sh: no Postgres server installed (apt-get install postgresql)" >&2
  exit 1
}
as=()
[ "$(id -u)" -ne 0 ] || as=(runuser -u postgres --)
pg_ctl() { "${as[@]}" "$bin/pg_ctl" -D "$dir/data" "$@"; }

case $action in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    if [ ! -f "$dir/port" ]; then
      python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' >"$dir/port"
      "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
      }
    fi
    port=$(cat "$dir/port")
    pg_ctl -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
      start >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    pg_ctl -m fast -w stop >/dev/null 2>&1 || true
    ;;
  remove)
    pg_ctl -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *) usage ;;
esac
