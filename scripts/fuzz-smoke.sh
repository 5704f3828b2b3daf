#!/usr/bin/env bash
# Bounded fuzzing smoke run (STYLE S22): every cargo-fuzz target under fuzz/
# runs for FUZZ_SECONDS (default 30) on the stable toolchain. Exits non-zero
# if any target finds a crash; the input is left in fuzz/artifacts/<target>/.
#
# Works from any directory, as root, on a fresh machine: installs cargo-fuzz
# from crates.io (and a C++ compiler for libFuzzer) when missing.
#
#   FUZZ_SECONDS       seconds per target (default 30)
#   FUZZ_SANITIZER     address (default) or none, passed to cargo fuzz --sanitizer
#   FUZZ_TARGETS       space-separated subset of targets (default: all)
#   CARGO_FUZZ_VERSION cargo-fuzz version to install (default 0.13.2)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-address}
cargo_fuzz_version=${CARGO_FUZZ_VERSION:-0.13.2}

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cllvm-args for
# SanitizerCoverage); RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
export RUSTC_BOOTSTRAP=1

# libfuzzer-sys compiles libFuzzer's C++ sources.
if ! command -v c++ >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++
    else
        echo "fuzz-smoke: a C++ compiler (c++) is required to build libFuzzer" >&2
        exit 1
    fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
echo "fuzz-smoke: $(cargo fuzz --version), $(rustc --version)"

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

build_start=$SECONDS
for target in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" "$target"
done
echo "fuzz-smoke: built ${targets[*]} in $((SECONDS - build_start)) s"

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
    # The first corpus directory receives new inputs: fuzz/corpus/ is
    # git-ignored; fuzz/seeds/<target>/ is checked in and only read.
    corpora=("fuzz/corpus/$target")
    mkdir -p "fuzz/corpus/$target"
    if [ -d "fuzz/seeds/$target" ]; then
        corpora+=("fuzz/seeds/$target")
    fi
    log="$log_dir/$target.log"
    echo "fuzz-smoke: $target for $seconds s (corpus: ${corpora[*]})"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    if [ "$status" -ne 0 ] || [ -z "$runs" ]; then
        echo "fuzz-smoke: $target FAILED (exit $status)" >&2
        # The panic message (or sanitizer report), then the end of the log.
        grep -E -A 4 -e 'panicked at' -e '^==[0-9]+==ERROR' -e '^SUMMARY:' "$log" | head -n 40 >&2 || true
        echo "fuzz-smoke: last lines of the $target log:" >&2
        grep -v -e '^#[0-9]' "$log" | tail -n 30 >&2
        sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | while read -r artifact; do
            [ -f "$artifact" ] || continue
            echo "fuzz-smoke: $artifact ($(wc -c <"$artifact") bytes, hex):" >&2
            od -An -tx1 -v "$artifact" | tr -d ' \n' | head -c 8192 >&2
            echo >&2
        done
        failed+=("$target")
        summary+=("$target: FAILED")
    else
        echo "fuzz-smoke: $target: $runs runs, no crash"
        summary+=("$target: $runs runs")
    fi
done

echo "fuzz-smoke: summary (${seconds} s per target, sanitizer $sanitizer)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz-smoke: crash or error in: ${failed[*]}" >&2
    exit 1
fi
