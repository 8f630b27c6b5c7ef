#!/usr/bin/env bash
# The dashboard's browser test: installs Debian's Chromium when it is
# missing (CI runs as root with Debian's mirror reachable), builds the
# debug `redeemd` and `redeem-bench`, and runs drive.py against them, which
# signs in, creates a campaign, generates and redeems codes, pauses,
# bulk-assigns, voids, manages a webhook against a receiver on loopback,
# and saves screenshots into docs/ (the campaign ones while `redeem-bench
# uniform` loads the server). Bounded: `timeout` ends it after
# UI_TIMEOUT_SECONDS (default 170) whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium missing: installing Debian's package"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
cargo build -p redeemd -p redeem-benches --bin redeemd --bin redeem-bench --locked --quiet
exec timeout --kill-after=5 "${UI_TIMEOUT_SECONDS:-170}" \
  python3 tests/ui/drive.py target/debug/redeemd target/debug/redeem-bench
