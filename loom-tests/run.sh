#!/usr/bin/env bash
# Runs every loom model of redeem-engine and redeem-wal, and every
# deliberately broken variant, with loom's preemption bound at 2. Meant for
# CI and for anyone touching the engine's or the log's concurrency; see
# README.md.
#
# The models build under `--cfg loom` in their own target directory, since a
# RUSTFLAGS change would otherwise rebuild the workspace's normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom"
# The mutation runs panic on purpose; backtraces of those would bury the log.
export RUST_BACKTRACE="${LOOM_BACKTRACE:-0}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
# One model at a time per binary already (the harnesses serialise them);
# binaries run one after another. Extra arguments go to the engine's run.
cargo test -p loom-tests --release --locked "$@" -- --nocapture
# The log's models are unit tests of redeem-wal (they drive crate-private
# code); every one has `loom` in its path, and no other test does.
cargo test -p redeem-wal --lib --release --locked loom -- --nocapture
