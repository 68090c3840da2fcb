#!/usr/bin/env bash
# Ingest benchmark: webhook -> dedup -> Kafka ack, against the local stack's broker, beside a
# bare rdkafka producer sending the same messages in the same run.
#   bash benches/ingest.sh            (RUNS=3 DURATION=10 CONCURRENCY=8 BATCH=50 RATE=10000)
# Prints per-run figures and medians: alerts/s, p50/p99, ratio to the baseline, alertpipe's
# CPU per alert, its idle and peak RSS; then p50/p99 at RATE alerts/s offered (open loop).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
RUNS=${RUNS:-3}; DURATION=${DURATION:-10}; CONCURRENCY=${CONCURRENCY:-8}; BATCH=${BATCH:-50}
RATE=${RATE:-10000}
bash deploy/local/stack.sh up
set -a; . .state/stack.env; set +a
cargo build --quiet --release --locked
BIN=$REPO/target/release/alertpipe
PORT=$("$STACK_SYS_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TOPIC=bench-alerts-$(date +%s)
ALERTPIPE__SERVER__LISTEN=127.0.0.1:$PORT ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS \
  ALERTPIPE__KAFKA__ALERTS_TOPIC=$TOPIC ALERTPIPE__TELEMETRY__LOG_LEVEL=warn \
  "$BIN" serve --config config/alertpipe.toml --roles ingest >.state/bench-alertpipe.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
sleep 1
echo "== max throughput (closed loop), alertpipe vs bare producer"
ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS "$BIN" loadgen --target "http://127.0.0.1:$PORT" \
  --pid $PID --mode both --runs "$RUNS" --duration-s "$DURATION" -c "$CONCURRENCY" -b "$BATCH" \
  --baseline-topic "$TOPIC-baseline"
echo
echo "== latency at $RATE alerts/s offered (open loop)"
ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS "$BIN" loadgen --target "http://127.0.0.1:$PORT" \
  --pid $PID --mode alertpipe --runs "$RUNS" --duration-s "$DURATION" -c "$CONCURRENCY" -b "$BATCH" \
  --rate "$RATE"
