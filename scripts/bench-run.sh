#!/bin/bash
# Forwarding rate of `flowpath run` through the full NodePort ETP Cluster chain
# (DNAT to the VIP in zone 52100, SNAT in zone 52200, endpoint DNAT in zone
# 65500: 6 recirculations per packet) against the raw AF_XDP forwarder
# (xdp_fwd) in the same run, on veth: gen --(g|a)-- dut --(b|s)-- sink.
# One UDP flow (the e2e pipeline with tcp->udp and NodePort 30232->9, what the
# AF_XDP generator sends), 60-byte frames; generator on CPU 0, the dut's
# worker on CPU 1, both SCHED_FIFO for the run.
#
#   scripts/bench-run.sh        (root; first: cargo build --release -p ctrl && cargo build --release -p datapath --examples)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-4}
R=${CARGO_TARGET_DIR:-target}/release
E=$R/examples
T=fr$$
DIR=$(mktemp -d /tmp/fpbench-$$.XXXX)
cleanup() { for n in gen dut sink; do ip netns del fp$T-$n 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
for n in gen dut sink; do ip netns add fp$T-$n; done
ip link add g$T netns fp$T-gen type veth peer a$T netns fp$T-dut
ip link add b$T netns fp$T-dut type veth peer s$T netns fp$T-sink
for x in gen:g dut:a dut:b sink:s; do ip -n fp$T-${x%%:*} link set ${x##*:}$T up; done
ip -n fp$T-sink link set s$T address 0a:58:ac:10:02:0a
rxs() { ip netns exec fp$T-sink cat /sys/class/net/s$T/statistics/rx_packets; }
sed -e 's/tcp/udp/g' -e 's/30232/9/g' tests/e2e/flows.txt > "$DIR/flows.txt"
sed -e 's/tcp/udp/g' tests/e2e/groups.txt > "$DIR/groups.txt"
cat > "$DIR/node.toml" <<EOT
flows = "flows.txt"
groups = "groups.txt"
workers = 1
cores = [1]
idle_sleep_us = 0
[[ports]]
name = "gw0"
ofport = 2
type = "tap"
ip = "172.16.2.1/24"
mac = "0a:58:ac:10:02:01"
[[ports]]
name = "uplink"
ofport = 3
type = "afxdp"
interface = "a$T"
mode = "native"
[[ports]]
name = "pod1"
ofport = 4
type = "afxdp"
interface = "b$T"
mode = "native"
EOT
gen() {
  timeout $((SECS + 10)) taskset -c 0 chrt -f 10 "$E/xdp_gen" g$T --dst-mac 00:50:56:a7:35:0b \
    --src 10.176.26.36 --dst 10.176.25.244 --secs "$SECS" --netns fp$T-gen --mode native
}
for what in xdp_fwd flowpath; do
  if [ $what = xdp_fwd ]; then
    timeout $((SECS + 10)) taskset -c 1 chrt -f 10 "$E/xdp_fwd" a$T b$T --mode native \
      --secs $((SECS + 2)) --netns fp$T-dut > "$DIR/fwd.log" 2>&1 & P=$!
  else
    ip netns exec fp$T-dut chrt -f 10 "$R/flowpath" run --config "$DIR/node.toml" > "$DIR/fp.log" 2>&1 & P=$!
  fi
  sleep 1.5
  r0=$(rxs); g=$(gen); r1=$(rxs)
  echo "$what: offered ${g#xdp_gen: }; sink received $(( (r1 - r0) / SECS )) pps"
  if [ $what = flowpath ]; then
    kill -USR1 $P 2>/dev/null || cat "$DIR/fp.log"; sleep 0.5; kill -TERM $P 2>/dev/null; wait $P || true
    grep -E "^worker|cache:|conntrack:|port|drops|total" "$DIR/fp.log" | awk '!seen[$0]++' | tail -9
  else
    wait $P || true
  fi
done
