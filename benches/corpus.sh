#!/usr/bin/env bash
# Builds the archive size benchmark's corpus from real programs' logs (no generated lines), so
# anyone can rebuild it: one file per source under $CORPUS (default .state/corpus).
#   postgres    the stack's PostgreSQL with log_statement=all while pgbench runs
#   loki        a private Loki (the project's config) at debug level, receiving ...
#   promtail    ... a private Promtail (the project's config) at debug level tailing postgres
#   kafka       a private Apache Kafka broker at INFO level while alertpipe ingests a load
#   alertpipe   that alertpipe's own JSON logs, at debug level
#   alertmanager, prometheus  the stack's (as they ran)
#   apt, dpkg   this machine's package logs
# Each source is capped at $CAP_MB (default 8) on a line boundary.
#   bash benches/corpus.sh        (PG_SECONDS=20 LOAD_SECONDS=10 CAP_MB=8)
set -euo pipefail
PG_SECONDS=${PG_SECONDS:-20}; LOAD_SECONDS=${LOAD_SECONDS:-10}; CAP_MB=${CAP_MB:-8}
# shellcheck source=benches/common/prologue.sh
. "$(dirname "${BASH_SOURCE[0]}")/common/prologue.sh"
CORPUS=${CORPUS:-$REPO/.state/corpus}
TOOLS=${ALERTPIPE_TOOLS:-$HOME/.cache/alertpipe/tools}
LOKI_BIN=$(command -v loki || echo "$TOOLS/grafana-3.4.6/loki")
PROMTAIL_BIN=$(command -v promtail || echo "$TOOLS/grafana-3.4.6/promtail")
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "ALTER SYSTEM RESET log_statement" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$CORPUS"
free_port() {
  "$STACK_SYS_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# keep <name> <file>: the first CAP_MB of a log, cut at a line end
keep() {
  head -c $((CAP_MB * 1024 * 1024)) "$2" | sed '$ { /[^\n]$/d }' >"$CORPUS/$1.log" || true
  printf '  %-12s %8d bytes %7d lines\n' "$1" "$(stat -c %s "$CORPUS/$1.log")" "$(wc -l <"$CORPUS/$1.log")"
}

echo "corpus: $CORPUS"
# PostgreSQL, every statement of a pgbench run.
PGLOG=$(readlink -f "$REPO/.state/postgres.log")
start=$(stat -c %s "$PGLOG")
"$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "DROP DATABASE IF EXISTS corpus_pgbench" -c "CREATE DATABASE corpus_pgbench"
"$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
BENCH_URL=${STACK_PG_URL%/*}/corpus_pgbench
"$STACK_PG_BIN/pgbench" -q -i -s 2 "$BENCH_URL" >/dev/null 2>&1
"$STACK_PG_BIN/pgbench" -c 4 -T "$PG_SECONDS" "$BENCH_URL" >/dev/null 2>&1
"$STACK_PG_BIN/psql" -q "$STACK_PG_URL" -c "ALTER SYSTEM RESET log_statement" -c "SELECT pg_reload_conf()" >/dev/null
tail -c +$((start + 1)) "$PGLOG" >"$WORK/postgres.log"
keep postgres "$WORK/postgres.log"

# Loki and Promtail at debug level, Promtail shipping the PostgreSQL log to that Loki (both
# clients: the second stands for alertpipe, which speaks the same push API).
mkdir -p "$WORK/loki" "$WORK/logs/postgres"
lhttp=$(free_port); lgrpc=$(free_port); phttp=$(free_port)
LOKI_LISTEN_ADDRESS=127.0.0.1 LOKI_INSTANCE_ADDR=127.0.0.1 LOKI_HTTP_PORT=$lhttp LOKI_GRPC_PORT=$lgrpc \
  LOKI_DATA_DIR=$WORK/loki LOKI_RULES_DIR=$WORK/loki LOKI_LOG_LEVEL=debug \
  "$LOKI_BIN" -config.file="$REPO/config/loki/loki.yml" -config.expand-env=true >"$WORK/loki.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 60); do curl -fs "http://127.0.0.1:$lhttp/ready" >/dev/null 2>&1 && break; sleep 1; done
printf 'corpus' >"$WORK/token"
PROMTAIL_LISTEN_ADDRESS=127.0.0.1 PROMTAIL_HTTP_PORT=$phttp PROMTAIL_POSITIONS=$WORK/positions.yaml \
  PROMTAIL_LOG_GLOB="$WORK/logs/*/*.log" LOKI_PUSH_URL=http://127.0.0.1:$lhttp/loki/api/v1/push \
  ALERTPIPE_PUSH_URL=http://127.0.0.1:$lhttp/loki/api/v1/push ALERTPIPE_TOKEN_FILE=$WORK/token \
  "$PROMTAIL_BIN" -config.file="$REPO/config/promtail/promtail.yml" -config.expand-env=true \
  -log.level=debug >"$WORK/promtail.log" 2>&1 &
PIDS+=($!)
# Fed in slices, as a live file grows.
split -n l/20 "$CORPUS/postgres.log" "$WORK/slice."
for f in "$WORK"/slice.*; do cat "$f" >>"$WORK/logs/postgres/postgres.log"; sleep 0.5; done
sleep 5
keep loki "$WORK/loki.log"
keep promtail "$WORK/promtail.log"

# Apache Kafka at INFO level and alertpipe (JSON, debug: an access log line per request) while the
# load generator sends alerts one per request.
kport=$(free_port); kctl=$(free_port); aport=$(free_port)
KAFKA_LOG_LEVEL=INFO bash deploy/local/kafka.sh run "$WORK/kafka" "$kport" "$kctl" >"$WORK/kafka.log" 2>&1 &
PIDS+=($!)
bash deploy/local/kafka.sh ready "$kport" 60
ALERTPIPE__SERVER__LISTEN=127.0.0.1:$aport ALERTPIPE__KAFKA__BROKERS=127.0.0.1:$kport \
  ALERTPIPE__TELEMETRY__LOG_FORMAT=json ALERTPIPE__TELEMETRY__LOG_LEVEL=debug \
  "$BIN" serve --config config/alertpipe.toml --roles ingest >"$WORK/alertpipe.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$aport/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
"$LOADGEN" --target "http://127.0.0.1:$aport" --duration-s "$LOAD_SECONDS" --runs 1 --mode alertpipe \
  --rate 500 -b 1 >/dev/null 2>&1 || true
keep kafka "$WORK/kafka.log"
keep alertpipe "$WORK/alertpipe.log"

keep alertmanager "$REPO/.state/alertmanager.log"
keep prometheus "$REPO/.state/prometheus.log"
cat /var/log/apt/history.log /var/log/apt/term.log >"$WORK/apt.log" 2>/dev/null || true
keep apt "$WORK/apt.log"
keep dpkg /var/log/dpkg.log
du -cb "$CORPUS"/*.log | tail -1 | awk '{printf "  total        %8d bytes\n", $1}'
