#!/usr/bin/env bash
# Start-up replay: makes a data dir whose log holds RECORDS records (once,
# with the make_log example), then measures
#   1. the example's own replay (scan, then read + apply),
#   2. `redeemd wal replay` (its printed rate covers read + apply),
#   3. a server's time from exec to `/readyz` 200 on a copy of the dir (the
#      server snapshots after start, which must not change the next run),
# each with its wall and CPU time (user + sys: the machine may be shared,
# and CPU time is what a noisy neighbour disturbs least).
#
#   benches/replay.sh [RECORDS] [DIR]     defaults: 10000000 /tmp/redeem-replay
#
# REPLAY_BIN=DIR uses the binaries in DIR (redeemd and make_log, e.g. copies
# of an older build) instead of building this tree: before/after runs can
# then alternate on the same log. The log needs about 110 bytes a record
# (1.1 GB for 10 M), twice while the server runs on its copy.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-10000000}"
dir="${2:-/tmp/redeem-replay}"
port="${REPLAY_PORT:-18777}"

if [ -n "${REPLAY_BIN:-}" ]; then
    redeemd="$REPLAY_BIN/redeemd"
    make_log="$REPLAY_BIN/make_log"
else
    # `--bin redeemd` too: `--example` alone selects only examples, in
    # every package named, and would leave an old server binary in place.
    cargo build --profile bench -p redeem-benches --example make_log -p redeemd --bin redeemd
    bin="${CARGO_TARGET_DIR:-target}/release"
    redeemd="$bin/redeemd"
    make_log="$bin/examples/make_log"
fi
timed() {
    /usr/bin/time -o "$dir.time" -f "  wall %e s, cpu %U s user + %S s sys, max rss %M KB" "$@"
    cat "$dir.time"
    rm -f "$dir.time"
}

if [ ! -d "$dir/wal" ]; then
    echo "== make_log $dir $records (writes the log, then replays it)"
    timed "$make_log" "$dir" "$records"
else
    echo "== make_log $dir --replay-only"
    timed "$make_log" "$dir" --replay-only
fi
echo "== redeemd wal replay"
timed "$redeemd" wal replay --data-dir "$dir" 2>/dev/null

copy="$dir-serve"
rm -rf "$copy" "$copy.log"
cp -r "$dir" "$copy"
# Read the copy once, so the server finds it in the page cache as the
# other two steps found the original.
cat "$copy"/wal/* >/dev/null
echo "== redeemd serve: exec to /readyz 200"
start=$(date +%s.%N)
"$redeemd" serve --data-dir "$copy" --listen "127.0.0.1:$port" --no-auth \
    >"$copy.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$copy" "$copy.log"' EXIT
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 $server 2>/dev/null || { cat "$copy.log"; exit 1; }
    sleep 0.01
done
ready=$(date +%s.%N)
# utime and stime (fields 14 and 15 of /proc/PID/stat, in clock ticks)
# up to the moment it answered ready.
read -r utime stime < <(awk '{ print $14, $15 }' "/proc/$server/stat")
tck=$(getconf CLK_TCK)
echo "  ready after $(echo "$ready - $start" | bc) s, cpu $(echo "scale=2; $utime / $tck" | bc) s user + $(echo "scale=2; $stime / $tck" | bc) s sys"
grep -o 'replay done.*' "$copy.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/  /' || true
