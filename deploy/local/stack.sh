#!/usr/bin/env bash
# The local stack without Docker: real peers as plain processes on 127.0.0.1.
#
#   deploy/local/stack.sh up      install what is missing (as root), start, write the env file
#   deploy/local/stack.sh down    stop everything this script started
#   deploy/local/stack.sh status  what runs where
#   deploy/local/stack.sh reset   down, then forget the data: Kafka's log, HDFS, PostgreSQL and
#                                 Alertmanager's state go together (a new Kafka starts offsets
#                                 at 0, which archive file names and history keys are made of);
#                                 `up` starts empty. Tools and certificates stay.
#
# Peers: PostgreSQL (Debian postgresql: initdb + pg_ctl on a free port), Apache Kafka (KRaft,
# one combined broker+controller, jars from Maven Central resolved once into the per-machine
# tools cache by deploy/local/kafka.sh), HDFS (a NameNode and a DataNode with WebHDFS, jars
# from Maven Central, deploy/local/hdfs.sh), Prometheus Alertmanager (Debian
# prometheus-alertmanager, with config/alertmanager/alertmanager.yml pointed at alertpipe), an
# SMTP server (Debian python3-aiosmtpd) storing mail in a Maildir, a Teams Workflows stand-in,
# Prometheus (Debian prometheus, scraping alertpipe, with alertpipe's health rules), and, only
# where a user installed them, Loki 3.4.6 (its ruler evaluating config/loki/rules/) and
# Promtail 3.4.6 (tailing the demo log directory, pushing to Loki and to alertpipe): found on
# PATH or in $ALERTPIPE_PEERS_DIR, never built here (README).
# Every address lands in $ALERTPIPE_STATE/stack.env (default .state/stack.env).
#
# SECURE=1 (for `SECURE=1 bash deploy/local/demo.sh`): the same peers, plus what alertpipe
# needs to reach them as production has it: a CA and a certificate for localhost made here
# ($STATE/pki), a SASL_SSL listener on Kafka (SCRAM-SHA-512 user alertpipe, made with Kafka's
# own tool), TLS on PostgreSQL with `hostssl ... scram-sha-256` for the role alertpipe (its
# own database secure_alertpipe), an SMTP submission port with STARTTLS and AUTH, Alertmanager,
# the collector and Prometheus sending to alertpipe over https, and the Teams stand-in on
# https. Passwords are random, in $STATE/secrets. The plaintext listeners stay (the tests use
# them); a stack up in the other mode is restarted.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${ALERTPIPE_STATE:-$REPO/.state}
# Built tools are also kept per machine, so a fresh clone (CI) reuses them instead of rebuilding.
TOOL_CACHE=${ALERTPIPE_TOOL_CACHE:-$HOME/.cache/alertpipe/tools}
KAFKA_VERSION=$(sed -n 's/^KAFKA_VERSION=//p' "$REPO/deploy/local/kafka.sh")
HADOOP_VERSION=$(sed -n 's/^HADOOP_VERSION=//p' "$REPO/deploy/local/hdfs.sh")
LOKI_VERSION=3.4.6
ENV_FILE=$STATE/stack.env
SECURE=${SECURE:-0}
PKI=$STATE/pki
SECRETS=$STATE/secrets
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
SYS_PY=/usr/bin/python3   # Debian's python: the only one that sees python3-aiosmtpd

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# slow_step WHAT ABOUT LOG CMD...: a long set-up step that says what it does, roughly how
# long it takes and where its log is, reports every 30 s while it runs (with the log's last
# line), and how long it took. Returns the command's status.
slow_step() {
  local what=$1 about=$2 logf=$3 t0=$SECONDS next=30 pid status
  shift 3
  log "$what: about $about (log: $logf)"
  "$@" >"$logf" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - t0)) -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      log "  ... $((SECONDS - t0)) s so far: $(tail -n 1 "$logf" 2>/dev/null | cut -c1-100)"
      next=$((next + 30))
    fi
  done
  status=0
  wait "$pid" || status=$?
  if [ "$status" -eq 0 ]; then log "  done in $((SECONDS - t0)) s"; fi
  return "$status"
}

free_port() {
  "$SYS_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_tcp() { # host port seconds name
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$4 did not listen on $1:$2 within $3 s (log: $STATE/$4.log)"
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

install_packages() {
  local missing=()
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  "$SYS_PY" -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
  command -v curl >/dev/null || missing+=(curl)
  command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
  # Apache Kafka runs on a JDK 17+ and is resolved from Maven Central with Maven.
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  # benches/archive_size.rs compares the archive with `zstd -3` of the same lines.
  command -v zstd >/dev/null || missing+=(zstd)
  # The mail layout test renders every mail in a real browser engine.
  command -v chromium >/dev/null || missing+=(chromium)
  # Build dependency of alertpipe itself: diesel links libpq.
  [ -e /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
  # librdkafka's TLS and SASL SCRAM (rdkafka's `ssl` feature) build against the system OpenSSL.
  [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root, or: sudo apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  slow_step "installing ${missing[*]} (apt)" "1-3 minutes" "$STATE/apt.log" \
    sh -c 'apt-get update -qq && apt-get install -y -qq "$@"' apt "${missing[@]}" \
    || die "apt-get failed; see $STATE/apt.log"
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
}

# Apache Kafka from Maven Central (deploy/local/kafka.sh): jars resolved once into the tools
# cache. Needs a JDK 17+ and Maven (Debian packages, installed above when missing).
install_kafka() {
  [ -f "$TOOL_CACHE/kafka-$KAFKA_VERSION/libs/.complete" ] && return 0
  slow_step "resolving Apache Kafka $KAFKA_VERSION from Maven Central, once into $TOOL_CACHE" \
    "half a minute" "$STATE/kafka-install.log" bash "$REPO/deploy/local/kafka.sh" install \
    || die "resolving Kafka failed; see $STATE/kafka-install.log"
}

# The OpenTelemetry Collector (Apache-2.0), the stack's log agent: built once by the
# OpenTelemetry Collector Builder from config/otelcol/builder.yaml (Go module proxy) into the
# tools cache, rebuilt when that manifest changes. Sets OTELCOL_BIN.
install_otelcol() {
  local manifest=$REPO/config/otelcol/builder.yaml hash dir go builder_version
  hash=$(md5sum "$manifest" | cut -c1-10)
  dir=$TOOL_CACHE/otelcol-$hash
  OTELCOL_BIN=$dir/otelcol-alertpipe
  [ -x "$OTELCOL_BIN" ] && return 0
  go=$(command -v go || true)
  [ -n "$go" ] || { [ -x /usr/local/go/bin/go ] && go=/usr/local/go/bin/go; }
  [ -n "$go" ] || die "go (1.24 or newer) is needed to build the OpenTelemetry Collector: https://go.dev/doc/install"
  builder_version=v$(sed -n 's/^  version: //p' "$manifest")
  mkdir -p "$dir"
  sed "s#^dist:#dist:\n  output_path: $dir/src#" "$manifest" >"$dir/builder.yaml"
  slow_step "building the OpenTelemetry Collector (filelog, otlphttp) once into $dir" \
    "4-5 minutes on 2 cores, then reused" "$STATE/otelcol-build.log" \
    env GOTOOLCHAIN=local GOBIN="$TOOL_CACHE/bin" PATH="$(dirname "$go"):$PATH" sh -c \
    '"$1" install "go.opentelemetry.io/collector/cmd/builder@$2" && "$3/bin/builder" --config "$4/builder.yaml"' \
    build "$go" "$builder_version" "$TOOL_CACHE" "$dir" \
    || die "building the collector failed; see $STATE/otelcol-build.log"
  mv "$dir/src/otelcol-alertpipe" "$OTELCOL_BIN"
}

# Loki, Promtail, logcli (optional): Grafana's programs, which no package registry here ships
# (and Loki is AGPL: never built or vendored by this project). Found on PATH, else in
# $ALERTPIPE_PEERS_DIR, a directory a user fills with the upstream release assets of
# $LOKI_VERSION: the unpacked programs (`loki` or `loki-linux-amd64`, ...) or the release zips
# (`loki-linux-amd64.zip`, ...), which are unpacked once into the per-machine tools cache.
# All three or none: sets LOKI_BIN, PROMTAIL_BIN, LOGCLI_BIN and HAVE_LOKI=1, or HAVE_LOKI=0
# with one line saying the stack runs without them.
find_grafana_peers() {
  local name dir=$TOOL_CACHE/grafana-$LOKI_VERSION found missing=() peers=${ALERTPIPE_PEERS_DIR:-}
  for name in loki promtail logcli; do
    found=$(command -v "$name" || true)
    if [ -z "$found" ] && [ -n "$peers" ]; then
      for cand in "$peers/$name" "$peers/$name-linux-amd64"; do
        if [ -z "$found" ] && [ -f "$cand" ] && [ -x "$cand" ]; then found=$cand; fi
      done
      if [ -z "$found" ] && [ -f "$peers/$name-linux-amd64.zip" ]; then
        if [ ! -x "$dir/$name" ]; then
          mkdir -p "$dir"
          "$SYS_PY" -m zipfile -e "$peers/$name-linux-amd64.zip" "$dir/" \
            || die "could not unpack $peers/$name-linux-amd64.zip"
          mv "$dir/$name-linux-amd64" "$dir/$name" && chmod +x "$dir/$name"
        fi
        found=$dir/$name
      fi
    fi
    if [ -n "$found" ]; then
      printf -v "$(echo "$name" | tr a-z A-Z)_BIN" '%s' "$found"
    else
      missing+=("$name")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    HAVE_LOKI=1
  else
    HAVE_LOKI=0
    log "without Loki, Promtail, logcli (${missing[*]} not installed: PATH or \$ALERTPIPE_PEERS_DIR, see README); the OpenTelemetry Collector ships the logs"
  fi
}

# Microsoft's Adaptive Cards renderer (npm `adaptivecards`, the library Teams-style hosts use),
# for the test that parses and renders every kind of Teams card in headless Chromium; kept per
# machine. Sets ADAPTIVECARDS_JS.
ADAPTIVECARDS_VERSION=3.0.6
install_adaptivecards() {
  local dir=$TOOL_CACHE/adaptivecards-$ADAPTIVECARDS_VERSION
  ADAPTIVECARDS_JS=$dir/node_modules/adaptivecards/dist/adaptivecards.min.js
  [ -f "$ADAPTIVECARDS_JS" ] && return 0
  command -v npm >/dev/null || die "npm is needed for the adaptivecards renderer (apt-get install npm)"
  mkdir -p "$dir"
  slow_step "installing the Adaptive Cards renderer (npm adaptivecards@$ADAPTIVECARDS_VERSION) into $dir" \
    "a few seconds" "$STATE/npm-install.log" \
    npm install --prefix "$dir" --no-audit --no-fund "adaptivecards@$ADAPTIVECARDS_VERSION" \
    || die "npm install adaptivecards failed; see $STATE/npm-install.log"
}

# Python tools for the tests (pyarrow as the independent Parquet reader, schema validators),
# in a virtualenv kept per machine and rebuilt when tests/requirements.txt changes.
install_python_tools() {
  local req=$REPO/tests/requirements.txt hash py
  hash=$(md5sum "$req" | cut -c1-10)
  VENV=$TOOL_CACHE/../venv-$hash
  [ -x "$VENV/bin/python" ] && return 0
  py=$(command -v python3 || true)
  if [ -z "$py" ] || ! "$py" -m venv --help >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || die "python3 with venv is needed: sudo apt-get install python3-venv"
    apt-get install -y -qq python3-venv >/dev/null
    py=$SYS_PY
  fi
  slow_step "creating the test virtualenv $VENV (pyarrow, schema validators)" "1 minute" \
    "$STATE/pip.log" sh -c '"$1" -m venv "$2" && "$2/bin/pip" install -q -r "$3"' venv "$py" "$VENV" "$req" \
    || { rm -rf "$VENV"; die "pip install failed; see $STATE/pip.log"; }
}

# SECURE=1: a CA and one certificate for localhost and 127.0.0.1 (every TLS peer here runs on
# this host), kept while it has a day left; and one random password per credentialed peer.
make_pki() {
  if [ -s "$PKI/server.pem" ] && openssl x509 -checkend 86400 -noout -in "$PKI/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "$PKI" && mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=alertpipe local stack CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -out server.pem -extfile server.ext
    cat server.key server.pem >server.bundle.pem   # Kafka's PEM keystore: key and chain in one file
    chmod 600 ca.key server.key server.bundle.pem
  ) >"$STATE/pki.log" 2>&1 || die "making the stack's certificates failed; see $STATE/pki.log"
}

make_secrets() {
  local name
  mkdir -p "$SECRETS" && chmod 700 "$SECRETS"
  for name in kafka database smtp; do
    [ -s "$SECRETS/$name-password" ] && continue
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$SECRETS/$name-password")
  done
}

# Directory PostgreSQL's own user can reach (initdb refuses to run as root).
pg_dir() {
  if [ "$(id -u)" -ne 0 ]; then echo "$STATE/pg"; return; fi
  if runuser -u postgres -- test -x "$STATE" 2>/dev/null; then echo "$STATE/pg"; return; fi
  echo "/var/tmp/alertpipe-pg-$(printf '%s' "$STATE" | md5sum | cut -c1-10)"
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  local dir port
  dir=$(pg_dir)
  port=$(free_port)
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    rm -rf "$dir" && mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$STATE/postgres-initdb.log" 2>&1 || die "initdb failed: $STATE/postgres-initdb.log"
  fi
  local opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$dir' -c fsync=off -c max_connections=200"
  # The role alertpipe may only come in over TLS with its SCRAM password (SECURE=1); the
  # tests' superuser keeps initdb's trust rule below these lines.
  if ! grep -q '^hostssl all alertpipe ' "$dir/data/pg_hba.conf"; then
    as_pg sed -i -e '0,/^host /s//hostssl all alertpipe 127.0.0.1\/32 scram-sha-256\nhost all alertpipe 127.0.0.1\/32 reject\nhost /' \
      "$dir/data/pg_hba.conf"
  fi
  if [ "$SECURE" = 1 ]; then
    # PostgreSQL wants its key owned by its own user, readable by nobody else.
    install -m 600 "$PKI/server.key" "$dir/server.key" && cp "$PKI/server.pem" "$dir/server.pem"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/server.key" "$dir/server.pem"; fi
    opts+=" -c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key"
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 -o "$opts" \
    start >/dev/null || die "postgres did not start: $dir/postgres.log"
  ln -sf "$dir/postgres.log" "$STATE/postgres.log"
  "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'alertpipe'" | grep -q 1 \
    || "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres alertpipe
  if [ "$SECURE" = 1 ]; then
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -v pw="$(cat "$SECRETS/database-password")" >/dev/null <<'SQL' || die "could not create the role alertpipe"
SELECT 'CREATE ROLE alertpipe LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'alertpipe') \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE alertpipe PASSWORD :'pw';
SELECT 'CREATE DATABASE secure_alertpipe OWNER alertpipe' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'secure_alertpipe') \gexec
SQL
  fi
  echo "$dir" >"$STATE/postgres.dir"
  PG_PORT=$port
}

# HDFS (deploy/local/hdfs.sh): jars from Maven Central resolved once into the tools cache.
install_hdfs() {
  [ -f "$TOOL_CACHE/hadoop-$HADOOP_VERSION/libs/.complete" ] && return 0
  slow_step "resolving Apache Hadoop HDFS $HADOOP_VERSION from Maven Central, once into $TOOL_CACHE" \
    "half a minute" "$STATE/hdfs-install.log" bash "$REPO/deploy/local/hdfs.sh" install \
    || die "resolving Hadoop failed; see $STATE/hdfs-install.log"
}

# A NameNode and a DataNode, their metadata and blocks kept in $STATE/hdfs across restarts;
# the archive's directory /logs belongs to the user alertpipe writes as.
start_hdfs() {
  local nn_rpc=$1 nn_http=$2 dn=$3 dn_http=$4 dn_ipc=$5 t0=$SECONDS
  local sh=$REPO/deploy/local/hdfs.sh
  bash "$sh" conf "$STATE/hdfs" "$nn_rpc" "$nn_http" "$dn" "$dn_http" "$dn_ipc"
  setsid bash "$sh" namenode "$STATE/hdfs" >"$STATE/namenode.log" 2>&1 </dev/null &
  echo $! >"$STATE/namenode.pid"
  setsid bash "$sh" datanode "$STATE/hdfs" >"$STATE/datanode.log" 2>&1 </dev/null &
  echo $! >"$STATE/datanode.pid"
}

wait_hdfs() {
  local http=$1 t0=$SECONDS
  bash "$REPO/deploy/local/hdfs.sh" ready "$http" 90 \
    || die "HDFS not ready within 90 s (logs: $STATE/namenode.log, $STATE/datanode.log)"
  curl -fsS -X PUT "http://127.0.0.1:$http/webhdfs/v1/logs?op=MKDIRS&user.name=root" >/dev/null \
    && curl -fsS -X PUT "http://127.0.0.1:$http/webhdfs/v1/logs?op=SETOWNER&owner=alertpipe&user.name=root" >/dev/null \
    || die "could not create /logs on HDFS"
  log "hdfs ready in $((SECONDS - t0)) s"
}

# One combined KRaft broker+controller, data kept in $STATE/kafka across restarts.
# SECURE=1 adds a SASL_SSL listener on a third port (SCRAM-SHA-512, the stack's certificate in
# a PEM keystore), advertised as localhost so clients check the certificate's name.
start_kafka() {
  local port=$1 cport=$2 sasl=${3:-} extra=()
  mkdir -p "$STATE/kafka"
  if [ -n "$sasl" ]; then
    cat >"$STATE/kafka-secure.properties" <<PROPS
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://localhost:$sasl
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$PKI/server.bundle.pem
PROPS
    extra=(1 "" "$STATE/kafka-secure.properties")
  fi
  setsid bash "$REPO/deploy/local/kafka.sh" run "$STATE/kafka" "$port" "$cport" "${extra[@]}" \
    >"$STATE/kafka.log" 2>&1 </dev/null &
  echo $! >"$STATE/kafka.pid"
}

wait_kafka() {
  local port=$1 t0=$SECONDS
  bash "$REPO/deploy/local/kafka.sh" ready "$port" 60 \
    || die "kafka did not answer on 127.0.0.1:$port within 60 s (log: $STATE/kafka.log)"
  log "kafka ready in $((SECONDS - t0)) s"
}

start_alertmanager() {
  local port=$1 target=$2 url tls=()
  mkdir -p "$STATE/alertmanager"
  printf '%s' "$AUTH_SECRET" >"$STATE/alertpipe-token"
  url=http://127.0.0.1:$target
  if [ "$SECURE" = 1 ]; then
    url=https://localhost:$target
    tls=(-e "s#^        http_config:\$#        http_config:\n          tls_config:\n            ca_file: $PKI/ca.pem#")
  fi
  # The project's file, pointed at the local alertpipe; demo timings so a storm shows in seconds.
  sed -e "s#http://alertpipe:8080#$url#" "${tls[@]}" \
    -e "s#/etc/alertmanager/secrets/alertpipe-token#$STATE/alertpipe-token#" \
    -e 's#group_wait: 10s#group_wait: 2s#' -e 's#group_interval: 1m#group_interval: 5s#' \
    "$REPO/config/alertmanager/alertmanager.yml" >"$STATE/alertmanager.yml"
  setsid prometheus-alertmanager --config.file="$STATE/alertmanager.yml" \
    --storage.path="$STATE/alertmanager" --web.listen-address="127.0.0.1:$port" \
    --cluster.listen-address= >"$STATE/alertmanager.log" 2>&1 </dev/null &
  echo $! >"$STATE/alertmanager.pid"
  local i
  for ((i = 0; i < 200; i++)); do
    curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "alertmanager not ready (log: $STATE/alertmanager.log)"
}

start_smtp() {
  local port=$1
  # A Maildir needs tmp/new/cur; mailbox.Maildir creates them only for a path that is missing.
  mkdir -p "$STATE/maildir/tmp" "$STATE/maildir/new" "$STATE/maildir/cur"
  PYTHONPATH="$REPO/deploy/local" setsid "$SYS_PY" -m aiosmtpd -n -l "127.0.0.1:$port" \
    -c smtp_sink.MaildirSink "$STATE/maildir" >"$STATE/smtp.log" 2>&1 </dev/null &
  echo $! >"$STATE/smtp.pid"
  wait_tcp 127.0.0.1 "$port" 20 smtp
}

# SECURE=1: Outlook's submission port as deploy/local/smtp_tls.py has it (STARTTLS, then AUTH
# as user alertpipe), into the same Maildir.
start_smtps() {
  local port=$1
  PYTHONPATH="$REPO/deploy/local" setsid "$SYS_PY" "$REPO/deploy/local/smtp_tls.py" 127.0.0.1 "$port" \
    "$STATE/maildir" "$PKI/server.pem" "$PKI/server.key" alertpipe "$SECRETS/smtp-password" \
    >"$STATE/smtps.log" 2>&1 </dev/null &
  echo $! >"$STATE/smtps.pid"
  wait_tcp 127.0.0.1 "$port" 20 smtps
}

# A stand-in for Teams' Workflows webhook: 202, stores each card (deploy/local/teams_sink.py);
# on https with the stack's certificate when SECURE=1, as Teams is.
start_teams() {
  local port=$1 tls=()
  if [ "$SECURE" = 1 ]; then tls=(--cert "$PKI/server.pem" --key "$PKI/server.key"); fi
  setsid "$SYS_PY" "$REPO/deploy/local/teams_sink.py" "$port" "$STATE/teams" "${tls[@]}" \
    >"$STATE/teams.log" 2>&1 </dev/null &
  echo $! >"$STATE/teams.pid"
  wait_tcp 127.0.0.1 "$port" 20 teams
}

wait_http() { # url seconds name
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    alive "$3" || die "$3 exited at start (log: $STATE/$3.log)"
    sleep 0.2
  done
  die "$3 not ready at $1 within $2 s (log: $STATE/$3.log)"
}

# The ruler's rules: config/loki/rules/ with the demo's short timings (evaluate every 2 s,
# no pending period); expressions, labels and annotations untouched.
stage_loki_rules() {
  rm -rf "$STATE/loki-rules" && mkdir -p "$STATE/loki-rules"
  cp -r "$REPO/config/loki/rules/." "$STATE/loki-rules/"
  sed -i -e 's/^\(    interval:\) .*/\1 2s/' -e 's/^\(        for:\) .*/\1 0s/' "$STATE"/loki-rules/*/*.yml
}

start_loki() {
  local http=$1 grpc=$2 am=$3
  mkdir -p "$STATE/loki"
  stage_loki_rules
  LOKI_LISTEN_ADDRESS=127.0.0.1 LOKI_INSTANCE_ADDR=127.0.0.1 LOKI_HTTP_PORT=$http LOKI_GRPC_PORT=$grpc \
    LOKI_DATA_DIR=$STATE/loki LOKI_RULES_DIR=$STATE/loki-rules LOKI_ALERTMANAGER_URL=$am \
    LOKI_RULER_INTERVAL=2s LOKI_RULER_POLL=5s LOKI_LOG_LEVEL=warn \
    setsid "$LOKI_BIN" -config.file="$REPO/config/loki/loki.yml" -config.expand-env=true \
    >"$STATE/loki.log" 2>&1 </dev/null &
  echo $! >"$STATE/loki.pid"
}

start_promtail() {
  local port=$1 loki=$2 alertpipe=$3
  mkdir -p "$STATE/promtail" "$STATE/demo-logs"
  HOSTNAME=${HOSTNAME:-$(hostname)} PROMTAIL_LISTEN_ADDRESS=127.0.0.1 PROMTAIL_HTTP_PORT=$port \
    PROMTAIL_POSITIONS=$STATE/promtail/positions.yaml PROMTAIL_LOG_GLOB="$STATE/demo-logs/*/*.log" \
    LOKI_PUSH_URL=$loki/loki/api/v1/push ALERTPIPE_PUSH_URL=http://$alertpipe/loki/api/v1/push \
    ALERTPIPE_TOKEN_FILE=$STATE/alertpipe-token \
    setsid "$PROMTAIL_BIN" -config.file="$REPO/config/promtail/promtail.yml" -config.expand-env=true \
    >"$STATE/promtail.log" 2>&1 </dev/null &
  echo $! >"$STATE/promtail.pid"
  wait_http "http://127.0.0.1:$port/metrics" 30 promtail   # /ready stays 500 until a file matches
}

# The log agent where Promtail is not installed: the collector tails the demo log directory
# and sends OTLP to alertpipe (which may start later: it retries, its queue on disk).
start_otelcol() {
  local alertpipe=$1 url=http://$1/otlp ca=
  if [ "$SECURE" = 1 ]; then url=https://localhost:${alertpipe##*:}/otlp ca=$PKI/ca.pem; fi
  mkdir -p "$STATE/otelcol" "$STATE/demo-logs"
  HOSTNAME=${HOSTNAME:-$(hostname)} CLUSTER=prod OTELCOL_STORAGE_DIR=$STATE/otelcol \
    OTELCOL_LOG_GLOB="$STATE/demo-logs/*/*.log" ALERTPIPE_OTLP_URL=$url ALERTPIPE_CA_FILE=$ca \
    ALERTPIPE_TOKEN_FILE=$STATE/alertpipe-token \
    setsid "$OTELCOL_BIN" --config "$REPO/config/otelcol/otelcol.yaml" \
    >"$STATE/otelcol.log" 2>&1 </dev/null &
  echo $! >"$STATE/otelcol.pid"
  sleep 1
  alive otelcol || die "the collector exited at start (log: $STATE/otelcol.log)"
}

start_prometheus() {
  local port=$1 am=$2 alertpipe=$3
  mkdir -p "$STATE/prometheus/rules"
  cp "$REPO/config/prometheus/rules/"*.yml "$STATE/prometheus/rules/"
  # The project's file: alertpipe and Alertmanager addresses, and demo timings.
  local tls=()
  if [ "$SECURE" = 1 ]; then
    alertpipe=localhost:${alertpipe##*:}
    tls=(-e "s#^    metrics_path: /metrics\$#    metrics_path: /metrics\n    scheme: https\n    tls_config:\n      ca_file: $PKI/ca.pem#")
  fi
  sed -e "s#alertpipe:8080#$alertpipe#" -e "s#alertmanager:9093#${am#http://}#" "${tls[@]}" \
    -e 's#scrape_interval: 15s#scrape_interval: 2s#' -e 's#evaluation_interval: 15s#evaluation_interval: 2s#' \
    "$REPO/config/prometheus/prometheus.yml" >"$STATE/prometheus/prometheus.yml"
  setsid prometheus --config.file="$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path="$STATE/prometheus/data" --web.listen-address="127.0.0.1:$port" \
    >"$STATE/prometheus.log" 2>&1 </dev/null &
  echo $! >"$STATE/prometheus.pid"
  wait_http "http://127.0.0.1:$port/-/ready" 30 prometheus
}

# The SECURE=1 peers the env file records are running.
secure_up_as_recorded() { [ "$SECURE" != 1 ] || alive smtps; }

# The log agents the env file records are running: Loki and Promtail, else the collector.
loki_up_as_recorded() {
  grep -q '^STACK_HAVE_LOKI=1$' "$ENV_FILE" || { alive otelcol; return; }
  alive loki && alive promtail
}

cmd_up() {
  mkdir -p "$STATE"
  if [ -f "$ENV_FILE" ] && grep -q "^STACK_SECURE=$SECURE$" "$ENV_FILE" && secure_up_as_recorded \
    && alive kafka && alive namenode && alive datanode && alive alertmanager && alive smtp \
    && alive prometheus && alive teams && loki_up_as_recorded \
    && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(sed -n 's/^STACK_PG_PORT=//p' "$ENV_FILE")" 2>/dev/null; then
    install_python_tools
    grep -q "^STACK_PYTHON=$VENV/bin/python$" "$ENV_FILE" || { sed -i '/^STACK_PYTHON=/d' "$ENV_FILE"; echo "STACK_PYTHON=$VENV/bin/python" >>"$ENV_FILE"; }
    install_adaptivecards
    grep -q "^STACK_ADAPTIVECARDS_JS=$ADAPTIVECARDS_JS$" "$ENV_FILE" || { sed -i '/^STACK_ADAPTIVECARDS_JS=/d' "$ENV_FILE"; echo "STACK_ADAPTIVECARDS_JS=$ADAPTIVECARDS_JS" >>"$ENV_FILE"; }
    log "already up ($ENV_FILE)"
    return 0
  fi
  cmd_down >/dev/null 2>&1 || true
  install_packages
  install_kafka
  install_hdfs
  find_grafana_peers
  install_otelcol
  install_python_tools
  install_adaptivecards
  if [ "$SECURE" = 1 ]; then make_pki; make_secrets; fi
  AUTH_SECRET=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  local kafka kafka_ctl nn_rpc nn_http dn dn_http dn_ipc am smtp ap loki loki_grpc promtail prom teams
  kafka=$(free_port); kafka_ctl=$(free_port); am=$(free_port)
  nn_rpc=$(free_port); nn_http=$(free_port); dn=$(free_port); dn_http=$(free_port); dn_ipc=$(free_port); smtp=$(free_port); ap=$(free_port); teams=$(free_port)
  loki=$(free_port); loki_grpc=$(free_port); promtail=$(free_port); prom=$(free_port)
  local kafka_sasl="" smtps=""
  if [ "$SECURE" = 1 ]; then kafka_sasl=$(free_port); smtps=$(free_port); fi
  # Loki takes 5-35 s to be ready: start it first and wait for it last.
  [ "$HAVE_LOKI" = 1 ] && start_loki "$loki" "$loki_grpc" "http://127.0.0.1:$am"
  start_postgres
  start_kafka "$kafka" "$kafka_ctl" "$kafka_sasl"
  start_hdfs "$nn_rpc" "$nn_http" "$dn" "$dn_http" "$dn_ipc"
  start_alertmanager "$am" "$ap"
  start_smtp "$smtp"
  if [ "$SECURE" = 1 ]; then start_smtps "$smtps"; fi
  start_teams "$teams"
  start_prometheus "$prom" "http://127.0.0.1:$am" "127.0.0.1:$ap"
  wait_kafka "$kafka"
  if [ "$SECURE" = 1 ]; then
    bash "$REPO/deploy/local/kafka.sh" scram "$kafka" alertpipe "$SECRETS/kafka-password" \
      || die "could not create Kafka's SCRAM user alertpipe (log: $STATE/kafka.log)"
  fi
  wait_hdfs "$nn_http"
  if [ "$HAVE_LOKI" = 1 ]; then
    wait_http "http://127.0.0.1:$loki/ready" 90 loki
    start_promtail "$promtail" "http://127.0.0.1:$loki" "127.0.0.1:$ap"
  else
    start_otelcol "127.0.0.1:$ap"
  fi
  cat >"$ENV_FILE" <<EOF
# written by deploy/local/stack.sh up; sourced by the demo, the tests and the benchmarks
STACK_STATE=$STATE
STACK_PG_PORT=$PG_PORT
STACK_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
STACK_ALERTPIPE_DB_URL=postgres://postgres@127.0.0.1:$PG_PORT/alertpipe
STACK_PG_BIN=$PG_BIN
STACK_PG_DIR=$(cat "$STATE/postgres.dir")
STACK_KAFKA_BROKERS=127.0.0.1:$kafka
STACK_KAFKA_SH=$REPO/deploy/local/kafka.sh
STACK_HDFS_SH=$REPO/deploy/local/hdfs.sh
STACK_WEBHDFS_URL=http://127.0.0.1:$nn_http
STACK_HDFS_ROOT=webhdfs://alertpipe@127.0.0.1:$nn_http/logs
STACK_ALERTMANAGER_URL=http://127.0.0.1:$am
STACK_ALERTMANAGER_BIN=$(command -v prometheus-alertmanager)
STACK_ALERTPIPE_LISTEN=127.0.0.1:$ap
STACK_AUTH_SECRET_FILE=$STATE/alertpipe-token
STACK_SMTP_HOST=127.0.0.1
STACK_SMTP_PORT=$smtp
STACK_MAILDIR=$STATE/maildir
STACK_TEAMS_URL=http://127.0.0.1:$teams/webhook
STACK_TEAMS_CARDS=$STATE/teams/cards
STACK_SYS_PYTHON=$SYS_PY
STACK_PYTHON=$VENV/bin/python
STACK_ADAPTIVECARDS_JS=$ADAPTIVECARDS_JS
STACK_DEMO_LOGS=$STATE/demo-logs
STACK_HAVE_LOKI=$HAVE_LOKI
STACK_OTELCOL_BIN=$OTELCOL_BIN
STACK_PROMETHEUS_URL=http://127.0.0.1:$prom
STACK_PROMETHEUS_BIN=$(command -v prometheus)
STACK_SECURE=$SECURE
EOF
  if [ "$SECURE" = 1 ]; then
    cat >>"$ENV_FILE" <<EOF
STACK_CA_FILE=$PKI/ca.pem
STACK_TLS_CERT=$PKI/server.pem
STACK_TLS_KEY=$PKI/server.key
STACK_KAFKA_SASL_BROKERS=localhost:$kafka_sasl
STACK_KAFKA_USER=alertpipe
STACK_KAFKA_PASSWORD_FILE=$SECRETS/kafka-password
STACK_SECURE_DB_URL=postgres://alertpipe@localhost:$PG_PORT/secure_alertpipe
STACK_DB_PASSWORD_FILE=$SECRETS/database-password
STACK_SMTPS_PORT=$smtps
STACK_SMTP_USER=alertpipe
STACK_SMTP_PASSWORD_FILE=$SECRETS/smtp-password
STACK_TEAMS_HTTPS_URL=https://localhost:$teams/webhook
EOF
  fi
  if [ "$HAVE_LOKI" = 1 ]; then
    cat >>"$ENV_FILE" <<EOF
STACK_LOKI_URL=http://127.0.0.1:$loki
STACK_LOKI_BIN=$LOKI_BIN
STACK_PROMTAIL_BIN=$PROMTAIL_BIN
STACK_LOGCLI_BIN=$LOGCLI_BIN
STACK_PROMTAIL_URL=http://127.0.0.1:$promtail
EOF
  fi
  log "up: postgres :$PG_PORT, kafka :$kafka, hdfs :$nn_http (WebHDFS), alertmanager :$am, smtp :$smtp, teams :$teams,"
  log "    prometheus :$prom; env in $ENV_FILE"
  if [ "$SECURE" = 1 ]; then
    log "    SECURE=1: kafka SASL_SSL :$kafka_sasl, postgres TLS + SCRAM (role alertpipe), smtp STARTTLS + AUTH :$smtps,"
    log "    teams on https; CA $PKI/ca.pem, passwords in $SECRETS"
  fi
  if [ "$HAVE_LOKI" = 1 ]; then
    log "    loki :$loki, promtail :$promtail (tailing $STATE/demo-logs)"
  else
    log "    otelcol (tailing $STATE/demo-logs, OTLP to alertpipe); not run here: loki, promtail (not installed)"
  fi
}

cmd_down() {
  local name
  local pids=() pid i
  for name in promtail otelcol loki prometheus alertmanager smtps smtp teams datanode namenode kafka; do
    if alive "$name"; then
      pid=$(cat "$STATE/$name.pid")
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$STATE/$name.pid"
  done
  # Kafka and Loki shut down cleanly in a few seconds; wait, so a new start finds its data
  # directory unlocked; past 30 s, SIGKILL.
  for pid in "${pids[@]}"; do
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -f "$STATE/postgres.dir" ] && [ -d "$(cat "$STATE/postgres.dir")/data" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$(cat "$STATE/postgres.dir")/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -f "$ENV_FILE"
  log "down"
}

cmd_status() {
  [ -f "$ENV_FILE" ] || { echo "stack is down (no $ENV_FILE)"; return 1; }
  cat "$ENV_FILE"
  local name
  for name in kafka namenode datanode alertmanager smtp smtps teams otelcol loki promtail prometheus; do
    if alive "$name"; then
      echo "$name: running"
    elif { [ "$name" = loki ] || [ "$name" = promtail ]; } && ! grep -q '^STACK_HAVE_LOKI=1$' "$ENV_FILE"; then
      echo "$name: not installed (not run)"
    elif [ "$name" = smtps ] && ! grep -q '^STACK_SECURE=1$' "$ENV_FILE"; then
      echo "$name: not run (SECURE=1 only)"
    elif [ "$name" = otelcol ] && grep -q '^STACK_HAVE_LOKI=1$' "$ENV_FILE"; then
      echo "$name: not run (Promtail ships the demo's logs)"
    else
      echo "$name: DOWN"
    fi
  done
}

cmd_reset() {
  cmd_down
  local dir gone=()
  for dir in kafka hdfs pg alertmanager prometheus maildir teams; do
    if [ -e "$STATE/$dir" ]; then
      gone+=("$dir ($(du -sh "$STATE/$dir" 2>/dev/null | cut -f1))")
      rm -rf "${STATE:?}/$dir"
    fi
  done
  if [ -f "$STATE/postgres.dir" ]; then
    dir=$(cat "$STATE/postgres.dir")
    case "$dir" in
      "$STATE"/*) ;;
      *) rm -rf "$dir" && gone+=("postgres data in $dir") ;;
    esac
    rm -f "$STATE/postgres.dir"
  fi
  log "reset: removed ${gone[*]:-nothing}; \`$0 up\` starts empty"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *) echo "usage: $0 up|down|status|reset" >&2; exit 2 ;;
esac
