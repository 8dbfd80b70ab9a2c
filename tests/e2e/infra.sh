#!/usr/bin/env bash
# End to end on the infrastructure: a throwaway PostgreSQL cluster from Debian's `postgresql`
# package (initdb/pg_ctl under a temporary directory, run as `nobody` since initdb refuses root)
# and a throwaway `redis-server` (Debian's package, no persistence, a maxmemory), both installed
# when missing and listening on loopback only, then
#   1. Revel's PostgreSQL tests (examples/revel/tests/postgres.rs): the real binary's query spans
#      through an OTLP receiver decoding the official types, parallel buyers of the last seat,
#      a planted literal;
#   2. the Redis tests: obs's Redis wrapper (tests/redis.rs) and Revel on Redis
#      (examples/revel/tests/redis.rs: the queue's producer and consumer spans, the cache);
#   3. the Prometheus end to end (tests/e2e/prometheus.sh) with Revel on PostgreSQL and Redis,
#      and Debian's node, postgres and redis exporters scraped next to it (E2E_INFRA).
# Stops the servers and removes their files, also on failure.
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
REDIS_PORT="${REDIS_PORT:-16379}"
if ! command -v redis-server >/dev/null; then
    echo "e2e: installing redis-server (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
fi

WORK="$(mktemp -d)"
chmod 755 "$WORK"
mkdir -p "$WORK/pg"
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown nobody "$WORK/pg"
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
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
# Ours, not a server already on the port (its settings would not be the ones below).
if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
    echo "e2e: 127.0.0.1:$REDIS_PORT is taken; set REDIS_PORT to a free port"; exit 1
fi
# A maxmemory, as in deploy/compose.yaml: the Redis memory panel and alert compare with it.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$WORK" \
    --maxmemory 64mb --maxmemory-policy noeviction --daemonize yes --pidfile "$WORK/redis.pid" \
    --logfile "$WORK/redis.log"
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "e2e: redis-server did not start"; cat "$WORK/redis.log"; exit 1; }
echo "e2e: $(redis-server --version | awk '{print $1, $2, $3}') on 127.0.0.1:$REDIS_PORT"

REVEL_TEST_POSTGRES_URL="postgres://revel@127.0.0.1:$PG_PORT/revel_tests" \
    cargo test -q -p revel --features postgres-e2e --test postgres
OBS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" cargo test -q -p obs-tests --features redis-e2e --test redis
REVEL_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" cargo test -q -p revel --features redis-e2e --test redis
redis-cli -p "$REDIS_PORT" flushall >/dev/null
E2E_DATABASE_URL="postgres://revel@127.0.0.1:$PG_PORT/revel_prometheus" \
    E2E_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/3" \
    E2E_INFRA_PG_DSN="postgresql://revel@127.0.0.1:$PG_PORT/revel_prometheus?sslmode=disable" \
    E2E_INFRA_REDIS_ADDR="redis://127.0.0.1:$REDIS_PORT" \
    bash tests/e2e/prometheus.sh
echo "e2e: PostgreSQL and Redis passed"
