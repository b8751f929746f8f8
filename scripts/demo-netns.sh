#!/usr/bin/env bash
# Demo: a real curl through flowpath. Builds a small cluster out of network
# namespaces (an external client, a node running `flowpath run` with AF_XDP
# on its uplink and pod veths and a TAP gateway into its host stack, two
# pods with an HTTP server), then curls a NodePort (ETP Cluster and ETP
# Local) and a ClusterIP, and prints flowpath's counters (SIGUSR1).
# Needs root, AF_XDP and TUN; everything it creates is removed on exit.
#
#   scripts/demo-netns.sh            # uses target/release/flowpath (built if missing)
#   FLOWPATH=path/to/flowpath scripts/demo-netns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FP=${FLOWPATH:-${CARGO_TARGET_DIR:-target}/release/flowpath}
[ -x "$FP" ] || cargo build --release -q -p ctrl
T=$$
EXT=fpd-$T-ext N1=fpd-$T-node POD1=fpd-$T-pod1 POD2=fpd-$T-pod2
UP=u$T P1=pa$T P2=pb$T E0=e$T
DIR=$(mktemp -d /tmp/fpd-$T.XXXX)
FPPID=
cleanup() {
  [ -n "$FPPID" ] && kill "$FPPID" 2>/dev/null && wait "$FPPID" 2>/dev/null || true
  for ns in $EXT $N1 $POD1 $POD2; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT
inns() { ip netns exec "$@"; }

for ns in $EXT $N1 $POD1 $POD2; do ip netns add "$ns"; done
ip link add $E0 netns $EXT type veth peer $UP netns $N1
ip link add $P1 netns $N1 type veth peer eth0 netns $POD1
ip link add $P2 netns $N1 type veth peer eth0 netns $POD2
inns $EXT sh -ec "ip link set lo up; ip link set $E0 address 00:50:56:a7:ca:77 up
  ip addr add 10.176.26.36/16 dev $E0; ethtool -K $E0 tx off >/dev/null"
inns $N1 sh -ec "ip link set lo up
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.all.accept_local=1 net.ipv4.conf.default.accept_local=1
  ip link set $UP address 00:50:56:a7:35:0b up; ip addr add 10.176.25.244/16 dev $UP
  ip link set $P1 up; ip link set $P2 up"
for x in "$POD1 172.16.2.10 0a:58:ac:10:02:0a pod1" "$POD2 172.16.2.11 0a:58:ac:10:02:0b pod2"; do
  set -- $x
  inns "$1" sh -ec "ip link set lo up; ip link set eth0 address $3 up; ip addr add $2/24 dev eth0
    ip route add default via 172.16.2.1; ethtool -K eth0 tx off >/dev/null"
  ip netns exec "$1" python3 scripts/e2e-http-server.py "$4" "$2" 8080 >"$DIR/$4.log" &
done

cat >"$DIR/node.toml" <<EOF
flows = "$ROOT/tests/e2e/flows.txt"
groups = "$ROOT/tests/e2e/groups.txt"
workers = 1
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
interface = "$UP"
mode = "native"
pass_ethertypes = [0x0806]
[[ports]]
name = "pod1"
ofport = 4
type = "afxdp"
interface = "$P1"
mode = "native"
[[ports]]
name = "pod2"
ofport = 5
type = "afxdp"
interface = "$P2"
mode = "native"
EOF
ip netns exec $N1 "$FP" run --config "$DIR/node.toml" >"$DIR/flowpath.log" 2>&1 &
FPPID=$!
for _ in $(seq 100); do grep -q ready "$DIR/flowpath.log" 2>/dev/null && break; sleep 0.1; done
grep ready "$DIR/flowpath.log" || { cat "$DIR/flowpath.log"; exit 1; }
inns $N1 sh -ec "ip route add 169.254.169.110/32 dev gw0; ip route add 10.96.0.0/16 dev gw0 src 172.16.2.1"
for _ in $(seq 50); do grep -q listening "$DIR/pod1.log" && grep -q listening "$DIR/pod2.log" && break; sleep 0.1; done

echo
echo "== external client 10.176.26.36: curl http://10.176.25.244:30232 (NodePort, ETP Cluster -> pod1)"
inns $EXT curl -sS --max-time 5 http://10.176.25.244:30232/
echo "== external client: curl http://10.176.25.244:30236 (NodePort, ETP Local -> pod2, client IP kept)"
inns $EXT curl -sS --max-time 5 http://10.176.25.244:30236/
echo "== pod2: curl http://10.96.0.10 (ClusterIP -> pod1)"
inns $POD2 curl -sS --max-time 5 http://10.96.0.10/
echo "== external client: 20 more requests and a 256 KiB download"
for _ in $(seq 20); do inns $EXT curl -sS --max-time 5 -o /dev/null http://10.176.25.244:30232/; done
inns $EXT curl -sS --max-time 5 -o /dev/null -w "downloaded %{size_download} bytes\n" http://10.176.25.244:30232/big
echo
echo "== kill -USR1 flowpath: counters"
lines=$(wc -l <"$DIR/flowpath.log")
kill -USR1 $FPPID
for _ in $(seq 50); do grep -q "^total:" <(tail -n +$((lines + 1)) "$DIR/flowpath.log") && break; sleep 0.1; done
tail -n +$((lines + 1)) "$DIR/flowpath.log"
kill -TERM $FPPID; wait $FPPID; FPPID=
echo "== SIGTERM: flowpath exited 0; XDP programs left on the node's interfaces: $(inns $N1 ip link | grep -c prog/xdp || true)"
