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
# The simulated external services answer at once and never fail here: counts are exact.
REVEL_ADDR="127.0.0.1:$REVEL_PORT" OBS_SPANS_FILE="$WORK/spans.jsonl" REVEL_STRIPE_WEBHOOK_SECRET=whsec_e2e \
    REVEL_STRIPE_LATENCY_MS=0 REVEL_STRIPE_FAILURE_RATE=0 REVEL_LLM_LATENCY_MS=0 REVEL_LLM_FAILURE_RATE=0 \
    REVEL_EMAIL_LATENCY_MS=0 REVEL_EMAIL_FAILURE_RATE=0 REVEL_PDF_LATENCY_MS=0 \
    target/debug/revel >"$WORK/revel.log" 2>&1 &
PIDS+=($!)
BASE="http://127.0.0.1:$REVEL_PORT"
for _ in $(seq 1 100); do curl -fs "$BASE/metrics" >/dev/null && break; sleep 0.1; done
curl -fs "$BASE/metrics" >/dev/null || { echo "e2e: revel did not start"; cat "$WORK/revel.log"; exit 1; }

json() { curl -s -H 'content-type: application/json' -X POST "$BASE$1" -d "$2"; }
# Traffic: 3 free tickets, 1 paid one (checkout, then Stripe's signed webhook), 1 refund, 1 webhook
# with a bad signature and 1 of an unknown type.
for u in 5 6 7; do json /events/1/tiers/2/checkout "{\"user_id\":$u,\"email\":\"u$u@example.org\"}" >/dev/null; done
SESSION="$(json /events/1/tiers/1/checkout '{"user_id":8,"email":"u8@example.org","card_number":"4111 1111 1111 1111","cvv":"123"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkout_url"].rsplit("/",1)[1])')"
webhook() { # type, secret
    local body="{\"type\":\"$1\",\"data\":{\"session_id\":\"$SESSION\"}}"
    local sig
    sig="$(python3 -c 'import hmac,hashlib,sys,time; t=str(int(time.time())); print("t="+t+",v1="+hmac.new(sys.argv[1].encode(),(t+"."+sys.argv[2]).encode(),hashlib.sha256).hexdigest())' "$2" "$body")"
    curl -s -o /dev/null -w '%{http_code}' -H "stripe-signature: $sig" -X POST "$BASE/stripe/webhook" -d "$body"
}
[ "$(webhook checkout.session.completed whsec_e2e)" = 200 ] || echo "e2e: the signed webhook was refused"
[ "$(webhook charge.refunded whsec_e2e)" = 200 ] || echo "e2e: the refund webhook was refused"
[ "$(webhook checkout.session.completed whsec_wrong)" = 401 ] || echo "e2e: a bad signature was accepted"
[ "$(webhook bogus.type whsec_e2e)" = 400 ] || echo "e2e: an unknown webhook type was accepted"

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
check "tickets sold by org/event/tier/payment method" expect 'revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="2",payment_method="free"}' 3
check "online ticket sold when Stripe confirms" expect 'revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="1",payment_method="online"}' 1
check "succeeded payments" expect 'revel_payments_total{organization_id="1",status="succeeded",payment_method="online"}' 1
check "refunded payments" expect 'revel_payments_total{organization_id="1",status="refunded",payment_method="online"}' 1
check "tickets cancelled by the refund" expect 'revel_tickets_cancelled_total{organization_id="1",event_id="1",reason="refund"}' 1
check "revenue counted by amount" expect 'revel_revenue_total{organization_id="1",currency="EUR"}' 25
check "webhook failures (bad signature, unknown type)" expect 'sum(revel_stripe_webhooks_processed_total{status="failure"})' 2
check "webhook successes" expect 'sum(revel_stripe_webhooks_processed_total{status="success"})' 2
check "request counter by route template" expect 'revel_api_requests_total{method="POST",endpoint="/events/{event}/tiers/{tier}/checkout",status_code="200"}' 4
check "histogram count" expect 'revel_database_query_duration_seconds_count{query_type="lock_tier"}' 4
check "histogram buckets are cumulative up to +Inf" expect 'revel_database_query_duration_seconds_bucket{query_type="lock_tier",le="+Inf"}' 4
check "families without labels exist from start-up" expect 'revel_users_active_weekly' 0
check "gauges set at start-up" expect 'revel_events_active' 2

echo "e2e: $PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    echo "--- revel log"; tail -20 "$WORK/revel.log"; echo "--- prometheus log"; tail -20 "$WORK/prometheus.log"
    exit 1
fi
