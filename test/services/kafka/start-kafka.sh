#!/bin/sh
# Runs a throwaway single-node Kafka (KRaft, combined broker and controller) from Kafka's jars on
# Maven Central, for tests and benchmarks on machines without Docker.
#
#   start-kafka.sh DIR PORT CONTROLLER_PORT [KEY=VALUE ...]
#       Writes DIR/server.properties (client listener on 127.0.0.1:PORT, controller on
#       127.0.0.1:CONTROLLER_PORT; each KEY=VALUE is added last and so overrides), formats
#       DIR/data (unless an earlier run did: a restart keeps the data) and runs the broker in the foreground; the script's pid becomes the broker's.
#       Lines starting with "[start-kafka]" mark its phases; test/services/kafka-local.ts reads them.
#   start-kafka.sh --resolve-only
#       Only makes sure that the jars are in the cache, and prints their directory.
#
# The jars are resolved once with Maven from pom.xml beside this script into
# <repo>/.cache/kafka-libs/<hash of pom.xml>/ (or $CONCORD_KAFKA_LIBS_CACHE/<hash>/).
# Needs Java 17+ and Maven; JAVA_HOME is used when set.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
pom="$here/pom.xml"
cache=${CONCORD_KAFKA_LIBS_CACHE:-$(cd "$here/../../.." && pwd)/.cache/kafka-libs}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

fail() {
  echo "[start-kafka] error: $*" >&2
  exit 1
}

# Prints the directory holding the broker's jars, downloading them first when they are missing.
resolve_libs() {
  hash=$(sha256sum "$pom" | cut -c1-16)
  libs="$cache/$hash"
  if [ -d "$libs" ]; then
    echo "$libs"
    return
  fi
  command -v mvn >/dev/null 2>&1 || fail "Maven (mvn) is needed to download Kafka's jars; install it (apt-get install maven) or set CONCORD_TEST_KAFKA_BROKERS"
  mkdir -p "$cache"
  # Another run may be downloading the same jars: wait for it, then use its result. The lock goes
  # with its holder, even one killed by SIGKILL.
  exec 9>"$cache/.lock"
  flock -w 900 9 || fail "another process held $cache/.lock for 15 minutes"
  if [ ! -d "$libs" ]; then
    echo "[start-kafka] resolving jars: mvn dependency:copy-dependencies into $libs" >&2
    partial="$cache/.partial-$$"
    rm -rf "$partial"
    # Copied into a scratch dir and renamed when complete, so that an interrupted download never
    # looks like a finished one. Jars for an older pom.xml go at the same time.
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DoutputDirectory="$partial" >&2 ||
      fail "mvn could not download Kafka's jars (see its output above)"
    mv -T "$partial" "$libs"
    find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$hash" -exec rm -rf {} +
  fi
  exec 9>&-
  echo "$libs"
}

if [ "${1:-}" = "--resolve-only" ]; then
  resolve_libs
  exit 0
fi

[ $# -ge 3 ] || fail "usage: start-kafka.sh DIR PORT CONTROLLER_PORT [KEY=VALUE ...] | start-kafka.sh --resolve-only"
dir=$1
port=$2
controller_port=$3
shift 3

libs=$(resolve_libs)
command -v "$java" >/dev/null 2>&1 || fail "java was not found (Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom") needs Java 17+); install it or set JAVA_HOME"

mkdir -p "$dir/data"
cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
for setting in "$@"; do
  echo "$setting" >>"$dir/server.properties"
done

cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
EOF

# A KRaft cluster id is 16 random bytes in URL-safe base64; one starting with "-" would read as an option.
cluster_id=-
while [ "${cluster_id#-}" != "$cluster_id" ]; do
  cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
done

# A dir formatted by an earlier run is a restart of the same broker (same data, same ports): keep it.
if [ -f "$dir/data/meta.properties" ]; then
  echo "[start-kafka] restarting on the existing storage in $dir/data" >&2
else
  echo "[start-kafka] formatting $dir/data" >&2
  # A short-lived tool: a small heap and the quick JIT tier start it faster. No hsperfdata files in /tmp.
  "$java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$libs/*" kafka.tools.StorageTool format --config "$dir/server.properties" --cluster-id "$cluster_id" >&2 ||
    fail "kafka.tools.StorageTool could not format $dir/data"
fi

echo "[start-kafka] starting broker on 127.0.0.1:$port (controller on 127.0.0.1:$controller_port)" >&2
exec "$java" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData \
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
  -cp "$libs/*" kafka.Kafka "$dir/server.properties"
