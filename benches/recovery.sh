#!/usr/bin/env bash
# Recovery after SIGKILL (benches/recovery.py says how): the time from restarting a killed
# consumer process to every stage back to full flow, with and without static membership.
#   bash benches/recovery.sh           RUNS=3 RATE=20 (requests/s: 5 alerts + 20 lines each)
# Exits non-zero when a stage does not come back or the load fails.
set -euo pipefail
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
"$STACK_SYS_PYTHON" benches/recovery.py --bin "$BIN" --runs "${RUNS:-3}" --rate "${RATE:-20}" \
  ${VARIANTS:+--variants "$VARIANTS"}
