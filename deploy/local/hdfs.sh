#!/usr/bin/env bash
# Apache Hadoop HDFS from Maven Central (hadoop-hdfs, hadoop-hdfs-client, hadoop-common), as a real deployment runs it: a NameNode and a
# DataNode, two processes, WebHDFS on the NameNode's HTTP port. Used by stack.sh and the tests.
#
#   hdfs.sh install
#       resolve the pinned hadoop-hdfs and hadoop-common with their runtime dependencies, once,
#       into the per-machine tools cache; prints the jar directory
#   hdfs.sh conf DIR NN_RPC NN_HTTP DN_DATA DN_HTTP DN_IPC
#       write DIR/conf (core-site.xml, hdfs-site.xml, log4j.properties) for these loopback ports;
#       name and data directories under DIR (kept across restarts)
#   hdfs.sh namenode DIR    format on first use, then run the NameNode in the foreground (exec)
#   hdfs.sh datanode DIR    run the DataNode in the foreground (exec)
#   hdfs.sh ready NN_HTTP SECONDS
#       wait until WebHDFS answers and a DataNode is live (the NameNode out of safe mode)
#
# Heap: HDFS_HEAP (default 256m) per process.
set -euo pipefail

TOOL_CACHE=${ALERTPIPE_TOOL_CACHE:-$HOME/.cache/alertpipe/tools}
HADOOP_VERSION=3.4.1
LIBS=$TOOL_CACHE/hadoop-$HADOOP_VERSION/libs
SYS_PY=/usr/bin/python3

die() { printf '[hdfs] error: %s\n' "$*" >&2; exit 1; }

cmd_install() {
  if [ -f "$LIBS/.complete" ]; then echo "$LIBS"; return 0; fi
  command -v mvn >/dev/null || die "mvn not found: apt-get install maven (and a JDK 17: openjdk-17-jre-headless)"
  local dir=$TOOL_CACHE/hadoop-$HADOOP_VERSION
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alertpipe.peers</groupId>
  <artifactId>hdfs</artifactId>
  <version>$HADOOP_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-hdfs</artifactId><version>$HADOOP_VERSION</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-common</artifactId><version>$HADOOP_VERSION</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-hdfs-client</artifactId><version>$HADOOP_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIBS"
  mvn -B -q -f "$dir/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2 \
    || die "resolving Apache Hadoop $HADOOP_VERSION from Maven Central failed"
  ls "$LIBS"/hadoop-hdfs-"$HADOOP_VERSION".jar >/dev/null || die "hadoop-hdfs-$HADOOP_VERSION.jar missing in $LIBS"
  touch "$LIBS/.complete"
  echo "$LIBS"
}

prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

cmd_conf() {
  local dir=$1 nn_rpc=$2 nn_http=$3 dn=$4 dn_http=$5 dn_ipc=$6
  mkdir -p "$dir/conf" "$dir/name" "$dir/data"
  # The web servers look up their resource directories on the class path; the Maven jars
  # carry none (the release tarball's share/hadoop/hdfs/webapps does). WebHDFS and /jmx are
  # servlets and need no content.
  mkdir -p "$dir/conf/webapps/hdfs" "$dir/conf/webapps/datanode" "$dir/conf/webapps/static"
  {
    echo '<?xml version="1.0"?><configuration>'
    prop fs.defaultFS "hdfs://127.0.0.1:$nn_rpc"
    prop hadoop.tmp.dir "$dir/tmp"
    # Hadoop's own idle timeout for HTTP connections (60 s), as production has it: alertpipe
    # pools WebHDFS connections for less (coldstore/storage.rs).
    echo '</configuration>'
  } >"$dir/conf/core-site.xml"
  {
    echo '<?xml version="1.0"?><configuration>'
    prop dfs.namenode.name.dir "file://$dir/name"
    prop dfs.datanode.data.dir "file://$dir/data"
    prop dfs.replication 1
    prop dfs.namenode.rpc-address "127.0.0.1:$nn_rpc"
    prop dfs.namenode.http-address "127.0.0.1:$nn_http"
    prop dfs.datanode.address "127.0.0.1:$dn"
    prop dfs.datanode.http.address "127.0.0.1:$dn_http"
    prop dfs.datanode.ipc.address "127.0.0.1:$dn_ipc"
    # WebHDFS redirects writes and reads to the DataNode by this name.
    prop dfs.datanode.hostname 127.0.0.1
    prop dfs.webhdfs.enabled true
    prop dfs.permissions.enabled true
    # Out of safe mode as soon as the blocks are reported; a dead DataNode noticed in ~10 s.
    prop dfs.namenode.safemode.extension 0
    prop dfs.heartbeat.interval 1
    prop dfs.namenode.heartbeat.recheck-interval 5000
    echo '</configuration>'
  } >"$dir/conf/hdfs-site.xml"
  cat >"$dir/conf/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

java_bin() {
  local j=${JAVA_HOME:+$JAVA_HOME/bin/java}
  [ -n "$j" ] && [ -x "$j" ] || j=$(command -v java || true)
  [ -n "$j" ] || die "java not found: apt-get install openjdk-17-jre-headless"
  echo "$j"
}

run() { # DIR CLASS ARGS...
  local dir=$1 class=$2
  shift 2
  [ -f "$LIBS/.complete" ] || cmd_install >/dev/null
  [ -f "$dir/conf/hdfs-site.xml" ] || die "$dir/conf missing: run hdfs.sh conf first"
  # JDK 17 needs these opens, as Hadoop's own scripts pass them.
  exec "$(java_bin)" -Xms32m "-Xmx${HDFS_HEAP:-256m}" -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true \
    --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
    --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED \
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
    "-Dhadoop.log.dir=$dir/logs" "-Dlog4j.configuration=file:$dir/conf/log4j.properties" \
    -cp "$dir/conf:$LIBS/*" "$class" "$@"
}

cmd_namenode() {
  local dir=$1
  if [ ! -f "$dir/name/current/VERSION" ]; then
    (run "$dir" org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive) \
      >"$dir/format.log" 2>&1 || die "formatting the NameNode failed: $(tail -3 "$dir/format.log")"
  fi
  run "$dir" org.apache.hadoop.hdfs.server.namenode.NameNode
}

cmd_datanode() { run "$1" org.apache.hadoop.hdfs.server.datanode.DataNode; }

cmd_ready() {
  local http=$1 within=$2
  "$SYS_PY" - "$http" "$within" <<'PY'
import json, sys, time, urllib.request
http, deadline = sys.argv[1], time.time() + float(sys.argv[2])
jmx = f"http://127.0.0.1:{http}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
while time.time() < deadline:
    try:
        with urllib.request.urlopen(jmx, timeout=2) as r:
            b = json.load(r)["beans"][0]
        safe = urllib.request.urlopen(f"http://127.0.0.1:{http}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo", timeout=2)
        info = json.load(safe)["beans"][0]
        if b.get("NumLiveDataNodes", 0) >= 1 and not info.get("Safemode"):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.3)
sys.exit(1)
PY
}

case "${1:-}" in
  install) cmd_install ;;
  conf) shift; [ $# -eq 6 ] || die "usage: hdfs.sh conf DIR NN_RPC NN_HTTP DN_DATA DN_HTTP DN_IPC"; cmd_conf "$@" ;;
  namenode) shift; cmd_namenode "$1" ;;
  datanode) shift; cmd_datanode "$1" ;;
  ready) shift; [ $# -eq 2 ] || die "usage: hdfs.sh ready NN_HTTP SECONDS"; cmd_ready "$@" ;;
  *) echo "usage: $0 install | conf DIR NN_RPC NN_HTTP DN_DATA DN_HTTP DN_IPC | namenode DIR | datanode DIR | ready NN_HTTP SECONDS" >&2; exit 2 ;;
esac
