#!/usr/bin/env bash
# One command for the benchmark: installs what it needs, builds, runs bench/run.py.
# Arguments go to run.py (see --help); --smoke runs one small profile.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /usr/bin/time ] || need+=(time)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
cargo build --release -q --workspace
exec python3 bench/run.py "$@"
