#!/usr/bin/env bash
# Webhook delivery under load: redeem-bench's `uniform` scenario against one
# redeemd (release, --sync always), alternately without and with one
# subscription to a fast local receiver (all events), and the lag of that
# subscription during and after each run. Prints both throughputs and their
# ratio; the issue's bar is a drop of at most 10%.
#   benches/webhook_overhead.sh [connections=64] [seconds=10] [rounds=2]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}; secs=${2:-10}; rounds=${3:-2}
codes=2000000
cargo build --release -q --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# The receiver: answers 200 at once and counts the events it was sent.
cat >"$tmp/receiver.py" <<'PY'
import http.server, json, sys, threading
count = 0
lock = threading.Lock()
class Handler(http.server.BaseHTTPRequestHandler):
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
port_r=18700; port_s=18701
python3 "$tmp/receiver.py" $port_r & pids+=($!)
target/release/redeemd serve --data-dir "$tmp/data" --listen 127.0.0.1:$port_s --no-auth \
  >/dev/null 2>"$tmp/redeemd.log" & pids+=($!)
for _ in $(seq 100); do curl -sf localhost:$port_s/readyz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port_s

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

hook=""
for round in $(seq "$rounds"); do
  for mode in off on; do
    if [[ $mode == on && -z $hook ]]; then
      hook=$(curl -s -X POST "$url/v1/webhooks" -H 'content-type: application/json' \
        -d "{\"url\": \"http://127.0.0.1:$port_r/\", \"events\": [\"*\"]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    fi
    if [[ $mode == off && -n $hook ]]; then
      curl -s -X PATCH "$url/v1/webhooks/$hook" -H 'content-type: application/json' -d '{"status": "paused"}' >/dev/null
    elif [[ -n $hook ]]; then
      curl -s -X PATCH "$url/v1/webhooks/$hook" -H 'content-type: application/json' -d '{"status": "active"}' >/dev/null
    fi
    ops=$(run "$mode-$round")
    line="round $round, delivery $mode: $ops redemptions/s"
    if [[ $mode == on ]]; then
      during=$(lag)
      sleep 3
      line="$line; lag $during events at the end of the run, $(lag) three seconds later; receiver has $(curl -s localhost:$port_r/) events"
    fi
    echo "$line"
  done
done
