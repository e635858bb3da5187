#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the unit tests' PostgreSQL cases (DESIGN.md §10):
#   scripts/pg-test-cluster.sh start DIR   initdb + pg_ctl start on a free loopback port under DIR (a new,
#                                           empty directory); prints the URL for DYAD_TEST_PG_URL
#   scripts/pg-test-cluster.sh stop DIR    pg_ctl stop -m fast, then removes DIR
# As root, initdb and pg_ctl run as the `postgres` user (PostgreSQL refuses to run as root). Trust
# authentication on 127.0.0.1 and a socket inside DIR only; fsync off (a test cluster: nothing to keep).
# Fails loudly, with the server's log, when the cluster cannot start: the PostgreSQL cases never skip silently.
set -euo pipefail
PG_BIN=${DYAD_PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    su postgres -s /bin/sh -c "$1"
  else
    sh -c "$1"
  fi
}

case "$cmd" in
  start)
    if [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
      echo "pg-test-cluster: $PG_BIN/initdb is missing: apt-get install postgresql-15 (scripts/install-deps.sh --test)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    if [ -n "$(ls -A "$dir")" ]; then
      echo "pg-test-cluster: $dir is not empty" >&2
      exit 1
    fi
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir"
    if ! as_pg "'$PG_BIN/initdb' -D '$dir/data' -U postgres -A trust --no-sync -E UTF8 --locale=C" \
        >"$dir/initdb.log" 2>&1; then
      cat "$dir/initdb.log" >&2
      echo "pg-test-cluster: initdb failed" >&2
      exit 1
    fi
    # A free port can be taken between the probe and the start: three tries.
    for attempt in 1 2 3; do
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      if as_pg "'$PG_BIN/pg_ctl' -D '$dir/data' -l '$dir/pg.log' -w -t 60 \
          -o \"-k '$dir' -h 127.0.0.1 -p $port -F -c full_page_writes=off -c synchronous_commit=off \
          -c max_connections=200\" start" >"$dir/pg_ctl.log" 2>&1; then
        echo "postgresql://postgres@127.0.0.1:$port/postgres?sslmode=disable"
        exit 0
      fi
      echo "pg-test-cluster: start on port $port failed (attempt $attempt):" >&2
      cat "$dir/pg_ctl.log" "$dir/pg.log" >&2 2>/dev/null || true
    done
    echo "pg-test-cluster: PostgreSQL did not start" >&2
    exit 1
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_pg "'$PG_BIN/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
