#!/usr/bin/env bash
# Reproduce the benchmark of docs/benchmarks.md: build the release binary, then run
# `applianced bench` (all arguments are passed through), e.g.
#
#   scripts/bench.sh                      # 1,000,000 events, text report
#   scripts/bench.sh --rounds 5           # a, a', c, e interleaved five times: medians and spread
#   scripts/bench.sh --events 200000      # a quicker run
#   scripts/bench.sh --json | tail -n 1   # the report as one JSON object
#
# Run it as root on a fresh machine (the embedded cluster then runs as the
# `ransomeye` user) or as an unprivileged user with postgresql-15 installed.
# The bench initialises its own state directory under $TMPDIR (or
# --state-dir DIR), so it never touches an installed appliance; lane logs
# go to stderr, at warn level unless APPLIANCED_LOG says otherwise.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

cargo build --release
export APPLIANCED_LOG=${APPLIANCED_LOG:-warn}
echo "bench: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')" >&2
exec target/release/applianced bench "$@"
