#!/usr/bin/env bash
# Apache Kafka (KRaft) from Maven Central, as plain processes: used by stack.sh, the tests that
# start their own brokers (tests/it/support) and the benchmarks.
#
#   kafka.sh install
#       resolve the pinned Kafka and the logging jars its release tarball adds, once, into the
#       per-machine tools cache; prints the jar directory
#   kafka.sh run DIR PORT CONTROLLER_PORT [NODE_ID VOTERS [EXTRA_PROPERTIES_FILE]]
#       one combined broker+controller with its data in DIR (formatted on first use, kept
#       across restarts), in the foreground (exec: the caller's pid is the JVM's). VOTERS is
#       `1@127.0.0.1:P1,2@127.0.0.1:P2,...` for a cluster; alone it votes for itself. The extra
#       file's lines are appended to server.properties (replication settings, ...).
#   kafka.sh ready PORT SECONDS
#       wait until the broker on PORT answers an ApiVersions request
#   kafka.sh scram PORT USER PASSWORD_FILE
#       create or update a SCRAM-SHA-512 user with Kafka's own ConfigCommand (kafka-configs),
#       through the plaintext listener on PORT
#
# Heap: KAFKA_HEAP (default 384m): the suite shares two cores and a few GiB with the JVMs.
# KAFKA_ADD_SCRAM: a SCRAM user to create when the storage is formatted (see cmd_run).
# Log level: KAFKA_LOG_LEVEL (default WARN; the start-up line is logged at INFO).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOL_CACHE=${ALERTPIPE_TOOL_CACHE:-$HOME/.cache/alertpipe/tools}
KAFKA_VERSION=4.1.1
LOG4J_VERSION=2.24.3
LIBS=$TOOL_CACHE/kafka-$KAFKA_VERSION/libs
SYS_PY=/usr/bin/python3

die() { printf '[kafka] error: %s\n' "$*" >&2; exit 1; }

cmd_install() {
  if [ -f "$LIBS/.complete" ]; then echo "$LIBS"; return 0; fi
  command -v mvn >/dev/null || die "mvn not found: apt-get install maven (and a JDK 17+: openjdk-17-jre-headless)"
  local dir=$TOOL_CACHE/kafka-$KAFKA_VERSION
  mkdir -p "$dir"
  # The Maven artifact has no logging back-end; the release tarball adds these three.
  cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alertpipe.peers</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-1.2-api</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS"
  mvn -B -q -f "$dir/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2 \
    || die "resolving Apache Kafka $KAFKA_VERSION from Maven Central failed"
  ls "$LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13-$KAFKA_VERSION.jar missing in $LIBS"
  touch "$LIBS/.complete"
  echo "$LIBS"
}

java_bin() {
  local j=${JAVA_HOME:+$JAVA_HOME/bin/java}
  [ -n "$j" ] && [ -x "$j" ] || j=$(command -v java || true)
  [ -n "$j" ] || die "java not found: apt-get install openjdk-17-jre-headless"
  echo "$j"
}

cmd_run() {
  local dir=$1 port=$2 cport=$3 node=${4:-1} voters=${5:-} extra=${6:-}
  [ -n "$voters" ] || voters="$node@127.0.0.1:$cport"
  [ -f "$LIBS/.complete" ] || cmd_install >/dev/null
  mkdir -p "$dir/data"
  cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ${KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
EOF
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=$node
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=$voters
log.dirs=$dir/data
# alertpipe creates its topics (kafka.create_topics), as in production.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.num.partitions=10
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A development broker: every test and benchmark leaves its own topics behind (the flood
# benchmark writes 1 GiB a run), and Kafka's week of retention filled this machine's disk
# (36 GB under .state/kafka). Six hours is longer than any run needs; segments roll hourly so
# they can expire.
log.retention.hours=6
log.roll.hours=1
EOF
  if [ -n "$extra" ]; then cat "$extra" >>"$dir/server.properties"; fi
  local java
  java=$(java_bin)
  local opts=(-Xms64m "-Xmx${KAFKA_HEAP:-384m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    # One cluster id per DIR's cluster: the caller passes it for a cluster (KAFKA_CLUSTER_ID).
    # Not starting with '-', which kafka-storage would read as an option (Kafka's own
    # random-uuid never gives one; 1 in 64 of these did, failing a test now and then).
    local id=${KAFKA_CLUSTER_ID:-}
    if [ -z "$id" ]; then
      id=-
      while [ "${id#-}" != "$id" ]; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
      done
    fi
    # KAFKA_ADD_SCRAM: a SCRAM user created with the storage, as Kafka's own tool does it
    # (`SCRAM-SHA-512=[name=U,password=P]`), for a cluster with a SASL listener.
    local scram=()
    [ -z "${KAFKA_ADD_SCRAM:-}" ] || scram=(--add-scram "$KAFKA_ADD_SCRAM")
    "$java" "${opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format --ignore-formatted \
      -t "$id" -c "$dir/server.properties" "${scram[@]}" >"$dir/format.log" 2>&1 \
      || die "formatting $dir failed: $(tail -3 "$dir/format.log")"
  fi
  exec "$java" "${opts[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties"
}

# ApiVersions v0 (api key 18), which every broker answers once it serves requests.
cmd_ready() {
  local port=$1 within=$2
  "$SYS_PY" - "$port" "$within" <<'PY'
import socket, struct, sys, time
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
client = b"alertpipe-stack"
body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(10)
            if len(head) >= 10 and struct.unpack(">h", head[8:10])[0] == 0:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

cmd_scram() {
  local port=$1 user=$2 pwfile=$3 java
  [ -s "$pwfile" ] || die "no password in $pwfile"
  [ -f "$LIBS/.complete" ] || cmd_install >/dev/null
  java=$(java_bin)
  # ConfigCommand takes the credential on its command line (its --add-config-file form
  # refuses SCRAM credentials); its output, which can echo the credential, is dropped.
  "$java" -Xmx128m -cp "$LIBS/*" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$port" \
    --alter --add-config "SCRAM-SHA-512=[iterations=8192,password=$(cat "$pwfile")]" \
    --entity-type users --entity-name "$user" >/dev/null 2>&1 \
    || die "could not create the SCRAM user $user (kafka-configs failed)"
}

case "${1:-}" in
  install) cmd_install ;;
  scram) shift; [ $# -eq 3 ] || die "usage: kafka.sh scram PORT USER PASSWORD_FILE"; cmd_scram "$@" ;;
  run) shift; [ $# -ge 3 ] || die "usage: kafka.sh run DIR PORT CONTROLLER_PORT [NODE_ID VOTERS [EXTRA]]"; cmd_run "$@" ;;
  ready) shift; [ $# -eq 2 ] || die "usage: kafka.sh ready PORT SECONDS"; cmd_ready "$@" ;;
  *) echo "usage: $0 install | run DIR PORT CONTROLLER_PORT [NODE_ID VOTERS [EXTRA]] | ready PORT SECONDS | scram PORT USER PASSWORD_FILE" >&2; exit 2 ;;
esac
