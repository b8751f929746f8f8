#!/bin/bash
# Measure xdp_fwd: namespaces gen --(g|a)-- dut --(b|s)-- sink on veth pairs,
# an AF_XDP generator (xdp_gen) in gen on CPU 0, the forwarder in dut on CPU 1
# (both SCHED_FIFO for the few seconds of the run so other load on a small
# shared machine does not decide the result), and the sink's rx counter.
#
#   datapath/examples/xdp_fwd_bench.sh [bridge] [native] [skb]   (root)
#
# "bridge" is the same-run baseline: a kernel bridge in dut instead of xdp_fwd.
# Everything it creates carries the pid in its name and is removed on exit.
set -euo pipefail
SECS=${SECS:-4}
E=${E:-${CARGO_TARGET_DIR:-target}/release/examples}
T=fb$$
[ -x "$E/xdp_fwd" ] && [ -x "$E/xdp_gen" ] || { echo "build first: cargo build --release -p datapath --examples" >&2; exit 1; }
cleanup() { for n in gen dut sink; do ip netns del fp$T-$n 2>/dev/null || true; done; }
trap cleanup EXIT
for n in gen dut sink; do ip netns add fp$T-$n; done
ip link add g$T netns fp$T-gen type veth peer a$T netns fp$T-dut
ip link add b$T netns fp$T-dut type veth peer s$T netns fp$T-sink
ip -n fp$T-gen addr add 10.77.0.1/24 dev g$T
ip -n fp$T-sink addr add 10.77.0.2/24 dev s$T
for x in gen:g dut:a dut:b sink:s; do ip -n fp$T-${x%%:*} link set ${x##*:}$T up; done
SM=$(ip -n fp$T-sink -br link show s$T | awk '{print $3}')
rxs() { ip netns exec fp$T-sink cat /sys/class/net/s$T/statistics/rx_packets; }
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(native skb)
for mode in "${modes[@]}"; do
  FP=
  if [ "$mode" = bridge ]; then
    ip -n fp$T-dut link add br$T type bridge
    ip -n fp$T-dut link set a$T master br$T; ip -n fp$T-dut link set b$T master br$T
    ip -n fp$T-dut link set br$T up
  else
    timeout $((SECS + 10)) taskset -c 1 chrt -f 10 "$E/xdp_fwd" a$T b$T --mode "$mode" \
      --secs $((SECS + 2)) --netns fp$T-dut > /tmp/xdp_fwd_bench.$$ 2>&1 & FP=$!
  fi
  sleep 1
  r0=$(rxs)
  gen=$(timeout $((SECS + 10)) taskset -c 0 chrt -f 10 "$E/xdp_gen" g$T --dst-mac "$SM" \
    --secs "$SECS" --netns fp$T-gen --mode native)
  r1=$(rxs)
  echo "$mode: offered ${gen#xdp_gen: }; sink received $(( (r1 - r0) / SECS )) pps"
  if [ -n "$FP" ]; then wait "$FP" || true; grep -E "PortStats|average" /tmp/xdp_fwd_bench.$$ || true; rm -f /tmp/xdp_fwd_bench.$$
  else ip -n fp$T-dut link del br$T; fi
done
