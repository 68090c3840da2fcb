#!/usr/bin/env bash
# The archive's memory while a lot of logs arrive (benches/archive_memory.py says how): peak
# RSS of an ingest+archive process while 1 GB of lines from 50 services is pushed, files per
# service-day as written and after `alertpipe archive compact`.
#   bash benches/archive_memory.sh          MB=1024 SERVICES=50
# Exits non-zero when a line is lost or doubled, or the process fails.
set -euo pipefail
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
"$STACK_SYS_PYTHON" benches/archive_memory.py --bin "$BIN" --mb "${MB:-1024}" \
  --services "${SERVICES:-50}"
