#!/usr/bin/env bash
# The instruction budget: Revel under its load mix in callgrind, observability disabled and the
# production profile; fails when the production profile adds more than 10 % over the committed
# budget (examples/revel/benches/instructions-budget.txt). Instruction counts are deterministic
# where CPU time on a shared 2-core machine is not, so this is the regression guard for the hot
# paths (a sampling rule that traced every checkout once doubled them unnoticed). Installs
# valgrind if it is missing; the service binds to loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
    echo "e2e: installing valgrind (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q valgrind >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q valgrind >/dev/null; }
fi
# Without debug info (the bench profile keeps it for profilers): callgrind counts the same
# instructions, names functions from the symbol table, and the release build is shorter.
REVEL_INSTRUCTIONS_CHECK="$PWD/examples/revel/benches/instructions-budget.txt" CARGO_PROFILE_BENCH_DEBUG=0 \
    cargo bench -q -p revel --bench instructions
