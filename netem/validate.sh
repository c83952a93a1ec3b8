#!/usr/bin/env bash
# Validates the emulated link against its targets and writes netem/results/validation.{json,md}:
#   RTT within ±2 ms of target, loss within ±15 % of target, delivered rate within ±5 %
#   of the cap, one CUBIC flow within 2x of the Mathis estimate at 100 ms / 1 %, and the
#   emulator's own CPU use per Gbit/s.
# Needs root (namespaces). Installs iperf3 and ping from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK="${QUICK:-0}"   # QUICK=1: short runs (CI smoke)
NAME=wmval
out=netem/results
mkdir -p "$out"

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p wanlink
WL="${CARGO_TARGET_DIR:-target}/release/wanlink"
trap '$WL down --name $NAME >/dev/null 2>&1 || true' EXIT
sysctl -qw net.ipv4.tcp_allowed_congestion_control="reno bbr cubic"

SRC="ip netns exec $NAME-src"
DST="ip netns exec $NAME-dst"
dur=20; [ "$QUICK" = 1 ] && dur=4
pings=400; [ "$QUICK" = 1 ] && pings=100
lossn=20000; [ "$QUICK" = 1 ] && lossn=4000

up() { $WL down --name $NAME >/dev/null; $WL up --name $NAME --engine user "$@" >/dev/null; }
tuned() {
  for ns in $NAME-src $NAME-dst; do
    ip netns exec $ns sysctl -qw net.ipv4.tcp_congestion_control=cubic
    ip netns exec $ns sysctl -qw net.ipv4.tcp_rmem="4096 131072 33554432"
    ip netns exec $ns sysctl -qw net.ipv4.tcp_wmem="4096 16384 4194304"
  done
}
iperf() {  # iperf3 from dst (client, receiving with -R) to src server; prints Mbit/s
  $SRC iperf3 -s -1 -D -B 10.201.0.1 >/dev/null 2>&1; sleep 0.3
  $DST iperf3 -c 10.201.0.1 -R -t "$1" -C cubic -J 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6,3))'
}

# 1. RTT: 50 ms one way each direction -> 100 ms target.
up --delay 50ms
rtt=$($DST ping -q -c "$pings" -i 0.01 10.201.0.1 | awk -F/ '/rtt/ {print $5}')
# 2. Loss: 1 % on src->dst only; ping replies travel that direction once.
up --delay 1ms --loss 1%/0%
recv=$($SRC ping -q -c "$lossn" -i 0.0005 10.201.0.2 2>/dev/null | awk '/received/ {print $4}')
loss=$(python3 -c "print(round(100*(1-$recv/$lossn),3))")
# 3. Rate: 200 Mbit/s cap, 8 MiB queue, no delay; src -> dst bulk.
up --rate 200mbit --queue 8MiB --delay 1ms; tuned
rate=$(iperf "$dur")
st=$($WL status --name $NAME)
cpu_per_gbit=$(python3 -c "
import json; s=json.loads('''$st''')
b=s['src_to_dst']['delivered_bytes']+s['dst_to_src']['delivered_bytes']
print(round(s['cpu_seconds']/(b*8/1e9),3) if b else 'null')")
# 4. One CUBIC flow at 100 ms RTT, 1 % loss (src->dst), vs Mathis MSS/RTT*1.22/sqrt(p).
up --delay 50ms --loss 1%/0%; tuned
cubic=$(iperf $((dur*2)))
mathis=$(python3 -c "print(round(1448*8/0.1*1.22/(0.01**0.5)/1e6,3))")

python3 - "$rtt" "$loss" "$rate" "$cubic" "$mathis" "$cpu_per_gbit" "$out" <<'PY'
import json, sys, platform
rtt, loss, rate, cubic, mathis = map(float, sys.argv[1:6])
cpu = None if sys.argv[6] == "null" else float(sys.argv[6])
out = sys.argv[7]
checks = [
  ("RTT (target 100 ms, ±2 ms)", f"{rtt:.2f} ms", abs(rtt-100) <= 2),
  ("loss (target 1 %, ±15 %)", f"{loss:.3f} %", abs(loss-1) <= 0.15),
  ("delivered rate (cap 200 Mbit/s, ±5 %)", f"{rate:.1f} Mbit/s", abs(rate-200) <= 10),
  (f"1 CUBIC flow at 100 ms / 1 % (Mathis {mathis:.2f} Mbit/s, within 2x)", f"{cubic:.2f} Mbit/s", mathis/2 <= cubic <= mathis*2),
]
res = {"rtt_ms": rtt, "loss_pct": loss, "rate_mbit": rate, "cubic_mbit": cubic,
       "mathis_mbit": mathis, "emulator_cpu_s_per_gbit": cpu,
       "checks": [{"what": w, "measured": m, "pass": p} for w, m, p in checks]}
json.dump(res, open(f"{out}/validation.json", "w"), indent=2)
with open(f"{out}/validation.md", "w") as f:
    f.write("| check | measured | pass |\n|---|---|---|\n")
    for w, m, p in checks:
        f.write(f"| {w} | {m} | {'yes' if p else 'NO'} |\n")
    f.write(f"\nEmulator CPU: {cpu} CPU-seconds per Gbit forwarded (userspace engine).\n")
print(open(f"{out}/validation.md").read())
sys.exit(0 if all(p for _, _, p in checks) else 1)
PY
