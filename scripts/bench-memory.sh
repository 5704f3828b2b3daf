#!/usr/bin/env bash
# The lanes' memory does not grow with the burst size (docs/benchmarks.md).
# Runs `applianced bench --json` once per burst size N (default 250,000,
# 1,000,000 and 4,000,000 events; pass others as arguments) and prints, per
# N, the peak RSS (VmHWM, reset before each variant) of the largest lane
# and of the whole appliance in variant c, with c's events/s and c/a.
#
#   scripts/bench-memory.sh                  # 250k, 1M, 4M
#   scripts/bench-memory.sh 100000 2000000   # chosen sizes
#
# The bound it should show is the one in hardening/DATA-PLANE.md §5.4,
# set by credit, batch, transaction and cache limits, not by N.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --release
export APPLIANCED_LOG=${APPLIANCED_LOG:-warn}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(250000 1000000 4000000)
echo "bench-memory: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
printf '%10s %14s %16s %14s %8s\n' events "lane MiB max" "appliance MiB" "c events/s" "c/a"
for n in "${sizes[@]}"; do
    json=$(target/release/applianced bench --events "$n" --json 2>/dev/null | tail -n 1)
    python3 - "$n" "$json" <<'PY'
import json, sys
n, report = sys.argv[1], json.loads(sys.argv[2])
c = report["variants"]["c_appliance"]
print("%10s %14.1f %16.1f %14.0f %8.3f" % (
    n, c["lane_peak_rss_max_kib"] / 1024, c["peak_rss_sum_kib"] / 1024,
    c["events_per_s"], report["ratios"]["c_over_a"]))
PY
done
