#!/usr/bin/env bash
# Runs redeem-bench's `uniform` and `hot` scenarios against redeemd and two
# textbook baselines on this machine, all on loopback and all durable
# (redeemd --sync always; PostgreSQL fsync=on, synchronous_commit=on; Redis
# appendonly with appendfsync always), and prints one side-by-side table.
#
# Usage: benches/compare.sh [--connections N] [--duration D] [--warmup D]
#                           [--codes N] [--out DIR]
# Installs PostgreSQL and Redis from Debian packages when they are missing
# (needs root). Everything it starts lives under a temp dir and is stopped
# on exit.
set -euo pipefail

CONNECTIONS=64
DURATION=10s
WARMUP=2s
CODES=500000
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --codes) CODES="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
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
cargo build --release --locked -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench
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
  >"$TMP/redeemd.log" 2>&1 &
REDEEMD_PID=$!
REDEEMD_URL="http://127.0.0.1:$REDEEMD_PORT"

# --- runs -----------------------------------------------------------------
# Other work on the machine skews every figure; say how busy it was.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
COMMON=(--connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --codes "$CODES")
files=()
failed=0
for scenario in uniform hot; do
  for target in redeemd postgres redis; do
    case "$target" in
      redeemd) args=(--url "$REDEEMD_URL") ;;
      postgres) args=(--target "$PG_URL") ;;
      redis) args=(--target "$REDIS_URL") ;;
    esac
    echo "== $scenario against $target"
    if ! "$BENCH" "$scenario" "${args[@]}" "${COMMON[@]}" \
        --json "$OUT/$scenario-$target.json" --report "$OUT/$scenario-$target.html" \
        >"$OUT/$scenario-$target.txt"; then
      echo "   audit FAILED or run failed: see $OUT/$scenario-$target.txt" >&2
      failed=1
    fi
    [[ -f "$OUT/$scenario-$target.json" ]] && files+=("$OUT/$scenario-$target.json")
  done
done

echo
echo "redeemd vs. textbook baselines: $CONNECTIONS connections, closed loop, $DURATION after $WARMUP warm-up, $CODES codes"
echo "(ratios: ops/s > 1x means faster than redeemd; p99 > 1x means slower)"
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo
"$BENCH" compare "${files[@]}"
echo
echo "per-run tables, JSON and HTML reports: $OUT"
exit "$failed"
