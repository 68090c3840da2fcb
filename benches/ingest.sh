#!/usr/bin/env bash
# Ingest benchmark: webhook -> dedup -> Kafka ack, against the local stack's broker, beside a
# bare rdkafka producer sending the same messages in the same run. Two set-ups:
#   ingest  the ingest role alone (what a split deployment runs at the edge)
#   all     the default single process with every role: its consumer stages work through the
#           same alerts (history in PostgreSQL, mails to the stack's SMTP server, the archive)
#           on the same cores while the webhook is measured
#   bash benches/ingest.sh [ingest|all|both]   (default both; RUNS=3 DURATION=10 CONCURRENCY=8
#                                               BATCH=50 RATE=10000 PHASES="max latency")
# PHASES=latency skips the max-throughput phase, so the latency phase starts with the stages
# caught up instead of behind on its backlog. LATENCY_MODE=alertpipe leaves out the bare
# producer's runs in the latency phase (with every role they add to the stages' work).
# Prints per-run figures and medians: alerts/s, p50/p99, ratio to the baseline, alertpipe's
# CPU per alert, its idle and peak RSS; then p50/p99 at RATE alerts/s offered (open loop), the
# bare producer at the same rate beside it.
# Exits non-zero when alertpipe does not start or a run has errors (alertpipe-loadgen fails then).
set -euo pipefail
RUNS=${RUNS:-3}; DURATION=${DURATION:-10}; CONCURRENCY=${CONCURRENCY:-8}; BATCH=${BATCH:-50}
RATE=${RATE:-10000}; PHASES=${PHASES:-max latency}; LATENCY_MODE=${LATENCY_MODE:-both}
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
PID=
WORK=$(mktemp -d)
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  "$STACK_SYS_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench <ingest|all>
bench() {
  local mode=$1 port tag roles db
  port=$(free_port)
  tag=bench_ingest_${mode}_$(date +%s)
  roles=$([ "$mode" = all ] && echo all || echo ingest)
  db=${STACK_PG_URL%/*}/$tag
  if [ "$mode" = all ]; then
    "$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "CREATE DATABASE $tag"
  fi
  ALERTPIPE__SERVER__LISTEN=127.0.0.1:$port ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS \
    ALERTPIPE__KAFKA__ALERTS_TOPIC=$tag-alerts ALERTPIPE__KAFKA__LOGS_TOPIC=$tag-logs \
    ALERTPIPE__DATABASE__URL=$db ALERTPIPE__NOTIFY__SMTP__PORT=$STACK_SMTP_PORT \
    ALERTPIPE_TEAMS_WEBHOOK_URL=$STACK_TEAMS_URL \
    ALERTPIPE__NOTIFY__DLQ_TOPIC=$tag-alerts.dlq \
    ALERTPIPE__PERSIST__GROUP=$tag-persist ALERTPIPE__NOTIFY__GROUP=$tag-notify \
    ALERTPIPE__ARCHIVE__GROUP=$tag-archive ALERTPIPE__ARCHIVE__ROOT=$WORK/$tag-archive \
    ALERTPIPE__TELEMETRY__LOG_LEVEL=warn \
    "$BIN" serve --config config/alertpipe.toml --roles "$roles" >"$WORK/$tag.log" 2>&1 &
  PID=$!
  local ready=
  for _ in $(seq 1 150); do
    if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    echo "alertpipe ($roles) did not become ready; its log:" >&2
    tail -20 "$WORK/$tag.log" >&2
    exit 1
  fi
  sleep 1
  if [[ " $PHASES " == *" max "* ]]; then
  echo "== [$mode] max throughput (closed loop), alertpipe (roles: $roles) vs bare producer"
  ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS "$LOADGEN" --target "http://127.0.0.1:$port" \
    --pid "$PID" --mode both --runs "$RUNS" --duration-s "$DURATION" --concurrency "$CONCURRENCY" -b "$BATCH" \
    --baseline-topic "$tag-baseline"
  echo
  fi
  if [[ " $PHASES " == *" latency "* ]]; then
  # The baseline at the same offered load: with every role, into the topic the stages consume,
  # so they work through its messages too and the bare producer meets the same busy broker.
  local latency_topic=$tag-baseline
  [ "$mode" = all ] && latency_topic=$tag-alerts
  echo "== [$mode] latency at $RATE alerts/s offered (open loop), alertpipe vs bare producer into $latency_topic"
  ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS "$LOADGEN" --target "http://127.0.0.1:$port" \
    --pid "$PID" --mode "$LATENCY_MODE" --runs "$RUNS" --duration-s "$DURATION" --concurrency "$CONCURRENCY" \
    -b "$BATCH" --rate "$RATE" --baseline-topic "$latency_topic"
  echo
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true
  PID=
  if [ "$mode" = all ]; then
    "$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "DROP DATABASE IF EXISTS $tag WITH (FORCE)"
  fi
}

case "${1:-both}" in
  ingest) bench ingest ;;
  all) bench all ;;
  both) bench ingest; bench all ;;
  *) echo "usage: $0 [ingest|all|both]" >&2; exit 2 ;;
esac
