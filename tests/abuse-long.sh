#!/bin/sh
# The long forms of redeemd's abuse tests (issue 7), for a quiet machine:
# 100 kill -9 cycles, then the protocol abuse, full-disk and guessing tests
# with their measurements printed. Takes about 4 minutes on 2 cores.
#   CRASH_CYCLES=N  cycles of the crash loop (default 100)
#   CRASH_SEED=N    repeat a printed seed
set -eu
cd "$(dirname "$0")/.."
CRASH_CYCLES="${CRASH_CYCLES:-100}" cargo test -p redeemd --test crash_loop -- --nocapture
cargo test -p redeemd --test abuse --test full_disk --test guessing -- --nocapture --test-threads 1
