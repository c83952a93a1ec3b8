#!/usr/bin/env bash
# Fetches the pinned Apache Kafka release (broker and controller in KRaft mode) and
# MirrorMaker 2 as jars from Maven Central, with `mvn dependency:copy-dependencies` on
# scripts/kafka/pom.xml, into a cache outside the clone. Idempotent: a complete cache
# is left alone. Prints the folder of jars on its last line.
#
# The cache is $WANMIRROR_KAFKA_HOME, by default ~/.cache/wanmirror/kafka-$KAFKA_VERSION;
# the tests and the benchmark find it the same way (tests/common/kafka.rs, bench/run.py).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KAFKA_VERSION=4.1.1   # keep in step with kafka.version in pom.xml
home="${WANMIRROR_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/wanmirror/kafka-$KAFKA_VERSION}"
libs="$home/libs"
stamp="$home/complete"

if [ -f "$stamp" ] && [ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ] \
   && [ -f "$libs/connect-mirror-$KAFKA_VERSION.jar" ]; then
  echo "setup: Apache Kafka $KAFKA_VERSION already fetched" >&2
  echo "$libs"
  exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "setup: Apache Kafka $KAFKA_VERSION needs Java 17 or later, found $java_major" >&2
  exit 1
fi

echo "setup: fetching Apache Kafka $KAFKA_VERSION and MirrorMaker 2 with Maven into $home" >&2
start=$(date +%s)
rm -rf "$libs" "$stamp"
mkdir -p "$libs"
mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$libs" -DincludeScope=runtime >&2
cp "$here/log4j2.yaml" "$home/log4j2.yaml"
touch "$stamp"
echo "setup: Apache Kafka fetched in $(( $(date +%s) - start )) s, $(du -sh "$libs" | cut -f1) of jars" >&2
echo "$libs"
