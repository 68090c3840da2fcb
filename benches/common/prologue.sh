# Sourced by the benchmark scripts: the local stack up and its env exported, alertpipe built
# in release; sets REPO (and cds there), BIN (the service) and LOADGEN (the load generator).
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
bash deploy/local/stack.sh up
set -a; . "${ALERTPIPE_STATE:-$REPO/.state}/stack.env"; set +a
# BENCH_KAFKA_BROKERS: measure against another broker than the stack's (its topics are
# created by alertpipe and the load generator as on the stack's).
export STACK_KAFKA_BROKERS=${BENCH_KAFKA_BROKERS:-$STACK_KAFKA_BROKERS}
cargo build --quiet --release --locked
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/alertpipe
LOADGEN=${CARGO_TARGET_DIR:-$REPO/target}/release/alertpipe-loadgen
# The demo leaves its alertpipe serving (`deploy/local/demo.sh stop` ends it); its idle consumers
# long-poll the same broker and slow every figure taken beside it.
demo_pid="${ALERTPIPE_STATE:-$REPO/.state}/alertpipe.pid"
if [ -f "$demo_pid" ] && kill -0 "$(cat "$demo_pid")" 2>/dev/null; then
  echo "note: the demo's alertpipe is still running and shares the broker; for clean figures:" \
    "bash deploy/local/demo.sh stop" >&2
fi
