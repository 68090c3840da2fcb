#!/usr/bin/env bash
# Every benchmark once, with its smallest settings: a smoke run (seconds each, not a
# measurement), so a changed flag, config key or script breaks the test command, not the next
# reader. deploy/local/test.sh runs it after the tests; by hand: bash benches/smoke.sh.
# The benchmarks that compare with real Loki run only where Loki is installed (README), and
# are counted as not run otherwise. Logs: .state/bench-smoke/<name>.log.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${ALERTPIPE_STATE:-$REPO/.state}
LOGS=$STATE/bench-smoke
mkdir -p "$LOGS"
bash deploy/local/stack.sh up >/dev/null || exit 1
set -a; . "$STATE/stack.env"; set +a
export ALERTPIPE_STACK_ENV=$STATE/stack.env
echo "building the benchmarks (release; the first build takes 5-6 minutes on 2 cores)"
cargo bench --locked --no-run >"$LOGS/build.log" 2>&1 || { tail -30 "$LOGS/build.log"; exit 1; }

ran=0 failed=0 not_run=0
smoke() { # NAME CMD...: runs CMD, says how it went, keeps its log
  local name=$1 t0=$SECONDS
  shift
  if "$@" >"$LOGS/$name.log" 2>&1; then
    ran=$((ran + 1))
    echo "bench smoke: $name ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    echo "bench smoke: $name FAILED ($((SECONDS - t0)) s); the end of $LOGS/$name.log:"
    tail -25 "$LOGS/$name.log" | sed 's/^/    /'
  fi
}
needs_loki() { # NAME CMD...
  if [ "${STACK_HAVE_LOKI:-0}" = 1 ]; then smoke "$@"; else not_run=$((not_run + 1)); fi
}

smoke ingest env RUNS=1 DURATION=1 CONCURRENCY=2 BATCH=5 RATE=200 bash benches/ingest.sh both
smoke recovery env RUNS=1 RATE=5 bash benches/recovery.sh
smoke archive_memory env MB=2 SERVICES=3 bash benches/archive_memory.sh
smoke persist env ROWS=2000 RUNS=1 cargo bench --locked --bench persist
smoke archive env MB=2 RUNS=1 CONCURRENCY=2 cargo bench --locked --bench archive
smoke mail env MAILS=10 RUNS=1 POOL=2 cargo bench --locked --bench mail
smoke otlp env MB=1 RUNS=1 E2E_LINES=2 cargo bench --locked --bench otlp
smoke archive_listing env RUNS=1 SERVICES=3 DAYS=2 cargo bench --locked --bench archive_listing
needs_loki chain env RUNS=1 ALERTS=2 MB=1 bash benches/chain.sh cpu
needs_loki corpus env LOAD_SECONDS=2 bash benches/corpus.sh
needs_loki archive_size cargo bench --locked --bench archive_size
needs_loki archive_query env RUNS=1 REPEAT=1 cargo bench --locked --bench archive_query

echo "bench smoke: $ran ran, $failed failed"
[ "$not_run" -gt 0 ] && echo "bench smoke: not run: $not_run benchmarks need Loki/Promtail, not installed"
[ "$failed" -eq 0 ]
