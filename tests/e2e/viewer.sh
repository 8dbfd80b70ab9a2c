#!/usr/bin/env bash
# The built-in viewer in a real browser: Revel as it runs (development profile, its viewer at
# /debug/obs), checkouts over HTTP, and Debian's Chromium driven by playwright-core (the npm
# package, pinned, using the system browser: no browser download) asserting what the pages
# show: the checkout's trace listed within 2 s, its waterfall in the seed's order, a failed
# payment marked, the tickets-sold panel moving, no planted address or card anywhere.
# Screenshots go to $SCREENSHOTS (a temp dir unless set; docs/viewer/ holds a run's).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

if ! command -v chromium > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium > /dev/null
fi
command -v node > /dev/null || { echo "viewer e2e: node is needed (Node.js 18 or later)" >&2; exit 1; }

work=$(mktemp -d)
revel_pid=
cleanup() {
    # Revel's exit status after the signal (143) is not the test's.
    if [ -n "$revel_pid" ]; then
        kill "$revel_pid" 2> /dev/null || true
        wait "$revel_pid" 2> /dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && npm init -y > /dev/null && npm install --no-audit --no-fund --silent playwright-core@1.65.2 > /dev/null)

cargo build -q -p revel
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# From the temp dir: its database and spans file are made there. Stripe fails half its calls,
# so that a run has a confirmed checkout and a failed one.
# `exec`: `$!` is then Revel itself, which the cleanup stops (without it, the subshell was
# stopped and Revel outlived the script).
(cd "$work" && exec env OBS_ENV=development REVEL_ADDR="127.0.0.1:$port" REVEL_STRIPE_FAILURE_RATE=0.5 \
    REVEL_STRIPE_LATENCY_MS=0 "$root/target/debug/revel" > "$work/revel.log" 2>&1) &
revel_pid=$!
for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
    kill -0 "$revel_pid" 2> /dev/null || { echo "viewer e2e: revel exited" >&2; tail -20 "$work/revel.log" >&2; exit 1; }
    sleep 0.1
done

status=0
BASE_URL="http://127.0.0.1:$port" SCREENSHOTS="${SCREENSHOTS:-$work/screenshots}" PLAYWRIGHT="$work/node_modules" \
    node tests/e2e/viewer.mjs || status=$?
if [ "$status" -ne 0 ]; then
    echo "viewer e2e: failed; Revel's last lines:" >&2
    tail -20 "$work/revel.log" >&2
fi
exit "$status"
