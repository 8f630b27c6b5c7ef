#!/usr/bin/env bash
# Start-up replay: makes a data dir whose log holds RECORDS records (once,
# with the make_log example), then measures
#   1. the example's own replay (scan, then read + apply),
#   2. `redeemd wal replay` (its printed rate covers read + apply),
#   3. a server's time from exec to `/readyz` 200 on a copy of the dir (the
#      server snapshots after start, which must not change the next run).
#
#   benches/replay.sh [RECORDS] [DIR]     defaults: 10000000 /tmp/redeem-replay
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-10000000}"
dir="${2:-/tmp/redeem-replay}"
port="${REPLAY_PORT:-18777}"

cargo build --profile bench -p redeem-benches --example make_log -p redeemd
bin="${CARGO_TARGET_DIR:-target}/release"

if [ ! -d "$dir/wal" ]; then
    "$bin/examples/make_log" "$dir" "$records"
else
    "$bin/examples/make_log" "$dir" --replay-only
fi
"$bin/redeemd" wal replay --data-dir "$dir"

copy="$dir-serve"
rm -rf "$copy"
cp -r "$dir" "$copy"
start=$(date +%s.%N)
"$bin/redeemd" serve --data-dir "$copy" --listen "127.0.0.1:$port" --no-auth \
    >"$copy.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$copy"' EXIT
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 $server 2>/dev/null || { cat "$copy.log"; exit 1; }
    sleep 0.01
done
ready=$(date +%s.%N)
echo "server ready after $(echo "$ready - $start" | bc) s"
