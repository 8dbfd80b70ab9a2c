#!/usr/bin/env bash
# The public API of the published crates, listed from rustdoc's JSON (an unstable rustdoc
# output, enabled on the stable toolchain with RUSTC_BOOTSTRAP), compared with the committed
# `<crate>/public-api.txt`: a change to the public surface must show in review.
#   bash .ci/public-api.sh            # check
#   BLESS=1 bash .ci/public-api.sh    # rewrite the listings
set -euo pipefail
cd "$(dirname "$0")/.."
# A target directory of its own: RUSTC_BOOTSTRAP changes the fingerprint of every crate.
export CARGO_TARGET_DIR="${PUBLIC_API_TARGET_DIR:-target/public-api}"
FEATURES="axum,pyroscope,sqlx-sqlite,sqlx-postgres,sqlx-any,reqwest-middleware,redis,tokio,testing,viewer"
mkdir -p "$CARGO_TARGET_DIR"
status=0
for spec in "obs-runtime:obs_runtime:$FEATURES" "obs-catalog:obs_catalog:"; do
    IFS=: read -r pkg lib features <<<"$spec"
    RUSTC_BOOTSTRAP=1 cargo rustdoc -q -p "$pkg" ${features:+--features "$features"} -- \
        -Zunstable-options --output-format json --document-hidden-items 2>"$CARGO_TARGET_DIR/rustdoc.err" \
        || { cat "$CARGO_TARGET_DIR/rustdoc.err"; echo "public-api: rustdoc's JSON output failed for $pkg"; exit 1; }
    python3 .ci/public_api.py "$CARGO_TARGET_DIR/doc/$lib.json" >"$CARGO_TARGET_DIR/$pkg.public-api.txt" || status=1
    if [ -n "${BLESS:-}" ]; then
        cp "$CARGO_TARGET_DIR/$pkg.public-api.txt" "$pkg/public-api.txt"
    elif ! diff -u "$pkg/public-api.txt" "$CARGO_TARGET_DIR/$pkg.public-api.txt"; then
        echo "public-api: $pkg's public API changed; if on purpose, BLESS=1 bash .ci/public-api.sh and commit $pkg/public-api.txt"
        status=1
    fi
done
exit $status
