#!/usr/bin/env bash
# The whole chain, measured with the real programs (benches/chain.py says how):
#   bash benches/chain.sh                 latency with the demo's timings, then with the shipped
#                                         ones (about 12 minutes), then CPU per MB vs Loki
#   bash benches/chain.sh latency|cpu     one part; RUNS=3 ALERTS=20 MB=200 TIMINGS=demo|shipped
set -euo pipefail
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
RUNS=${RUNS:-3}; ALERTS=${ALERTS:-20}; MB=${MB:-200}
run() { "$STACK_SYS_PYTHON" benches/chain.py "$@" --bin "$BIN" --runs "$RUNS"; }
case "${1:-all}" in
  latency) run latency --alerts "$ALERTS" --timings "${TIMINGS:-demo}" ;;
  cpu) run cpu --mb "$MB" ;;
  all)
    echo "== log line written -> mail delivered, demo timings (rule every 2 s, no pending, group_wait 2 s)"
    run latency --alerts "$ALERTS" --timings demo
    echo "== log line written -> mail delivered, shipped timings (rule every 1 m, for 1 m, group_wait 10 s)"
    run latency --alerts "$ALERTS" --timings shipped
    echo "== CPU per MB of one Promtail stream: alertpipe's push path and the broker vs Loki"
    run cpu --mb "$MB"
    ;;
  *) echo "usage: $0 [latency|cpu|all]" >&2; exit 2 ;;
esac
