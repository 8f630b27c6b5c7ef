#!/usr/bin/env bash
# Builds every cargo-fuzz target of fuzz/ and runs each for a while; exits
# non-zero if any target crashes (a panic is a failed reference check).
#
#   fuzz/run.sh [seconds_per_target=12]
#
# CI calls it with a short budget. For a long local run, see README.md here
# (in short: `fuzz/run.sh 3600`, or one target with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET corpus/TARGET seeds/TARGET -- -max_total_time=3600`).
#
# Environment:
#   FUZZ_SANITIZER  address (default) or none; `none` builds faster and
#                   runs several times faster, but misses memory errors in
#                   unsafe code (the WAL's mmap, the engine's atomics).
#   FUZZ_JOBS       parallel libFuzzer jobs per target (default 1).
#   CARGO_TARGET_DIR  defaults to cargo-fuzz's own fuzz/target.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-12}"
sanitizer="${FUZZ_SANITIZER:-address}"
jobs="${FUZZ_JOBS:-1}"

# cargo-fuzz passes -Z flags (sanitizers, coverage instrumentation) that
# only nightly accepts; stable rustc accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1

started=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"
built=$(date +%s)

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
failures=()
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    dirs=("corpus/$target")
    [[ -d "seeds/$target" ]] && dirs+=("seeds/$target")
    echo "== $target, ${seconds}s"
    if cargo fuzz run --sanitizer "$sanitizer" --jobs "$jobs" "$target" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=20 -print_final_stats=1 \
        >"$logs/$target.log" 2>&1; then
        passed=$((passed + 1))
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
        speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
        echo "   ok: ${runs:-?} executions, ${speed:-?} exec/s"
    else
        failed=$((failed + 1))
        failures+=("$target")
        echo "   CRASH; the log's end:"
        grep -v '^"' "$logs/$target.log" | tail -40 | sed 's/^/   | /'
    fi
done
finished=$(date +%s)

echo "== fuzz: build $((built - started))s, runs $((finished - built))s"
if ((failed > 0)); then
    echo "crashed: ${failures[*]} (inputs in fuzz/artifacts/)"
fi
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
