#!/usr/bin/env bash
# CI smoke test of the load path: builds redeemd and redeem-bench, starts
# redeemd on a free loopback port with a fresh data dir, runs the
# `uniform` and `hot` scenarios for 5 s each over 16 connections, and
# fails unless both audits pass (at most one success per code, successes
# equal to the server's count, stored redemptions exactly the
# acknowledged ones, no 5xx). The server is stopped on exit.
#
# Debug builds, measured on the 2-core CI machine: building both binaries
# from scratch took 127 s in debug and 368 s in release, and the two runs
# take about 14 s either way (the debug server does ~4-5k redemptions/s,
# plenty for a smoke). After `cargo test --workspace` (test.sh) the debug
# dependencies and the redeemd binary already exist, so this compiles
# little more than redeem-bench itself. The smoke checks correctness under
# concurrency, not speed. Set SMOKE_PROFILE=release to override.
#
# Usage: benches/smoke.sh    (from .ci/run or by hand)
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${SMOKE_PROFILE:-debug}"
SECONDS_EACH="${SMOKE_DURATION:-5s}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

flag=()
[[ "$PROFILE" == release ]] && flag=(--release)
echo "== smoke: building redeemd and redeem-bench ($PROFILE)"
cargo build "${flag[@]}" --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench
BIN="$CARGO_TARGET_DIR/$PROFILE"

TMP="$(mktemp -d /tmp/redeem-smoke.XXXXXX)"
SERVER_PID=""
cleanup() {
  set +e
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody answers on; the server's own bind error catches a race.
port=""
for _ in $(seq 1 100); do
  p=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    port=$p
    break
  fi
done
[[ -n "$port" ]] || { echo "smoke: no free port" >&2; exit 1; }

echo "== smoke: starting redeemd on 127.0.0.1:$port"
"$BIN/redeemd" serve --data-dir "$TMP/data" --listen "127.0.0.1:$port" --no-auth \
  >"$TMP/redeemd.log" 2>&1 &
SERVER_PID=$!

status=0
for scenario in uniform hot; do
  echo "== smoke: $scenario for $SECONDS_EACH over 16 connections"
  if ! "$BIN/redeem-bench" "$scenario" --url "http://127.0.0.1:$port" \
      --duration "$SECONDS_EACH" --warmup 1s --connections 16 --codes 100000; then
    echo "smoke: $scenario FAILED" >&2
    status=1
  fi
done

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "smoke: redeemd exited during the run; its log:" >&2
  cat "$TMP/redeemd.log" >&2
  exit 1
fi
kill -TERM "$SERVER_PID"
if ! wait "$SERVER_PID"; then
  echo "smoke: redeemd did not shut down cleanly; its log:" >&2
  cat "$TMP/redeemd.log" >&2
  status=1
fi
SERVER_PID=""
if [[ $status -ne 0 ]]; then
  echo "smoke: redeemd log:" >&2
  tail -n 50 "$TMP/redeemd.log" >&2
fi
[[ $status -eq 0 ]] && echo "smoke: both audits passed"
exit "$status"
