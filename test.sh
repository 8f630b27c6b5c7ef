#!/usr/bin/env bash
# The one command that runs every check the project has (README: "Run all
# tests"); CI runs it too. Stages: formatting, clippy, every workspace test,
# then the loom models. Set SKIP_LOOM=1 to leave out the loom stage while
# iterating (SKIP_UI=1 the dashboard's browser test, likewise).
set -euo pipefail
cd "$(dirname "$0")"
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
if [ "${SKIP_LOOM:-0}" != 1 ]; then
  echo "== loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
  loom-tests/run.sh
fi
if [ "${SKIP_UI:-0}" != 1 ]; then
  echo "== dashboard in headless Chromium (tests/ui/run.sh)"
  tests/ui/run.sh
fi
if [ "${SKIP_SMOKE:-0}" != 1 ]; then
  echo "== load smoke (benches/smoke.sh)"
  benches/smoke.sh
fi
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz targets, short run (fuzz/run.sh)"
  fuzz/run.sh "${FUZZ_SECONDS:-12}"
fi
