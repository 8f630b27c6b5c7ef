#!/usr/bin/env bash
# Webhook delivery under load: redeem-bench's `uniform` scenario against a
# release redeemd (--sync always), without and with one subscription (all
# events) to a fast local receiver. Every run gets a fresh server on an
# empty data directory, so runs do not inherit each other's campaigns,
# snapshots or log; rounds alternate the order (off then on, on then off)
# so that drift of the machine falls on both sides alike. One run of each
# mode goes first and is not counted (the first runs after a build were
# slower in both modes).
# Prints each run's throughput, the CPU time redeemd and the receiver used
# (they share the machine's cores with the load generator) in all and per
# request (the bench's warm-up included; the same preparation is in both
# modes), the lag of the subscription during the run (sampled every half second, in both modes
# alike, so the sampling costs both sides the same), at its end and three
# seconds later; then the medians and their ratio. The issue's bar: a drop
# of at most 10%, and a lag that does not grow.
#   benches/webhook_overhead.sh [connections=64] [seconds=10] [rounds=3]
# REDEEMD=path runs another redeemd binary (an older build, say);
# RECEIVER=python uses a Python receiver instead of the Rust one
# (benches/examples/webhook_receiver.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-64}; secs=${2:-10}; rounds=${3:-3}
codes=2000000
cargo build --release -q --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench \
  --example webhook_receiver
redeemd=${REDEEMD:-target/release/redeemd}
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" ${server_pid:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
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
url=http://127.0.0.1:$port_s
start_server() { # a fresh redeemd on an empty data directory
  rm -rf "$tmp/data"
  "$redeemd" serve --data-dir "$tmp/data" --listen 127.0.0.1:$port_s --sync always --no-auth \
    >/dev/null 2>"$tmp/redeemd.log" & server_pid=$!
  for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "$url/readyz" >/dev/null || { echo "redeemd did not start:" >&2; cat "$tmp/redeemd.log" >&2; exit 1; }
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

# CPU seconds (user + system) a process used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
run() { # $1: label; prints ops/s and the operations done (warm-up included)
  target/release/redeem-bench uniform --url "$url" --connections "$conns" --duration "${secs}s" \
    --warmup 2s --codes "$codes" --json "$tmp/$1.json" >"$tmp/$1.txt" 2>"$tmp/$1.err" \
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
report = json.load(open(sys.argv[1]))
requests = sum(o["measured"] + o["warmup"] for o in report["outcomes"])
print(round(find(report)), requests)
PY
}
# The subscription's lag in log records ("-" with none): curl and sed only,
# no interpreter start-up per sample.
lag() {
  if [[ -z $hook ]]; then curl -s "$url/v1/webhooks" >/dev/null; echo -; return; fi
  curl -s "$url/v1/webhooks/$hook" | grep -o '"lag_events":[0-9]*' | cut -d: -f2
}
sample_lag() { # every half second until killed, one lag a line
  while true; do lag; sleep 0.5; done
}

off=(); on=(); off_cpu=(); on_cpu=()
# One run of each mode first, not counted: the machine's first runs after
# the build (the binaries' pages, the page cache, the first data dirs'
# deletion) were slower in both modes alike.
start_server; hook=""; run warm-off >/dev/null; stop_server
start_server
hook=$(curl -s -X POST "$url/v1/webhooks" -H 'content-type: application/json' \
  -d "{\"url\": \"http://127.0.0.1:$port_r/\", \"events\": [\"*\"]}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
run warm-on >/dev/null; stop_server
echo "warm-up: one run of each mode done, not counted"
for round in $(seq "$rounds"); do
  order="off on"; (( round % 2 == 0 )) && order="on off"
  for mode in $order; do
    start_server
    hook=""
    if [[ $mode == on ]]; then
      hook=$(curl -s -X POST "$url/v1/webhooks" -H 'content-type: application/json' \
        -d "{\"url\": \"http://127.0.0.1:$port_r/\", \"events\": [\"*\"]}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    fi
    before_events=$(curl -s localhost:$port_r/)
    cpu_r=$(cpu "$receiver_pid"); cpu_s=$(cpu "$server_pid")
    sample_lag >"$tmp/lag-$mode-$round" & sampler=$!
    run "$mode-$round" >"$tmp/result" || exit 1
    read -r ops requests <"$tmp/result"
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    used_r=$(awk -v a="$cpu_r" -v b="$(cpu "$receiver_pid")" 'BEGIN { printf "%.1f", b - a }')
    used_s=$(awk -v a="$cpu_s" -v b="$(cpu "$server_pid")" 'BEGIN { printf "%.1f", b - a }')
    per=$(awk -v s="$used_s" -v r="$used_r" -v n="$requests" 'BEGIN { printf "%.1f", (s + r) * 1e6 / n }')
    line="round $round, delivery $mode: $ops redemptions/s; CPU s: redeemd $used_s, receiver $used_r; $per us of both a request"
    if [[ $mode == on ]]; then
      on+=("$ops"); on_cpu+=("$per")
      during=$(sort -n "$tmp/lag-$mode-$round" | tail -1)
      at_end=$(lag)
      sleep 3
      line="$line; lag (log records) at most $during during the run, $at_end at its end, $(lag) three seconds later; the receiver got $(( $(curl -s localhost:$port_r/) - before_events )) events"
    else
      off+=("$ops"); off_cpu+=("$per")
    fi
    stop_server
    echo "$line"
  done
done
python3 - "${off[*]}" "${on[*]}" "${off_cpu[*]}" "${on_cpu[*]}" <<'PY'
import statistics, sys
off, on, off_cpu, on_cpu = ([float(x) for x in a.split()] for a in sys.argv[1:5])
a, b = statistics.median(off), statistics.median(on)
print(f"median without delivery {a:.0f}/s, with delivery {b:.0f}/s: {100 * (b / a - 1):+.1f}%")
a, b = statistics.median(off_cpu), statistics.median(on_cpu)
print(f"median CPU of redeemd and the receiver a request: {a:.1f} us without delivery, "
      f"{b:.1f} us with: {100 * (b / a - 1):+.1f}%")
PY
