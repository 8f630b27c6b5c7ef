#!/usr/bin/env bash
# Webhook delivery under load: redeem-bench's `uniform` scenario against one
# redeemd (release, --sync always), alternately without and with one
# subscription (all events) to a fast local receiver, on the same server.
# Prints both throughputs, the lag of the subscription during each run
# (sampled every half second from the run's preparation on: the largest
# and the last) and three seconds
# after it, and the CPU time the receiver and redeemd used in each run (they
# share the machine's cores with the load generator). The issue's bar: a
# drop of at most 10%, and a lag that does not grow.
#   benches/webhook_overhead.sh [connections=64] [seconds=10] [rounds=2]
# REDEEMD=path runs another redeemd binary (an older build, say);
# RECEIVER=python uses a Python receiver instead of the Rust one
# (benches/examples/webhook_receiver.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}; secs=${2:-10}; rounds=${3:-2}
codes=2000000
cargo build --release -q --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench \
  --example webhook_receiver
redeemd=${REDEEMD:-target/release/redeemd}
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

port_r=18700; port_s=18701
if [[ ${RECEIVER:-rust} == python ]]; then
  # Answers 200 once it parsed the body, and counts the events.
  cat >"$tmp/receiver.py" <<'PY'
import http.server, json, sys, threading
count = 0
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        body = self.rfile.read(int(self.headers["content-length"]))
        with lock:
            count += len(json.loads(body)["events"])
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        with lock:
            data = str(count).encode()
        self.send_response(200); self.send_header("content-length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
PY
  python3 "$tmp/receiver.py" $port_r & pids+=($!)
else
  target/release/examples/webhook_receiver 127.0.0.1:$port_r 2>/dev/null & pids+=($!)
fi
receiver_pid=${pids[0]}
"$redeemd" serve --data-dir "$tmp/data" --listen 127.0.0.1:$port_s --no-auth \
  >/dev/null 2>"$tmp/redeemd.log" & pids+=($!)
server_pid=${pids[1]}
for _ in $(seq 100); do curl -sf localhost:$port_s/readyz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port_s

# CPU seconds (user + system) a process used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
run() { # $1: label; prints ops/s
  target/release/redeem-bench uniform --url "$url" --connections "$conns" --duration "${secs}s" \
    --warmup 2s --codes "$codes" --json "$tmp/$1.json" >"$tmp/$1.txt"
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
lag() { curl -s "$url/v1/webhooks/$hook" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lag_events"])'; }
sample_lag() { # every half second until killed, one lag a line
  while true; do lag; sleep 0.5; done
}

hook=""
for round in $(seq "$rounds"); do
  for mode in off on; do
    # A new subscription for each run with delivery on: it starts at the
    # log's end, so it delivers that run's events only (a paused one
    # resumed would owe the run before too).
    if [[ $mode == on ]]; then
      hook=$(curl -s -X POST "$url/v1/webhooks" -H 'content-type: application/json' \
        -d "{\"url\": \"http://127.0.0.1:$port_r/\", \"events\": [\"*\"]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    fi
    cpu_r=$(cpu "$receiver_pid"); cpu_s=$(cpu "$server_pid")
    if [[ $mode == on ]]; then sample_lag >"$tmp/lag-$round" & sampler=$!; fi
    ops=$(run "$mode-$round")
    if [[ $mode == on ]]; then kill "$sampler"; wait "$sampler" 2>/dev/null || true; fi
    used_r=$(awk -v a="$cpu_r" -v b="$(cpu "$receiver_pid")" 'BEGIN { printf "%.1f", b - a }')
    used_s=$(awk -v a="$cpu_s" -v b="$(cpu "$server_pid")" 'BEGIN { printf "%.1f", b - a }')
    line="round $round, delivery $mode: $ops redemptions/s; CPU s: redeemd $used_s, receiver $used_r"
    if [[ $mode == on ]]; then
      during=$(sort -n "$tmp/lag-$round" | tail -1)
      at_end=$(lag)
      sleep 3
      line="$line; lag (log records) at most $during during the run, $at_end at its end, $(lag) three seconds later; receiver has $(curl -s localhost:$port_r/) events"
      curl -s -X DELETE "$url/v1/webhooks/$hook" >/dev/null
    fi
    echo "$line"
  done
done
