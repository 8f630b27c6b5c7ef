#!/usr/bin/env bash
# Runs redeem-bench's scenarios (uniform, hot, validate, retry, funnel)
# against redeemd and two textbook baselines on this machine, all on
# loopback and all durable (redeemd --sync always; PostgreSQL fsync=on,
# synchronous_commit=on; Redis appendonly with appendfsync always), then
# a latency phase: per target, a closed-loop uniform probe and an
# open-loop uniform run at half the probe's throughput. Prints one table
# and writes an HTML page of charts (compare.html) to --out.
#
# Usage: benches/compare.sh [--scenarios uniform,hot,validate,retry,funnel]
#          [--connections 64] [--duration 8s] [--warmup 2s] [--codes 300000]
#          [--latency | --no-latency] [--probe-duration 5s]
#          [--latency-duration 8s] [--out DIR]
# Installs PostgreSQL and Redis from Debian packages when they are missing
# (needs root). Everything it starts lives under a temp dir and is stopped
# on exit. Exits 1 if any audit failed.
set -euo pipefail

ALL_SCENARIOS="uniform,hot,validate,retry,funnel"
SCENARIOS="$ALL_SCENARIOS"
CONNECTIONS=64
DURATION=8s
WARMUP=2s
CODES=300000
LATENCY=1
PROBE_DURATION=5s
LATENCY_DURATION=8s
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --codes) CODES="$2"; shift 2 ;;
    --latency) LATENCY=1; shift ;;
    --no-latency) LATENCY=0; shift ;;
    --probe-duration) PROBE_DURATION="$2"; shift 2 ;;
    --latency-duration) LATENCY_DURATION="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a scenarios <<<"$SCENARIOS"
[[ ${#scenarios[@]} -gt 0 ]] || { echo "compare.sh: --scenarios is empty" >&2; exit 2; }
for s in "${scenarios[@]}"; do
  [[ ",$ALL_SCENARIOS," == *",$s,"* ]] || {
    echo "compare.sh: unknown scenario $s (choose from $ALL_SCENARIOS)" >&2
    exit 2
  }
done

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
OUT="${OUT:-$CARGO_TARGET_DIR/compare}"
mkdir -p "$OUT"

# --- packages -------------------------------------------------------------
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
missing=()
[[ -n "$(pg_bin)" && -x "$(pg_bin)/initdb" ]] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "compare.sh: missing ${missing[*]}; install them or run as root" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBIN="$(pg_bin)"
id postgres >/dev/null 2>&1 || { echo "compare.sh: no postgres user" >&2; exit 1; }

# --- build ----------------------------------------------------------------
echo "== building redeemd and redeem-bench (release)"
nice -n 15 cargo build --release --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench
BENCH="$CARGO_TARGET_DIR/release/redeem-bench"
REDEEMD="$CARGO_TARGET_DIR/release/redeemd"

# --- processes ------------------------------------------------------------
TMP="$(mktemp -d /tmp/redeem-compare.XXXXXX)"
chmod 755 "$TMP"
REDEEMD_PID=""
REDIS_PID=""
PG_STARTED=""
cleanup() {
  set +e
  [[ -n "$REDEEMD_PID" ]] && kill "$REDEEMD_PID" 2>/dev/null && wait "$REDEEMD_PID" 2>/dev/null
  [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  [[ -n "$PG_STARTED" ]] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  echo "compare.sh: no free port" >&2
  exit 1
}

echo "== starting PostgreSQL ($PGBIN)"
PG_PORT=$(free_port)
mkdir -p "$TMP/pg"
chown postgres "$TMP/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$TMP/pg/data" --auth=trust -U postgres >"$TMP/pg-initdb.log"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/log" -w \
  -o "-p $PG_PORT -k $TMP/pg -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=$((CONNECTIONS + 20))" \
  start >/dev/null
PG_STARTED=1
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

echo "== starting Redis"
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync always --save "" --daemonize no \
  --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

echo "== starting redeemd"
REDEEMD_PORT=$(free_port)
"$REDEEMD" serve --data-dir "$TMP/redeemd" --listen "127.0.0.1:$REDEEMD_PORT" --no-auth \
  --sync always >"$TMP/redeemd.log" 2>&1 &
REDEEMD_PID=$!
REDEEMD_URL="http://127.0.0.1:$REDEEMD_PORT"

# --- runs -----------------------------------------------------------------
# Other work on the machine skews every figure; say how busy it was.
load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE="$(load)"
COMMON=(--connections "$CONNECTIONS" --warmup "$WARMUP" --codes "$CODES")
files=()
failed=0
target_args() {
  case "$1" in
    redeemd) echo "--url $REDEEMD_URL" ;;
    postgres) echo "--target $PG_URL" ;;
    redis) echo "--target $REDIS_URL" ;;
  esac
}
# run NAME SCENARIO TARGET ARGS...: one redeem-bench run, its files named NAME-TARGET.
run() {
  local name="$1" scenario="$2" target="$3"
  shift 3
  local base="$OUT/$name-$target"
  rm -f "$base.json"
  echo "== $name against $target (load average $(load))"
  # shellcheck disable=SC2046 # target_args is two words by design
  if ! "$BENCH" "$scenario" $(target_args "$target") "${COMMON[@]}" "$@" \
      --json "$base.json" --report "$base.html" >"$base.txt" 2>"$base.log"; then
    echo "   audit FAILED or run failed: see $base.txt and $base.log" >&2
    failed=1
  fi
}

for scenario in "${scenarios[@]}"; do
  for target in redeemd postgres redis; do
    run "$scenario" "$scenario" "$target" --duration "$DURATION"
    [[ -f "$OUT/$scenario-$target.json" ]] && files+=("$OUT/$scenario-$target.json")
  done
done

if [[ $LATENCY -eq 1 ]]; then
  for target in redeemd postgres redis; do
    run latency-probe uniform "$target" --duration "$PROBE_DURATION"
    probe="$OUT/latency-probe-$target.json"
    ops=$(sed -n 's/^  "ops_per_second": \([0-9.e+-]*\),*$/\1/p' "$probe" 2>/dev/null || true)
    rate=$(awk -v x="${ops:-0}" 'BEGIN { printf "%.0f", x / 2 }')
    if [[ "$rate" -lt 1 ]]; then
      echo "   no throughput from the probe of $target; skipping its latency run" >&2
      failed=1
      continue
    fi
    echo "   $target: ${ops} ops/s closed loop; open loop at $rate ops/s"
    run latency uniform "$target" --duration "$LATENCY_DURATION" --rate "$rate"
    [[ -f "$OUT/latency-$target.json" ]] && files+=("$OUT/latency-$target.json")
  done
fi

LOAD_AFTER="$(load)"
echo
echo "redeemd vs. textbook baselines: $CONNECTIONS connections, $DURATION after $WARMUP warm-up, $CODES codes"
[[ $LATENCY -eq 1 ]] && echo "latency: uniform open loop for $LATENCY_DURATION at half of a $PROBE_DURATION closed-loop probe, per target"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER on $(nproc) cores"
echo
if [[ ${#files[@]} -gt 0 ]]; then
  "$BENCH" compare "${files[@]}" --html "$OUT/compare.html" \
    --note "$CONNECTIONS connections, closed loop: $DURATION after $WARMUP warm-up, $CODES codes" \
    --note "latency phase: uniform, open loop for $LATENCY_DURATION at half of each target's own $PROBE_DURATION closed-loop probe" \
    --note "redeemd --sync always; PostgreSQL fsync=on, synchronous_commit=on; Redis appendonly yes, appendfsync always; all on loopback" \
    --note "load average before: $LOAD_BEFORE, after: $LOAD_AFTER on $(nproc) cores ($(uname -n))" \
    --note "made $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "charts: $OUT/compare.html"
fi
echo "per-run tables, JSON and HTML reports: $OUT"
exit "$failed"
