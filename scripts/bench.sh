#!/bin/bash
# One command for the side-by-side forwarding benchmark (issue 6): the same
# generator (flowpath-pktgen, AF_XDP TX) and the same NodePort rules through
#   xdp_fwd   raw AF_XDP forwarding, no rules (the I/O ceiling)
#   flowpath  `flowpath run` with the e2e NodePort ETP Cluster chain (three
#             conntrack zones, SNAT to the gateway IP, endpoint DNAT)
#   ovs       a private ovs-vswitchd, netdev bridge, type=afxdp ports, the
#             same flows and groups files
#   kernel    Linux forwarding with iptables DNAT + MASQUERADE (kube-proxy's
#             shape, without its chains)
# on veth: gen --(g|a)-- dut --(b|s)-- sink, for 1, 1,000 and 50,000 UDP
# flows (not 100,000: every flow is SNATed to the one gateway IP towards the
# one endpoint 172.16.2.10:8080, so at most ~64k can exist at once on any of
# the systems; beyond that they count NAT exhaustion, not forwarding), interleaved (every system once per round, per flow count) and
# repeated ROUNDS times. Delivered rate = frames arriving at the sink veth
# per second while the generator floods (offered-vs-delivered, not zero-loss).
# Generator on CPU 0, the DUT's forwarding thread on CPU 1 (kernel
# forwarding runs in the sender's softirq, i.e. on CPU 0).
# Prints one table (median, min-max, ratio to flowpath) and writes
# $OUT/bench.svg (throughput vs flows) and $OUT/results.txt.
#
#   sudo scripts/bench.sh        (SECS=3 ROUNDS=3 FLOWS="1 1000 50000" OUT=target/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-3}
ROUNDS=${ROUNDS:-3}
FLOWS=${FLOWS:-"1 1000 50000"}
SYSTEMS=${SYSTEMS:-"xdp_fwd flowpath ovs kernel"}
OUT=${OUT:-target/bench}
R=${CARGO_TARGET_DIR:-target}/release
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -q -p ctrl -p bench --bin flowpath --bin flowpath-pktgen
  cargo build --release -q -p datapath --example xdp_fwd
fi
mkdir -p "$OUT"
command -v iptables >/dev/null || apt-get install -y -q --no-install-recommends iptables >/dev/null
T=fb$$
NS="fp$T"
DIR=$(mktemp -d /tmp/fpbench-$$.XXXX)
P=""
stop_dut() {
  if [ -n "$P" ]; then kill -TERM "$P" 2>/dev/null || true; wait "$P" 2>/dev/null || true; P=""; fi
  for pid in "$DIR"/ovs/*.pid; do
    [ -f "$pid" ] && kill -TERM "$(cat "$pid")" 2>/dev/null || true
  done
  rm -f "$DIR"/ovs/*.pid 2>/dev/null || true
}
cleanup() {
  stop_dut
  for n in gen dut sink; do ip netns del $NS-$n 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
for n in gen dut sink; do ip netns add $NS-$n; done
ip link add g$T netns $NS-gen type veth peer a$T netns $NS-dut
ip link add b$T netns $NS-dut type veth peer s$T netns $NS-sink
for x in gen:g dut:a dut:b sink:s; do ip -n $NS-${x%%:*} link set ${x##*:}$T up; done
ip -n $NS-sink link set s$T address 0a:58:ac:10:02:0a
for x in gen:g dut:a dut:b sink:s; do
  ip netns exec $NS-${x%%:*} ethtool -K ${x##*:}$T tx off >/dev/null 2>&1 || true
done
rxs() { ip netns exec $NS-sink cat /sys/class/net/s$T/statistics/rx_packets; }

# The e2e pipeline speaks TCP; the generator sends UDP to the same NodePort.
sed -e 's/tcp/udp/g' tests/e2e/flows.txt > "$DIR/flows.txt"
sed -e 's/tcp/udp/g' tests/e2e/groups.txt > "$DIR/groups.txt"
cat > "$DIR/node.toml" <<EOT
flows = "flows.txt"
groups = "groups.txt"
workers = 1
cores = [1]
idle_sleep_us = 0
[conntrack]
capacity = 524288
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

start_dut() { # system
  case $1 in
  xdp_fwd)
    taskset -c 1 chrt -f 10 "$R/examples/xdp_fwd" a$T b$T --mode native --secs $((SECS + 3)) \
      --netns $NS-dut > "$DIR/dut.log" 2>&1 & P=$! ;;
  flowpath)
    ip netns exec $NS-dut chrt -f 10 "$R/flowpath" run --config "$DIR/node.toml" > "$DIR/dut.log" 2>&1 & P=$! ;;
  ovs)
    local o="$DIR/ovs"; mkdir -p "$o"; rm -f "$o"/conf.db
    export OVS_RUNDIR=$o OVS_LOGDIR=$o OVS_DBDIR=$o OVS_SYSCONFDIR=$o
    ovsdb-tool create "$o/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ip netns exec $NS-dut ovsdb-server "$o/conf.db" --remote=punix:"$o/db.sock" \
      --pidfile="$o/ovsdb.pid" --detach --log-file="$o/ovsdb.log" --unixctl="$o/ovsdb.ctl"
    local vs="ovs-vsctl --db=unix:$o/db.sock --no-wait"
    $vs init
    $vs set Open_vSwitch . other_config:pmd-cpu-mask=0x2
    ip netns exec $NS-dut taskset -c 1 ovs-vswitchd unix:"$o/db.sock" --pidfile="$o/vswitchd.pid" \
      --detach --log-file="$o/vswitchd.log" --unixctl="$o/vswitchd.ctl"
    vs="ovs-vsctl --db=unix:$o/db.sock --timeout=20"
    $vs add-br br$T -- set bridge br$T datapath_type=netdev fail-mode=secure protocols=OpenFlow10,OpenFlow13,OpenFlow15
    $vs add-port br$T gw$T -- set interface gw$T type=internal ofport_request=2 mac='"0a:58:ac:10:02:01"'
    $vs add-port br$T a$T -- set interface a$T type=afxdp options:xdp-mode=native ofport_request=3
    $vs add-port br$T b$T -- set interface b$T type=afxdp options:xdp-mode=native ofport_request=4
    local of="ovs-ofctl -O OpenFlow15"
    $of add-groups unix:"$o/br$T.mgmt" "$DIR/groups.txt"
    $of add-flows unix:"$o/br$T.mgmt" "$DIR/flows.txt"
    ;;
  kernel)
    local d="ip netns exec $NS-dut"
    ip -n $NS-dut link set a$T address 00:50:56:a7:35:0b
    ip -n $NS-dut addr add 10.176.25.244/16 dev a$T
    ip -n $NS-dut addr add 172.16.2.1/24 dev b$T
    ip -n $NS-dut neigh replace 172.16.2.10 lladdr 0a:58:ac:10:02:0a dev b$T
    $d sysctl -qw net.ipv4.ip_forward=1
    $d iptables -t nat -A PREROUTING -d 10.176.25.244 -p udp --dport 30232 \
      -j DNAT --to-destination 172.16.2.10:8080
    $d iptables -t nat -A POSTROUTING -o b$T -j MASQUERADE
    ;;
  esac
  sleep 1.5
}

end_dut() { # system
  case $1 in
  ovs)
    stop_dut
    sleep 0.5
    ip -n $NS-dut link del ovs-netdev 2>/dev/null || true
    ip -n $NS-dut link del gw$T 2>/dev/null || true
    ip -n $NS-dut link set a$T xdp off 2>/dev/null || true
    ip -n $NS-dut link set b$T xdp off 2>/dev/null || true ;;
  kernel)
    ip netns exec $NS-dut iptables -t nat -F
    ip netns exec $NS-dut conntrack -F >/dev/null 2>&1 || true
    ip -n $NS-dut addr flush dev a$T
    ip -n $NS-dut addr flush dev b$T ;;
  flowpath)
    # Keep the run's counters (cache hits/misses, conntrack, drops).
    kill -USR1 "$P" 2>/dev/null || true; sleep 0.3
    stop_dut; cp "$DIR/dut.log" "$OUT/flowpath-$2.log" ;;
  *) stop_dut ;;
  esac
}

gen() { # flows [extra options]
  timeout $((SECS + 15)) taskset -c 0 chrt -f 10 "$R/flowpath-pktgen" gen g$T --netns $NS-gen \
    --mode native --dst-mac 00:50:56:a7:35:0b --dst 10.176.25.244 --dport 30232 \
    --src 10.176.26.36 --sport 1024 --flows "$@"
}

RES="$OUT/results.txt"
: > "$RES"
for round in $(seq 1 "$ROUNDS"); do
  for flows in $FLOWS; do
    for sys in $SYSTEMS; do
      if ! start_dut $sys; then
        echo "$sys: failed to start" >&2; cat "$DIR"/dut.log "$DIR"/ovs/*.log 2>/dev/null | tail -20 >&2
        end_dut $sys; continue
      fi
      # Warm up: establish every flow in the DUT's tables and conntrack.
      # (every flow twice, at 200 kpps so no DUT drops a first packet).
      gen "$flows" --count $((2 * flows + 1000)) --rate 200000 > /dev/null || true
      r0=$(rxs); g=$(gen "$flows" --secs "$SECS"); r1=$(rxs)
      sent=$(sed -n 's/.*"packets":\([0-9]*\).*/\1/p' <<< "$g")
      offered=$(sed -n 's/.*"pps":\([0-9]*\).*/\1/p' <<< "$g")
      delivered=$(( (r1 - r0) / SECS ))
      echo "$sys $flows $round $offered $delivered $sent $((r1 - r0))" | tee -a "$RES"
      end_dut $sys $flows
    done
  done
done
python3 scripts/bench-report.py "$RES" "$OUT/bench.svg" "$SYSTEMS" "$FLOWS"
