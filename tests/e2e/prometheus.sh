#!/usr/bin/env bash
# End to end: the Revel service's registry, checked by promtool and scraped by a real Prometheus
# server whose HTTP API must return the values the traffic produced. Installs what it needs,
# binds to loopback only, stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/../.."

REVEL_PORT="${REVEL_PORT:-18080}"
PROM_PORT="${PROM_PORT:-19090}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "e2e: installing prometheus (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }
fi
# The package may start a server of its own on :9090; ours uses its own port and data directory.

cargo build -q -p revel
REVEL_ADDR="127.0.0.1:$REVEL_PORT" target/debug/revel >"$WORK/revel.log" 2>&1 &
PIDS+=($!)
BASE="http://127.0.0.1:$REVEL_PORT"
for _ in $(seq 1 100); do curl -fs "$BASE/metrics" >/dev/null && break; sleep 0.1; done
curl -fs "$BASE/metrics" >/dev/null || { echo "e2e: revel did not start"; cat "$WORK/revel.log"; exit 1; }

# Traffic: 3 sales of tier 3, 1 sold-out checkout, 2 good webhooks and 1 unknown.
for _ in 1 2 3; do curl -fs -X POST "$BASE/orgs/1/events/7/tiers/3/checkout" >/dev/null; done
curl -s -o /dev/null -X POST "$BASE/orgs/1/events/7/tiers/0/checkout"
curl -fs -X POST "$BASE/stripe/webhooks/checkout.session.completed" >/dev/null
curl -fs -X POST "$BASE/stripe/webhooks/charge.refunded" >/dev/null
curl -s -o /dev/null -X POST "$BASE/stripe/webhooks/bogus.type"
# A label value with a quote, a backslash, a newline and non-ASCII: escaped in the exposition.
curl -s -o /dev/null -X POST "$BASE/stripe/webhooks/q%22b%5Cn%0A%C3%BC%E2%9C%93"

FAILED=0
PASSED=0
check() { # name, command...
    local name="$1"; shift
    if "$@"; then echo "ok: $name"; PASSED=$((PASSED + 1)); else echo "FAILED: $name"; FAILED=$((FAILED + 1)); fi
}

curl -fs "$BASE/metrics" >"$WORK/exposition.txt"
promtool_clean() { # exit status 0 and nothing to report, lint included
    local out rc=0
    out="$(promtool check metrics <"$WORK/exposition.txt" 2>&1)" || rc=$?
    [ "$rc" -eq 0 ] && [ -z "$out" ] || { echo "  promtool (exit $rc): $out"; return 1; }
}
check "promtool check metrics is clean on the Revel exposition" promtool_clean
check "every catalog family has HELP and TYPE" \
    bash -c "[ \$(grep -c '^# TYPE revel_' '$WORK/exposition.txt') -eq \$(grep -c '^\[metrics\.' examples/revel/metrics.toml) ]"

cat >"$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: revel
    static_configs:
      - targets: ["127.0.0.1:$REVEL_PORT"]
YML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PROM_PORT/api/v1/query"

# Prints the single value of an instant query ("none" when empty).
query() {
    curl -fsG "$API" --data-urlencode "query=$1" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if len(r) == 1 else ("none" if not r else "many"))' 2>/dev/null || echo "error"
}
expect() { # query, expected value; waits up to 60 s for the scrape
    local got=""
    for _ in $(seq 1 120); do
        got="$(query "$1")"
        [ "$got" = "$2" ] && return 0
        sleep 0.5
    done
    echo "  query $1: expected $2, got $got"
    return 1
}

check "prometheus scrapes revel" expect 'up{job="revel"}' 1
check "tickets sold by org/event/tier" expect 'revel_tickets_sold_total{organization_id="1",event_id="7",tier_id="3",payment_method="online"}' 3
check "failed payments from the outcome label" expect 'revel_payments_total{organization_id="1",status="failed"}' 1
check "succeeded payments" expect 'revel_payments_total{organization_id="1",status="succeeded"}' 3
check "revenue counted by amount" expect 'revel_revenue_total{organization_id="1",currency="EUR"}' 90
check "webhook failures" expect 'sum(revel_stripe_webhooks_processed_total{status="failure"})' 2
odd_label() {
    curl -fsG "$API" --data-urlencode 'query=revel_stripe_webhooks_processed_total{webhook_type=~"(?s)q.*"}' | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
want = "q\"b\\n\n\u00fc\u2713"
sys.exit(0 if [x["metric"]["webhook_type"] for x in r] == [want] and r[0]["value"][1] == "1" else 1)'
}
check "label value with quote, backslash, newline, non-ASCII survives the scrape" odd_label
check "webhook successes" expect 'sum(revel_stripe_webhooks_processed_total{status="success"})' 2
check "histogram count" expect 'revel_database_query_duration_seconds_count{query_type="checkout"}' 4
check "histogram buckets are cumulative up to +Inf" expect 'revel_database_query_duration_seconds_bucket{query_type="checkout",le="+Inf"}' 4
check "families without labels exist from start-up" expect 'revel_users_active_weekly' 0

echo "e2e: $PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    echo "--- revel log"; tail -20 "$WORK/revel.log"; echo "--- prometheus log"; tail -20 "$WORK/prometheus.log"
    exit 1
fi
