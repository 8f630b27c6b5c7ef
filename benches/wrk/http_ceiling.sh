#!/usr/bin/env bash
# Durable redemptions over HTTP vs a bare hyper hello-world, same machine,
# same load (wrk, HTTP/1.1 keep-alive). Usage:
#   benches/wrk/http_ceiling.sh [connections=64] [seconds=10] [codes=2000000]
# Needs wrk (apt-get install wrk). Prints both results and the ratio.
# REDEEMD_BIN=path runs another build of redeemd (say, the commit before a
# change) against the same hello-world, for before/after comparisons.
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-64}; secs=${2:-10}; ncodes=${3:-2000000}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
redeemd_bin=${REDEEMD_BIN:-target/release/redeemd}
[ -n "${REDEEMD_BIN:-}" ] || cargo build --release -q -p redeemd
cargo build --release -q -p redeem-benches --example hello_hyper
tmp=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
pids=(); trap cleanup EXIT
port_redeemd=18600; port_hello=18601

target/release/examples/hello_hyper 127.0.0.1:$port_hello 2>/dev/null & pids+=($!)
"$redeemd_bin" serve --data-dir "$tmp/data" --listen 127.0.0.1:$port_redeemd --no-auth \
  >/dev/null 2>"$tmp/redeemd.log" & pids+=($!)
for _ in $(seq 100); do curl -sf localhost:$port_redeemd/readyz >/dev/null && break; sleep 0.1; done

curl -sf -X POST localhost:$port_redeemd/v1/campaigns -H 'content-type: application/json' \
  -d "{\"id\":\"wrk\",\"generate\":$ncodes,\"per_user_limit\":0,\"code\":{\"prefix\":\"W\",\"length\":12}}" >/dev/null
curl -sf "localhost:$port_redeemd/v1/campaigns/wrk/codes" | tail -n +2 | cut -d, -f1 > "$tmp/codes.txt"
echo "codes: $(wc -l < "$tmp/codes.txt")"

echo "== bare hyper hello-world (the ceiling)"
CODES="$tmp/codes.txt" WRK_THREADS=2 wrk -t2 -c"$conns" -d"${secs}s" --latency \
  -s benches/wrk/redeem.lua "http://127.0.0.1:$port_hello" | tee "$tmp/hello.txt"
echo "== redeemd, durable redemptions (sync always)"
CODES="$tmp/codes.txt" WRK_THREADS=2 wrk -t2 -c"$conns" -d"${secs}s" --latency \
  -s benches/wrk/redeem.lua "http://127.0.0.1:$port_redeemd" | tee "$tmp/redeemd.txt"
curl -s localhost:$port_redeemd/metrics | grep -E '^redeemd_wal_(records_per_commit|commits_total|durable_lsn)'
curl -s localhost:$port_redeemd/v1/campaigns/wrk | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; print("redeemed:", s["redeemed"])'
h=$(awk '/Requests\/sec/ {print $2}' "$tmp/hello.txt"); r=$(awk '/Requests\/sec/ {print $2}' "$tmp/redeemd.txt")
python3 -c "print(f'redeemd / hello = {float($r)/float($h):.2%}')"
