#!/usr/bin/env bash
# End to end against real Prometheus tools: the deploy/ configuration checked by promtool and
# amtool, the generated alert rules unit-tested by promtool, the deploy/ files' structure checked,
# then the Revel service's registry scraped by a real Prometheus server running the project's
# own config and rules, whose HTTP API must return the values the traffic produced and the
# results of the recording rules and alert expressions. Installs what it needs, binds to
# loopback only, stops everything it started.
#
# With E2E_INFRA_PG_DSN and E2E_INFRA_REDIS_ADDR (tests/e2e/infra.sh sets them, with Revel on
# PostgreSQL and Redis: E2E_DATABASE_URL, E2E_REDIS_URL), Debian's node, postgres and redis
# exporters run next to Revel and are scraped by the same Prometheus: every panel of the System
# health, PostgreSQL and Redis dashboards must return data, as must the infrastructure alerts'
# expressions, and the names the dashboards took from the committed exporter scrapes must be in
# the live ones.
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

install() { # command, Debian package
    command -v "$1" >/dev/null && return 0
    echo "e2e: installing $2 (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
}
install prometheus prometheus
install promtool prometheus
install amtool prometheus-alertmanager
python3 -c 'import yaml' 2>/dev/null || install python3-yaml python3-yaml
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml
# The official Python client's OpenMetrics parser, which checks the OpenMetrics exposition: the
# Debian package serves the system's Python (`python3` on the PATH may be another one).
OM_PYTHON=""
om_python() {
    for py in python3 /usr/bin/python3; do
        "$py" -c 'import prometheus_client, tomllib' 2>/dev/null && { OM_PYTHON="$py"; return 0; }
    done
    return 1
}
om_python || { install python3-prometheus-client python3-prometheus-client; om_python; } \
    || { pip install -q prometheus-client && om_python; } || echo "e2e: no Python with prometheus_client"
# The packages may start servers of their own on :9090/:9093; ours use their own ports and data.

FAILED=0
PASSED=0
check() { # name, command...
    local name="$1"; shift
    if "$@"; then echo "ok: $name"; PASSED=$((PASSED + 1)); else echo "FAILED: $name"; FAILED=$((FAILED + 1)); fi
}
quiet() { # command...: its output only when it fails
    local out
    out="$("$@" 2>&1)" || { echo "$out" | tail -40; return 1; }
}

# The deployment's configuration, by the real tools.
check "promtool check config deploy/prometheus/prometheus.yml (and its rule files)" \
    quiet promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules on the generated rules" quiet promtool check rules deploy/prometheus/rules/revel.rules.yml
check "promtool test rules: each alert fires and stays silent on synthetic series" \
    quiet promtool test rules deploy/prometheus/tests/revel.test.yml
check "promtool test rules: each objective's burn-rate alerts fire and resolve on synthetic series" \
    quiet promtool test rules deploy/prometheus/tests/revel-slo.test.yml
check "amtool check-config deploy/alertmanager/alertmanager.yml" quiet amtool check-config deploy/alertmanager/alertmanager.yml

INFRA=""
NODE_PORT="${NODE_PORT:-19100}"
PGX_PORT="${PGX_PORT:-19187}"
RX_PORT="${RX_PORT:-19121}"
if [ -n "${E2E_INFRA_PG_DSN:-}" ] && [ -n "${E2E_INFRA_REDIS_ADDR:-}" ]; then
    INFRA=1
    install prometheus-node-exporter prometheus-node-exporter
    install prometheus-postgres-exporter prometheus-postgres-exporter
    install prometheus-redis-exporter prometheus-redis-exporter
    # Ours, not a leftover of an earlier run on the same port.
    for port in "$NODE_PORT" "$PGX_PORT" "$RX_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "e2e: 127.0.0.1:$port is taken; set NODE_PORT, PGX_PORT, RX_PORT to free ports"; exit 1
        fi
    done
    prometheus-node-exporter --web.listen-address="127.0.0.1:$NODE_PORT" >"$WORK/node-exporter.log" 2>&1 &
    PIDS+=($!)
    DATA_SOURCE_NAME="$E2E_INFRA_PG_DSN" prometheus-postgres-exporter --web.listen-address="127.0.0.1:$PGX_PORT" \
        >"$WORK/postgres-exporter.log" 2>&1 &
    PIDS+=($!)
    prometheus-redis-exporter -redis.addr "$E2E_INFRA_REDIS_ADDR" -web.listen-address "127.0.0.1:$RX_PORT" \
        >"$WORK/redis-exporter.log" 2>&1 &
    PIDS+=($!)
fi

cargo build -q -p revel -p obs-tests --bin revel --bin obs-otlp-sink
# Revel's spans go over OTLP/HTTP to an independent receiver (the official proto types), which
# lists the spans it received: the exemplars Prometheus stores must point to them.
target/debug/obs-otlp-sink "$WORK/received-spans.txt" >"$WORK/sink.url" 2>"$WORK/sink.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/sink.url" ] && break; sleep 0.1; done
SINK_URL="$(head -1 "$WORK/sink.url")"
[ -n "$SINK_URL" ] || { echo "e2e: the OTLP receiver did not start"; cat "$WORK/sink.log"; exit 1; }
# The simulated external services answer at once and never fail here: counts are exact.
REVEL_ADDR="127.0.0.1:$REVEL_PORT" OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="$SINK_URL" REVEL_STRIPE_WEBHOOK_SECRET=whsec_e2e \
    REVEL_STRIPE_AUTO_CONFIRM=false \
    DATABASE_URL="${E2E_DATABASE_URL:-sqlite://$WORK/revel.db?mode=rwc}" \
    REVEL_STRIPE_LATENCY_MS=0 REVEL_STRIPE_FAILURE_RATE=0 REVEL_LLM_LATENCY_MS=0 REVEL_LLM_FAILURE_RATE=0 \
    REVEL_EMAIL_LATENCY_MS=0 REVEL_EMAIL_FAILURE_RATE=0 REVEL_PDF_LATENCY_MS=0 \
    env ${E2E_REDIS_URL:+REDIS_URL="$E2E_REDIS_URL"} target/debug/revel >"$WORK/revel.log" 2>&1 &
PIDS+=($!)
BASE="http://127.0.0.1:$REVEL_PORT"
for _ in $(seq 1 100); do curl -fs "$BASE/metrics" >/dev/null && break; sleep 0.1; done
curl -fs "$BASE/metrics" >/dev/null || { echo "e2e: revel did not start"; cat "$WORK/revel.log"; exit 1; }

# The project's Prometheus config and rules, as deploy/compose.yaml mounts them, with two changes:
# the revel target is on loopback, and scrapes and rule evaluations run every second instead of
# every 15 s. The other jobs (the stack's own backends) stay and are simply down here.
cp -r deploy/prometheus "$WORK/prometheus"
sed -i -e "s/\"revel:8000\"/\"127.0.0.1:$REVEL_PORT\"/" -e 's/scrape_interval: 15s/scrape_interval: 1s/' \
    -e "s/\"node-exporter:9100\"/\"127.0.0.1:$NODE_PORT\"/" -e "s/\"postgres-exporter:9187\"/\"127.0.0.1:$PGX_PORT\"/" \
    -e "s/\"redis-exporter:9121\"/\"127.0.0.1:$RX_PORT\"/" \
    -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' "$WORK/prometheus/prometheus.yml"
grep -q "127.0.0.1:$REVEL_PORT" "$WORK/prometheus/prometheus.yml" || { echo "e2e: the revel target was not found in prometheus.yml"; exit 1; }
OBS_ENV=e2e prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --enable-feature=expand-external-labels,exemplar-storage --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PROM_PORT/api/v1/query"

# Prints the single value of an instant query ("none" when empty).
query() {
    curl -fsG "$API" --data-urlencode "query=$1" 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if len(r) == 1 else ("none" if not r else "many"))' 2>/dev/null || echo "error"
}
expect() { # query, expected value; waits up to 60 s for scrapes and rule evaluations
    local got=""
    for _ in $(seq 1 120); do
        got="$(query "$1")"
        [ "$got" = "$2" ] && return 0
        sleep 0.5
    done
    echo "  query $1: expected $2, got $got"
    return 1
}

# Rates need a counter to move between two scrapes, so Prometheus scrapes before any traffic.
check "prometheus scrapes revel with the project's scrape config" expect 'up{job="revel"}' 1
check "the environment external label is expanded from the environment" \
    bash -c "curl -fs http://127.0.0.1:$PROM_PORT/api/v1/status/config | grep -q 'environment: e2e'"

json() { curl -s -H 'content-type: application/json' -X POST "$BASE$1" -d "$2"; }
webhook() { # type, secret, session
    local body="{\"type\":\"$1\",\"data\":{\"session_id\":\"$3\"}}"
    local sig
    sig="$(python3 -c 'import hmac,hashlib,sys,time; t=str(int(time.time())); print("t="+t+",v1="+hmac.new(sys.argv[1].encode(),(t+"."+sys.argv[2]).encode(),hashlib.sha256).hexdigest())' "$2" "$body")"
    curl -s -o /dev/null -w '%{http_code}' -H "stripe-signature: $sig" -X POST "$BASE/stripe/webhook" -d "$body"
}
paid_checkout() { # user id; prints the Stripe session id
    json /events/1/tiers/1/checkout "{\"user_id\":$1,\"email\":\"u$1@example.org\",\"card_number\":\"4111 1111 1111 1111\",\"cvv\":\"123\"}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkout_url"].rsplit("/",1)[1])'
}

# Round 1: 3 free tickets, 1 paid one (checkout, then Stripe's signed webhook), 1 refund, 1 webhook
# with a bad signature and 1 of an unknown type.
for u in 5 6 7; do json /events/1/tiers/2/checkout "{\"user_id\":$u,\"email\":\"u$u@example.org\"}" >/dev/null; done
SESSION="$(paid_checkout 8)"
[ "$(webhook checkout.session.completed whsec_e2e "$SESSION")" = 200 ] || echo "e2e: the signed webhook was refused"
[ "$(webhook charge.refunded whsec_e2e "$SESSION")" = 200 ] || echo "e2e: the refund webhook was refused"
[ "$(webhook checkout.session.completed whsec_wrong "$SESSION")" = 401 ] || echo "e2e: a bad signature was accepted"
[ "$(webhook bogus.type whsec_e2e "$SESSION")" = 200 ] || echo "e2e: an unhandled webhook type was not acknowledged"

curl -fs "$BASE/metrics" >"$WORK/exposition.txt"
promtool_clean() { # exit status 0 and nothing to report, lint included
    local out rc=0
    out="$(promtool check metrics <"$WORK/exposition.txt" 2>&1)" || rc=$?
    [ "$rc" -eq 0 ] && [ -z "$out" ] || { echo "  promtool (exit $rc): $out"; return 1; }
}
check "promtool check metrics is clean on the Revel exposition" promtool_clean
# What Prometheus itself asks for (it scrapes Revel so above): OpenMetrics first.
curl -fs -D "$WORK/openmetrics.headers" -o "$WORK/exposition.om" \
    -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' "$BASE/metrics"
check "OpenMetrics by content negotiation: its content type" \
    grep -qi '^content-type: application/openmetrics-text; version=1.0.0' "$WORK/openmetrics.headers"
check "the official Python client's OpenMetrics parser reads the whole exposition" \
    "${OM_PYTHON:-python3}" tests/e2e/openmetrics_parse.py "$WORK/exposition.om" examples/revel/metrics.toml
check "every catalog family has HELP and TYPE" \
    bash -c "[ \$(grep -c '^# TYPE revel_' '$WORK/exposition.txt') -eq \$(grep -c '^\[metrics\.' examples/revel/metrics.toml) ]"

check "tickets sold by org/event/tier/payment method" expect 'revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="2",payment_method="free"}' 3
check "online ticket sold when Stripe confirms" expect 'revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="1",payment_method="online"}' 1
check "succeeded payments" expect 'revel_payments_total{organization_id="1",status="succeeded",payment_method="online"}' 1
check "refunded payments" expect 'revel_payments_total{organization_id="1",status="refunded",payment_method="online"}' 1
check "tickets cancelled by the refund" expect 'revel_tickets_cancelled_total{organization_id="1",event_id="1",reason="refund"}' 1
check "revenue counted by amount" expect 'revel_revenue_total{organization_id="1",currency="EUR"}' 25
check "webhook failures (the bad signature)" expect 'sum(revel_stripe_webhooks_processed_total{status="failure"})' 1
check "webhook successes (an unhandled type is acknowledged, as Stripe expects)" expect 'sum(revel_stripe_webhooks_processed_total{status="success"})' 3
check "request counter by route template" expect 'revel_api_requests_total{method="POST",endpoint="/events/{event}/tiers/{tier}/checkout",status_code="200"}' 4
# The database (SQLite under $WORK): every query timed by obs's pool, the pool's levels read at scrape time.
check "database queries counted by operation (the checkouts' UPDATE tiers)" \
    expect 'count(revel_database_query_duration_seconds_count{query_type="update"} > 4)' 1
check "histogram buckets are cumulative up to +Inf" \
    expect 'count(revel_database_query_duration_seconds_bucket{query_type="select",le="+Inf"} == ignoring(le) revel_database_query_duration_seconds_count{query_type="select"})' 1
check "transactions: as many COMMITs as BEGINs" \
    expect 'count(revel_database_query_duration_seconds_count{query_type="begin"} == ignoring(query_type) revel_database_query_duration_seconds_count{query_type="commit"})' 1
# The calls to the simulated Stripe (the paid checkout), over HTTP through obs's client middleware.
check "external calls timed by method, server and status class" \
    expect 'count(revel_external_request_duration_seconds_count{method="POST",server="127.0.0.1",status_class="2xx"} >= 1)' 1
# Process, runtime and build metrics of the service, as a real Prometheus scraped them.
check "process metrics: resident memory" expect 'count(process_resident_memory_bytes{job="revel"} > 1000000)' 1
check "process metrics: open file descriptors under the limit" expect 'count(process_open_fds{job="revel"} < process_max_fds{job="revel"})' 1
check "tokio runtime metrics: workers and busy time" expect 'count(tokio_workers{job="revel",runtime="main"} > 0 and on() tokio_busy_seconds_total{job="revel"} > 0)' 1
check "build info: one series" expect 'count(obs_build_info{job="revel",service_name="revel"} == 1)' 1
check "database pool: its maximum" expect 'revel_database_pool_max_connections' 16
check "database pool: connections open" expect 'count(sum(revel_database_pool_connections) > 0)' 1
check "database pool: nobody waiting, no timeout" \
    expect 'revel_database_pool_pending_acquires + revel_database_pool_acquire_timeouts_total' 0
check "database pool: every acquire timed" expect 'count(revel_database_pool_acquire_duration_seconds_count > 10)' 1
check "a gauge without labels: users active this week (5 to 8, who bought)" expect 'revel_users_active_weekly' 4
check "gauges set at start-up" expect 'revel_events_active' 2
check "deploy/ structure: compose, retention, limits, correlations; Loki's trace_id field on real lines" \
    quiet python3 tests/e2e/deploy_structure.py "$WORK/revel.log"

# Round 2, once round 1's series are scraped: the counters move, so the rates behind the
# recording rules and alerts are not zero. One more paid ticket confirmed by Stripe, one forged
# webhook, one more free ticket.
SESSION2="$(paid_checkout 9)"
[ "$(webhook checkout.session.completed whsec_e2e "$SESSION2")" = 200 ] || echo "e2e: the second signed webhook was refused"
[ "$(webhook checkout.session.completed whsec_wrong "$SESSION2")" = 401 ] || echo "e2e: a bad signature was accepted"
json /events/1/tiers/2/checkout '{"user_id":10,"email":"u10@example.org"}' >/dev/null

# The project's recording rules and alert expressions, evaluated by Prometheus on that traffic.
check "recording rule: payment success ratio is 1 (no payment failed)" expect 'revel:payments_success:ratio_rate5m' 1
check "recording rule: API 5xx ratio is 0 (no 5xx answered)" expect 'revel:api_requests_error:ratio_rate5m' 0
check "recording rule: email delivery ratio is 1" expect 'revel:emails_delivery:ratio_rate15m' 1
check "recording rule: one webhook of two failed in round 2" \
    expect 'count(revel:stripe_webhooks_failure:ratio_rate5m > 0.3 and revel:stripe_webhooks_failure:ratio_rate5m < 0.7)' 1
check "recording rule: p95 latency per endpoint, under the 2 s threshold" \
    expect 'count(endpoint:revel_api_request_duration_seconds:p95_5m{endpoint="/events/{event}/tiers/{tier}/checkout"} < 2)' 1
check "alert: RevelStripeWebhookFailures is pending on a 50 % failure ratio" \
    expect 'ALERTS{alertname="RevelStripeWebhookFailures",alertstate="pending",severity="critical"}' 1
check "alert: RevelPaymentSuccessRateLow stays silent" \
    expect 'count(ALERTS{alertname="RevelPaymentSuccessRateLow"}) or vector(0)' 0
check "alert: RevelHighErrorRate stays silent" expect 'count(ALERTS{alertname="RevelHighErrorRate"}) or vector(0)' 0
check "alert: ObsTargetDown stays silent for revel" expect 'count(ALERTS{alertname="ObsTargetDown"}) or vector(0)' 0
check "the database queries of round 2 move the rate" \
    expect 'count(sum(rate(revel_database_query_duration_seconds_count[1m])) > 0)' 1
check "alert: RevelDatabasePoolExhausted stays silent" \
    expect 'count(ALERTS{alertname="RevelDatabasePoolExhausted"}) or vector(0)' 0
check "alert: RevelDatabaseSlowQueries stays silent" \
    expect 'count(ALERTS{alertname="RevelDatabaseSlowQueries"}) or vector(0)' 0
if [ -n "$INFRA" ]; then
    # Round 2 on the infrastructure: the event cache (a miss, then hits) and a task through the
    # Redis queue (the publication notifies the members).
    for _ in 1 2 3; do curl -fs "$BASE/events/1" >/dev/null || echo "e2e: GET /events/1 failed"; done
    json /events/3/publish '{}' >/dev/null
    check "prometheus scrapes the node exporter" expect 'up{job="node"}' 1
    check "prometheus scrapes the postgres exporter, which reaches PostgreSQL" expect 'pg_up{job="postgres"}' 1
    check "prometheus scrapes the redis exporter, which reaches Redis" expect 'redis_up{job="redis"}' 1
    check "Revel's cache: hits counted" expect 'revel_cache_requests_total{cache="event",result="hit"}' 2
    check "the task went through the Redis queue and ran" \
        expect 'revel_celery_tasks_total{task_name="notify_event_open",status="success"}' 1
    check "the queue depth gauge reads the Redis list (empty once the task ran)" \
        expect 'revel_celery_queue_depth{queue_name="notifications"}' 0
    names_live() { # exporter port, fixture: the names the dashboards and rules use are all live
        curl -fs "http://127.0.0.1:$1/metrics" | python3 tests/e2e/exporter_fixture.py --check "$2" \
            deploy/grafana/dashboards/revel-*.json deploy/prometheus/rules/revel.rules.yml
    }
    check "node exporter: the dashboards' names are in its live scrape" names_live "$NODE_PORT" deploy/prometheus/exporters/node.prom
    check "postgres exporter: the dashboards' names are in its live scrape" names_live "$PGX_PORT" deploy/prometheus/exporters/postgres.prom
    check "redis exporter: the dashboards' names are in its live scrape" names_live "$RX_PORT" deploy/prometheus/exporters/redis.prom
    panels_have_data() { # every panel of the dashboards given returns at least one series (waits up to 60 s)
        python3 - "$API" "$@" <<'PY'
import json, sys, time, urllib.parse, urllib.request
api, files = sys.argv[1], sys.argv[2:]
def result(expr):
    url = api + "?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]["result"]
    except Exception as e:
        return "error: %s" % e
pending = []
for f in files:
    for p in json.load(open(f))["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m")
            pending.append((f.rsplit("/", 1)[-1], p["title"], expr))
total = len(pending)
deadline = time.time() + 60
while pending and time.time() < deadline:
    pending = [(f, title, e) for f, title, e in pending if not isinstance(result(e), list) or not result(e)]
    if pending:
        time.sleep(1)
for f, title, e in pending:
    print(f"  {f}: panel {title!r} has no data: {e} -> {result(e)}")
print(f"  {total - len(pending)} of {total} panels have data")
sys.exit(1 if pending else 0)
PY
    }
    check "every panel of the System health dashboard returns data" panels_have_data deploy/grafana/dashboards/revel-system.json
    check "every panel of the PostgreSQL dashboard returns data" panels_have_data deploy/grafana/dashboards/revel-postgresql.json
    check "every panel of the Redis dashboard returns data" panels_have_data deploy/grafana/dashboards/revel-redis.json
    alert_reads_data() { # alert, then pairs: a threshold as written, one a healthy system crosses
        python3 - "$API" "$@" <<'PY'
import json, sys, urllib.parse, urllib.request
import yaml
api, name, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
rules = yaml.safe_load(open("deploy/prometheus/rules/revel.rules.yml"))
expr = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
probe = expr
for threshold, healthy in zip(pairs[::2], pairs[1::2]):
    if threshold not in probe:
        sys.exit(f"  {name}: {threshold!r} is not in its expression {expr}")
    probe = probe.replace(threshold, healthy)
with urllib.request.urlopen(api + "?" + urllib.parse.urlencode({"query": probe}), timeout=10) as r:
    got = json.load(r)["data"]["result"]
if not got:
    sys.exit(f"  {name}: no series for {probe}")
PY
    }
    check "alert HostDiskSpaceLow reads the real filesystems" alert_reads_data HostDiskSpaceLow '< 0.10' '<= 1'
    check "alert RedisMemoryHigh reads Redis's memory and maxmemory" alert_reads_data RedisMemoryHigh '> 0.80' '>= 0'
    # Up for seconds, not an hour, and not leaking: both conditions made true, the series read.
    check "alert RevelProcessMemoryGrowth reads Revel's memory" \
        alert_reads_data RevelProcessMemoryGrowth '> 2 *' '> 0 *' ') > 3600' ') > 0'
    # (HostDiskSpaceLow is not asked to stay silent: it reads this machine's real disk.)
    check "the Redis and process-memory alerts stay silent" \
        expect 'count(ALERTS{alertname=~"RedisMemoryHigh|RevelProcessMemoryGrowth"}) or vector(0)' 0
fi
# Exemplars: Prometheus (exemplar storage on) keeps the trace and span ids Revel's OpenMetrics
# exposition attaches to counters and histogram buckets; each must name a span the independent
# OTLP receiver got. Spans are exported in batches, so this waits up to 30 s for both sides.
exemplars_of_received_spans() { # series selector, minimum number of exemplars
    local now tries
    for tries in $(seq 1 60); do
        now="$(date +%s)"
        curl -fsG "http://127.0.0.1:$PROM_PORT/api/v1/query_exemplars" --data-urlencode "query=$1" \
            --data-urlencode "start=$((now - 900))" --data-urlencode "end=$((now + 60))" >"$WORK/exemplars.json" 2>/dev/null \
            && python3 - "$WORK/exemplars.json" "$WORK/received-spans.txt" "$2" <<'PY' && { unset LAST; return 0; }
import json, os, sys
data = json.load(open(sys.argv[1]))["data"]
found = [(e["labels"].get("trace_id"), e["labels"].get("span_id")) for s in data for e in s["exemplars"]]
received = set()
if os.path.exists(sys.argv[2]):
    received = {tuple(line.split()) for line in open(sys.argv[2])}
missing = [e for e in found if e not in received]
ok = len(found) >= int(sys.argv[3]) and not missing
if ok:
    print(f"  {len(found)} exemplars over {len({t for t, _ in found})} traces, each a span the receiver got")
if not ok and os.environ.get("LAST") == "1":
    print(f"  {len(found)} exemplars (wanted {sys.argv[3]}), {len(missing)} naming a span the receiver never got: {missing[:3]}")
sys.exit(0 if ok else 1)
PY
        [ "$tries" -eq 59 ] && export LAST=1
        sleep 0.5
    done
    unset LAST
    return 1
}
check "exemplars on the HTTP latency buckets name server spans the OTLP receiver got" \
    exemplars_of_received_spans 'revel_api_request_duration_seconds_bucket' 2
check "exemplars on the database query buckets name query spans the receiver got" \
    exemplars_of_received_spans 'revel_database_query_duration_seconds_bucket' 2
check "exemplars on a counter recorded in a flow (tickets sold) name its spans" \
    exemplars_of_received_spans 'revel_tickets_sold_total' 1

rules_healthy() { # every rule of the project's rule files loaded and evaluated without error
    curl -fs "http://127.0.0.1:$PROM_PORT/api/v1/rules" | python3 -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
want = int(sys.argv[1])
if bad or len(rules) != want:
    print(f"  {len(rules)} rules loaded (want {want}); unhealthy: {bad}")
    sys.exit(1)' "$(grep -cE '^      - (alert|record): ' deploy/prometheus/rules/revel.rules.yml)"
}
check "every rule loaded and evaluates without error" rules_healthy

echo "e2e: $PASSED passed, $FAILED failed"
if [ "$FAILED" -ne 0 ]; then
    echo "--- revel log"; tail -20 "$WORK/revel.log"; echo "--- prometheus log"; tail -20 "$WORK/prometheus.log"
    exit 1
fi
