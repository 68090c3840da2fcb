#!/usr/bin/env bash
# The main job: local stack up, alertpipe started, then the whole chain: a demo payment
# service writes log files -> Promtail -> Loki -> the ruler's LogQL rule -> Alertmanager ->
# alertpipe -> Kafka -> PostgreSQL + mail, and the same lines -> alertpipe -> Parquet archive;
# then an alert storm through Alertmanager's API; then a report of where everything landed.
#   bash deploy/local/demo.sh          run it (alertpipe stays up; log in .state/alertpipe.log)
#   SECURE=1 bash deploy/local/demo.sh the same chain with TLS and credentials on every
#                                      connection of alertpipe's the stack can secure (README,
#                                      "Security"): Kafka SASL_SSL + SCRAM, PostgreSQL
#                                      verify-full + SCRAM, SMTP STARTTLS + AUTH, Teams and
#                                      alertpipe's own port on https
#   bash deploy/local/demo.sh stop     stop alertpipe (SIGTERM: it drains, then exits)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
STATE=${ALERTPIPE_STATE:-$REPO/.state}
PIDFILE=$STATE/alertpipe.pid
SECURE=${SECURE:-0}
export SECURE

stop_alertpipe() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}
if [ "${1:-}" = stop ]; then stop_alertpipe; echo "alertpipe stopped"; exit 0; fi

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
bash deploy/local/stack.sh up
# shellcheck disable=SC1091
set -a; . "$STATE/stack.env"; set +a

echo "[demo] building alertpipe (the first build takes 5-8 minutes on 2 cores, then seconds)"
cargo build --locked
BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/alertpipe

stop_alertpipe
export ALERTPIPE__SERVER__LISTEN=$STACK_ALERTPIPE_LISTEN
export ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_BROKERS
export ALERTPIPE__AUTH__MODE=bearer
export ALERTPIPE__AUTH__SECRET_FILE=$STACK_AUTH_SECRET_FILE
export ALERTPIPE__DATABASE__URL=$STACK_ALERTPIPE_DB_URL
export ALERTPIPE__NOTIFY__SMTP__PORT=$STACK_SMTP_PORT
# The teams receiver posts to the stack's stand-in for a Teams Workflows webhook.
export ALERTPIPE_TEAMS_WEBHOOK_URL=$STACK_TEAMS_URL
export ALERTPIPE__NOTIFY__DIGEST_WINDOW_S=5
# Mails of alerts from the LogQL rules show the lines behind them, read from the stack's Loki
# where it runs, else from the archive.
if [ "${STACK_HAVE_LOKI:-0}" = 1 ]; then export ALERTPIPE__NOTIFY__LOKI_URL=$STACK_LOKI_URL; fi
# Cold logs on the stack's HDFS (WebHDFS, as user alertpipe), the seed's path layout under /logs.
export ALERTPIPE__ARCHIVE__ROOT=$STACK_HDFS_ROOT
export ALERTPIPE__ARCHIVE__MAX_AGE_S=2
API=http://$STACK_ALERTPIPE_LISTEN
if [ "$SECURE" = 1 ]; then
  # Every connection of alertpipe's that the stack can secure, configured as in production:
  # certificates checked against the stack's CA and the peer's name, passwords from files.
  export ALERTPIPE__SERVER__TLS__CERT_FILE=$STACK_TLS_CERT
  export ALERTPIPE__SERVER__TLS__KEY_FILE=$STACK_TLS_KEY
  export ALERTPIPE__KAFKA__BROKERS=$STACK_KAFKA_SASL_BROKERS
  export ALERTPIPE__KAFKA__SECURITY__PROTOCOL=sasl_ssl
  export ALERTPIPE__KAFKA__SECURITY__MECHANISM=SCRAM-SHA-512
  export ALERTPIPE__KAFKA__SECURITY__USERNAME=$STACK_KAFKA_USER
  export ALERTPIPE__KAFKA__SECURITY__PASSWORD_FILE=$STACK_KAFKA_PASSWORD_FILE
  export ALERTPIPE__KAFKA__SECURITY__CA_FILE=$STACK_CA_FILE
  export ALERTPIPE__DATABASE__URL=$STACK_SECURE_DB_URL
  export ALERTPIPE__DATABASE__PASSWORD_FILE=$STACK_DB_PASSWORD_FILE
  export ALERTPIPE__DATABASE__SSLMODE=verify-full
  export ALERTPIPE__DATABASE__CA_FILE=$STACK_CA_FILE
  export ALERTPIPE__NOTIFY__SMTP__HOST=localhost
  export ALERTPIPE__NOTIFY__SMTP__PORT=$STACK_SMTPS_PORT
  export ALERTPIPE__NOTIFY__SMTP__TLS=starttls
  export ALERTPIPE__NOTIFY__SMTP__CA_FILE=$STACK_CA_FILE
  export ALERTPIPE__NOTIFY__SMTP__USERNAME=$STACK_SMTP_USER
  export ALERTPIPE__NOTIFY__SMTP__PASSWORD_FILE=$STACK_SMTP_PASSWORD_FILE
  export ALERTPIPE__NOTIFY__HTTPS_CA_FILE=$STACK_CA_FILE
  export ALERTPIPE_TEAMS_WEBHOOK_URL=$STACK_TEAMS_HTTPS_URL
  API=https://localhost:${STACK_ALERTPIPE_LISTEN##*:}
fi
setsid "$BIN" serve --config config/alertpipe.toml >"$STATE/alertpipe.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"
# curl and the Python helpers trust the stack's CA for alertpipe's https.
if [ "$SECURE" = 1 ]; then export CURL_CA_BUNDLE=$STACK_CA_FILE SSL_CERT_FILE=$STACK_CA_FILE; fi
for i in $(seq 1 150); do
  curl -fs "$API/readyz" >/dev/null 2>&1 && break
  [ "$i" -eq 150 ] && { echo "alertpipe not ready; see $STATE/alertpipe.log" >&2; curl -s "$API/readyz" >&2 || true; exit 1; }
  sleep 0.2
done
echo "[demo] alertpipe ready on $API"

RUN=$(date +%s)
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)

echo "[demo] the demo payment service writes logs into $STACK_DEMO_LOGS/payment (JSON, logfmt, classic);"
echo "       after 3 s it loses its database; halfway a new service (checkout) starts logging"
MARKER=$STATE/demo-first-error-ns
rm -f "$MARKER"
"$STACK_SYS_PYTHON" deploy/local/demo_service.py "$STACK_DEMO_LOGS" --seconds 16 --errors-at 3 \
  --marker "$MARKER" --run "$RUN" &
SERVICE_PID=$!
# The log-born alert: Promtail ships within 1 s, the ruler evaluates every 2 s, Alertmanager
# waits 2 s for its group, alertpipe mails it. Wait for that mail (or give up after 90 s).
MAIL_FILE=""
RULER_PID=""
if [ "${STACK_HAVE_LOKI:-0}" != 1 ]; then
  # No Loki ruler here: the same rules are asked of alertpipe's archive through its Loki API
  # (the OpenTelemetry Collector ships the lines there) and what fires goes to Alertmanager.
  echo "[demo] Loki is not installed: the collector ships the logs to alertpipe's archive, and"
  echo "       deploy/local/demo_ruler.py evaluates config/loki/rules on it every 2 s"
  "$STACK_PYTHON" deploy/local/demo_ruler.py --api "$API" \
    --token-file "$STACK_AUTH_SECRET_FILE" --alertmanager "$STACK_ALERTMANAGER_URL" \
    --rules config/loki/rules --seconds 120 >"$STATE/demo-ruler.log" 2>&1 &
  RULER_PID=$!
fi
for _ in $(seq 1 450); do
  if [ -s "$MARKER" ]; then
    MAIL_FILE=$(grep -l '^Subject: \[CRITICAL\] Payment Service Failure' \
      $(find "$STACK_MAILDIR/new" -type f -newer "$MARKER" 2>/dev/null) /dev/null 2>/dev/null | head -1 || true)
    [ -n "$MAIL_FILE" ] && break
  fi
  sleep 0.2
done
wait "$SERVICE_PID" || true
[ -n "$RULER_PID" ] && kill "$RULER_PID" 2>/dev/null || true

alert() { # name service instance severity summary [endsAt]
  local ends=""
  [ -n "${6:-}" ] && ends=",\"endsAt\":\"$6\""
  printf '{"labels":{"alertname":"%s","cluster":"prod","service":"%s","instance":"%s","severity":"%s","demo_run":"%s"},"annotations":{"summary":"%s"},"startsAt":"%s"%s}' \
    "$1" "$2" "$3" "$4" "$RUN" "$5" "$NOW" "$ends"
}
storm() { # instances [endsAt]
  local out="" sep="" svc i
  for svc in payment checkout auth; do
    for i in $(seq 1 "$1"); do
      out+="$sep$(alert DBConnectionFailed "$svc" "db-$i" critical "DB connection failed" "${2:-}")"; sep=,
    done
    out+=",$(alert QueueBacklog "$svc" "queue-1" custom "Queue backlog growing" "${2:-}")"
    out+=",$(alert HighLatency "$svc" "api-1" warning "p99 latency above 1s" "${2:-}")"
  done
  printf '[%s]' "$out"
}
post_am() { curl -fsS -XPOST -H 'Content-Type: application/json' "$STACK_ALERTMANAGER_URL/api/v2/alerts" -d "$1" >/dev/null; }

echo "[demo] alert storm, wave 1: 12 alerts through Alertmanager ($STACK_ALERTMANAGER_URL)"
post_am "$(storm 2)"
sleep 4
# Wave 2 joins the same groups: Alertmanager's next group flush resends wave 1 with it,
# and alertpipe drops those repeats.
echo "[demo] wave 2: 6 more alerts joining the same groups"
post_am "$(storm 4)"
sleep 8
echo "[demo] resolving all 18"
post_am "$(storm 4 "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
sleep 10
echo
echo "== where everything landed"
"$BIN" --config config/alertpipe.toml tail --idle-ms 3000 >"$STATE/demo-messages.jsonl"
"$STACK_SYS_PYTHON" - "$STATE/demo-messages.jsonl" "$RUN" <<'PY'
import collections, json, sys
path, run = sys.argv[1], sys.argv[2]
msgs = [json.loads(l) for l in open(path)]
mine = [m for m in msgs if m["value"].get("labels", {}).get("demo_run") == run]
print(f"Kafka topic 'alerts': {len(mine)} messages from this run ({len(msgs)} in the topic)")
by = collections.Counter((m["value"]["status"], m["value"]["severity"]) for m in mine)
for (status, sev), n in sorted(by.items()):
    print(f"  {status:9} {sev:9} {n}")
if mine:
    v = mine[0]["value"]
    print("  sample:", json.dumps({k: v[k] for k in ("timestamp", "service", "message", "severity", "status", "fingerprint")}))
PY
echo
AUTH="Authorization: Bearer $(cat "$STACK_AUTH_SECRET_FILE")"
curl -fs -H "$AUTH" "$API/api/v1/incidents?limit=1000" >"$STATE/demo-incidents.json"
curl -fs -H "$AUTH" "$API/api/v1/sla?from=$NOW" >"$STATE/demo-sla.json"
"$STACK_SYS_PYTHON" - "$STATE/demo-incidents.json" "$STATE/demo-sla.json" "$RUN" <<'PY'
import json, sys
inc = json.load(open(sys.argv[1]))["items"]
mine = [i for i in inc if i["labels"].get("demo_run") == sys.argv[3]]
print(f"PostgreSQL table 'alerts': {len(mine)} rows from this run, "
      f"{sum(1 for i in mine if i['resolved'])} resolved (GET /api/v1/incidents)")
print("SLA since the storm began (GET /api/v1/sla):")
print(f"  {'service':10} {'severity':9} {'incidents':>9} {'open':>5} {'p50 s':>6} {'max s':>6} {'crit min':>8}")
for s in json.load(open(sys.argv[2]))["services"]:
    f = lambda v: "-" if v is None else f"{v:.0f}"
    print(f"  {s['service']:10} {s['severity']:9} {s['incidents']:>9} {s['open_now']:>5} "
          f"{f(s['resolve_p50_s']):>6} {f(s['resolve_max_s']):>6} {s['critical_open_minutes']:>8.2f}")
PY
echo
echo "== the chain, from a log line to a mail"
API=$API LOKI=${STACK_LOKI_URL:-} RULER_LOG=$STATE/demo-ruler.log MAIL_FILE=$MAIL_FILE MARKER=$MARKER BIN=$BIN RUN=$RUN \
  "$STACK_SYS_PYTHON" deploy/local/demo_report.py
echo
echo "Mail (SMTP -> Maildir $STACK_MAILDIR): $(ls "$STACK_MAILDIR/new" 2>/dev/null | wc -l) messages in all; the newest subjects:"
grep -h '^Subject:' $(ls -t "$STACK_MAILDIR"/new/* 2>/dev/null | head -6) 2>/dev/null | sed 's/^/  /' || true
echo "Teams (severity=custom routes to the teams receiver -> the stack's Workflows webhook stand-in):"
"$STACK_SYS_PYTHON" - "$STACK_TEAMS_CARDS" <<'PY'
import glob, json, os, sys
cards = sorted(glob.glob(os.path.join(sys.argv[1], "*.json")))
print(f"  {len(cards)} cards stored in {sys.argv[1]}")
for path in cards[-3:]:
    card = json.load(open(path))
    body = card.get("attachments", [{}])[0].get("content", {}).get("body", [])
    title = next((b.get("text") for b in body if b.get("type") == "TextBlock"), "?")
    print(f"  {os.path.basename(path)}: {title}")
PY
echo "Dead letters (sends that failed for good):"
"$BIN" --config config/alertpipe.toml dlq list | tail -4 | sed 's/^/  /'
echo
echo "Cold logs (snappy Parquet on HDFS, $STACK_HDFS_ROOT, listed through WebHDFS):"
"$BIN" --config config/alertpipe.toml archive ls | sed 's/^/  /'
if [ -n "${STACK_LOGCLI_BIN:-}" ]; then
  echo "The archive answers LogQL through Loki's API (Grafana's \"Loki cold archive\"), here to the real logcli:"
  "$STACK_LOGCLI_BIN" query --quiet --addr="http://$STACK_ALERTPIPE_LISTEN" \
    --bearer-token="$(cat "$STACK_AUTH_SECRET_FILE")" --since=1h --limit=3 \
    '{job="payment-service", level="error"} |= "DB connection failed"' 2>&1 | sed 's/^/  /' || true
else
  echo "The archive answers LogQL through Loki's API (Grafana's \"Loki cold archive\"; logcli not installed, so curl):"
  curl -fsG -H "$AUTH" "$API/loki/api/v1/query_range" --data-urlencode 'limit=3' \
    --data-urlencode 'query={job="payment-service", level="error"} |= "DB connection failed"' \
    --data-urlencode "start=$(( $(date +%s) - 3600 ))000000000" 2>&1 \
    | "$STACK_SYS_PYTHON" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; [print("  ", v[1][:150]) for s in r for v in s["values"]] or print("  (no lines)")' || true
fi
echo "  and a metric query (alertpipe archive query 'sum by (service, level) (count_over_time({job=~\".+\"}[1h]))'):"
"$BIN" --config config/alertpipe.toml archive query --since 1h --step 1h \
  'sum by (service, level) (count_over_time({job=~".+"}[1h]))' 2>&1 | tail -8 | sed 's/^/  /' || true
echo
# Full names, so tests/it/metrics.rs finds them exposed.
curl -fs "$API/metrics" | grep -E '^(alertpipe_ingest_alerts_received_total|alertpipe_ingest_alerts_deduplicated_total|alertpipe_persist_alerts_total|alertpipe_kafka_produced_total|alertpipe_notify_sent_total|alertpipe_notify_throttled_total|alertpipe_archive_lines_total|alertpipe_archive_files_total)' || true
echo
echo "alertpipe:    $API  (log $STATE/alertpipe.log; stop: bash deploy/local/demo.sh stop)"
echo "alertmanager: $STACK_ALERTMANAGER_URL"
echo "kafka:        $ALERTPIPE__KAFKA__BROKERS  (read: $BIN tail --topic alerts)"
echo "hdfs:         $STACK_WEBHDFS_URL  (NameNode UI and WebHDFS; archive root $STACK_HDFS_ROOT)"
echo "postgres:     $ALERTPIPE__DATABASE__URL"
echo "smtp:         ${ALERTPIPE__NOTIFY__SMTP__HOST:-$STACK_SMTP_HOST}:$ALERTPIPE__NOTIFY__SMTP__PORT  maildir $STACK_MAILDIR"
echo "teams:        ${ALERTPIPE_TEAMS_WEBHOOK_URL}  cards in $STACK_TEAMS_CARDS"
if [ "$SECURE" = 1 ]; then
  echo
  echo "== SECURE=1: how alertpipe reached each peer (CA $STACK_CA_FILE, passwords in $STATE/secrets)"
  echo "  kafka       SASL_SSL, SCRAM-SHA-512 as $STACK_KAFKA_USER, $STACK_KAFKA_SASL_BROKERS (certificate name checked)"
  echo "  postgres    sslmode=verify-full, SCRAM as alertpipe ($STACK_SECURE_DB_URL); its sessions now:"
  "$STACK_PG_BIN/psql" -h 127.0.0.1 -p "$STACK_PG_PORT" -U postgres -d postgres -tA -F ' ' -c \
    "SELECT count(*), coalesce(string_agg(DISTINCT s.version || ' ssl=' || s.ssl, ', '), '-')
       FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'alertpipe'" \
    | sed 's/^/              /; s/$/ (connections, TLS)/'
  echo "  smtp        STARTTLS then AUTH as $STACK_SMTP_USER, localhost:$STACK_SMTPS_PORT (no plaintext fallback)"
  echo "  teams       $STACK_TEAMS_HTTPS_URL (the stand-in on https; notify.https_ca_file)"
  echo "  inbound     $API: Alertmanager (tls_config.ca_file), the collector (tls.ca_file) and"
  echo "              Prometheus (scheme https) all reach alertpipe over TLS"
  echo "  hdfs        WebHDFS as user alertpipe, plain HTTP: the stack's HDFS has no Kerberos (README)"
fi
echo "stack down:   bash deploy/local/stack.sh down"
