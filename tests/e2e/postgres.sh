#!/usr/bin/env bash
# End to end on a real PostgreSQL: a throwaway cluster from Debian's `postgresql` package
# (installed when missing; initdb/pg_ctl under a temporary directory, run as `nobody` since
# initdb refuses root, listening on loopback only), then
#   1. Revel's PostgreSQL tests (examples/revel/tests/postgres.rs): the real binary's query spans
#      through an OTLP receiver decoding the official types, parallel buyers of the last seat,
#      a planted literal;
#   2. the Prometheus end to end (tests/e2e/prometheus.sh) with Revel on PostgreSQL.
# Stops the cluster and removes its files, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_PORT="${PG_PORT:-15432}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "e2e: installing postgresql (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi
# The package may start a cluster of its own on 5432; ours has its own port and files.

WORK="$(mktemp -d)"
chmod 755 "$WORK"
mkdir -p "$WORK/pg"
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown nobody "$WORK/pg"
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U revel --auth=trust --no-sync >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log"; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK/pg -c fsync=off" start >/dev/null \
    || { cat "$WORK/pg/server.log"; exit 1; }
for db in revel_tests revel_prometheus; do
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U revel "$db"
done
echo "e2e: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"

REVEL_TEST_POSTGRES_URL="postgres://revel@127.0.0.1:$PG_PORT/revel_tests" \
    cargo test -q -p revel --features postgres-e2e --test postgres
E2E_DATABASE_URL="postgres://revel@127.0.0.1:$PG_PORT/revel_prometheus" bash tests/e2e/prometheus.sh
echo "e2e: PostgreSQL passed"
