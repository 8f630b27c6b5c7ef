#!/usr/bin/env bash
# What an open dashboard costs redemptions: redeem-bench's `uniform`
# scenario (closed loop) against one release redeemd with --sync always,
# alternately with no dashboard and with headless Chromium keeping the
# dashboard open on the loaded campaign's page (its live chart polling
# /history, the events long-poll running; tests/ui/keep_open.py drives
# it). Prints each run's throughput, the ratio of the means, and the load
# average before and after; the issue's bar is a drop of at most 3%.
#   benches/dashboard_overhead.sh [connections=64] [seconds=10] [rounds=2]
# Needs chromium (tests/ui/run.sh installs Debian's) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}; secs=${2:-10}; rounds=${3:-2}
codes=2000000
# Warm-up long enough that the page is open on the new campaign before
# measuring starts (keep_open.py opens it as soon as the campaign exists).
warmup=5
command -v chromium >/dev/null || { echo "chromium missing: run tests/ui/run.sh once, or apt-get install chromium" >&2; exit 2; }
cargo build --release -q --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

port=18711
target/release/redeemd serve --data-dir "$tmp/data" --listen 127.0.0.1:$port --sync always \
  --no-auth >/dev/null 2>"$tmp/redeemd.log" & pids+=($!)
for _ in $(seq 100); do curl -sf localhost:$port/readyz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port

run() { # $1: label; prints ops/s
  target/release/redeem-bench uniform --url "$url" --connections "$conns" --duration "${secs}s" \
    --warmup "${warmup}s" --codes "$codes" --json "$tmp/$1.json" >"$tmp/$1.txt" 2>"$tmp/$1.err" \
    || { cat "$tmp/$1.txt" "$tmp/$1.err" >&2; exit 1; }
  python3 - "$tmp/$1.json" <<'PY'
import json, sys
def find(v):
    if isinstance(v, dict):
        if "ops_per_second" in v:
            return v["ops_per_second"]
        v = list(v.values())
    if isinstance(v, list):
        for x in v:
            r = find(x)
            if r is not None:
                return r
    return None
print(round(find(json.load(open(sys.argv[1])))))
PY
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
off=(); on=()
for round in $(seq "$rounds"); do
  for mode in off on; do
    if [[ $mode == on ]]; then
      # With --no-auth any token signs in. Stays open through the warm-up,
      # the measured run and the audit's start.
      python3 tests/ui/keep_open.py "$url" no-auth bench-uniform- $((warmup + secs + 60)) \
        >"$tmp/page-$round.txt" 2>&1 & page=$!; pids+=($page)
      for _ in $(seq 600); do grep -q 'dashboard: ready' "$tmp/page-$round.txt" && break
        kill -0 $page 2>/dev/null || { cat "$tmp/page-$round.txt" >&2; exit 1; }; sleep 0.1; done
    fi
    ops=$(run "$mode-$round")
    if [[ $mode == on ]]; then
      grep -q 'dashboard: open on' "$tmp/page-$round.txt" \
        || { echo "the dashboard never opened the campaign:" >&2; cat "$tmp/page-$round.txt" >&2; exit 1; }
      kill -TERM $page 2>/dev/null || true; wait $page 2>/dev/null || true
      on+=("$ops"); echo "round $round, dashboard open: $ops redemptions/s"
      grep "dashboard: [0-9]" "$tmp/page-$round.txt" | sed "s/^/  /" || true
    else
      off+=("$ops"); echo "round $round, no dashboard:  $ops redemptions/s"
    fi
  done
done
python3 - "${off[*]}" "${on[*]}" <<'PY'
import sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
a, b = sum(off) / len(off), sum(on) / len(on)
print(f"mean: {a:,.0f} redemptions/s without, {b:,.0f} with the dashboard open: "
      f"ratio {b / a:.3f} ({(b / a - 1) * 100:+.1f}%; the goal is a drop of at most 3%)")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
