#!/usr/bin/env bash
# Installs what wanmirror's demo, tests and benchmarks need on a fresh Debian machine
# with a Rust toolchain: build packages, the pinned tansu broker, and the pinned Apache
# Kafka release with MirrorMaker 2 (Java 17 and Maven, from Debian, if missing), and
# with --tests, what only the test suite needs: cargo-fuzz with a nightly toolchain for
# the fuzz targets, and a second tansu build with SCRAM credentials (sqlite storage).
# Idempotent: every step is skipped when already done.
set -euo pipefail

TANSU_VERSION=0.6.0

need_apt=()
for pkg in gcc g++ make pkg-config perl python3; do
  command -v "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# librdkafka (bundled by the rdkafka crate, built from source) needs a C toolchain, and
# OpenSSL's headers for the tests' TLS and SASL clients (the Kafka suite's secured
# listeners).
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential pkg-config python3 libssl-dev >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi

tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [ -x "$tansu_bin" ] && "$tansu_bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "setup: tansu $TANSU_VERSION already installed"
else
  echo "setup: building tansu $TANSU_VERSION (takes several minutes on 2 cores)..."
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked --quiet
fi

# Apache Kafka (the reference broker of tests/kafka_compat.rs) and MirrorMaker 2 (a
# benchmark contender), as jars from Maven Central into a cache outside the clone.
scripts/kafka/fetch.sh >/dev/null

# The fuzz targets (scripts/fuzz.sh) run under libFuzzer through cargo-fuzz, which
# needs a nightly toolchain for its sanitizer flags: only for `setup.sh --tests` (the
# test suite and `./dev fuzz`), not for the demo.
if [ "${1:-}" = "--tests" ]; then
  CARGO_FUZZ_VERSION=0.13.2
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "setup: installing a nightly Rust toolchain for the fuzz targets"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "setup: building cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
  fi
fi

# tansu keeps SCRAM credentials only in its sqlite storage engine, which needs the
# libsql feature: a build of its own (about 20 minutes on 2 cores), under its own root
# so that the demo keeps the quick memory build. tests/security.rs finds it there (or
# at $TANSU_SQL_BIN).
if [ "${1:-}" = "--tests" ]; then
  sql_root="${XDG_CACHE_HOME:-$HOME/.cache}/wanmirror/tansu-sql-$TANSU_VERSION"
  if [ -x "$sql_root/bin/tansu" ]; then
    echo "setup: tansu $TANSU_VERSION with sqlite storage already installed"
  else
    echo "setup: building tansu $TANSU_VERSION with sqlite storage (SCRAM tests; about 20 minutes on 2 cores)..."
    cargo install tansu --version "$TANSU_VERSION" --features libsql --locked --quiet --root "$sql_root"
  fi
fi

